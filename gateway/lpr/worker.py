"""The plate reader in its own process, behind an asyncio client that a lane can always await.

The model (OpenCV + EasyOCR, hundreds of MB, hundreds of ms a frame) runs in a child process
started with the ``spawn`` context: a fork of the daemon would copy its threads' locks in
whatever state they were, and a native crash in the model (a segfault, the OOM killer) would take
the whole gateway down. Here it takes down one child, which is restarted.

Client side (the daemon's event loop):

* Frames wait in a bounded queue. When it is full the *oldest* frame is dropped (counted): a
  lane wants the newest view of the car, not a backlog.
* One frame at a time is sent to the child, as a pickled ndarray over a pipe (pickle protocol
  5 copies the pixels once; encoding to PNG or JPEG would cost the loop more than it saves: see
  docs/lpr.md). The pipe is an asyncio stream, so a large frame never blocks the loop.
* Every request has a deadline; what is not read by then is abandoned (counted as a timeout).
  A child that stays busy far beyond any deadline (`hang_s`) is killed and restarted.
* Deadlines, the warm-up and hang limits, the restart backoff and the latencies reported are
  real seconds (`time.monotonic`), not the event loop's: the child reads in real time, while a
  simulation runs the loop's clock as the lot's (the demo at 60 times real time).
* A child that dies is restarted with exponential backoff; each restart is counted, logged and
  reported to the alarm hook. The frame it died on is never retried (it may be what killed it).
* The reads of all frames of one passage go through `consensus.vote`.

The lane depends only on `PlateSource`: this worker, or the simulator's ground-truth source.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import multiprocessing
import os
import pickle
import resource
import signal
import struct
import sys
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import structlog

from gateway.core.clock import Clock, SystemClock
from gateway.core.plates import PlateFormat, formats_for
from gateway.core.reads import FrameStatus, PlateResult, PlateSource, Reason
from gateway.core.stats import percentile
from gateway.drivers.image import BadImage, check_image
from gateway.lpr.capture import CaptureStore
from gateway.lpr.consensus import (
    DEFAULT_THRESHOLD,
    Box,
    PlateRead,
    vote,
)
from gateway.runtime.aio import Backoff, cancel_and_wait
from gateway.runtime.log import configure_logging

if TYPE_CHECKING:
    import numpy.typing as npt

    from gateway.config import LprConfig
    from gateway.drivers import Frame

log = structlog.get_logger(__name__)

__all__ = [
    "DEFAULT_FACTORY",
    "DEFAULT_OPTIONS",
    "ImageReading",
    "LazyOptions",
    "PlateResult",
    "PlateSource",
    "PlateWorker",
    "WorkerStartError",
    "WorkerStats",
]

DEFAULT_FACTORY = "gateway.lpr.pipeline:PlateReader"
RECENT_READINGS = 64  # frames whose readings are kept for a lane that asks again
_HEADER = struct.Struct("!Q")
_PICKLE = 5
T = TypeVar("T")

AlarmHook = Callable[[str, str], Awaitable[None] | None]
"""Called as ``hook(code, detail)`` when the worker crashed or hung and is being restarted."""


@dataclass(frozen=True, slots=True)
class LazyOptions:
    """Reader options built in the child: ``spec`` (``"module:callable"``) called with ``kwargs``.

    The options class of a reader lives beside the model; building it in the daemon would import
    the model's libraries there, which is what the worker process is for.
    """

    spec: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        return _load_factory(self.spec)(**self.kwargs)


DEFAULT_OPTIONS = "gateway.lpr.pipeline:ReaderOptions"


class WorkerStartError(RuntimeError):
    """The reader could not be started (a bad factory, a missing model, a failed warm-up)."""


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageReading:
    """The reader's candidates for one image, in plain values (as `PlateReader.read` gives)."""

    candidates: tuple[PlateRead, ...]  # best first, as the reader ranked them
    timings_ms: Mapping[str, float]
    error: str | None = None  # the reader failed on this image (it was counted, not fatal)
    searched_boxes: tuple[Box, ...] = ()  # every region the reader looked at, for evaluation

    @property
    def text(self) -> str:
        """The reader's best read of the image ("" for none)."""
        return self.candidates[0].text if self.candidates else ""


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """The worker's health, for `status` and the operator's dashboards."""

    state: str  # starting | ready | restarting | failed | closed
    pid: int | None
    warmup_s: float | None
    restarts: int
    crashes: int
    hangs: int
    drops: int
    timeouts: int
    bad_frames: int
    reader_errors: int
    frames_read: int
    requests: int
    queue_depth: int
    p50_ms: float | None  # per frame, queue excluded: send to answer
    p95_ms: float | None
    peak_rss_mb: float | None  # of the child processes, the largest any of them reached

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# --- the child process ----------------------------------------------------------------------


