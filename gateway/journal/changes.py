"""The journal's change feed: the last committed sequence, and a way to wait for the next.

The writer knows when it commits, so a reader of the outbox (the sync drain) waits here
instead of polling: an idle lot wakes nobody, and a commit wakes its readers at once.
"""

from __future__ import annotations

import asyncio


class ChangeFeed:
    """Tells waiters when events with a higher sequence have been committed."""

    def __init__(self, last_seq: int = 0) -> None:
        self._last_seq = last_seq
        # Replaced at every commit: a waiter holds the one that was current when it began,
        # so a commit between its check and its wait still wakes it.
        self._next = asyncio.Event()

    @property
    def last_seq(self) -> int:
        """The sequence of the newest committed event."""
        return self._last_seq

    def committed(self, last_seq: int) -> None:
        """Called by the writer on the loop once a transaction is durable."""
        if last_seq == self._last_seq:
            return  # nothing new in the outbox (a state change alone, an ack)
        self._last_seq = last_seq
        woken, self._next = self._next, asyncio.Event()
        woken.set()

    async def wait_after(self, seq: int, timeout_s: float | None = None) -> bool:
        """Wait until an event after `seq` is committed; False if `timeout_s` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._last_seq <= seq:
                    await self._next.wait()
        except TimeoutError:
            return False
        return True
