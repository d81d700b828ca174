"""Simulated detector nodes: bay magnetics and ultrasonic physics around the real firmware.

Each :class:`SimNode` runs the sensor node's own ``detect``, ``registers`` and
``modbus_slave`` modules on simulated sensor samples. ``firmware/sensor_node`` ships inside
this package as ``parking_sim/firmware`` (a link in the checkout, copied into the wheel), so an
installed simulator runs the same firmware.

Physics, per bay in a row of bays:

- the Earth's field at the sensor, a few hundred milligauss, differs per node (orientation);
- it drifts slowly (temperature: a daily swing plus a slow linear wander) and is noisy;
- a car adds a disturbance whose size depends on the car (its steel) and falls off with the
  car's distance from the sensor: a car centred in the bay moves the field by 140 to 300 mG,
  one in the next bay by a few mG, one straddling two bays by about half in each;
- an optional ultrasonic sensor looks up from the floor: it sees the car's underbody at
  25-45 cm when the car's body is over it, else the ceiling (or no echo at all), with noise
  and dropouts.
"""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from dataclasses import dataclass, field
from importlib import resources
from types import ModuleType
from typing import Any

FIRMWARE_DIR = resources.files("parking_sim") / "firmware"

SAMPLE_PERIOD_S = 0.1  # the firmware samples at 10 Hz

# A car's disturbance falls off as exp(-(d / FALLOFF)^2), d in bay widths from the sensor.
FALLOFF_BAYS = 0.6
# Half a car's width in bay widths (1.8 m car, 2.5 m bay): the sensor is under the body.
BODY_HALF_WIDTH_BAYS = 0.36