def _load_factory(spec: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reader factory {spec!r} is not 'module:callable'")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"reader factory {spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _child_send(fd: int, message: object) -> None:
    payload = pickle.dumps(message, protocol=_PICKLE)
    _write_all(fd, _HEADER.pack(len(payload)) + payload)


def _child_recv(fd: int) -> Any:
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    payload = _read_exactly(fd, _HEADER.unpack(header)[0])
    return None if payload is None else pickle.loads(payload)


def _peak_rss_kb() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS, which the gateway does not run on).
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _as_bgr(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    import cv2  # the child has the reader's dependencies; the parent need not

    code = cv2.COLOR_GRAY2BGR if image.ndim == 2 or image.shape[2] == 1 else cv2.COLOR_BGRA2BGR
    return np.asarray(cv2.cvtColor(image, code), dtype=np.uint8)


def encode_png(crop: Any) -> bytes | None:
    """A crop (an image array) as PNG bytes; None for anything that is not one."""
    if not isinstance(crop, np.ndarray) or crop.size == 0:
        return None
    try:
        import cv2

        ok, data = cv2.imencode(".png", crop)
    except Exception:  # a crop that cannot be encoded is shown as none
        return None
    return bytes(data) if ok else None


def _plain_reading(reading: Any) -> dict[str, Any]:
    """A reader's `FrameReading` as plain values, so the parent never imports the reader."""
    candidates = []
    for cand in getattr(reading, "candidates", ()):
        box = tuple(int(v) for v in getattr(cand, "box", (0, 0, 0, 0)))
        candidates.append({
            "text": str(cand.text),
            "confidence": float(cand.confidence),
            "char_confidences": tuple(float(c) for c in getattr(cand, "char_confidences", ())),
            "box": box,
            "crop_png": encode_png(getattr(cand, "crop", None)),
        })
    timings = {str(k): float(v) for k, v in dict(getattr(reading, "timings_ms", {})).items()}
    searched = [tuple(int(v) for v in box) for box in getattr(reading, "searched_boxes", ())]
    error = getattr(reading, "error", None)
    return {"candidates": candidates, "timings": timings, "searched": searched,
            "error": None if error is None else str(error)}


def _child_main(factory: str, options: Any, log_level: str, requests: Connection,
                responses: Connection) -> None:
    """The child: build and warm the reader, then answer one frame at a time until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # stdout may be the CLI's --json output: whatever the model's libraries print goes to
    # stderr, and so do the child's log lines.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    configure_logging(log_level, "auto", sys.stderr)
    rfd, wfd = requests.fileno(), responses.fileno()
    started = time.perf_counter()
    try:
        make = _load_factory(factory)
        if isinstance(options, LazyOptions):
            options = options.build()
        reader = make() if options is None else make(options)
        warm_up = getattr(reader, "warm_up", None)
        if callable(warm_up):
            warm_up()
    except BaseException as exc:
        _child_send(wfd, ("init_error", f"{type(exc).__name__}: {exc}"))
        return
    _child_send(wfd, ("ready", os.getpid(), time.perf_counter() - started, _peak_rss_kb()))
    while (message := _child_recv(rfd)) is not None and message[0] == "read":
        _, request_id, image = message
        began = time.perf_counter()
        try:
            reading = _plain_reading(reader.read(_as_bgr(image)))
        except Exception as exc:  # one bad frame is reported, the reader lives on
            _child_send(wfd, ("error", request_id, f"{type(exc).__name__}: {exc}",
                              _peak_rss_kb()))
            continue
        if reading["error"] is not None and not reading["candidates"]:
            _child_send(wfd, ("error", request_id, reading["error"], _peak_rss_kb()))
            continue
        reading["timings"].setdefault("read", (time.perf_counter() - began) * 1000)
        _child_send(wfd, ("result", request_id, reading, _peak_rss_kb()))


# --- real time ------------------------------------------------------------------------------
# The loop arms timers on its own clock only. Where that clock runs faster than real time (a
# simulated lot), a timer fires early and is armed again for the real time left; on a plain
# loop it fires once.


async def _wait_real(futures: Iterable[asyncio.Future[Any]], seconds: float) -> bool:
    """Wait until every future is done or `seconds` of real time have passed; whether all are."""
    end = time.monotonic() + seconds
    pending = {f for f in futures if not f.done()}
    while pending and (left := end - time.monotonic()) > 0:
        _, pending = await asyncio.wait(pending, timeout=left)
    return not pending


async def _within_real(aw: Awaitable[T], seconds: float) -> T:
    """`asyncio.wait_for` in real seconds: the result, or TimeoutError with `aw` cancelled."""
    task = asyncio.ensure_future(aw)
    try:
        done = await _wait_real([task], seconds)
    except BaseException:
        task.cancel()
        raise
    if not done:
        await cancel_and_wait(task)
        raise TimeoutError
    return task.result()


async def _sleep_real(seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:  # noqa: ASYNC110 (real time, not the loop's)
        await asyncio.sleep(left)


# --- the client -----------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Job:
    """One frame waiting for the child, and where its outcome goes."""

    image: npt.NDArray[np.uint8]
    index: int
    enqueued: float
    future: asyncio.Future[tuple[FrameStatus, ImageReading | None]]
    started: float | None = None

    def settle(self, status: FrameStatus, reading: ImageReading | None = None) -> None:
        if not self.future.done():
            self.future.set_result((status, reading))


@dataclass(slots=True)
class _Child:
    process: multiprocessing.process.BaseProcess
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    died: asyncio.Future[None]
    pid: int | None = None


class _ChildDied(Exception):
    pass


class PlateWorker:
    """A plate reader in a child process; see the module's docstring.

    `factory` is ``"module:callable"``; the callable is called in the child with `options`
    as its one argument (with none when `options` is None) and must return an object with
    ``read(image) -> FrameReading`` and optionally ``warm_up()``. `options` must pickle.
    """

    def __init__(
        self,
        factory: str = DEFAULT_FACTORY,
        options: Any = None,
        *,
        queue_size: int = 8,
        timeout_s: float = 2.0,
        threshold: float = DEFAULT_THRESHOLD,
        char_threshold: float = 0.0,
        formats: Sequence[PlateFormat] = (),
        hang_s: float | None = None,
        start_timeout_s: float = 300.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        on_alarm: AlarmHook | None = None,
        capture: CaptureStore | None = None,
        log_level: str = "info",
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._factory = factory
        self._options = options
        self._queue_size = queue_size
        self._timeout_s = timeout_s
        self._threshold = threshold
        self._char_threshold = char_threshold
        self._formats = tuple(formats)
        self._hang_s = hang_s if hang_s is not None else max(10.0, 5 * timeout_s)
        self._start_timeout_s = start_timeout_s
        self._backoff_min, self._backoff_max = backoff_s
        self._on_alarm = on_alarm
        self._capture = capture
        self._log_level = log_level
        self._pending: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._ready = asyncio.Event()
        self._child: _Child | None = None
        self._inflight: _Job | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._first_start: asyncio.Future[float] | None = None
        self._state = "new"
        self._closing = False
        self._latencies: deque[float] = deque(maxlen=1000)
        self._recent: OrderedDict[Hashable, ImageReading] = OrderedDict()
        self._peak_rss_kb = 0
        self._warmup_s: float | None = None
        self._counts = dict.fromkeys(("restarts", "crashes", "hangs", "drops", "timeouts",
                                      "bad_frames", "reader_errors", "frames_read", "requests"),
                                     0)

    @classmethod
    def from_settings(
        cls,
        config: LprConfig,
        *,
        clock: Clock | None = None,
        on_alarm: AlarmHook | None = None,
        factory: str = DEFAULT_FACTORY,
        options: Any = None,
    ) -> PlateWorker:
        """A worker as the `[lpr]` section says: formats, threshold, queue, timeout, capture.

        With the default factory and no `options`, the reader is built with the formats,
        localizer, engine, networks and weights as the section says (``ReaderOptions(...)``,
        built in the child).
        """
        if options is None and factory == DEFAULT_FACTORY:
            options = LazyOptions(DEFAULT_OPTIONS, {
                "formats": tuple(config.formats), "localizer": config.localizer,
                "detector_side": config.detector_side,
                "engine": config.engine, "networks": config.recognizer_networks,
                "weights": config.recognizer_weights})
        capture = None
        if config.capture_dir is not None:
            capture = CaptureStore(config.capture_dir, max_mb=config.capture_max_mb,
                                   max_age_h=config.capture_max_age_h,
                                   clock=clock if clock is not None else SystemClock())
        return cls(factory, options, queue_size=config.queue_size, timeout_s=config.timeout_s,
                   threshold=config.consensus_threshold,
                   char_threshold=config.min_char_confidence, formats=formats_for(config.formats),
                   on_alarm=on_alarm, capture=capture)

    # --- lifecycle

    async def start(self) -> float:
        """Spawn the child, build and warm up the reader; return the warm-up time in seconds.

        Raises `WorkerStartError` if the first start fails; later crashes restart by themselves.
        """
        if self._supervisor is not None:
            raise RuntimeError("PlateWorker.start() was already called")
        self._state = "starting"
        self._first_start = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name="lpr-worker")
        try:
            warmup = await self._first_start
        except WorkerStartError:
            await self.close()
            raise
        log.info("lpr_worker_ready", warmup_s=round(warmup, 3), pid=self._child_pid())
        return warmup

    async def close(self) -> None:
        """Stop the child (asking first, then killing) and settle every waiting frame."""
        self._closing = True
        self._state = "closed"
        while self._pending:
            self._pending.popleft().settle("closed")
        if self._inflight is not None:
            self._inflight.settle("closed")
        if self._first_start is not None and not self._first_start.done():
            self._first_start.set_exception(WorkerStartError("closed while starting"))
        self._wakeup.set()
        await cancel_and_wait(self._supervisor)
        if self._child is not None:
            await self._stop_child(self._child, polite=True)
            self._child = None

    async def __aenter__(self) -> PlateWorker:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- reading

    async def read_frames(
        self, frames: Sequence[Frame], deadline_s: float | None = None
    ) -> PlateResult:
        """One plate from the frames of one vehicle's passage (a `PlateSource`).

        `deadline_s` is a budget in real seconds from now (default: the worker's `timeout_s`).
        A frame read before (the same camera, sequence and stamp: a lane asking again with one
        more frame) is not read again: its reading is remembered for a while.
        """
        keys = [_frame_key(f) for f in frames]
        return await self.read_images([frame.image for frame in frames], deadline_s,
                                      camera_id=frames[0].camera_id if frames else None,
                                      keys=keys)

    async def read_images(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        deadline_s: float | None = None,
        *,
        camera_id: str | None = None,
        keys: Sequence[Hashable] | None = None,
    ) -> PlateResult:
        """`read_frames` for bare images (the CLI, benchmarks); `keys` name them for reuse."""
        began = time.monotonic()
        self._counts["requests"] += 1
        if not images:
            return PlateResult(None, 0.0, reason="no_frames")
        outcomes = await self._read_all(images, self._timeout_s if deadline_s is None
                                        else deadline_s, keys)
        reads = [
            replace(read, frame=i)
            for i, (status, reading) in enumerate(outcomes)
            if status == "read" and reading is not None
            for read in reading.candidates
        ]
        statuses = [status for status, _ in outcomes]
        timings = self._timings(outcomes, (time.monotonic() - began) * 1000)
        used = statuses.count("read")
        if not reads:
            reason = "no_read" if used else _failure_reason(statuses)
            return PlateResult(None, 0.0, reason=reason, frames_used=used,
                               frames_total=len(images), timings_ms=timings)
        consensus = vote(reads, threshold=self._threshold, formats=self._formats,
                         char_threshold=self._char_threshold)
        result = PlateResult.from_consensus(consensus, frames_used=used,
                                            frames_total=len(images), timings_ms=timings)
        if result.plate is None and self._capture is not None:
            self._capture.save(result, camera_id=camera_id)
        return result

    async def read_image(
        self, image: npt.NDArray[np.uint8], deadline_s: float | None = None
    ) -> ImageReading:
        """The reader's raw candidates for one image, with no consensus (for evaluation).

        Raises `BadImage` for an image that cannot be a frame, TimeoutError past the deadline,
        and RuntimeError when the frame was dropped or the worker failed on it.
        """
        (status, reading), = await self._read_all([check_image(image)],
                                                  self._timeout_s if deadline_s is None
                                                  else deadline_s, None)
        if status == "timeout":
            raise TimeoutError("the plate reader did not answer in time")
        if reading is None:
            raise RuntimeError(f"the plate reader could not read the image: {status}")
        return reading

    async def _read_all(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        deadline_s: float,
        keys: Sequence[Hashable] | None,
    ) -> list[tuple[FrameStatus, ImageReading | None]]:
        loop = asyncio.get_running_loop()
        jobs: list[_Job] = []
        outcomes: list[tuple[FrameStatus, ImageReading | None] | None] = []
        for i, image in enumerate(images):
            key = keys[i] if keys is not None else None
            if key is not None and (known := self._recent.get(key)) is not None:
                outcomes.append(("read", replace(known, timings_ms={})))
                continue
            try:
                checked = check_image(image)
            except BadImage as exc:
                self._counts["bad_frames"] += 1
                log.warning("lpr_bad_frame", index=i, error=str(exc))
                outcomes.append(("bad_image", None))
                continue
            job = _Job(checked, i, time.monotonic(), loop.create_future())
            jobs.append(job)
            outcomes.append(None)
            self._enqueue(job)
        if jobs:
            try:
                on_time = await _wait_real([j.future for j in jobs], deadline_s)
            finally:  # on time, late, or cancelled with the lane's task: nothing stays queued
                abandoned = [job for job in jobs if not job.future.done()]
                for job in abandoned:
                    job.settle("timeout")
                    with contextlib.suppress(ValueError):
                        self._pending.remove(job)
            if not on_time:
                self._counts["timeouts"] += 1
        for job in jobs:
            outcomes[job.index] = outcome = job.future.result()
            if keys is not None and outcome[0] == "read" and outcome[1] is not None:
                self._remember(keys[job.index], outcome[1])
        return [o if o is not None else ("closed", None) for o in outcomes]

    def _remember(self, key: Hashable, reading: ImageReading) -> None:
        self._recent[key] = reading
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_READINGS:
            self._recent.popitem(last=False)

    def _enqueue(self, job: _Job) -> None:
        if self._closing or self._state in ("failed", "closed", "new"):
            job.settle("closed")
            return
        while len(self._pending) >= self._queue_size:
            dropped = self._pending.popleft()
            dropped.settle("dropped")
            self._counts["drops"] += 1
            log.warning("lpr_frame_dropped", queue_size=self._queue_size,
                        waited_ms=round((job.enqueued - dropped.enqueued) * 1000, 1))
        self._pending.append(job)
        self._wakeup.set()

    def _timings(self, outcomes: list[tuple[FrameStatus, ImageReading | None]],
                 total_ms: float) -> dict[str, float]:
        summed: dict[str, float] = {}
        for status, reading in outcomes:
            if status == "read" and reading is not None:
                for stage, ms in reading.timings_ms.items():
                    summed[stage] = summed.get(stage, 0.0) + ms
        summed["total"] = total_ms
        return {stage: round(ms, 2) for stage, ms in summed.items()}

    # --- health

    def stats(self) -> WorkerStats:
        return WorkerStats(
            state=self._state,
            pid=self._child_pid(),
            warmup_s=None if self._warmup_s is None else round(self._warmup_s, 3),
            queue_depth=len(self._pending),
            p50_ms=_rounded(percentile(self._latencies, 0.50)),
            p95_ms=_rounded(percentile(self._latencies, 0.95)),
            peak_rss_mb=round(self._peak_rss_kb / 1024, 1) if self._peak_rss_kb else None,
            **self._counts,
        )

    def _child_pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    # --- the supervisor: spawn, serve, restart

    async def _supervise(self) -> None:
        policy = Backoff(self._backoff_min, self._backoff_max)
        delays = policy.delays()
        while not self._closing:
            began = time.monotonic()
            try:
                self._child = await self._spawn()
                warmup = await self._await_ready(self._child)
            except WorkerStartError as exc:
                if self._first_start is not None and not self._first_start.done():
                    self._state = "failed"
                    self._first_start.set_exception(exc)
                    return
                await self._note_failure("lpr_worker_start_failed", str(exc))
            else:
                self._warmup_s = warmup
                self._state = "ready"
                if self._first_start is not None and not self._first_start.done():
                    self._first_start.set_result(warmup)
                cause = await self._serve(self._child)
                await self._note_failure(f"lpr_worker_{cause}",
                                         f"plate reader {cause}; restarting")
            if self._child is not None:
                await self._stop_child(self._child, polite=False)
                self._child = None
            if self._closing:
                return
            # A child that ran well for a while earns a fresh, short backoff.
            if time.monotonic() - began > 10 * self._backoff_max:
                delays = policy.delays()
            self._state = "restarting"
            await _sleep_real(next(delays))
            self._counts["restarts"] += 1

    async def _note_failure(self, code: str, detail: str) -> None:
        log.error(code, detail=detail, restarts=self._counts["restarts"])
        if self._on_alarm is not None:
            try:
                outcome = self._on_alarm(code, detail)
                if outcome is not None:
                    await outcome
            except Exception:  # an alarm sink that fails must not stop the restarts
                log.exception("lpr_alarm_hook_failed", code=code)

    async def _spawn(self) -> _Child:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")
        req_r, req_w = ctx.Pipe(duplex=False)
        resp_r, resp_w = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child_main, name="lpr-reader", daemon=True,
                              args=(self._factory, self._options, self._log_level, req_r, resp_w))
        try:
            process.start()
        except Exception as exc:
            for conn in (req_r, req_w, resp_r, resp_w):
                conn.close()
            raise WorkerStartError(f"cannot start the reader process: {exc}") from exc
        finally:
            req_r.close()  # the child's ends: only the child may hold them, or EOF never comes
            resp_w.close()
        reader = asyncio.StreamReader(limit=1 << 16)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), resp_r)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                            req_w)
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        died: asyncio.Future[None] = loop.create_future()
        sentinel = process.sentinel

        def on_exit() -> None:
            loop.remove_reader(sentinel)
            if not died.done():
                died.set_result(None)

        loop.add_reader(sentinel, on_exit)
        return _Child(process, reader, writer, died)

    async def _await_ready(self, child: _Child) -> float:
        try:
            message = await _within_real(self._receive(child), self._start_timeout_s)
        except TimeoutError:
            raise WorkerStartError(
                f"the reader did not warm up within {self._start_timeout_s:.0f} s") from None
        except _ChildDied:
            raise WorkerStartError(
                f"the reader process died while starting (exit code"
                f" {child.process.exitcode})") from None
        if message[0] == "init_error":
            raise WorkerStartError(f"the reader failed to start: {message[1]}")
        _, child.pid, warmup, rss_kb = message
        self._peak_rss_kb = max(self._peak_rss_kb, rss_kb)
        return float(warmup)

    async def _receive(self, child: _Child) -> Any:
        try:
            header = await child.reader.readexactly(_HEADER.size)
            payload = await child.reader.readexactly(_HEADER.unpack(header)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _ChildDied from None
        return pickle.loads(payload)

    async def _next_job(self, child: _Child) -> _Job | None:
        """The oldest waiting frame; None if the child died while idle."""
        while not self._pending:
            self._wakeup.clear()
            waiter = asyncio.ensure_future(self._wakeup.wait())
            either: list[asyncio.Future[Any]] = [waiter, child.died]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if child.died.done():
                return None
        return self._pending.popleft()

    async def _serve(self, child: _Child) -> str:
        """Feed the child one frame at a time until it dies or hangs; return which."""
        while True:
            job = await self._next_job(child)
            if job is None:
                self._counts["crashes"] += 1
                return "crashed"
            job.started = time.monotonic()
            self._inflight = job
            payload = pickle.dumps(("read", id(job), job.image), protocol=_PICKLE)
            try:
                child.writer.write(_HEADER.pack(len(payload)))
                child.writer.write(payload)
                message = await _within_real(self._answer(child), self._hang_s)
            except (_ChildDied, ConnectionError):
                self._counts["crashes"] += 1
                job.settle("crashed")
                return "crashed"
            except TimeoutError:
                self._counts["hangs"] += 1
                job.settle("crashed")
                return "hung"
            self._inflight = None
            self._settle(job, message, (time.monotonic() - job.started) * 1000)

    async def _answer(self, child: _Child) -> Any:
        await child.writer.drain()
        return await self._receive(child)

    def _settle(self, job: _Job, message: Any, roundtrip_ms: float) -> None:
        kind = message[0]
        self._peak_rss_kb = max(self._peak_rss_kb, message[-1])
        self._latencies.append(roundtrip_ms)
        if kind == "error":
            self._counts["reader_errors"] += 1
            log.warning("lpr_reader_error", error=message[2])
            job.settle("error", ImageReading((), {}, message[2]))
            return
        reading = message[2]
        self._counts["frames_read"] += 1
        reads = tuple(PlateRead(c["text"], c["confidence"], c["char_confidences"], c["box"],
                                job.index, c["crop_png"], rank)
                      for rank, c in enumerate(reading["candidates"]))
        waited = (job.started or job.enqueued) - job.enqueued
        timings = {**reading["timings"], "queue": waited * 1000, "roundtrip": roundtrip_ms}
        job.settle("read", ImageReading(reads, timings, reading["error"],
                                        tuple(reading["searched"])))

    async def _stop_child(self, child: _Child, *, polite: bool) -> None:
        """Ask the child to stop (close its input), then terminate, then kill; reap it."""
        process = child.process
        with contextlib.suppress(Exception):
            child.writer.close()
        steps: tuple[tuple[Callable[[], None], float], ...] = (
            (_closed_input_suffices, 2.0 if polite else 0.2),
            (process.terminate, 1.0),
            (process.kill, 5.0),
        )
        for stop, grace in steps:
            if process.exitcode is not None:
                break
            with contextlib.suppress(OSError):
                stop()
            await _wait_real([child.died], grace)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join(0)  # reaps; the sentinel said it has exited
        child.reader.feed_eof()
        transport = getattr(child.reader, "_transport", None)
        if transport is not None:
            transport.close()
        with contextlib.suppress(Exception):
            await child.writer.wait_closed()
        with contextlib.suppress(ValueError):  # still running after a kill: left to init
            process.close()


def _frame_key(frame: Frame) -> Hashable:
    """Names one frame: its camera, sequence and stamp, and a checksum of every 16th row.

    The checksum (a tenth of a millisecond for a 1280 px frame) guards against a camera whose
    sequence restarted under a frozen clock handing a different image under an old name.
    """
    sample = np.ascontiguousarray(frame.image[::16])
    return (frame.camera_id, frame.sequence, frame.at.boot_id, frame.at.mono,
            frame.image.shape, zlib.crc32(sample.data))


def _closed_input_suffices() -> None:
    """The first way to stop a child: its input is closed, so it ends its loop and exits."""


def _failure_reason(statuses: Sequence[FrameStatus]) -> Reason:
    """Why no frame was read, from what happened to them, the most telling first."""
    for status, reason in (("crashed", "worker_crashed"), ("timeout", "timeout"),
                           ("error", "reader_error"), ("dropped", "dropped"),
                           ("bad_image", "bad_image"), ("closed", "worker_unavailable")):
        if status in statuses:
            return reason  # type: ignore[return-value]
    return "no_read"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)

