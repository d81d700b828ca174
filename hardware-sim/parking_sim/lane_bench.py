"""``parking-gateway bench lane``: how fast a lane opens for a permit holder, and how fast a bay
change reaches the journal, measured on the real daemon in real time.

Open latency runs from the arming loop's input going high (the raw pin, so the debounce counts)
to the barrier's open command, for a permit plate the camera shows. The camera hands over a
frame rendered beforehand, as a real camera's capture thread would; the plate is read by the
real reader (EasyOCR in its worker process) when the ``lpr`` extra is installed, else by the
simulator's ground truth, and the output says which. Bay-to-journal latency runs from a bay
reading reaching the occupancy tracker to its ``bay.changed`` event being committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.clock import Clock, SystemClock
from gateway.drivers import BayReading, BayReadingState, Frame

ROOT = Path(__file__).resolve().parent.parent.parent
LOT = ROOT / "config" / "demo-lot.toml"
LANE = "entry-b"  # no limit switches: the lane is ready again as soon as it has lowered
PERMIT_PRINTED, PERMIT_FORMAT = "AB-123-CD", "eu"


class StillCamera:
    """A camera whose newest frame is always the same picture, stamped now."""

    def __init__(self, camera_id: str, image: np.ndarray[Any, Any], truth: str,
                 clock: Clock) -> None:
        self.camera_id = camera_id
        self._image = image
        self._truth = truth
        self._clock = clock
        self._sequence = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def latest(self) -> Frame | None:
        self._sequence += 1
        return Frame(self.camera_id, self._image, self._clock.stamp(), self._sequence,
                     truth=self._truth)

    async def next_frame(self, timeout_s: float) -> Frame | None:
        await asyncio.sleep(0.04)  # 25 frames a second
        return self.latest()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def lane_bench(*, trials: int = 40, bay_changes: int = 400,
                     reader: str = "auto") -> dict[str, Any]:
    from gpiozero.pins.mock import MockFactory  # type: ignore[import-untyped]

    from gateway.app import Gateway, HardwareOverrides
    from gateway.config import load_settings
    from gateway.notify import Notifier
    from gateway.rights import Permit
    from parking_sim.camera import GroundTruthReader, PlateScene

    use_lpr = reader == "easyocr" or (reader == "auto"
                                      and importlib.util.find_spec("easyocr") is not None)
    clock = SystemClock()
    scene = PlateScene(seed=3)
    image, _box = scene.render(PERMIT_PRINTED, PERMIT_FORMAT)
    plate = "".join(c for c in PERMIT_PRINTED if c.isalnum())
    with tempfile.TemporaryDirectory(prefix="parking-gateway-bench-lane-") as state:
        settings = load_settings(LOT, env={
            "PARKING_GATEWAY__JOURNAL__PATH": f"{state}/journal.db",
            "PARKING_GATEWAY__CONTROL__SOCKET_PATH": f"{state}/control.sock",
            "PARKING_GATEWAY__BUS__PORT": f"{state}/no-bus",
            "PARKING_GATEWAY__LPR__ENABLED": "true" if use_lpr else "false",
        })
        factory = MockFactory()
        cameras = {lane.id: StillCamera(lane.id, image, plate, clock) for lane in settings.lanes}
        gateway = Gateway(settings, clock=clock, sync=False, control=False,
                          notifier=Notifier(None),
                          plates=None if use_lpr else GroundTruthReader(),
                          hardware=HardwareOverrides(pin_factory=factory, cameras=cameras))
        daemon = asyncio.ensure_future(gateway.run())
        try:
            await asyncio.wait_for(gateway.started.wait(), 600)
            gateway.access.load("permits", [Permit(permitId="bench", plates=(plate,))])
            opens = await _open_latencies(gateway, factory, trials)
            bays = await _bay_latencies(gateway, clock, bay_changes)
        finally:
            gateway.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await daemon
    return {
        "reader": "easyocr" if use_lpr else "ground_truth",
        "trials": len(opens),
        "p50_open_ms": round(statistics.median(opens), 1),
        "p95_open_ms": round(_percentile(opens, 0.95), 1),
        "p99_open_ms": round(_percentile(opens, 0.99), 1),
        "bay_to_journal_p50_ms": round(statistics.median(bays), 2),
        "bay_to_journal_p99_ms": round(_percentile(bays, 0.99), 2),
    }


async def _open_latencies(gateway: Any, factory: Any, trials: int) -> list[float]:
    lane = gateway.lanes[LANE]
    config = lane.config.gpio
    pins = {name: factory.pin(getattr(config, name))
            for name in ("arming_loop", "safety_loop", "closing_loop")}
    commanded: list[float] = []
    raise_ = lane.barrier.raise_

    async def timed_raise() -> None:
        commanded.append(time.perf_counter())
        await raise_()

    lane.barrier.raise_ = timed_raise
    latencies: list[float] = []
    for _ in range(trials):
        commanded.clear()
        t0 = time.perf_counter()
        pins["arming_loop"].drive_high()
        while not commanded and time.perf_counter() - t0 < 30:  # noqa: ASYNC110 (1 ms poll)
            await asyncio.sleep(0.001)
        if not commanded:
            raise RuntimeError(f"the lane did not open (state {lane.state}, "
                               f"last decision {lane.recent[-1] if lane.recent else None})")
        latencies.append((commanded[0] - t0) * 1000.0)
        # The car drives through; the lane closes behind it and is ready for the next one.
        for name, level in (("safety_loop", True), ("arming_loop", False),
                            ("closing_loop", True), ("safety_loop", False),
                            ("closing_loop", False)):
            getattr(pins[name], "drive_high" if level else "drive_low")()
            await asyncio.sleep(0.15)
        while lane.state != "idle":  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return latencies


async def _bay_latencies(gateway: Any, clock: Clock, changes: int) -> list[float]:
    occupancy = gateway.occupancy
    occupancy.journal_latencies_ms.clear()
    bay = next(iter(occupancy.bays))
    for i in range(changes):
        state: BayReadingState = "occupied" if i % 2 == 0 else "free"
        occupancy.on_reading(BayReading(bay, state, "modbus:1", clock.stamp()))
        await asyncio.sleep(0.005)  # a change every 5 ms: far busier than any lot
    while len(occupancy.journal_latencies_ms) < changes:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return list(occupancy.journal_latencies_ms)