def load_firmware(name: str) -> ModuleType:
    """One of the firmware's pure modules (``detect``, ``modbus_slave``, ``registers``).

    Loaded by path under a private name (``sensor_node_fw.detect``): on the node they are
    top-level modules whose plain names would clash with anything else called ``detect``.
    """
    qualified = f"sensor_node_fw.{name}"
    if (module := sys.modules.get(qualified)) is not None:
        return module
    spec = importlib.util.spec_from_file_location(qualified, str(FIRMWARE_DIR / f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"firmware module {name!r} not found in {FIRMWARE_DIR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


detect = load_firmware("detect")
modbus_slave = load_firmware("modbus_slave")
registers = load_firmware("registers")


@dataclass
class Car:
    """A parked car: where it stands (in bay positions along the row) and its magnetics."""

    position: float
    amplitude_mg: float
    direction: tuple[float, float, float]
    underbody_cm: float


@dataclass
class BayPhysics:
    """The field and distance one node's sensors see, as functions of time and parked cars."""

    index: int  # position of the bay in the row
    rng: random.Random
    earth_mg: tuple[float, float, float]
    noise_mg: float = 3.0
    drift_daily_mg: float = 6.0  # amplitude of the daily temperature swing
    drift_rate_mg_h: float = 0.5  # slow linear wander
    drift_axis: tuple[float, float, float] = (0.6, 0.0, 0.8)
    ceiling_cm: float | None = 260.0  # None: open sky, no echo when free
    us_noise_cm: float = 1.5
    us_dropout: float = 0.03
    mag_dropout: float = 0.0  # probability a magnetometer read fails
    cars: list[Car] = field(default_factory=list)

    def field_at(self, t_s: float) -> tuple[float, float, float] | None:
        if self.mag_dropout and self.rng.random() < self.mag_dropout:
            return None
        drift = (self.drift_daily_mg * math.sin(2 * math.pi * t_s / 86400.0)
                 + self.drift_rate_mg_h * t_s / 3600.0)
        out = [e + drift * a for e, a in zip(self.earth_mg, self.drift_axis, strict=True)]
        for car in self.cars:
            k = car.amplitude_mg * math.exp(-(((self.index - car.position) / FALLOFF_BAYS) ** 2))
            for i in range(3):
                out[i] += k * car.direction[i]
        gauss = self.rng.gauss
        return (out[0] + gauss(0, self.noise_mg), out[1] + gauss(0, self.noise_mg),
                out[2] + gauss(0, self.noise_mg))

    def distance_at(self) -> float | None:
        if self.rng.random() < self.us_dropout:
            return None
        over = [c for c in self.cars if abs(self.index - c.position) <= BODY_HALF_WIDTH_BAYS]
        if over:
            base: float | None = over[0].underbody_cm
        else:
            base = self.ceiling_cm
        if base is None:
            return None
        return max(2.0, base + self.rng.gauss(0, self.us_noise_cm))

    def empty_field(self, t_s: float = 0.0) -> tuple[float, float, float]:
        """The noiseless field with no car: what a commissioning calibration would learn."""
        drift = (self.drift_daily_mg * math.sin(2 * math.pi * t_s / 86400.0)
                 + self.drift_rate_mg_h * t_s / 3600.0)
        x, y, z = (e + drift * a for e, a in zip(self.earth_mg, self.drift_axis, strict=True))
        return (x, y, z)


def random_car(rng: random.Random, position: float) -> Car:
    theta = rng.uniform(0, 2 * math.pi)
    phi = rng.uniform(0.3, 1.2)  # mostly vertical: the steel is above the sensor
    direction = (math.sin(phi) * math.cos(theta), math.sin(phi) * math.sin(theta), math.cos(phi))
    return Car(position, rng.uniform(140.0, 300.0), direction, rng.uniform(25.0, 45.0))


class SimNode:
    """One detector node: physics in, the firmware's detector and Modbus slave inside."""

    def __init__(
        self,
        unit_id: int,
        index: int,
        rng: random.Random,
        *,
        baudrate: int = 19200,
        ultrasonic: bool = False,
        calibrated: bool = True,
        settings: dict[str, Any] | None = None,
    ) -> None:
        earth = (rng.gauss(180, 40), rng.gauss(-40, 40), rng.gauss(420, 30))
        self.physics = BayPhysics(index, rng, earth)
        stored: dict[str, Any] = dict(settings or {})
        stored.update(unit_id=unit_id, baudrate=baudrate)
        if ultrasonic and not stored.get("us_on_cm"):
            stored["us_on_cm"] = 80
        if calibrated:
            stored["baseline"] = list(self.physics.empty_field())
        self.settings: dict[str, Any] = registers.clean_settings(stored)
        self.detector = detect.Detector(registers.detector_settings(self.settings),
                                        baseline=self.settings["baseline"])
        self._elapsed_s = 0.0
        self.registers = registers.NodeRegisters(self.detector, self.settings, self.uptime_s)
        self.slave = modbus_slave.ModbusSlave(unit_id, self.registers, baudrate)
        self.registers.slave = self.slave
        self.saved_settings: dict[str, Any] | None = None  # what the node last wrote to flash
        self._next_sample_s = 0.0
        # The firmware's 10 Hz; a day-long run may sample slower to save time.
        self.sample_period_s = SAMPLE_PERIOD_S

    @property
    def unit_id(self) -> int:
        return int(self.slave.unit_id)

    def uptime_s(self) -> float:
        return self._elapsed_s

    def advance(self, t_s: float) -> None:
        """Run the node's sampling loop (10 Hz) up to ``t_s`` seconds after the bus started."""
        us = bool(self.settings["us_on_cm"])
        while self._next_sample_s <= t_s:
            t = self._next_sample_s
            sample = self.physics.field_at(t)
            if sample is None:
                self.registers.sensor_errors += 1
            distance = self.physics.distance_at() if us else None
            self.detector.update(int(t * 1000), sample, distance)
            self.registers.take_baseline()
            self._next_sample_s += self.sample_period_s
        self._elapsed_s = max(self._elapsed_s, t_s)

    def handle_frame(self, frame: bytes) -> bytes | None:
        """The firmware's answer to one frame; afterwards, settings are 'saved' and applied."""
        reply: bytes | None = self.slave.handle_frame(frame)
        return reply

    def apply_settings(self) -> None:
        """What main.py does after the reply went out: save, take a new unit id."""
        if not self.registers.dirty:
            return
        self.saved_settings = dict(self.settings)
        self.registers.dirty = False
        self.slave.unit_id = self.settings["unit_id"]
