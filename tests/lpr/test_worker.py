"""The plate worker against a fake reader in a real spawned child: crashes, hangs, drops, timeouts.

`FakeReader` is what the child builds (``tests.lpr.test_worker:FakeReader``): it reads the
plate that `fake_image` wrote into the pixels, and obeys magic plates: ``CRASH`` ends the
process with os._exit, ``SLEEPnnn`` sleeps nnn ms, ``RAISE`` raises. One worker serves the
whole module where a test does not need its own, since each spawn costs about a second.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from gateway.config import LprConfig
from gateway.core.clock import FakeClock
from gateway.core.plates import formats_for
from gateway.drivers import Frame
from gateway.lpr.capture import CaptureStore
from gateway.lpr.pipeline import ReaderOptions
from gateway.lpr.recognize import DEFAULT_NETWORKS, DEFAULT_WEIGHTS
from gateway.lpr.worker import (
    LazyOptions,
    PlateResult,
    PlateSource,
    PlateWorker,
    WorkerStartError,
)

FAKE = "tests.lpr.test_worker:FakeReader"


# --- the fake reader (runs in the child) ------------------------------------------------------


@dataclass
class FakeCandidate:
    text: str
    confidence: float
    char_confidences: list[float]
    box: tuple[int, int, int, int]
    crop: Any = None


@dataclass
class FakeReading:
    candidates: list[FakeCandidate]
    timings_ms: dict[str, float] = field(default_factory=dict)


class FakeReader:
    """Reads `fake_image`'s pixels; options: {"warm_up_s": seconds, "fail": message}."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}
        if "fail" in self.options:
            raise RuntimeError(self.options["fail"])

    def warm_up(self) -> None:
        time.sleep(self.options.get("warm_up_s", 0.0))

    def read(self, image: np.ndarray) -> FakeReading:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("the worker must hand over BGR")
        row = image[0, :, 0]
        text = bytes(row[: int(np.argmin(row))]).decode()
        if text == "CRASH":
            os._exit(3)
        if text.startswith("SLEEP"):
            time.sleep(int(text[5:]) / 1000)
            text = "SLEPT"
        if text == "RAISE":
            raise ValueError("the fake reader was told to fail")
        if not text:
            return FakeReading([], {"detect": 1.0})
        confs = [float(c) / 100 for c in image[1, : len(text), 0]]
        crop = np.full((20, 60, 3), 200, np.uint8)
        return FakeReading([FakeCandidate(text, sum(confs) / len(confs), confs, (5, 6, 60, 20),
                                          crop)], {"detect": 1.0, "recognize": 2.0})


def fake_image(text: str, confs: list[float] | None = None, *, size: int = 64) -> np.ndarray:
    """A frame whose pixels tell `FakeReader` what to read, with which confidences."""
    image = np.zeros((size, size, 3), np.uint8)
    data = text.encode()
    image[0, : len(data), 0] = list(data)
    per_char = confs if confs is not None else [0.9] * len(text)
    image[1, : len(text), 0] = [round(c * 100) for c in per_char]
    return image


_SEQUENCE = itertools.count()


def frames(*texts: str) -> list[Frame]:
    """Frames of one camera, each new: a new sequence number (the worker remembers frames)."""
    clock = FakeClock()
    return [Frame("cam-1", fake_image(t), clock.stamp(), next(_SEQUENCE)) for t in texts]


# --- fixtures -------------------------------------------------------------------------------


# Spawns the reader's worker processes: slow.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker():
    w = PlateWorker(FAKE, {}, queue_size=4, timeout_s=2.0, backoff_s=(0.05, 0.2),
                    formats=formats_for(["br"]))
    await w.start()
    yield w
    await w.close()


# --- tests ------------------------------------------------------------------------------------


async def test_reads_a_passage_by_consensus(worker: PlateWorker) -> None:
    result = await worker.read_frames(frames("ABC1234", "ABC1Z34", "ABC1234"))
    assert result.plate == "ABC1234"
    assert result.frames_used == 3
    assert result.frames_agreeing == 2
    assert result.format == "br-old"
    assert result.box == (5, 6, 60, 20)
    assert result.crop_png is not None
    assert result.crop_png.startswith(b"\x89PNG")
    assert {"detect", "recognize", "queue", "roundtrip", "total"} <= set(result.timings_ms)
    assert isinstance(worker, PlateSource)
    stats = worker.stats()
    assert stats.state == "ready"
    assert stats.frames_read >= 3
    assert stats.peak_rss_mb is not None
    assert stats.peak_rss_mb > 10
    assert stats.p50_ms is not None


