"""Small asyncio helpers shared by the daemon's parts and the simulator: cancel-and-wait, the one
retry policy (:class:`Backoff`) and the one set of background tasks (:class:`TaskSet`)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)


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


def first_of(group: BaseExceptionGroup[Any], kinds: type[BaseException] | tuple[
        type[BaseException], ...]) -> BaseException | None:
    """The first exception of `kinds` in a (nested) exception group, as a TaskGroup raises them.

    Used with a plain ``except BaseExceptionGroup`` instead of ``except*``: re-raising from an
    ``except*`` block wraps the exception again on CPython before 3.11.4, and Debian bookworm
    (a Raspberry Pi's Python) has 3.11.2.
    """
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            if (found := first_of(error, kinds)) is not None:
                return found
        elif isinstance(error, kinds):
            return error
    return None


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


class TaskSet:
    """The background tasks of one part (a barrier's alarms, the sync's replies, the control
    socket's connections): kept, their failures logged, cancelled together.

    asyncio holds only a weak reference to a running task, so a task nobody keeps can vanish
    mid-run; and a task that fails unwatched reports nothing until it is collected. A part
    that fires and forgets hands its tasks here instead.
    """

    def __init__(self, owner: str, **context: Any) -> None:
        self.owner = owner  # names the part in the log line of a failed task
        self._context = context
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
              ) -> asyncio.Task[Any]:
        """Run `coro` as a task of this set."""
        task = asyncio.ensure_future(coro)
        if name is not None:
            task.set_name(name)
        self.add(task)
        return task

    def add(self, task: asyncio.Task[Any]) -> None:
        """Keep a task started elsewhere (a server's connection handler) until it ends."""
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def cancel(self) -> None:
        """Cancel every task and return at once (from a close that cannot wait)."""
        for task in list(self._tasks):
            task.cancel()

    async def cancel_and_wait(self) -> None:
        """Cancel every task and wait until all have unwound."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("task_failed", owner=self.owner, task=task.get_name(), error=repr(error),
                      **self._context)
