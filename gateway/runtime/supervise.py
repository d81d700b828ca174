"""Supervision: a part of the daemon that fails is logged and started again, never left dead.

The daemon's parts (the lanes, the bus, the sync, the maintenance loop) each run as one
coroutine. One that raises is restarted after the one :class:`~gateway.runtime.aio.Backoff`,
longer each time it fails at once, short again after it ran a good while; its restarts and last
error are kept for the status the technician reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gateway.runtime.aio import Backoff

log = structlog.get_logger("gateway.app")  # the event names the operators' alerts know

RESTART = Backoff(initial_s=0.5, max_s=30.0)
HEALTHY_AFTER_S = 60.0  # a part that ran this long before it failed restarts quickly again


@dataclass
class Part:
    """One supervised part, as the status shows it."""

    name: str
    restarts: int = 0
    last_error: str | None = None
    running: bool = False


async def supervise(part: Part, work: Callable[[], Awaitable[None]], *,
                    backoff: Backoff = RESTART) -> None:
    """Run `work`; when it fails or ends, log it and start it again. Only cancellation stops it."""
    delays = backoff.delays()
    while True:
        started = time.monotonic()
        part.running = True
        try:
            await work()
            log.warning("gateway.part_ended", part=part.name)
        except asyncio.CancelledError:
            part.running = False
            raise
        except Exception as e:
            part.last_error = repr(e)
            log.exception("gateway.part_failed", part=part.name, restarts=part.restarts)
        part.running = False
        part.restarts += 1
        if time.monotonic() - started > HEALTHY_AFTER_S:
            delays = backoff.delays()  # it ran a good while: start again quickly
        await asyncio.sleep(next(delays))
