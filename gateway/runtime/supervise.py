"""Supervision: a part of the daemon that fails is logged, alarmed and started again.

The daemon's parts (the lanes, the bays, the sync, the maintenance loop) each run as one
coroutine. One that raises or returns is restarted after the one
:class:`~gateway.runtime.aio.Backoff`, longer each time it fails at once, short again after it
ran a good while. A failure calls ``on_failed`` (the daemon raises an alarm a technician sees in
``status``); a restarted part that then runs ``healthy_after_s`` calls ``on_recovered`` (the
alarm clears). Its restarts and last error are kept for the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gateway.runtime.aio import Backoff, cancel_and_wait

log = structlog.get_logger("gateway.app")  # the event names the operators' alerts know

RESTART = Backoff(initial_s=0.5, max_s=30.0)
HEALTHY_AFTER_S = 60.0  # a part that ran this long is well again: quick restarts, alarm cleared


@dataclass
class Part:
    """One supervised part, as the status shows it."""

    name: str
    restarts: int = 0
    last_error: str | None = None
    running: bool = False
    failing: bool = False  # failed, and not yet run a healthy while since


Hook = Callable[[Part], Awaitable[None]]


async def supervise(part: Part, work: Callable[[], Awaitable[None]], *,
                    backoff: Backoff = RESTART, on_failed: Hook | None = None,
                    on_recovered: Hook | None = None,
                    healthy_after_s: float = HEALTHY_AFTER_S) -> None:
    """Run `work`; when it fails or ends, log it and start it again. Only cancellation stops it."""
    delays = backoff.delays()
    while True:
        started = time.monotonic()
        part.running = True
        task = asyncio.ensure_future(work())
        try:
            if part.failing:
                done, _ = await asyncio.wait({task}, timeout=healthy_after_s)
                if not done:
                    part.failing = False
                    log.info("gateway.part_recovered", part=part.name, restarts=part.restarts)
                    await _call(on_recovered, part)
            await task
            part.last_error = "ended"
            log.warning("gateway.part_ended", part=part.name)
        except asyncio.CancelledError:
            part.running = False
            await cancel_and_wait(task)
            raise
        except Exception as e:
            part.last_error = repr(e)
            log.exception("gateway.part_failed", part=part.name, restarts=part.restarts)
        part.running = False
        part.failing = True
        part.restarts += 1
        await _call(on_failed, part)
        if time.monotonic() - started > healthy_after_s:
            delays = backoff.delays()  # it ran a good while: start again quickly
        await asyncio.sleep(next(delays))


async def _call(hook: Hook | None, part: Part) -> None:
    """A hook that fails (the journal is full) costs a log line, never the supervision."""
    if hook is None:
        return
    try:
        await hook(part)
    except Exception:
        log.exception("gateway.part_hook_failed", part=part.name)


STOP_DEADLINE_S = 20.0  # a stop's grace (barrier movements, 10 s) and closing; systemd allows 30
FORCED_EXIT = 70  # EX_SOFTWARE: the stop overran its deadline and was cut short


class StopDeadline:
    """Ends the process if a stop overruns, whatever a part or a thread is doing.

    Started when the stop begins. A thread blocked in a driver, or a part that swallows its
    cancellation, would otherwise keep the daemon alive until systemd's SIGKILL, with nothing
    in the log to say why. After `seconds` this logs ``gateway.stop_forced`` with the threads
    still alive, flushes the log streams and calls `exit` (``os._exit``: interpreter shutdown
    would wait for the very threads that are stuck). The journal's transactions are durable as
    each commits, so nothing acknowledged is lost.
    """

    def __init__(self, seconds: float = STOP_DEADLINE_S,
                 exit: Callable[[int], object] | None = None) -> None:
        self.seconds = seconds
        self._exit = exit if exit is not None else os._exit
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.name = "stop-deadline"
        self._timer.daemon = True

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        """The stop finished in time."""
        self._timer.cancel()

    def _expire(self) -> None:
        left = sorted(t.name for t in threading.enumerate()
                      if t.is_alive() and t is not threading.current_thread())
        log.error("gateway.stop_forced", after_s=self.seconds, threads=left)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # closed or broken: exit anyway
                stream.flush()
        self._exit(FORCED_EXIT)
