"""The outbox drain: journal events to the backend, in sequence order, acked after delivery.

The drain reads the journal's outbox from its acknowledgement cursor in
batches and hands each batch to a `Sender` (MQTT or HTTP). A sender issues the
events in order and returns one future per event that resolves when the
backend has it (a PUBACK, a 2xx). Only then is the event acked in the journal,
so after a crash or a lost link the drain restarts at `acked_through` and the
backend sees, at worst, the unacked tail again (it drops duplicates by
sequence).

A backlog (what was unsent when the link came up) is drained at most at the
token bucket's rate, so that a reconnect after days does not flood the
broker; events committed after the link came up go out at once beside it.
With no rate limit there is one stream and delivery is strictly in order.

An idle drain sleeps on the journal's change feed: a commit wakes it at once, and nothing
wakes it while the lot is quiet (an idle Pi does not poll 500 times a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from gateway.journal import Journal, JournalClosedError, JournalWriteError, OutboxRecord
from gateway.runtime.aio import first_of
from gateway.sync.pacing import TokenBucket

log = structlog.get_logger(__name__)

# Acks are gathered this long into one journal write. Each write is a commit, and each commit
# an fsync of the WAL: at 20 ms a lot's trickle of events cost one ack commit per event, about
# half of the SD card's writes (bench footprint). A crash loses at most this much of the acks:
# those events go out again, and the backend drops them by their sequence.
ACK_FLUSH_S = 1.0
ACK_FLUSH_MAX = 2000


class Sender(Protocol):
    """One transport's way to hand events to the backend."""

    async def send(self, batch: Sequence[OutboxRecord]) -> list[asyncio.Future[None]]:
        """Issue `batch` in order; return once issued, with one delivery future per event."""
        ...


class LinkLost(Exception):
    """The transport failed while events were in flight; the drain must restart."""


@dataclass(frozen=True, slots=True)
class SyncStats:
    """What `status` and metrics show of the sync side."""

    transport: str  # mqtt | http | none
    connected: bool
    last_seq: int
    acked_through: int
    backlog: int  # events committed but not yet acknowledged by the backend
    lag_s: float | None  # age of the oldest unacknowledged event; None when there is none
    rate_per_s: float  # acknowledged events per second, smoothed
    published: int  # since start, duplicates after a reconnect included
    acked: int
    reconnects: int
    commands_accepted: int
    commands_rejected: int
    configs_applied: int
    configs_rejected: int
    configs_ignored: int  # not applied and not reported again: stale, repeated, unknown kind
    bad_messages: int
    inbound_dropped: int  # inbound messages dropped unread in a flood (audited in aggregate)
    last_error: str | None


class _Rate:
    """An exponentially smoothed events-per-second figure."""

    def __init__(self, now: Callable[[], float], half_life_s: float = 5.0) -> None:
        self._now = now
        self._half_life = half_life_s
        self._at = now()
        self.value = 0.0
        self._count = 0

    def add(self, n: int) -> None:
        self._count += n
        self._roll()

    def _roll(self) -> None:
        t = self._now()
        dt = t - self._at
        if dt >= 0.25:
            weight = 0.5 ** (dt / self._half_life)
            self.value = weight * self.value + (1 - weight) * (self._count / dt)
            self._count = 0
            self._at = t

    def current(self) -> float:
        self._roll()
        return round(self.value, 1)


