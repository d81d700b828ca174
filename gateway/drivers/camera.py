"""Plate cameras as frame sources: OpenCV VideoCapture streams and HTTP snapshot cameras.

A lane wants the newest frame, never a backlog: a stream is read in its own thread as fast as
the camera sends, and each frame replaces the one before (no queue grows, whatever the lane
does). A snapshot camera is polled. Either way:

* a lost connection is retried with exponential backoff, forever, and counted;
* a camera that stops sending, or keeps sending the same picture (a frozen encoder), goes
  *stale* after ``stale_after_s``: ``latest()`` is then None and ``health.stale`` is True;
* a frame that cannot be decoded is counted and logged, never raised;
* with an alarm sink, a camera that has not answered for ``unreachable_alarm_s`` raises
  ``camera.unreachable:<camera>``, and one that answers but has sent no new frame for
  ``stale_alarm_s`` raises ``camera.stale:<camera>`` (warnings: the lane goes on, through the
  intercom); each clears when its condition ends.

Timestamps and staleness use the event loop's clock and the injected Clock, so the simulator
can run them on its virtual-time loop; only the stream reader thread, which waits on the real
camera, uses real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import structlog

from gateway.config import CameraConfig, CaptureKind
from gateway.core.clock import Clock
from gateway.core.records import Alarm
from gateway.drivers import AlarmLatch, AlarmSink, Frame, FrameSource
from gateway.drivers.image import MAX_BYTES, BadImage, decode_image
from gateway.runtime.aio import Backoff, cancel_and_wait

log = structlog.get_logger(__name__)

Image = npt.NDArray[np.uint8]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


@dataclass
class CameraHealth:
    """Counters a technician (and the status command) reads; they only ever grow."""

    frames: int = 0  # new frames published
    repeats: int = 0  # frames identical to the one before (a frozen camera)
    corrupt: int = 0  # frames that could not be decoded
    errors: int = 0  # failed connects, reads and requests
    reconnects: int = 0
    stale_periods: int = 0  # times the camera went stale
    stale: bool = True  # no fresh frame within the bound (True until the first frame)
    connected: bool = False
    last_error: str | None = None


RECONNECT = Backoff(initial_s=0.5, max_s=30.0)  # between reopenings of a lost camera
CLOSE_WAIT_S = 1.0  # the longest a stop waits for a camera's reader thread
CHECK_S = 1.0  # how often a camera's alarms are checked (at most)


def _fingerprint(image: Image) -> bytes:
    """A cheap digest of a frame, to tell a frozen camera from a live one."""
    sample = np.ascontiguousarray(image[::8, ::8])
    return hashlib.blake2b(sample.tobytes(), digest_size=16).digest()


class _LatestFrame:
    """The loop side shared by every source: one slot, staleness, and waiters for a newer frame."""

    def __init__(
        self,
        camera_id: str,
        clock: Clock,
        *,
        stale_after_s: float,
        detect_repeats: bool,
        alarms: AlarmSink | None = None,
        unreachable_alarm_s: float = 60.0,
        stale_alarm_s: float = 60.0,
    ) -> None:
        if min(stale_after_s, unreachable_alarm_s, stale_alarm_s) <= 0:
            raise ValueError("stale_after_s and the alarm delays must be > 0")
        self.camera_id = camera_id
        self.health = CameraHealth()
        self._clock = clock
        self._stale_after_s = stale_after_s
        self._detect_repeats = detect_repeats
        self._alarms = AlarmLatch(alarms, "camera", camera=camera_id)
        self._unreachable_alarm_s = unreachable_alarm_s
        self._stale_alarm_s = stale_alarm_s
        self._started_at: float | None = None  # loop time
        self._failing_since: float | None = None  # loop time of the first failure since an answer
        self._watch_task: asyncio.Task[None] | None = None
        self._frame: Frame | None = None
        self._fresh_at: float | None = None  # loop time of the newest frame that was new
        self._fingerprint: bytes | None = None
        self._sequence = 0
        self._returned = 0  # the newest sequence handed out
        self._new_frame: asyncio.Event | None = None

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _start_watch(self) -> None:
        self._started_at = self._loop_time()
        self._watch_task = asyncio.ensure_future(self._watch())

    async def _stop_watch(self) -> None:
        await cancel_and_wait(self._watch_task)
        self._watch_task = None
        self._alarms.close()

    async def _watch(self) -> None:
        every_s = min(CHECK_S, self._unreachable_alarm_s / 4, self._stale_alarm_s / 4)
        while True:
            self.check_alarms()
            await asyncio.sleep(every_s)

    def check_alarms(self) -> None:
        """Raise or clear the camera's alarms for what it does now (its watch calls this)."""
        now = self._loop_time()
        unreachable_id, stale_id = (f"camera.unreachable:{self.camera_id}",
                                    f"camera.stale:{self.camera_id}")
        if self._failing_since is not None:
            down_s = now - self._failing_since
            if down_s >= self._unreachable_alarm_s:
                self._alarms.set(Alarm(
                    unreachable_id, "warning",
                    f"camera {self.camera_id} unreachable for over"
                    f" {self._unreachable_alarm_s:g} s ({self.health.last_error}): its lane"
                    " sends every vehicle to the intercom",
                    {"camera": self.camera_id, "error": self.health.last_error or "",
                     "downS": round(down_s)}, component="camera"))
            return  # an unreachable camera sends nothing: not stale besides
        self._alarms.clear(unreachable_id, f"camera {self.camera_id} answers again")
        age = self.frame_age_s(now)
        if age is not None and age >= self._stale_alarm_s:
            self._alarms.set(Alarm(
                stale_id, "warning",
                f"camera {self.camera_id} answers but sent no new picture for over"
                f" {self._stale_alarm_s:g} s (frozen or covered): its lane sends every"
                " vehicle to the intercom",
                {"camera": self.camera_id, "repeats": self.health.repeats,
                 "frameAgeS": round(age)}, component="camera"))
        else:
            self._alarms.clear(stale_id, f"camera {self.camera_id} sends pictures again")

    def frame_age_s(self, now: float | None = None) -> float | None:
        """Seconds since the newest new frame, or since the start if none came; None before."""
        since = self._fresh_at if self._fresh_at is not None else self._started_at
        if since is None:
            return None
        return (self._loop_time() if now is None else now) - since

    def summary(self) -> dict[str, Any]:
        """The camera for `status`: connected, unreachable or stale, and its last frame's age."""
        if self._failing_since is not None:
            state = "unreachable"
        elif self._check_stale(self._loop_time()):
            state = "stale"
        else:
            state = "connected"
        age = self.frame_age_s() if self._fresh_at is not None else None
        return {"cameraId": self.camera_id, "state": state,
                "lastFrameAgeS": None if age is None else round(age, 1),
                "frames": self.health.frames, "errors": self.health.errors,
                "lastError": self.health.last_error}

    def _reached(self) -> None:
        """The camera answered (a frame, even a bad or repeated one)."""
        self._failing_since = None

    def _publish(self, image: Image, meta: dict[str, Any]) -> None:
        """Take a decoded frame (on the loop's thread)."""
        self._reached()
        now = self._loop_time()
        if self._detect_repeats:
            digest = _fingerprint(image)
            if digest == self._fingerprint:
                self.health.repeats += 1
                self._check_stale(now)
                return
            self._fingerprint = digest
        self._sequence += 1
        self._frame = Frame(self.camera_id, image, self._clock.stamp(), self._sequence,
                            meta=meta)
        self._fresh_at = now
        self.health.frames += 1
        if self.health.stale:
            self.health.stale = False
            log.info("camera.fresh", camera=self.camera_id)
        if self._new_frame is not None:
            self._new_frame.set()

    def _check_stale(self, now: float) -> bool:
        stale = self._fresh_at is None or now - self._fresh_at > self._stale_after_s
        if stale and not self.health.stale:
            self.health.stale = True
            self.health.stale_periods += 1
            log.warning("camera.stale", camera=self.camera_id, after_s=self._stale_after_s)
        return stale

    def latest(self) -> Frame | None:
        """The newest frame not older than the staleness bound, else None."""
        if self._check_stale(self._loop_time()) or self._frame is None:
            return None
        self._returned = max(self._returned, self._frame.sequence)
        return self._frame

    async def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame newer than any returned before, or None after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            frame = self._frame
            if (frame is not None and frame.sequence > self._returned
                    and not self._check_stale(loop.time())):
                self._returned = frame.sequence
                return frame
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._new_frame = self._new_frame or asyncio.Event()
            self._new_frame.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_frame.wait(), remaining)

    def _error(self, what: str, error: str) -> None:
        if self._failing_since is None:
            self._failing_since = self._loop_time()
        self.health.errors += 1
        self.health.last_error = f"{what}: {error}"
        log.warning("camera.error", camera=self.camera_id, what=what, error=error)


