"""The change feed: a commit with events wakes every waiter, and nothing else does."""

from __future__ import annotations

import asyncio

from gateway.core.clock import FakeClock
from gateway.journal import ChangeFeed, Journal
from tests.journal.test_journal import bay_change, bay_event


async def test_a_commit_wakes_the_waiters_it_concerns() -> None:
    feed = ChangeFeed(5)
    assert await feed.wait_after(4)  # already past: no wait
    assert not await feed.wait_after(5, timeout_s=0.01)
    after_5 = asyncio.create_task(feed.wait_after(5))
    after_6 = asyncio.create_task(feed.wait_after(6))
    await asyncio.sleep(0)
    feed.committed(6)
    assert await asyncio.wait_for(after_5, 1)
    await asyncio.sleep(0)
    assert not after_6.done()
    feed.committed(7)
    assert await asyncio.wait_for(after_6, 1)
    assert feed.last_seq == 7


async def test_the_journal_announces_commits_of_events_only(journal: Journal,
                                                            clock: FakeClock) -> None:
    await journal.append(bay_event(clock))
    waiter = asyncio.create_task(journal.changes.wait_after(journal.last_seq))
    change, _ = bay_change(clock, "B-1")
    await journal.commit([change])  # a state change alone: nothing new in the outbox
    await journal.mark_acked([1])
    await asyncio.sleep(0.01)
    assert not waiter.done()
    seq = await journal.append(bay_event(clock))
    assert await asyncio.wait_for(waiter, 1)
    assert journal.changes.last_seq == journal.last_seq == seq == 2