class OutboxDrain:
    """Drains one journal's outbox through whichever sender the link provides."""

    def __init__(
        self,
        journal: Journal,
        *,
        batch_size: int = 500,
        rate_per_s: float | None = None,
        burst: int = 500,
        poll_s: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journal = journal
        self.batch_size = batch_size
        self.rate_per_s = rate_per_s
        self.burst = burst
        # A safety net only: the longest an idle drain waits for a commit's signal before it
        # looks at the journal anyway.
        self.poll_s = poll_s
        self._now = now
        self._to_ack: list[int] = []
        self._ack_wake = asyncio.Event()  # the first ack to record
        self._ack_full = asyncio.Event()  # ACK_FLUSH_MAX of them: record them now
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self.published = 0
        self.acked = 0
        self.rate = _Rate(now)

    async def run(self, sender: Sender) -> None:
        """Drain until cancelled or the sender fails (raises LinkLost). Call again to resume."""
        self._failure = None
        self._failed.clear()
        start = self.journal.acked_through
        backlog_end = self.journal.last_seq if self.rate_per_s is not None else start
        log.info("sync.drain_started", from_seq=start + 1, backlog=backlog_end - start,
                 rate_limited=self.rate_per_s is not None)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._ack_loop(), name="sync-acks")
                tg.create_task(self._watch_failure(), name="sync-drain-watch")
                if backlog_end > start:
                    assert self.rate_per_s is not None
                    bucket = TokenBucket(self.rate_per_s, self.burst, self._now)
                    tg.create_task(self._lane(sender, start, backlog_end, bucket),
                                   name="sync-backlog")
                tg.create_task(self._lane(sender, backlog_end, None, None), name="sync-live")
        except BaseExceptionGroup as group:
            if (lost := first_of(group, LinkLost)) is not None:
                raise lost from None
            raise
        finally:
            try:
                await self.flush_acks()
            except JournalWriteError as e:  # kept for the next run
                log.error("sync.ack_failed", error=str(e), pending=len(self._to_ack))

    async def _watch_failure(self) -> None:
        await self._failed.wait()
        raise LinkLost(str(self._failure))

    async def _lane(self, sender: Sender, after: int, until: int | None,
                    bucket: TokenBucket | None) -> None:
        """Send events with seq in (after, until] (until None: for ever), in order."""
        journal = self.journal
        while until is None or after < until:
            if journal.last_seq <= after:
                await journal.changes.wait_after(after, self.poll_s)
                continue
            limit = self.batch_size
            if bucket is not None:
                limit = await bucket.acquire(limit)
            seen = journal.last_seq  # before the read: a later commit must not be skipped
            batch = await journal.read_outbox(after, limit)
            if until is not None:
                batch = [r for r in batch if r.seq <= until]
            if not batch:
                # Everything up to what was committed is acked already (by another lane).
                after = seen if until is None else min(until, seen)
                continue
            try:
                futures = await sender.send(batch)
            except LinkLost:
                raise
            except Exception as e:  # the transport failed mid-send (a broker gone)
                raise LinkLost(f"send failed: {e}") from e
            self.published += len(batch)
            for record, future in zip(batch, futures, strict=True):
                future.add_done_callback(self._delivered_callback(record.seq))
            after = batch[-1].seq
        log.info("sync.backlog_drained", through=until)

    def _delivered_callback(self, seq: int) -> Callable[[asyncio.Future[None]], None]:
        def done(future: asyncio.Future[None]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                if self._failure is None:
                    self._failure = error
                    self._failed.set()
                return
            self._to_ack.append(seq)
            if len(self._to_ack) == 1:
                self._ack_wake.set()
            if len(self._to_ack) >= ACK_FLUSH_MAX:
                self._ack_full.set()
        return done

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            # A trickle waits ACK_FLUSH_S; a backlog draining flushes every ACK_FLUSH_MAX.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ack_full.wait(), ACK_FLUSH_S)
            self._ack_full.clear()
            try:
                await self.flush_acks()
            except JournalWriteError as e:
                # The journal raised its own alarm. The acks are kept and tried again;
                # meanwhile delivery goes on (at worst the backend sees them again).
                log.error("sync.ack_failed", error=str(e), pending=len(self._to_ack))
                await asyncio.sleep(1.0)
                self._ack_wake.set()

    async def flush_acks(self) -> None:
        """Record every delivered event in the journal now."""
        if not self._to_ack:
            return
        seqs, self._to_ack = self._to_ack, []
        try:
            await self.journal.mark_acked(seqs)
        except JournalClosedError:
            return
        except BaseException:
            self._to_ack = seqs + self._to_ack  # retried on the next flush
            raise
        self.acked += len(seqs)
        self.rate.add(len(seqs))

    async def lag_s(self, wall_now: Callable[[], float]) -> float | None:
        """Seconds since the oldest unacknowledged event was stamped (by its wall time)."""
        with contextlib.suppress(JournalClosedError):
            oldest = await self.journal.read_outbox(self.journal.acked_through, 1)
            if oldest:
                stamp = datetime.fromisoformat(oldest[0].time.replace("Z", "+00:00"))
                return round(max(0.0, wall_now() - stamp.timestamp()), 3)
        return None
