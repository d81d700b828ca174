"""Camera frame sources: a video file through OpenCV in a thread, and HTTP snapshots."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from gateway.config import CameraConfig
from gateway.core.clock import FakeClock
from gateway.drivers import FrameSource, camera
from gateway.drivers.camera import HttpSnapshotSource, VideoCaptureSource, open_camera
from gateway.runtime.aio import Backoff

FAST = Backoff(initial_s=0.01, max_s=0.05)


def image(value: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    w, h = size
    frame = np.full((h, w, 3), value % 256, np.uint8)
    cv2.putText(frame, str(value), (2, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 0, 0), 2)
    return frame


def write_video(path: Path, frames: int, *, same: bool = False, fps: float = 50.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(image(0 if same else 20 * i))
    writer.release()
    return path


def camera_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("camera-")]


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for a counter a reader thread bumps (it has no event to await)."""
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 (counters bumped by a thread; no event)
            await asyncio.sleep(0.01)


async def test_video_file_gives_the_newest_frames_and_loops(tmp_path: Path) -> None:
    video = write_video(tmp_path / "lane.avi", 6)
    source: FrameSource = VideoCaptureSource("entry-1", str(video), clock=FakeClock(),
                                             backoff=FAST)
    assert isinstance(source, VideoCaptureSource)
    await source.start()
    try:
        first = await source.next_frame(3.0)
        second = await source.next_frame(3.0)
        assert first is not None
        assert second is not None
        assert second.sequence > first.sequence
        assert first.camera_id == "entry-1"
        assert first.image.shape == (48, 64, 3)
        assert first.truth is None
        assert first.meta["source"] == "file"
        assert source.latest() is not None
        await until(lambda: source.health.reconnects >= 1)  # the end of the file: it replays
        assert source.health.errors == 0
    finally:
        await source.close()
    assert camera_threads() == []


async def test_a_frozen_camera_goes_stale(tmp_path: Path) -> None:
    video = write_video(tmp_path / "frozen.avi", 50, same=True, fps=25.0)
    source = VideoCaptureSource("entry-1", str(video), clock=FakeClock(), stale_after_s=0.3,
                                backoff=FAST)
    await source.start()
    try:
        assert await source.next_frame(3.0) is not None
        await until(lambda: source.health.repeats > 5)
        await asyncio.sleep(0.35)
        assert source.latest() is None
        assert source.health.stale
        assert source.health.stale_periods == 1
        assert await source.next_frame(0.1) is None
    finally:
        await source.close()


async def test_a_missing_camera_is_retried_with_backoff(tmp_path: Path) -> None:
    source = VideoCaptureSource("exit-1", str(tmp_path / "nothing.avi"), clock=FakeClock(),
                                backoff=FAST)
    await source.start()
    try:
        await until(lambda: source.health.errors >= 3 and source.health.reconnects >= 2)
        assert source.latest() is None
        assert source.health.stale
        assert not source.health.connected
        assert source.health.last_error is not None
        assert "cannot open" in source.health.last_error
    finally:
        await source.close()
    assert camera_threads() == []


