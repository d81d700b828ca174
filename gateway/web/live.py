"""The lot's availability, kept current: rebuilt when the lot changes, told to its listeners.

A change (a bay, a session, the lot's state) is announced with `changed()`, and every commit
of the journal counts as one: a session's start or end changes the counted bays. The
document is rebuilt at once after a quiet spell, then at most once per `window_s` while
changes keep coming, so a burst costs one document per window and no change waits longer
than the window. One more rebuild follows the last change by a window: a change whose state
settles just after its signal (a session's vehicle counted inside once its record is
committed) is published then. A rebuild that shows the same counts publishes nothing.

Listeners (the retained MQTT state) are called with each new `Availability`; the HTTP stream's
clients wait with `wait_after`, each for the newest one, so a slow client skips documents
rather than queueing them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gateway.core.availability import Availability

WINDOW_S = 0.1  # the bound on coalescing


class Commits(Protocol):
    """The journal's commit signal (`journal.ChangeFeed`)."""

    @property
    def last_seq(self) -> int: ...

    async def wait_after(self, seq: int, timeout_s: float | None = None) -> bool: ...


Listener = Callable[[Availability], None]


class AvailabilityFeed:
    """Run `run()` as a part of the daemon; read `current`, or wait for the next."""

    def __init__(self, build: Callable[[], Availability], *, commits: Commits | None = None,
                 window_s: float = WINDOW_S) -> None:
        self._build = build
        self._commits = commits
        self.window_s = window_s
        self.current: Availability | None = None
        self.revision = 0  # raised with each new document; the stream's event ids
        self._listeners: list[Listener] = []
        self._dirty = asyncio.Event()
        # Replaced at each new document: a waiter holds the one current when it began.
        self._next = asyncio.Event()

    def listen(self, listener: Listener) -> None:
        """Call `listener` with each new availability (and the current one, if there is one).
        It runs on the loop and must not block."""
        self._listeners.append(listener)
        if self.current is not None:
            listener(self.current)

    def changed(self) -> None:
        """Something availability shows may have changed; never blocks."""
        self._dirty.set()

    def refresh(self) -> bool:
        """Rebuild now; tell the listeners and waiters if the counts changed."""
        now = self._build()
        if now.same_as(self.current):
            return False
        self.current = now
        self.revision += 1
        woken, self._next = self._next, asyncio.Event()
        woken.set()
        for listener in self._listeners:
            listener(now)
        return True

    async def wait_after(self, revision: int, timeout_s: float | None = None
                         ) -> Availability | None:
        """The current availability once its revision is above `revision`; None if
        `timeout_s` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.revision <= revision or self.current is None:
                    await self._next.wait()
        except TimeoutError:
            return None
        return self.current

    async def run(self) -> None:
        """Rebuild on changes until cancelled (see the module's docstring for when)."""
        async with asyncio.TaskGroup() as tasks:
            if self._commits is not None:
                tasks.create_task(self._watch_commits(self._commits))
            tasks.create_task(self._rebuild())

    async def _rebuild(self) -> None:
        self.refresh()
        while True:
            await self._dirty.wait()
            while self._dirty.is_set():
                self._dirty.clear()
                self.refresh()
                await asyncio.sleep(self.window_s)  # later changes wait for the window
            self.refresh()  # the trailing rebuild

    async def _watch_commits(self, commits: Commits) -> None:
        seq = commits.last_seq
        while True:
            await commits.wait_after(seq)
            seq = commits.last_seq
            self.changed()
