"""Small asyncio helpers shared by the daemon's parts and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel `task` (if any) and wait until it has unwound; its CancelledError is swallowed.

    Waiting matters: a task's `finally` blocks (closing a port, joining a thread) run
    before the caller goes on to close what the task was using.
    """
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