def _with_credentials(url: str, username: str | None, password: str | None) -> str:
    """The URL with the user and password in it, for OpenCV (which takes no other way)."""
    if username is None:
        return url
    parts = urlsplit(url)
    userinfo = quote(username, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    host = parts.hostname or ""
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


CaptureFactory = Callable[[str], Any]
"""Opens a cv2.VideoCapture-like object (isOpened, read, release, get); tests give a fake."""


class VideoCaptureSource(_LatestFrame):
    """An RTSP stream, a V4L2 device or a video file, read by OpenCV in a thread.

    The thread keeps only the newest decoded frame and wakes the loop once per frame; the loop
    stamps and publishes it. At the end of a file, or when a stream fails, the thread reopens
    the capture after a backoff (a file thus loops, like a camera that never stops). A file is
    played at its own frame rate.
    """

    def __init__(
        self,
        camera_id: str,
        url: str,
        *,
        clock: Clock,
        kind: CaptureKind | None = None,
        username: str | None = None,
        password: str | None = None,
        stale_after_s: float = 3.0,
        backoff: Backoff = RECONNECT,
        open_timeout_s: float = 5.0,
        detect_repeats: bool = True,
        capture_factory: CaptureFactory | None = None,
        alarms: AlarmSink | None = None,
        unreachable_alarm_s: float = 60.0,
        stale_alarm_s: float = 60.0,
    ) -> None:
        super().__init__(camera_id, clock, stale_after_s=stale_after_s,
                         detect_repeats=detect_repeats, alarms=alarms,
                         unreachable_alarm_s=unreachable_alarm_s, stale_alarm_s=stale_alarm_s)
        self.url = url  # no credentials: safe to log
        self.kind = kind or _guess_kind(url)
        self._open_url = _with_credentials(url, username, password)
        self._backoff = backoff
        self._open_timeout_ms = int(open_timeout_s * 1000)
        self._factory = capture_factory or self._open_capture
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._slot: Image | None = None
        self._wake_pending = False

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_forever,
                                        name=f"camera-{self.camera_id}", daemon=True)
        self._thread.start()
        self._start_watch()

    async def close(self) -> None:
        """Stop the reader thread and release the capture, waiting at most `CLOSE_WAIT_S`.

        A thread caught in OpenCV's open or read of an unreachable stream cannot be
        interrupted; it ends when that call times out, releases the capture and sees the stop.
        A stop does not wait for it (the thread is a daemon): it is logged instead.
        """
        self._stop.set()
        await self._stop_watch()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await asyncio.to_thread(thread.join, CLOSE_WAIT_S)
        if thread.is_alive():
            log.warning("camera.close_pending", camera=self.camera_id, waited_s=CLOSE_WAIT_S,
                        why="the capture is still opening or reading; it ends by itself")

    def _open_capture(self, url: str) -> Any:
        if self.kind == "v4l2":
            capture = cv2.VideoCapture(url, cv2.CAP_V4L2)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return capture
        if self.kind == "rtsp":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._open_timeout_ms,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._open_timeout_ms]
            return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        return cv2.VideoCapture(url)

    # -- reader thread ---------------------------------------------------------------------

    def _read_forever(self) -> None:
        delays = self._backoff.delays()
        first = True
        while not self._stop.is_set():
            if not first:
                self.health.reconnects += 1
            first = False
            try:
                read_any = self._read_capture()
            except Exception as exc:  # a broken backend must not kill the thread
                self._from_thread(self._error, "read", repr(exc))
                read_any = False
            self.health.connected = False
            if read_any:
                delays = self._backoff.delays()  # it worked for a while: start over
            if self._stop.wait(next(delays)):
                break

    def _read_capture(self) -> bool:
        """Open the capture and read it until it fails; whether any frame came."""
        capture = self._factory(self._open_url)
        read_any = False
        try:
            if not capture.isOpened():
                self._from_thread(self._error, "open", f"cannot open {self.url}")
                return False
            self.health.connected = True
            fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
            pace = 1.0 / fps if self.kind == "file" and 0 < fps <= 240 else 0.0
            while not self._stop.is_set():
                ok, image = capture.read()
                if not ok or image is None:
                    if self.kind != "file":  # the end of a file is no error
                        self._from_thread(self._error, "read", "no frame from capture")
                    return read_any
                if not _valid_image(image):
                    self._from_thread(self._corrupt, "frame with bad shape or type")
                    continue
                read_any = True
                self._offer(image)
                if pace and self._stop.wait(pace):
                    break
        finally:
            capture.release()
        return read_any

    def _offer(self, image: Image) -> None:
        """Replace the slot's frame; wake the loop unless a wake-up is already on its way."""
        with self._lock:
            self._slot = image
            if self._wake_pending:
                return
            self._wake_pending = True
        self._from_thread(self._take)

    def _take(self) -> None:
        with self._lock:
            image, self._slot = self._slot, None
            self._wake_pending = False
        if image is not None:
            self._publish(image, {"source": self.kind})

    def _corrupt(self, why: str) -> None:
        self._reached()
        self.health.corrupt += 1
        log.warning("camera.corrupt_frame", camera=self.camera_id, why=why)

    def _from_thread(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: shutting down
            loop.call_soon_threadsafe(callback, *args)


def _valid_image(image: Any) -> bool:
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0)


