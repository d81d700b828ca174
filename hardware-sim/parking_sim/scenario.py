"""Scenario files: one simulated lot day (or week) in TOML.

A scenario names its lot (a gateway config file, or a generated lot of a given size), its
traffic (arrival rate per hour of the day, stays, the population mix and plate formats), how
cars are driven, how noisy the sensors are, and where camera frames come from. Every table
forbids unknown keys, like the gateway's own config. See ``hardware-sim/scenarios/`` and
``hardware-sim/README.md``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.config import Settings, load_settings
from parking_sim.traffic import PLATE_MASKS, TrafficModel


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioInfo(_Table):
    name: str
    description: str = ""
    start: datetime = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    hours: float = Field(24.0, gt=0, le=24 * 31)
    seed: int = 1
    dt_s: float = Field(0.1, gt=0, le=1.0)  # physics step while cars move in a lane
    sample_s: float = Field(60.0, gt=0)  # how often occupancy is sampled for the plot

    @model_validator(mode="after")
    def _aware(self) -> ScenarioInfo:
        if self.start.tzinfo is None:
            raise ValueError("scenario.start needs a UTC offset (2026-03-02T06:00:00+01:00)")
        return self


class LotSpec(_Table):
    """The lot: ``config`` (a gateway config file, relative to the scenario), or generated."""

    config: Path | None = None
    entries: int = Field(1, ge=0, le=2)
    exits: int = Field(1, ge=0, le=2)
    bays: int = Field(40, ge=1, le=5000)
    ultrasonic_bays: int = Field(2, ge=0, le=4)
    modbus_bays: int = Field(0, ge=0, le=247)  # the rest are counted only (no sensor)
    drive: Literal["pulse", "level"] = "pulse"
    timezone: str = "Europe/Berlin"


class TrafficSpec(_Table):
    rate_per_hour: list[float] = Field(min_length=24, max_length=24)
    stay_mean_min: float = Field(120.0, gt=0)
    stay_sd_min: float = Field(90.0, ge=0)
    stay_min_min: float = Field(5.0, gt=0)
    stay_max_min: float = Field(720.0, gt=0)


class PopulationSpec(_Table):
    permit: float = Field(0.2, ge=0)
    reservation: float = Field(0.1, ge=0)
    visitor: float = Field(0.65, ge=0)
    denied: float = Field(0.05, ge=0)
    permit_pool: int = Field(40, ge=0)
    formats: dict[str, float] = Field(default_factory=lambda: {"eu": 1.0})

    @model_validator(mode="after")
    def _known_formats(self) -> PopulationSpec:
        unknown = set(self.formats) - set(PLATE_MASKS)
        if unknown:
            raise ValueError(f"unknown plate formats {sorted(unknown)}; "
                             f"known: {', '.join(sorted(PLATE_MASKS))}")
        return self


class DrivingSpec(_Table):
    tailgate_prob: float = Field(0.03, ge=0, le=1)
    clone_prob: float = Field(0.02, ge=0, le=1)  # permit arrivals on a cloned plate
    reverse_prob: float = Field(0.02, ge=0, le=1)
    speed_mps: tuple[float, float] = (1.0, 4.0)
    length_m: tuple[float, float] = (3.5, 5.5)
    patience_s: tuple[float, float] = (20.0, 60.0)  # waiting at a closed barrier, then back out
    to_bay_s: tuple[float, float] = (20.0, 120.0)  # driving from the entry to a bay, and back


class SensorSpec(_Table):
    loop_chatter: float = Field(0.05, ge=0, le=1)  # share of loop changes that bounce
    ultrasonic_noise_cm: float = Field(2.0, ge=0)
    ultrasonic_dropout: float = Field(0.02, ge=0, le=1)
    ultrasonic_spurious: float = Field(0.005, ge=0, le=1)


class BarrierSpec(_Table):
    up_s: float = Field(2.5, gt=0)
    down_s: float = Field(3.0, gt=0)
    controller_safety: bool = True
    auto_close_s: float = Field(60.0, gt=0)


class CameraSpec(_Table):
    mode: Literal["synthetic", "photos"] = "synthetic"
    photos: Path | None = None  # a folder in the openalpr-dev layout (relative to the scenario)
    fps: float = Field(8.0, gt=0, le=60)
    # The share of vehicles whose plate no reader can make out at an entry lane that prints
    # tickets: they take a ticket there, pay by it and leave on it (parking_sim.tickets).
    unreadable: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _photos_folder(self) -> CameraSpec:
        if self.mode == "photos" and self.photos is None:
            raise ValueError("camera.mode = 'photos' needs camera.photos (a folder)")
        return self


class Scenario(_Table):
    scenario: ScenarioInfo
    lot: LotSpec = Field(default_factory=LotSpec)
    traffic: TrafficSpec
    population: PopulationSpec = Field(default_factory=PopulationSpec)
    driving: DrivingSpec = Field(default_factory=DrivingSpec)
    sensors: SensorSpec = Field(default_factory=SensorSpec)
    barrier: BarrierSpec = Field(default_factory=BarrierSpec)
    camera: CameraSpec = Field(default_factory=CameraSpec)
    base_dir: Path = Path(".")  # where relative paths are taken from (the file's folder)

    def traffic_model(self) -> TrafficModel:
        t, p, d = self.traffic, self.population, self.driving
        return TrafficModel(
            rate_per_hour=tuple(t.rate_per_hour),
            stay_mean_min=t.stay_mean_min, stay_sd_min=t.stay_sd_min,
            stay_min_min=t.stay_min_min, stay_max_min=t.stay_max_min,
            mix={"permit": p.permit, "reservation": p.reservation, "visitor": p.visitor,
                 "denied": p.denied},
            formats=p.formats, permit_pool=p.permit_pool,
            tailgate_prob=d.tailgate_prob, reverse_prob=d.reverse_prob, clone_prob=d.clone_prob,
            length_m=d.length_m, speed_mps=d.speed_mps,
        )

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.base_dir / path

    def settings(self, env: Mapping[str, str] | None = None) -> Settings:
        """The gateway settings of the scenario's lot (loaded, or generated).

        `env`: ``PARKING_GATEWAY__...`` overrides of a lot's config file, taken exactly as
        ``run`` takes them (the demo passes ``os.environ``); none by default, so a scenario runs
        the same on every machine. Raises ``ConfigError``.
        """
        if self.lot.config is not None:
            return load_settings(self.resolve(self.lot.config), env={} if env is None else env)
        return generated_settings(self.lot)


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message says where."""


