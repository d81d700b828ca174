"""The availability feed: a change goes out at once, a burst is one document per window, a
state that settles after its signal goes out with the trailing rebuild, nothing new is quiet."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from gateway.core.availability import Availability, Place
from gateway.web.live import AvailabilityFeed
from tests.web.conftest import FakeLot

WINDOW_S = 0.1


class Commits:
    """The journal's commit signal, as `journal.ChangeFeed` gives it."""

    def __init__(self) -> None:
        self.last_seq = 0
        self._next = asyncio.Event()

    def commit(self) -> None:
        self.last_seq += 1
        woken, self._next = self._next, asyncio.Event()
        woken.set()

    async def wait_after(self, seq: int, timeout_s: float | None = None) -> bool:
        while self.last_seq <= seq:
            await self._next.wait()
        return True


class Published:
    """What the feed told its listener, and when."""

    def __init__(self) -> None:
        self.docs: list[tuple[float, Availability]] = []

    def __call__(self, now: Availability) -> None:
        self.docs.append((time.monotonic(), now))

    def occupied(self) -> list[int]:
        return [a.document()["lot"]["occupied"] for _, a in self.docs]


@contextlib.asynccontextmanager
async def running(feed: AvailabilityFeed) -> AsyncIterator[None]:
    task = asyncio.create_task(feed.run())
    await asyncio.sleep(0.01)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def take(lot: FakeLot, index: int) -> None:
    place = lot.places[index]
    lot.places[index] = Place(place.floor, place.zone, place.bay_type, "occupied")


async def test_a_change_goes_out_at_once_and_the_same_counts_not_at_all() -> None:
    lot, published = FakeLot(), Published()
    feed = AvailabilityFeed(lot.availability, window_s=WINDOW_S)
    feed.listen(published)
    async with running(feed):
        assert published.occupied() == [1]  # the first document, at start
        take(lot, 0)
        began = time.monotonic()
        feed.changed()
        await asyncio.sleep(0.02)
        assert published.occupied() == [1, 2]
        assert published.docs[-1][0] - began < 0.02  # not held for the window
        feed.changed()  # a change that changed nothing
        await asyncio.sleep(3 * WINDOW_S)
    assert published.occupied() == [1, 2]
    assert feed.revision == 2


async def test_a_burst_is_one_document_per_window_and_none_waits_longer() -> None:
    lot, published = FakeLot(), Published()
    lot.places = [Place("0", "A", "regular", "free") for _ in range(20)]
    feed = AvailabilityFeed(lot.availability, window_s=WINDOW_S)
    feed.listen(published)
    async with running(feed):
        changed_at = []
        for i in range(20):  # a change every 10 ms for 200 ms
            take(lot, i)
            changed_at.append(time.monotonic())
            feed.changed()
            await asyncio.sleep(0.01)
        await asyncio.sleep(2 * WINDOW_S)
    docs = published.docs[1:]
    assert [a.document()["lot"]["occupied"] for _, a in docs][-1] == 20
    assert len(docs) <= 4  # 200 ms of changes: the first, then one per window
    for at in changed_at:  # each change went out within the window (and some slack)
        assert min(t for t, _ in docs if t >= at) - at < WINDOW_S + 0.05


async def test_a_state_that_settles_after_its_signal_goes_out_with_the_trailing_rebuild(
        ) -> None:
    """A session's commit wakes the feed before the lanes count the car inside."""
    lot, published, commits = FakeLot(), Published(), Commits()
    feed = AvailabilityFeed(lot.availability, commits=commits, window_s=WINDOW_S)
    feed.listen(published)
    lot.inside = 0
    async with running(feed):
        before = published.occupied()[-1]
        commits.commit()
        await asyncio.sleep(0.01)
        lot.inside = 2  # counted inside only now, with no signal of its own
        await asyncio.sleep(WINDOW_S + 0.05)
    assert published.occupied()[-1] == before + 1  # the counted bay's share


async def test_a_stream_client_waits_for_the_newest() -> None:
    lot = FakeLot()
    feed = AvailabilityFeed(lot.availability, window_s=WINDOW_S)
    assert await feed.wait_after(0, timeout_s=0.01) is None  # nothing built yet
    feed.refresh()
    assert (await feed.wait_after(0, 0.01)) is feed.current
    assert await feed.wait_after(feed.revision, timeout_s=0.01) is None
    waiter = asyncio.create_task(feed.wait_after(feed.revision, 1.0))
    await asyncio.sleep(0)
    take(lot, 0)
    feed.refresh()
    take(lot, 2)
    feed.refresh()  # two documents while the waiter slept: it gets the newest
    assert (await waiter) is feed.current
    assert feed.revision == 3


async def test_a_listener_added_late_gets_the_current_one() -> None:
    feed = AvailabilityFeed(FakeLot().availability)
    feed.refresh()
    published = Published()
    feed.listen(published)
    assert [a for _, a in published.docs] == [feed.current]
