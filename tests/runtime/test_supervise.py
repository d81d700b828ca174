"""gateway.runtime.supervise: a failing part is restarted with the backoff, alarmed, reported."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest
import structlog

from gateway.runtime import supervise as supervision
from gateway.runtime.aio import Backoff
from gateway.runtime.supervise import FORCED_EXIT, Part, StopDeadline, supervise


async def test_a_failing_part_is_restarted_longer_each_time_and_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(supervision.asyncio, "sleep", sleep)
    part = Part("bus")
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 4:
            await real_sleep(3600)  # the fourth start stays up
        raise OSError(f"port gone {runs}")

    task = asyncio.create_task(supervise(part, work, backoff=Backoff(0.5, 1.5)))
    while runs < 4:
        await real_sleep(0.001)
    assert part.running
    assert (part.restarts, part.last_error) == (3, "OSError('port gone 3')")
    assert slept == [0.5, 1.0, 1.5]  # doubling, capped
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not part.running


async def test_a_part_that_ran_a_good_while_restarts_quickly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep
    now = [0.0]
    ran_for = [1.0, 198.0, 1.0]  # how long each run lasts before it fails

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(supervision.asyncio, "sleep", sleep)
    monkeypatch.setattr(supervision.time, "monotonic", lambda: now[0])
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 4:
            raise asyncio.CancelledError
        now[0] += ran_for[runs - 1]
        raise RuntimeError("bug")

    with pytest.raises(asyncio.CancelledError):
        await supervise(Part("lane"), work, backoff=Backoff(0.5, 30.0))
    # ran 1 s: 0.5; ran 198 s (healthy): back to 0.5; ran 1 s: doubled to 1.0
    assert slept == [0.5, 0.5, 1.0]


async def test_a_failure_calls_on_failed_and_a_healthy_while_on_recovered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        await real_sleep(0)

    monkeypatch.setattr(supervision.asyncio, "sleep", sleep)
    calls: list[tuple[str, int, str | None]] = []

    async def failed(part: Part) -> None:
        calls.append(("failed", part.restarts, part.last_error))

    async def recovered(part: Part) -> None:
        calls.append(("recovered", part.restarts, part.last_error))

    runs = 0
    settled = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise OSError("bus port gone")
        if runs == 2:
            return  # a part that just ends is restarted too
        settled.set()
        await real_sleep(3600)

    part = Part("bus")
    task = asyncio.create_task(supervise(part, work, backoff=Backoff(0.01, 0.01),
                                         on_failed=failed, on_recovered=recovered,
                                         healthy_after_s=0.05))
    await settled.wait()
    assert calls == [("failed", 1, "OSError('bus port gone')"), ("failed", 2, "ended")]
    assert part.failing
    await real_sleep(0.2)
    assert calls[-1] == ("recovered", 2, "ended")
    assert not part.failing
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_failing_hook_does_not_stop_the_supervision() -> None:
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("bug")
        await asyncio.sleep(3600)

    async def failed(part: Part) -> None:
        raise OSError("journal full")

    task = asyncio.create_task(supervise(Part("x"), work, backoff=Backoff(0.001, 0.001),
                                         on_failed=failed))
    for _ in range(200):
        if runs == 3:
            break
        await asyncio.sleep(0.005)
    assert runs == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_stop_deadline_exits_and_says_which_threads_were_left() -> None:
    exits: list[int] = []
    done = threading.Event()

    def exit(code: int) -> None:
        exits.append(code)
        done.set()

    stuck = threading.Event()
    worker = threading.Thread(target=stuck.wait, name="bus-reader")
    worker.start()
    try:
        with structlog.testing.capture_logs() as logs:
            StopDeadline(0.05, exit=exit).start()
            assert done.wait(5)
        assert exits == [FORCED_EXIT]
        [forced] = [entry for entry in logs if entry["event"] == "gateway.stop_forced"]
        assert "bus-reader" in forced["threads"]
    finally:
        stuck.set()
        worker.join()


def test_a_stop_in_time_cancels_the_deadline() -> None:
    exits: list[int] = []
    deadline = StopDeadline(0.05, exit=exits.append)
    deadline.start()
    deadline.cancel()
    time.sleep(0.15)
    assert exits == []


STUCK_DAEMON = """
import asyncio, os, signal, threading
from gateway.app import run_until_signalled
from gateway.runtime.supervise import StopDeadline

class Stuck:
    stopping = False
    def stop(self):
        self.stopping = True
    async def run(self):
        threading.Thread(target=threading.Event().wait, name="stuck-driver").start()
        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # a part that swallows its cancellation

asyncio.run(run_until_signalled(Stuck(), StopDeadline(0.5)))
"""


def test_a_daemon_whose_stop_hangs_exits_by_the_deadline() -> None:
    """A part that ignores the stop and a thread that never ends: the process still exits."""
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK_DAEMON], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == FORCED_EXIT, done.stderr
    assert time.monotonic() - began < 15
    assert "gateway.stop_forced" in done.stdout + done.stderr
    assert "stuck-driver" in done.stdout + done.stderr