async def test_low_confidence_gives_no_plate_but_a_guess(worker: PlateWorker) -> None:
    clock = FakeClock()
    frame = Frame("cam-1", fake_image("ABC1234", [0.3] * 7), clock.stamp(), 1)
    result = await worker.read_frames([frame])
    assert result.plate is None
    assert result.reason == "low_confidence"
    assert result.guess == "ABC1234"


async def test_a_crash_is_survived_and_the_child_restarted(worker: PlateWorker) -> None:
    alarms: list[tuple[str, str]] = []
    worker._on_alarm = lambda code, detail: alarms.append((code, detail))
    before = worker.stats()
    crashed = await worker.read_frames(frames("CRASH"))
    assert crashed.plate is None
    assert crashed.reason == "worker_crashed"
    # Frames sent during the restart wait for the new child and are read.
    result = await worker.read_frames(frames("XYZ9876"), deadline_s=20)
    assert result.plate == "XYZ9876"
    stats = worker.stats()
    assert stats.restarts == before.restarts + 1
    assert stats.crashes == before.crashes + 1
    assert stats.pid != before.pid
    assert alarms
    assert alarms[0][0] == "lpr_worker_crashed"


async def test_a_frame_the_reader_fails_on_is_counted(worker: PlateWorker) -> None:
    before = worker.stats()
    result = await worker.read_frames(frames("RAISE"))
    assert result.plate is None
    assert result.reason == "reader_error"
    result = await worker.read_frames(frames("RAISE", "ABC1234"))
    assert result.plate == "ABC1234"
    assert worker.stats().reader_errors == before.reader_errors + 2
    assert worker.stats().restarts == before.restarts


async def test_a_request_past_its_deadline_times_out(worker: PlateWorker) -> None:
    before = worker.stats()
    result = await worker.read_frames(frames("SLEEP600"), deadline_s=0.2)
    assert result.plate is None
    assert result.reason == "timeout"
    assert worker.stats().timeouts == before.timeouts + 1
    # The late answer is discarded, and the worker goes on serving.
    assert (await worker.read_frames(frames("ABC1234"))).plate == "ABC1234"


async def test_a_full_queue_drops_the_oldest_frames(worker: PlateWorker) -> None:
    before = worker.stats()
    slow = asyncio.create_task(worker.read_frames(frames("SLEEP300")))
    await asyncio.sleep(0.05)  # the slow frame is in the child; the queue is empty
    olds = [asyncio.create_task(worker.read_frames(frames("OLD1111"))) for _ in range(4)]
    await asyncio.sleep(0)
    newest = await worker.read_frames(frames("NEW2222", "NEW2222"))
    assert newest.plate == "NEW2222"
    results = [await t for t in olds]
    assert [r.reason for r in results] == ["dropped", "dropped", None, None]
    assert worker.stats().drops == before.drops + 2
    await slow


async def test_a_cancelled_request_leaves_nothing_queued(worker: PlateWorker) -> None:
    slow = asyncio.create_task(worker.read_frames(frames("SLEEP300")))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(worker.read_frames(frames("ABC1234", "ABC1234")))
    await asyncio.sleep(0)
    assert worker.stats().queue_depth == 2
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert worker.stats().queue_depth == 0
    await slow


async def test_bad_frames_are_refused_with_a_reason(worker: PlateWorker) -> None:
    before = worker.stats()
    stamp = FakeClock().stamp()
    tiny = Frame("cam-1", np.zeros((1, 1, 3), np.uint8), stamp, 1)
    result = await worker.read_frames([tiny])
    assert result.plate is None
    assert result.reason == "bad_image"
    grey = fake_image("ABC1234")[:, :, 0].copy()
    grey_result = await worker.read_frames([Frame("cam-1", grey, stamp, 2)])
    assert grey_result.plate == "ABC1234"
    assert worker.stats().bad_frames == before.bad_frames + 1


async def test_empty_request_and_closed_worker() -> None:
    w = PlateWorker(FAKE, {}, timeout_s=1.0)
    result = await w.read_frames([])
    assert result.reason == "no_frames"
    # Not started: nothing can be read, and the lane is told so at once.
    result = await w.read_frames(frames("ABC1234"))
    assert result.reason == "worker_unavailable"


