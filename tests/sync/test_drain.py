"""The outbox drain: acks after delivery, the backlog's rate limit, and commits that wake it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from gateway.config import JournalConfig
from gateway.core.clock import FakeClock
from gateway.journal import Journal, OutboxRecord
from gateway.sync.drain import LinkLost, OutboxDrain
from tests.sync.sync_child import bay_event


class FakeSender:
    """Delivers at once, except the sequences told to fail; records the order of sends."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.sent: list[tuple[int, float]] = []
        self.fail = fail or set()
        self.arrived = asyncio.Event()

    async def send(self, batch: Sequence[OutboxRecord]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        out = []
        for record in batch:
            self.sent.append((record.seq, time.monotonic()))
            future: asyncio.Future[None] = loop.create_future()
            if record.seq in self.fail:
                future.set_exception(ConnectionError(f"lost at {record.seq}"))
            else:
                future.set_result(None)
            out.append(future)
        self.arrived.set()
        return out


async def test_a_failed_delivery_stops_the_drain_and_only_delivered_events_are_acked(
        journal: Journal, clock: FakeClock) -> None:
    await journal.commit((), [bay_event(clock, i) for i in range(20)])
    drain = OutboxDrain(journal, batch_size=5)
    first = FakeSender(fail={8})
    with pytest.raises(LinkLost, match="lost at 8"):
        await asyncio.wait_for(drain.run(first), 5)
    assert journal.acked_through == 7  # 8 was not delivered; nothing after it counts
    again = FakeSender()
    task = asyncio.create_task(drain.run(again))
    async with asyncio.timeout(5):
        while journal.acked_through < 20:  # noqa: ASYNC110 (no ack notification)
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Resumed where the acks stopped, in order. What the first run delivered before the
    # failure stopped it (9 and 10 in 8's batch, maybe the batch after) may come again if
    # its acks were not yet written: at least once, never lost.
    resent = [s for s, _ in again.sent]
    assert resent == sorted(resent)
    assert resent[0] == 8
    assert set(resent) <= set(range(8, 21))
    delivered = {s for s, _ in first.sent if s != 8} | set(resent)
    assert delivered == set(range(1, 21))


async def test_the_backlog_is_rate_limited_while_live_events_go_at_once(
        journal: Journal, clock: FakeClock) -> None:
    await journal.commit((), [bay_event(clock, i) for i in range(60)])
    drain = OutboxDrain(journal, batch_size=50, rate_per_s=100, burst=10)
    sender = FakeSender()
    task = asyncio.create_task(drain.run(sender))
    started = time.monotonic()
    await asyncio.sleep(0.1)
    (live,) = await journal.commit((), [bay_event(clock, 99)])
    async with asyncio.timeout(10):
        while journal.acked_through < live:  # noqa: ASYNC110 (no ack notification)
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    sent_at = dict(sender.sent)
    assert sent_at[60] - started >= 0.4  # 60 events at 100/s after a burst of 10
    assert sent_at[live] - started < 0.3  # the live event did not wait for the backlog
    backlog_order = [s for s, _ in sender.sent if s <= 60]
    assert backlog_order == list(range(1, 61))


class WatchedJournal(Journal):
    """Counts every look at the outbox: its high-water mark or its rows."""

    looks = 0

    @property
    def last_seq(self) -> int:
        self.looks += 1
        return super().last_seq

    async def read_outbox(self, after: int, limit: int = 500) -> list[OutboxRecord]:
        self.looks += 1
        return await super().read_outbox(after, limit)


async def test_an_idle_drain_sleeps_and_a_commit_wakes_it_at_once(journal_path: Path,
                                                                   clock: FakeClock) -> None:
    journal = await WatchedJournal.open(
        JournalConfig(path=journal_path, maintenance_interval_s=3600), clock=clock)
    drain = OutboxDrain(journal)  # its safety net looks once a second
    sender = FakeSender()
    task = asyncio.create_task(drain.run(sender))
    try:
        await journal.append(bay_event(clock, 0))
        async with asyncio.timeout(5):
            while journal.acked_through < 1:  # noqa: ASYNC110 (no ack notification)
                await asyncio.sleep(0.01)
        journal.looks = 0
        await asyncio.sleep(1.0)
        # Polling every 2 ms looked about 500 times; waiting on the change feed, at most the
        # safety net's once.
        assert journal.looks <= 1

        sender.arrived.clear()
        committed = time.monotonic()
        seq = await journal.append(bay_event(clock, 1))
        async with asyncio.timeout(5):
            await sender.arrived.wait()
        assert [s for s, _ in sender.sent] == [1, seq]
        assert sender.sent[-1][1] - committed < 0.25  # woken by the commit, not the safety net
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await journal.close()


class BrokenSender(FakeSender):
    """The transport fails while sending (a broker gone mid-publish: paho raises)."""

    async def send(self, batch: Sequence[OutboxRecord]) -> list[asyncio.Future[None]]:
        raise OSError("broker connection reset")


async def test_a_send_that_fails_outright_is_a_lost_link_not_an_exception_group(
        journal: Journal, clock: FakeClock) -> None:
    """The service reconnects on LinkLost; anything else ended the sync part (a restart with a
    part_failed alarm) on every broker drop mid-publish."""
    await journal.commit((), [bay_event(clock, i) for i in range(5)])
    drain = OutboxDrain(journal, batch_size=5)
    with pytest.raises(LinkLost, match="broker connection reset"):
        await asyncio.wait_for(drain.run(BrokenSender()), 5)
    assert journal.acked_through == 0


def test_first_of_finds_the_wanted_error_in_nested_groups() -> None:
    from gateway.runtime.aio import first_of

    lost = LinkLost("gone")
    group = BaseExceptionGroup("outer", [ValueError("x"), BaseExceptionGroup("inner", [lost])])
    assert first_of(group, LinkLost) is lost
    assert first_of(group, KeyError) is None


class CountedJournal(Journal):
    """Counts the journal writes that record acks."""

    marks = 0

    async def mark_acked(self, seqs: Iterable[int]) -> int:
        self.marks += 1
        return await super().mark_acked(seqs)


async def test_a_trickle_of_events_is_acked_in_one_write_a_second(journal_path: Path,
                                                                  clock: FakeClock) -> None:
    """Each ack write is a commit, an fsync of the WAL: with acks gathered 20 ms, a lot's
    trickle of events (one every 50 ms here) cost one ack commit per event, half of the SD
    card's writes. Gathered for a second, a second's events share one."""
    journal = await CountedJournal.open(JournalConfig(path=journal_path), clock=clock)
    drain = OutboxDrain(journal)
    task = asyncio.create_task(drain.run(FakeSender()))
    try:
        for i in range(20):
            await journal.append(bay_event(clock, i))
            await asyncio.sleep(0.05)
        async with asyncio.timeout(5):
            while journal.acked_through < 20:  # noqa: ASYNC110 (no ack notification)
                await asyncio.sleep(0.01)
        assert journal.marks <= 3  # 20 events over about a second: one or two, and a margin
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await journal.close()
