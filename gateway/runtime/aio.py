"""Small asyncio helpers shared by the daemon's parts and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Backoff:
    """The one retry policy: delays doubling from `initial_s` up to `max_s`.

    A policy, not a counter: each run of retries takes its own :meth:`delays` iterator and
    starts a fresh one when the link has worked again, so one policy is safely shared.
    With `rng`, each delay is drawn uniformly in [initial_s, the doubled bound] (full jitter):
    a lot of gateways then do not reconnect in step after a broker restart.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    rng: random.Random | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError(f"a backoff needs 0 < initial_s <= max_s, got {self.initial_s}"
                             f" and {self.max_s}")

    def delays(self) -> Iterator[float]:
        bound = self.initial_s
        while True:
            if self.rng is not None and bound > self.initial_s:
                yield self.rng.uniform(self.initial_s, bound)
            else:
                yield bound
            bound = min(self.max_s, bound * 2)