async def test_a_reader_that_cannot_start_is_reported() -> None:
    w = PlateWorker(FAKE, {"fail": "model file missing"})
    with pytest.raises(WorkerStartError, match="model file missing"):
        await w.start()
    assert w.stats().state == "closed"
    with pytest.raises(WorkerStartError, match="not 'module:callable'"):
        await PlateWorker("no-colon", None).start()


async def test_frames_read_before_are_not_read_again(worker: PlateWorker) -> None:
    # A lane asks again with one more frame each time; only the new frame goes to the child.
    passage = frames("ABC1234", "ABC1Z34", "ABC1234")
    before = worker.stats().frames_read
    for n in (1, 2, 3):
        result = await worker.read_frames(passage[:n])
    assert result.plate == "ABC1234"
    assert result.frames_agreeing == 2
    assert worker.stats().frames_read == before + 3


async def test_settings_choose_the_default_readers_formats_and_weights() -> None:
    config = LprConfig(formats=("br", "eu"), recognizer_weights="english_g2", engine="easyocr",
                       localizer="detector+glyphs", recognizer_networks="plate",
                       detector_side=640)
    w = PlateWorker.from_settings(config, clock=FakeClock())
    options = w._options  # what the child builds the reader with
    assert isinstance(options, LazyOptions)
    assert options.spec == "gateway.lpr.pipeline:ReaderOptions"
    assert dict(options.kwargs) == {"formats": ("br", "eu"), "weights": "english_g2",
                                    "engine": "easyocr", "localizer": "detector+glyphs",
                                    "networks": "plate", "detector_side": 640}
    # The config's defaults are the reader's own (the config module stays free of the reader).
    default, reader = LprConfig(), ReaderOptions()
    assert default.recognizer_weights == DEFAULT_WEIGHTS == reader.weights
    assert default.recognizer_networks == DEFAULT_NETWORKS == reader.networks
    assert (default.engine, default.localizer) == (reader.engine, reader.localizer)
    assert default.detector_side == reader.detector_side


async def test_built_from_settings(tmp_path) -> None:
    config = LprConfig(formats=("br",), consensus_threshold=0.5, queue_size=2, timeout_s=3,
                       capture_dir=tmp_path / "captures", capture_max_mb=1,
                       min_char_confidence=0.0)
    w = PlateWorker.from_settings(config, clock=FakeClock(), factory=FAKE,
                                  options=LazyOptions("builtins:dict", {"warm_up_s": 0.01}))
    await w.start()
    try:
        result = await w.read_frames(frames("ABCI234"))  # I where Brazil's format wants a 1
        doubtful = Frame("cam-1", fake_image("XYZ9876", [0.45] * 7), FakeClock().stamp(), 3)
        below = await w.read_frames([doubtful])
    finally:
        await w.close()
    assert result.plate == "ABC1234"
    assert result.format == "br-old"
    assert below.plate is None
    assert len(list((tmp_path / "captures").glob("*.json"))) == 1


async def test_a_worker_from_settings_keeps_crops_no_longer_than_their_age_limit(
        tmp_path) -> None:
    clock = FakeClock()
    config = LprConfig(capture_dir=tmp_path, capture_max_age_h=1)
    w = PlateWorker.from_settings(config, clock=clock, factory=FAKE,
                                  options=LazyOptions("builtins:dict", {}))
    await w.start()
    try:
        await w.read_frames([Frame("cam-1", fake_image("OLD1234", [0.2] * 7), clock.stamp(), 1)])
        clock.advance(2 * 3600)  # past the age limit, and no daemon maintenance ran
        await w.read_frames([Frame("cam-1", fake_image("NEW5678", [0.2] * 7), clock.stamp(), 2)])
    finally:
        await w.close()
    guesses = [json.loads(p.read_text())["guess"] for p in tmp_path.glob("*.json")]
    assert guesses == ["NEW5678"]


async def test_low_confidence_reads_are_captured(tmp_path) -> None:
    store = CaptureStore(tmp_path, max_mb=1, clock=FakeClock())
    w = PlateWorker(FAKE, {}, capture=store)
    await w.start()
    try:
        doubtful = Frame("cam-1", fake_image("ABC1234", [0.2] * 7), FakeClock().stamp(), 9)
        result = await w.read_frames([doubtful])
    finally:
        await w.close()
    assert result.plate is None
    assert len(list(tmp_path.glob("*.png"))) == 1
    (sidecar,) = tmp_path.glob("*.json")
    assert json.loads(sidecar.read_text())["guess"] == "ABC1234"