def _guess_kind(url: str) -> CaptureKind:
    if url.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if url.startswith("/dev/video"):
        return "v4l2"
    return "file"


class HttpSnapshotSource(_LatestFrame):
    """A camera with a JPEG snapshot URL, polled every ``interval_s`` through httpx."""

    def __init__(
        self,
        camera_id: str,
        url: str,
        *,
        clock: Clock,
        username: str | None = None,
        password: str | None = None,
        interval_s: float = 0.25,
        timeout_s: float = 3.0,
        stale_after_s: float = 3.0,
        backoff: Backoff = RECONNECT,
        transport: httpx.AsyncBaseTransport | None = None,
        alarms: AlarmSink | None = None,
        unreachable_alarm_s: float = 60.0,
        stale_alarm_s: float = 60.0,
    ) -> None:
        super().__init__(camera_id, clock, stale_after_s=stale_after_s, detect_repeats=True,
                         alarms=alarms, unreachable_alarm_s=unreachable_alarm_s,
                         stale_alarm_s=stale_alarm_s)
        self.url = url
        self._interval_s = interval_s
        self._backoff = backoff
        auth = None if username is None else _ChallengeAuth(username, password or "")
        self._client = httpx.AsyncClient(auth=auth, timeout=timeout_s, transport=transport,
                                         follow_redirects=True)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._poll_forever())
            self._start_watch()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._stop_watch()
        await self._client.aclose()

    async def _poll_forever(self) -> None:
        delays = self._backoff.delays()
        failing = False
        while True:
            ok = await self.snapshot()
            if ok:
                if failing:
                    self.health.reconnects += 1
                    log.info("camera.reconnected", camera=self.camera_id)
                failing = False
                delays = self._backoff.delays()
                await asyncio.sleep(self._interval_s)
            else:
                failing = True
                await asyncio.sleep(next(delays))

    async def snapshot(self) -> bool:
        """Fetch, decode and publish one snapshot; whether the camera answered with an image."""
        try:
            status, content = await self._fetch()
        except httpx.HTTPError as exc:
            self.health.connected = False
            self._error("request", f"{type(exc).__name__}: {exc}")
            self._check_stale(self._loop_time())
            return False
        if status != 200:
            self.health.connected = False
            self._error("request", f"HTTP {status}")
            self._check_stale(self._loop_time())
            return False
        self.health.connected = True
        self._reached()
        try:
            if content is None:
                raise BadImage(f"more than {MAX_BYTES // 2**20} MiB")
            image = await asyncio.to_thread(decode_image, content)
        except BadImage as exc:
            self.health.corrupt += 1
            log.warning("camera.corrupt_frame", camera=self.camera_id,
                        why=f"snapshot is not a usable image: {exc}",
                        size=None if content is None else len(content))
            self._check_stale(self._loop_time())
            return True  # the camera answered; a bad picture is no reason to back off
        self._publish(image, {"source": "http"})
        return True

    async def _fetch(self) -> tuple[int, bytes | None]:
        """The snapshot's status and body; None for a body over `MAX_BYTES` (not read further).

        The body comes from a device on the network: it is streamed and cut off at the cap,
        so a camera gone wrong cannot fill the controller's memory.
        """
        async with self._client.stream("GET", self.url) as response:
            if response.status_code != 200:
                return response.status_code, b""
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BYTES:
                return 200, None
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    return 200, None
            return 200, bytes(body)