def load_scenario(path: Path) -> Scenario:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: TOML syntax error: {exc}") from None
    data["base_dir"] = path.parent
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise ScenarioError(f"{path}: {problems}") from None


# BCM pins a generated lot may use: 2 and 3 have fixed pull-ups (I2C); 14 and 15 stay with
# the RS-485 HAT's UART.
_FREE_PINS = [p for p in range(4, 28) if p not in (14, 15)]


def generated_settings(lot: LotSpec) -> Settings:
    """A lot of the given size: lanes with every loop and switch fitted, then its bays."""
    per_lane = 7 if lot.drive == "pulse" else 6
    needed = (lot.entries + lot.exits) * per_lane + 2 * min(lot.ultrasonic_bays, lot.bays)
    if needed > len(_FREE_PINS):
        raise ScenarioError(f"a generated lot with these lanes and ultrasonic bays needs "
                            f"{needed} GPIO pins; a Pi has {len(_FREE_PINS)} free")
    pins = iter(_FREE_PINS)
    lanes: list[dict[str, Any]] = []
    for direction, count in (("entry", lot.entries), ("exit", lot.exits)):
        for i in range(count):
            lane_id = f"{direction}-{i + 1}"
            gpio = {"arming_loop": next(pins), "safety_loop": next(pins),
                    "closing_loop": next(pins), "open_relay": next(pins),
                    "up_limit": next(pins), "down_limit": next(pins)}
            if lot.drive == "pulse":
                gpio["close_relay"] = next(pins)
            lanes.append({"id": lane_id, "direction": direction, "name": f"Sim {lane_id}",
                          "camera": {"url": f"rtsp://sim.invalid/{lane_id}"}, "gpio": gpio,
                          "barrier": {"drive": lot.drive, "feedback_timeout_s": 6.0}})
    bays: list[dict[str, Any]] = []
    for n in range(lot.bays):
        bay_id = f"B-{n + 1:03d}"
        sensor: dict[str, Any] = {"kind": "none"}
        if n < lot.ultrasonic_bays:
            sensor = {"kind": "ultrasonic", "trigger_pin": next(pins), "echo_pin": next(pins)}
        elif n < lot.ultrasonic_bays + lot.modbus_bays:
            sensor = {"kind": "modbus", "unit_id": n - lot.ultrasonic_bays + 1}
        bays.append({"id": bay_id, "floor": str(n // 100), "zone": "ABCDEFGHIJ"[n // 100 % 10],
                     "sensor": sensor})
    data = {
        "gateway": {"lot_id": "sim-lot", "gateway_id": "gw-sim", "timezone": lot.timezone,
                    "default_tariff": "standard"},
        "lanes": lanes,
        "bays": bays,
        "tariffs": {"standard": {"currency": "EUR",
                                 "lines": [{"per_minutes": 60, "amount_minor": 200}]}},
        "gpio": {"pin_factory": "mock"},
    }
    return Settings.model_validate(data)