# --- debug capture ----------------------------------------------------------------------------


def _doubtful(guess: str, crop: bytes) -> PlateResult:
    return PlateResult(None, 0.4, reason="low_confidence", guess=guess, crop_png=crop,
                       char_confidences=(0.4,) * len(guess), box=(1, 2, 3, 4))


async def test_capture_keeps_within_its_bound_oldest_out_first(tmp_path) -> None:
    clock = FakeClock()
    store = CaptureStore(tmp_path, max_mb=0.5, clock=clock)  # room for four 120 kB crops
    for i in range(10):
        clock.advance(1)
        assert store.save(_doubtful(f"AB{i}", bytes(120_000)), camera_id="entry/1") is not None
    kept = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(kept) == 4
    assert store.used_bytes <= 0.5 * 2**20
    assert store.deleted == 6
    guesses = [json.loads((tmp_path / name).read_text())["guess"] for name in kept]
    assert guesses == ["AB6", "AB7", "AB8", "AB9"]
    assert all("entry_1" in name for name in kept)  # no path separator from the camera id
    # A restart takes in what is there, and keeps to the bound from the first save.
    again = CaptureStore(tmp_path, max_mb=0.3, clock=clock)
    assert len(again) == 2
    assert again.deleted == 2


async def test_capture_refuses_what_cannot_fit_and_survives_a_bad_disk(tmp_path) -> None:
    store = CaptureStore(tmp_path / "c", max_mb=0.1, clock=FakeClock())
    assert store.save(_doubtful("AB1", bytes(200_000))) is None
    (tmp_path / "file").write_text("")
    blocked = CaptureStore(tmp_path / "file" / "c", max_mb=1, clock=FakeClock())
    assert blocked.save(_doubtful("AB1", b"png")) is None
    assert blocked.failed == 1


# --- on a simulated lot's clock ---------------------------------------------------------------


# A sync test, to run its own loop; the module's asyncio mark reaches it all the same.
@pytest.mark.filterwarnings("ignore:The test <Function test_on_a_lot_clock:pytest.PytestWarning")
def test_on_a_lot_clock_the_childs_limits_are_real_seconds() -> None:
    # The demo runs the daemon on a loop whose clock is the lot's, 60 lot seconds a real one.
    # The child spawns, warms up and reads in real time, so a 10 s start limit, a 2 s deadline
    # and the 10 s hang limit must not shrink to 0.17, 0.03 and 0.17 real seconds, nor the
    # restart backoff to 8 ms.
    from parking_sim.vtime import TimeWarpLoop

    def lot_loop() -> asyncio.AbstractEventLoop:
        loop = TimeWarpLoop(None, io_grace_s=0.0)  # as the demo makes it
        loop.set_pace(60)
        return loop

    async def main() -> float:
        loop = asyncio.get_running_loop()
        lot_began = loop.time()
        w = PlateWorker(FAKE, {"warm_up_s": 0.3}, timeout_s=2.0, start_timeout_s=10.0,
                        backoff_s=(0.5, 1.0))
        await w.start()
        try:
            slow = await w.read_frames(frames("SLEEP300"), deadline_s=2.0)
            assert (slow.plate, slow.reason) == ("SLEPT", None)
            assert 300 <= slow.timings_ms["roundtrip"] < 3000  # real milliseconds
            assert (w.stats().hangs, w.stats().timeouts) == (0, 0)
            assert (await w.read_frames(frames("CRASH"))).reason == "worker_crashed"
            crashed = time.monotonic()
            while not w.stats().restarts and time.monotonic() - crashed < 10:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert time.monotonic() - crashed >= 0.45  # the 0.5 s backoff, in real time
            # The new child's spawn and warm-up take real seconds too, more than a read's 2 s
            # budget on a busy machine: read once it is up.
            while w.stats().state != "ready" and time.monotonic() - crashed < 30:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            assert (await w.read_frames(frames("ABC1234"))).plate == "ABC1234"
        finally:
            await w.close()
        return loop.time() - lot_began

    with asyncio.Runner(loop_factory=lot_loop) as runner:
        lot_s = runner.run(main())
    assert lot_s > 60  # the lot's clock did run ahead of real time
