"""``parking-gateway bench lane``: how a lane decides and how fast it opens for permit holders,
and how fast a bay change reaches the journal, measured on the real daemon in real time.

Each passage is a car on the arming loop of a real lane, with its plate on a permit of its own.
The camera hands over frames made beforehand, as a real camera's capture thread would: a
rendered scene (the same permit plate every time), or with ``photos`` one labelled photo per
passage. A photo is the passage's first frame as it is; the lane's later frames of that passage
are the photo shifted by up to ``JITTER_PX`` pixels with sensor noise, as a camera's frames of a
car that has stopped on the loop differ. The plate is read by the real reader (the `[lpr]`
section's, in its worker process) when its engine is installed, else by the simulator's
ground truth, and the output says which.

A passage ends one of five ways (`outcome`): opened for its own plate; opened for another
permit's plate (a wrong decision: the wrong car let in, on the wrong account); opened for a
read matching no permit, as a visitor; refused for want of a sure plate (the intercom); refused
for another reason. Open latency runs from the arming loop's input going high (the raw pin, so
the debounce counts) to the barrier's open command, over the passages the lane opened.
Bay-to-journal latency runs from a bay reading reaching the occupancy tracker to its
``bay.changed`` event being committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from gateway.core.clock import Clock, SystemClock
from gateway.core.stats import percentile
from gateway.drivers import BayReading, BayReadingState, Frame

if TYPE_CHECKING:
    from gateway.core.access import EntryDecision
    from gateway.lpr.evaluate import Sample

ROOT = Path(__file__).resolve().parent.parent.parent
LOT = ROOT / "config" / "demo-lot.toml"
LANE = "entry-b"  # no limit switches: the lane is ready again as soon as it has lowered
PERMIT_PRINTED, PERMIT_FORMAT = "AB-123-CD", "eu"
JITTER_PX = 2.0  # a photo's later frames: shifted by up to this much either way...
NOISE_SIGMA = 2.0  # ...with this much sensor noise (grey levels)
DECISION_TIMEOUT_S = 30.0  # far beyond the lane's own identify timeout: the bench is broken
ENGINE_PACKAGES = {"onnx": "onnxruntime", "easyocr": "easyocr"}

Image = npt.NDArray[np.uint8]
Outcome = Literal["right", "wrong", "visitor", "intercom", "refused"]
Progress = Callable[[int, int], None]


class PassageCamera:
    """A camera showing the frames of the passage in progress in turn, each stamped now."""

    def __init__(self, camera_id: str, clock: Clock) -> None:
        self.camera_id = camera_id
        self._clock = clock
        self._frames: Sequence[Image] = ()
        self._truth: str | None = None
        self._shown = 0
        self._sequence = 0  # never restarts: the reader remembers frames by sequence

    def show(self, frames: Sequence[Image], truth: str) -> None:
        """The next car: its frames, the first of them shown first."""
        self._frames, self._truth, self._shown = frames, truth, 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def latest(self) -> Frame | None:
        if not self._frames:
            return None
        image = self._frames[self._shown % len(self._frames)]
        self._shown += 1
        self._sequence += 1
        return Frame(self.camera_id, image, self._clock.stamp(), self._sequence,
                     truth=self._truth)

    async def next_frame(self, timeout_s: float) -> Frame | None:
        await asyncio.sleep(0.04)  # 25 frames a second
        return self.latest()


@dataclass(frozen=True, slots=True)
class Passage:
    """One car: a name for the report, the plate on its permit, its frames (None: unusable)."""

    name: str
    plate: str
    frames: Callable[[], Sequence[Image] | None]


@dataclass(slots=True)
class Tally:
    """What the lane decided, passage by passage."""

    outcomes: Counter[Outcome] = field(default_factory=Counter)
    open_ms: list[float] = field(default_factory=list)
    wrong: list[dict[str, str | None]] = field(default_factory=list)
    skipped: int = 0


def outcome(decision: EntryDecision, plate: str) -> Outcome:
    """How an entry decision for a car whose permit plate is `plate` turned out."""
    if not decision.allow:
        return "intercom" if decision.fallback else "refused"
    if decision.plate == plate:
        return "right"
    return "visitor" if decision.right_kind == "visitor" else "wrong"


def passage_frames(image: Image, count: int, seed: int) -> list[Image]:
    """`image`, then `count - 1` copies shifted by up to JITTER_PX with NOISE_SIGMA of noise."""
    rng = np.random.default_rng(seed)
    height, width = image.shape[:2]
    frames = [image]
    for _ in range(count - 1):
        dx, dy = rng.uniform(-JITTER_PX, JITTER_PX, 2)
        shift = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float32)
        moved = cv2.warpAffine(image, shift, (width, height), borderMode=cv2.BORDER_REPLICATE)
        noisy = moved + rng.normal(0.0, NOISE_SIGMA, image.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


def photo_passages(samples: Sequence[Sample], frames_each: int) -> list[Passage]:
    """One passage per labelled photo, decoded (BGR) only when its car arrives."""

    def frames_of(path: Path, seed: int) -> Callable[[], list[Image] | None]:
        def make() -> list[Image] | None:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                return None
            return passage_frames(image.astype(np.uint8, copy=False), frames_each, seed)
        return make

    return [Passage(s.image.stem, s.plate, frames_of(s.image, i))
            for i, s in enumerate(samples)]


def rendered_passages(trials: int) -> list[Passage]:
    """`trials` passages of the same rendered permit plate, one frame each."""
    from parking_sim.camera import PlateScene

    image, _box = PlateScene(seed=3).render(PERMIT_PRINTED, PERMIT_FORMAT)
    plate = "".join(c for c in PERMIT_PRINTED if c.isalnum())
    return [Passage("rendered", plate, lambda: [image]) for _ in range(trials)]


def _use_reader(reader: str, engine: str) -> bool:
    if reader == "lpr":
        return True
    return reader == "auto" and importlib.util.find_spec(ENGINE_PACKAGES[engine]) is not None


async def lane_bench(*, trials: int = 40, bay_changes: int = 400, reader: str = "auto",
                     photos: Sequence[Sample] | None = None, formats: Sequence[str] = (),
                     progress: Progress | None = None) -> dict[str, Any]:
    """Drive the passages through the lane and the bay changes through the tracker; the figures.

    `reader`: "lpr" (the `[lpr]` section's reader), "ground_truth" or "auto" (the reader when
    its engine is installed). `photos`: one passage each instead of `trials` rendered ones.
    `formats`: the lot's plate formats (`lpr.formats`), default the demo lot's. Raises
    `gateway.config.ConfigError` for unknown formats, RuntimeError when the reader asked for
    does not start or the lane stops deciding.
    """
    from gpiozero.pins.mock import MockFactory  # type: ignore[import-untyped]

    from gateway.app import Gateway, HardwareOverrides
    from gateway.config import load_settings
    from gateway.core.rights import Permit
    from gateway.runtime.notify import Notifier
    from parking_sim.camera import GroundTruthReader

    clock = SystemClock()
    with tempfile.TemporaryDirectory(prefix="parking-gateway-bench-lane-") as state:
        env = {
            "PARKING_GATEWAY__JOURNAL__PATH": f"{state}/journal.db",
            "PARKING_GATEWAY__CONTROL__SOCKET_PATH": f"{state}/control.sock",
            "PARKING_GATEWAY__BUS__PORT": f"{state}/no-bus",
        }
        if formats:
            env["PARKING_GATEWAY__LPR__FORMATS"] = json.dumps(list(formats))
        settings = load_settings(LOT, env=env)
        use_lpr = _use_reader(reader, settings.lpr.engine)
        settings = settings.model_copy(update={
            "lpr": settings.lpr.model_copy(update={"enabled": use_lpr})})
        lane_config = next(lane for lane in settings.lanes if lane.id == LANE)
        passages = (rendered_passages(trials) if photos is None
                    else photo_passages(photos, lane_config.timing.identify_frames))
        factory = MockFactory()
        cameras = {lane.id: PassageCamera(lane.id, clock) for lane in settings.lanes}
        gateway = Gateway(settings, clock=clock, sync=False, control=False,
                          notifier=Notifier(None),
                          plates=None if use_lpr else GroundTruthReader(),
                          hardware=HardwareOverrides(pin_factory=factory, cameras=cameras))
        daemon = asyncio.ensure_future(gateway.run())
        try:
            await asyncio.wait_for(gateway.started.wait(), 600)
            if use_lpr and gateway.worker is None:
                raise RuntimeError("the plate reader did not start (see the log above)")
            plates = sorted({p.plate for p in passages})
            gateway.access.load("permits", [Permit(permitId=f"bench-{i}", plates=(plate,))
                                            for i, plate in enumerate(plates)])
            tally = await _drive(gateway, factory, cameras[LANE], passages, progress)
            bays = await _bay_latencies(gateway, clock, bay_changes)
        finally:
            gateway.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await daemon
    lpr = settings.lpr
    networks = lpr.recognizer_networks if lpr.engine == "onnx" else lpr.recognizer_weights
    return _figures(tally, bays, reader=f"{lpr.engine}:{networks}" if use_lpr else "ground_truth",
                    frames="rendered" if photos is None else "photo+jitter")


def _figures(tally: Tally, bays: list[float], *, reader: str, frames: str) -> dict[str, Any]:
    decided, right = sum(tally.outcomes.values()), tally.outcomes["right"]
    opens = tally.open_ms

    def open_ms(q: float) -> float | None:
        value = percentile(opens, q)
        return None if value is None else round(value, 1)

    return {
        "reader": reader,
        "frames": frames,
        "passages": decided,
        "decided_without_intercom": round(right / decided, 3) if decided else None,
        "opened_right": right,
        "wrong_decisions": tally.outcomes["wrong"],
        "opened_as_visitor": tally.outcomes["visitor"],
        "intercom": tally.outcomes["intercom"],
        "refused": tally.outcomes["refused"],
        "skipped": tally.skipped,
        "p50_open_ms": open_ms(0.5),
        "p95_open_ms": open_ms(0.95),
        "p99_open_ms": open_ms(0.99),
        "bay_to_journal_p50_ms": round(percentile(bays, 0.50) or 0.0, 2),
        "bay_to_journal_p99_ms": round(percentile(bays, 0.99) or 0.0, 2),
        "wrong": tally.wrong,
    }


async def _drive(gateway: Any, factory: Any, camera: PassageCamera, passages: list[Passage],
                 progress: Progress | None) -> Tally:
    lane = gateway.lanes[LANE]
    config = lane.config.gpio
    pins = {name: factory.pin(getattr(config, name))
            for name in ("arming_loop", "safety_loop", "closing_loop")}
    commanded: list[float] = []
    decisions: list[EntryDecision] = []
    raise_, entry = lane.barrier.raise_, gateway.access.entry

    async def timed_raise() -> None:
        commanded.append(time.perf_counter())
        await raise_()

    def recorded_entry(read: str | None, *, at: Any, free_bays: int) -> EntryDecision:
        decision: EntryDecision = entry(read, at=at, free_bays=free_bays)
        decisions.append(decision)
        return decision

    async def drive(passage: Passage, frames: Sequence[Image]) -> None:
        camera.show(frames, passage.plate)
        commanded.clear()
        decisions.clear()
        t0 = time.perf_counter()
        pins["arming_loop"].drive_high()
        while not (decisions and (commanded or lane.state == "refused")):
            if time.perf_counter() - t0 > DECISION_TIMEOUT_S:
                raise RuntimeError(f"the lane did not decide on {passage.name} "
                                   f"(state {lane.state})")
            await asyncio.sleep(0.001)  # a 1 ms poll
        decision = decisions[0]
        result = outcome(decision, passage.plate)
        tally.outcomes[result] += 1
        if result == "wrong":
            tally.wrong.append({"photo": passage.name, "plate": passage.plate,
                                "opened_for": decision.plate})
        steps: tuple[tuple[str, bool], ...]
        if commanded:
            tally.open_ms.append((commanded[0] - t0) * 1000.0)
            # The car drives through; the lane closes behind it and is ready for the next one.
            steps = (("safety_loop", True), ("arming_loop", False), ("closing_loop", True),
                     ("safety_loop", False), ("closing_loop", False))
        else:  # refused: the car backs off the loop
            steps = (("arming_loop", False),)
        for name, level in steps:
            getattr(pins[name], "drive_high" if level else "drive_low")()
            await asyncio.sleep(0.15)
        while lane.state != "idle":  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    lane.barrier.raise_ = timed_raise
    gateway.access.entry = recorded_entry
    tally = Tally()
    for done, passage in enumerate(passages, 1):
        frames = passage.frames()
        if frames:
            await drive(passage, frames)
        else:
            tally.skipped += 1
        if progress is not None:
            progress(done, len(passages))
    return tally


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