async def test_a_stop_does_not_wait_for_a_camera_stuck_opening(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable RTSP camera holds its thread in OpenCV's open for seconds: stops don't."""
    monkeypatch.setattr(camera, "CLOSE_WAIT_S", 0.2)
    opening, release = threading.Event(), threading.Event()

    def stuck_open(url: str) -> Any:
        opening.set()
        release.wait(10)  # OpenCV's open timeout, as far as the thread can tell
        return FlakyCapture([])

    source = VideoCaptureSource("entry-1", "rtsp://10.9.9.9/stream", clock=FakeClock(),
                                backoff=FAST, capture_factory=stuck_open)
    await source.start()
    try:
        assert await asyncio.to_thread(opening.wait, 5)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await source.close()
        assert loop.time() - began < 1.0
    finally:
        release.set()  # the open "times out"; the thread sees the stop and ends
    await until(lambda: camera_threads() == [])


class FlakyCapture:
    """A capture that sends a bad frame, then good ones, then fails."""

    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def read(self) -> tuple[bool, Any]:
        if not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def release(self) -> None:
        pass


async def test_corrupt_frames_are_counted_not_raised() -> None:
    opened: list[str] = []

    def factory(url: str) -> FlakyCapture:
        opened.append(url)
        return FlakyCapture([np.zeros((4, 4), np.float32), image(1), image(2)])

    source = VideoCaptureSource("entry-1", "rtsp://10.0.0.9/stream", clock=FakeClock(),
                                username="gw", password="p@ss", backoff=FAST,
                                capture_factory=factory)
    await source.start()
    try:
        assert await source.next_frame(3.0) is not None
        await until(lambda: source.health.corrupt >= 1 and source.health.errors >= 1)
        assert opened[0] == "rtsp://gw:p%40ss@10.0.0.9/stream"  # credentials for OpenCV only
        assert "p%40ss" not in source.url
    finally:
        await source.close()


def jpeg(value: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image(value))
    assert ok
    return data.tobytes()


async def test_snapshot_camera_polls_and_authenticates() -> None:
    counter = 0
    seen_auth: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal counter
        seen_auth.append(request.headers.get("authorization"))
        counter += 1
        return httpx.Response(200, content=jpeg(counter * 40))

    source = HttpSnapshotSource("entry-2", "http://cam.test/snapshot.jpg", clock=FakeClock(),
                                username="gw", password="secret", interval_s=0.01,
                                transport=httpx.MockTransport(handler))
    await source.start()
    try:
        first = await source.next_frame(3.0)
        second = await source.next_frame(3.0)
        assert first is not None
        assert second is not None
        assert second.sequence > first.sequence
        assert first.meta == {"source": "http"}
        assert seen_auth[0] == "Basic " + base64.b64encode(b"gw:secret").decode()
    finally:
        await source.close()


async def test_snapshot_camera_backs_off_and_reconnects() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 3:
            return httpx.Response(503)
        if calls == 4:
            raise httpx.ConnectError("camera rebooting", request=request)
        if calls == 5:
            return httpx.Response(200, content=b"<html>not a picture</html>")
        return httpx.Response(200, content=jpeg(calls))

    source = HttpSnapshotSource("entry-2", "http://cam.test/snap", clock=FakeClock(),
                                interval_s=0.01, backoff=FAST,
                                transport=httpx.MockTransport(handler))
    await source.start()
    try:
        assert await source.next_frame(5.0) is not None
        health = source.health
        assert (health.errors, health.corrupt, health.reconnects) == (4, 1, 1)
        assert health.last_error == "request: ConnectError: camera rebooting"
    finally:
        await source.close()


@pytest.mark.parametrize("declare_length", [True, False], ids=["declared", "streamed"])
async def test_an_oversized_or_truncated_snapshot_is_corrupt_not_read_whole(
        monkeypatch: pytest.MonkeyPatch, declare_length: bool) -> None:
    """A camera gone wrong sends megabytes of junk, or half a JPEG: counted, never decoded."""
    monkeypatch.setattr(camera, "MAX_BYTES", 50_000)
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1000):  # 10 MB if it were read to the end
            sent.append(10_000)
            yield b"\xff" * 10_000

    oversized = (httpx.Response(200, content=b"\xff" * 60_000) if declare_length
                 else httpx.Response(200, content=endless()))  # no Content-Length
    replies = iter([oversized, httpx.Response(200, content=jpeg(3)[:300])])  # then truncated

    def handler(request: httpx.Request) -> httpx.Response:
        return next(replies, None) or httpx.Response(200, content=jpeg(4))

    source = HttpSnapshotSource("entry-2", "http://cam.test/snap", clock=FakeClock(),
                                interval_s=0.01, backoff=FAST,
                                transport=httpx.MockTransport(handler))
    await source.start()
    try:
        assert await source.next_frame(5.0) is not None
        assert source.health.corrupt == 2  # the oversized one and the truncated one
        assert sum(sent) <= 70_000  # cut off at the cap, not read to the end
    finally:
        await source.close()


async def test_snapshot_camera_showing_the_same_picture_goes_stale() -> None:
    picture = jpeg(7)
    source = HttpSnapshotSource("entry-2", "http://cam.test/snap", clock=FakeClock(),
                                interval_s=0.01, stale_after_s=0.2,
                                transport=httpx.MockTransport(
                                    lambda request: httpx.Response(200, content=picture)))
    await source.start()
    try:
        assert await source.next_frame(3.0) is not None
        await asyncio.sleep(0.3)
        assert source.latest() is None
        assert source.health.stale
        assert source.health.repeats > 3
    finally:
        await source.close()


async def test_open_camera_picks_the_source_for_the_url(tmp_path: Path) -> None:
    clock = FakeClock()
    http = open_camera("a", CameraConfig(url="http://10.0.0.2/snap.jpg"), clock=clock)
    rtsp = open_camera("b", CameraConfig(url="rtsp://10.0.0.3/live"), clock=clock)
    still = open_camera("c", CameraConfig(url=str(tmp_path / "still.jpg")), clock=clock)
    assert isinstance(http, HttpSnapshotSource)
    assert isinstance(rtsp, VideoCaptureSource)
    assert rtsp.kind == "rtsp"
    assert isinstance(still, VideoCaptureSource)
    assert still.kind == "file"
    await http.close()


@pytest.mark.parametrize("stale_after_s", [0.0, -1.0])
def test_staleness_bound_must_be_positive(stale_after_s: float) -> None:
    with pytest.raises(ValueError, match="stale_after_s"):
        VideoCaptureSource("a", "/x.avi", clock=FakeClock(), stale_after_s=stale_after_s)