class _ChallengeAuth(httpx.Auth):
    """Basic or Digest, whichever the camera's 401 challenge asks for."""

    def __init__(self, username: str, password: str) -> None:
        self._basic = httpx.BasicAuth(username, password)
        self._digest = httpx.DigestAuth(username, password)
        self._digest_wanted = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._digest_wanted:
            yield from self._digest.auth_flow(request)
            return
        basic = next(self._basic.auth_flow(request))
        response = yield basic
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("digest"):
            self._digest_wanted = True
            yield from self._digest.auth_flow(request)


def open_camera(
    camera_id: str, config: CameraConfig, *, clock: Clock, stale_after_s: float = 3.0,
    alarms: AlarmSink | None = None,
) -> FrameSource:
    """The frame source for a lane's camera config (not started)."""
    password = None if config.password is None else config.password.get_secret_value()
    if config.kind == "http":
        return HttpSnapshotSource(
            camera_id, config.url, clock=clock, username=config.username, password=password,
            stale_after_s=stale_after_s, alarms=alarms,
            unreachable_alarm_s=config.unreachable_alarm_s, stale_alarm_s=config.stale_alarm_s)
    still = config.kind == "file" and Path(config.url).suffix.lower() in IMAGE_SUFFIXES
    return VideoCaptureSource(
        camera_id, config.url, clock=clock, kind=config.kind, username=config.username,
        password=password, stale_after_s=stale_after_s,
        # A still image is the same picture every time: that is no frozen camera.
        detect_repeats=not still, alarms=alarms,
        unreachable_alarm_s=config.unreachable_alarm_s, stale_alarm_s=config.stale_alarm_s,
    )
