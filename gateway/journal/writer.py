"""The offline journal: sessions, bay state, config cache, audit and the event outbox.

Everything the lot does is written here first, and the sync side reads the
outbox from here; a lane never waits for the network.

* One writer task owns the write connection, a plain `sqlite3` connection on a
  thread of its own. Callers hand it a unit of work, a few state changes plus the
  events that report them, and await it. The writer gathers the units that
  arrive together (group commit), applies them in one transaction in one hop to
  its thread, and resolves each caller's await only after COMMIT, when the WAL
  has been fsynced (`synchronous=FULL`). One fsync serves many writes.
* Event sequences are given out by the writer inside the transaction, so a
  rolled-back write never leaves a gap; the high-water mark lives in `meta`,
  so pruning old events never makes a sequence repeat, and ahead of it in
  `<journal>.seq` (`seqmark`), so a corrupt or lost file never does either.
* Each commit is announced on the change feed (`Journal.changes`), so the
  outbox's readers wait for commits instead of polling.
* Reads use a second connection (`reader.py`), so they only ever see committed
  data; opening and recovering the file is `recovery.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import structlog

from gateway.config import JournalConfig
from gateway.core import events
from gateway.core.clock import Clock
from gateway.core.events import Event, rfc3339
from gateway.core.records import Alarm
from gateway.journal import recovery, seqmark
from gateway.journal.changes import ChangeFeed
from gateway.journal.connection import DbThread, transaction
from gateway.journal.errors import (
    JournalClosedError,
    JournalError,
    JournalFullError,
    JournalReadOnlyError,
    JournalWriteError,
    is_environmental,
    write_error,
)
from gateway.journal.pseudonyms import PlatePseudonyms
from gateway.journal.reader import (
    JournalQueries,
    JournalStats,
    connect_read_only,
    naming_sql,
    plate_names,
)
from gateway.journal.reserve import MB, Reserve, free_bytes
from gateway.journal.rows import INSERT_EVENT_SQL, Audit, Change, DropAlarm, PutAlarm
from gateway.runtime.aio import cancel_and_wait

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Write:
    changes: Sequence[Change]
    events: Sequence[Event]
    future: asyncio.Future[list[int]]


@dataclass(slots=True)
class _Job:
    """Work the writer runs alone, in its own transaction (acks, pruning)."""

    run: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]


class Journal(JournalQueries):
    """The gateway's durable store. Open with `await Journal.open(...)`; one per file."""

    def __init__(self, settings: JournalConfig, *, clock: Clock, page_limit: int | None = None
                 ) -> None:
        """Prefer `await Journal.open(...)`, which also opens the file and starts the writer."""
        self.path = settings.path
        self.clock = clock
        self.settings = settings
        self.changes = ChangeFeed()
        self._page_limit = page_limit
        self._pending: collections.deque[_Write | _Job] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False  # no new writes are taken
        self._closed = False
        self._in_flight: Sequence[_Write | _Job] = []  # taken off the queue, not yet answered
        self._alarms: dict[str, Alarm] = {}  # active: restored at open, kept in `alarms`
        self._unjournaled: list[tuple[Change, Event]] = []  # alarm writes not yet written
        self._commits = 0
        self._events_written = 0
        self._writes_done = 0
        self._write_errors = 0
        self._failing = False
        self._acked_through = 0
        self._lock_fd = -1
        self._db: DbThread
        self._writer: asyncio.Task[None]
        self._maintainer: asyncio.Task[None]
        self._seqmark: seqmark.SeqMark

    @classmethod
    async def open(
        cls, settings: JournalConfig, *, clock: Clock, page_limit: int | None = None
    ) -> Journal:
        """Open (or create) the journal at `settings.path` and start its writer.

        `page_limit` caps the file in SQLite pages, a hard stop used to test a full disk.
        """
        self = cls(settings, clock=clock, page_limit=page_limit)
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._lock_fd = recovery.lock(self.path)
        try:
            await self._start()
        except BaseException:
            os.close(self._lock_fd)
            raise
        return self

    async def _start(self) -> None:
        if self.settings.pseudonymise_refused:
            self.pseudonyms = await asyncio.to_thread(PlatePseudonyms.from_file,
                                                      self.settings.plate_key_path)
        mark = await asyncio.to_thread(seqmark.read_mark, self.path)
        found = await self._check(mark)
        self._reserve = await asyncio.to_thread(Reserve.open, self.settings)
        try:
            self._db = await DbThread.open("journal-writer",
                                           partial(recovery.connect_writer, self.path))
        except sqlite3.Error as e:
            raise write_error(e, f"cannot open the journal {self.path}") from e
        reads: DbThread | None = None
        try:
            marks = await self._db.run(partial(recovery.prepare, path=self.path,
                                               page_limit=self._page_limit))
            if found is None and marks.last_seq == 0 and mark:
                # A new file where a journal was (deleted, say): its sequence goes on.
                log.warning("journal.sequence_resumed", after=mark)
                found = recovery.Salvage(None, {})
            if found is not None:
                marks = await self._db.run(partial(recovery.restore, found=found, floor=mark))
            # The sequence mark is rewritten on the reading thread, so it is open before
            # the first write (the corruption alarm's).
            self._reads = reads = await DbThread.open("journal-reader",
                                                      partial(connect_read_only, self.path))
            self._seqmark = seqmark.SeqMark(self.path, mark or 0, reads.run)
            self.changes.committed(marks.last_seq)
            self._acked_through = marks.acked_through
            await self._restore_alarms()
            if self._unjournaled:  # the corruption alarm is durable before open() returns
                await self._write_alarm_backlog()
        except BaseException as e:
            if reads is not None:
                await reads.close()
            await self._db.close()  # or its thread outlives the failed open
            if isinstance(e, sqlite3.Error):
                raise write_error(e, f"cannot prepare the journal {self.path}") from e
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="journal-writer")
        self._writer.add_done_callback(self._writer_stopped)
        self._maintainer = asyncio.create_task(self._maintain_loop(), name="journal-maintenance")
        log.info("journal.opened", path=str(self.path), last_seq=self.last_seq,
                 acked_through=self._acked_through)

    async def _check(self, mark: int | None) -> recovery.Salvage | None:
        """Check the file; move a corrupt one aside and return what could be salvaged.

        `mark` is the sequence mark kept beside the journal: the sequence goes on above it.
        """
        problem = await asyncio.to_thread(recovery.check_file, self.path,
                                          self.settings.startup_check)
        if problem is None:
            return None
        moved = recovery.move_aside(self.path, self.clock)
        found = await asyncio.to_thread(recovery.salvage, moved)
        after = max(found.last_seq or 0, mark or 0)
        log.error("journal.corrupt", path=str(self.path), problem=problem,
                  moved_to=str(moved), recovered=found.summary(), sequence_after=after)
        self._raise_internal(Alarm(
            "journal.corrupt", "critical",
            f"journal was corrupt and has been moved aside to {moved.name}; a fresh one"
            f" was started: {found.summary()}; events go on after sequence {after}",
            {"problem": problem[:500], "movedTo": str(moved),
             "recovered": found.counts(), "partlyReadable": found.partly_readable(),
             "unreadable": found.unreadable(), "configVersions": found.config_versions(),
             "salvagedEvents": len(found.events), "sequenceAfter": after,
             "sequenceRecovered": found.last_seq is not None or mark is not None}))
        return found

    # --- writing ---

    async def commit(
        self, changes: Sequence[Change] = (), events: Sequence[Event] = ()
    ) -> list[int]:
        """Apply `changes` and append `events` atomically; return the events' sequences.

        Returns once the data is durable on disk. Raises JournalWriteError (or a
        subclass) if it was not written; then nothing of it was applied.
        """
        if self._closing:
            raise JournalClosedError("the journal is closed")
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Write(changes, events, future))
        self._wake.set()
        return await future

    def refused_plate(self, plate: str) -> str:
        """How a plate the lanes refused, or matched to no session, is journaled: its text, or
        with `pseudonymise_refused` on its pseudonym (`pseudonyms`). A plate let in stays text:
        its session and its fee need it."""
        return plate if self.pseudonyms is None else self.pseudonyms.of(plate)

    async def append(self, event: Event) -> int:
        """Append one event with no state change."""
        (seq,) = await self.commit((), (event,))
        return seq

    async def mark_acked(self, seqs: Iterable[int]) -> int:
        """Record that the backend has these events. Returns the new `acked_through`."""
        ranges = _ranges(sorted(set(seqs)))
        if not ranges:
            return self._acked_through
        return int(await self._job(lambda: self._ack(ranges)))

    async def prune(self) -> dict[str, int]:
        """Apply retention and the size cap now (the maintenance task also does this)."""
        result: dict[str, int] = await self._job(self._prune)
        return result

    async def raise_alarm(self, alarm: Alarm) -> None:
        """Raise an alarm (once per id while active) and journal `alarm.raised`.

        The alarm is kept in the `alarms` table with its event, so it is still raised after a
        restart, until its cause clears (`clear_alarm`) or a technician acknowledges it.
        """
        if alarm.alarm_id in self._alarms:
            return
        alarm = self._stamped(alarm)
        log.warning("alarm.raised", alarm_id=alarm.alarm_id, message=alarm.message)
        await self._write_alarm(self._alarm_raised(alarm))

    async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None:
        alarm = self._alarms.pop(alarm_id, None)
        if alarm is None:
            return
        log.info("alarm.cleared", alarm_id=alarm_id, message=message)
        await self._write_alarm(self._alarm_cleared(alarm, message))

    async def acknowledge_alarm(self, alarm_id: str, *, actor: str) -> Alarm:
        """A technician takes note of an alarm: it is cleared (`alarm.cleared`) and audited.

        Raises KeyError for an alarm that is not active, and JournalWriteError (the alarm
        stays) when the journal cannot write: an acknowledgement is not taken on trust.
        """
        alarm = self._alarms.pop(alarm_id)
        drop, event = self._alarm_cleared(alarm, f"acknowledged by {actor}")
        audit = Audit(rfc3339(self.clock.now()), actor, "alarm.ack", alarm_id,
                      details=events.dumps({"message": alarm.message}))
        try:
            await self.commit([drop, audit], [event])
        except JournalWriteError:
            self._alarms.setdefault(alarm_id, alarm)
            raise
        log.info("alarm.acknowledged", alarm_id=alarm_id, actor=actor)
        return alarm

    async def _write_alarm(self, write: tuple[Change, Event]) -> None:
        try:
            await self.commit([write[0]], [write[1]])
        except JournalClosedError:
            raise
        except JournalWriteError:
            # The alarm stands (it is in memory and in the log); it is written as soon as
            # the journal can write again.
            self._unjournaled.append(write)

    def _stamped(self, alarm: Alarm) -> Alarm:
        if not alarm.raised_at:
            alarm = dataclasses.replace(alarm, raised_at=rfc3339(self.clock.now()))
        return alarm

    def _alarm_raised(self, alarm: Alarm) -> tuple[Change, Event]:
        """Mark `alarm` active; return its row and its `alarm.raised` event."""
        self._alarms[alarm.alarm_id] = alarm
        row = PutAlarm(alarm.alarm_id, alarm.severity, alarm.message,
                       events.dumps(alarm.details), alarm.component, alarm.raised_at)
        return row, _alarm_event(alarm, raised=True, clock=self.clock)

    def _alarm_cleared(self, alarm: Alarm, message: str) -> tuple[Change, Event]:
        cleared = Alarm(alarm.alarm_id, "info", message, {}, alarm.component)
        return DropAlarm(alarm.alarm_id), _alarm_event(cleared, raised=False, clock=self.clock)

    async def _restore_alarms(self) -> None:
        """The alarms left active by the last run are active again (no new alarm.raised)."""
        for alarm in await self._db.run(_active_alarm_rows):
            self._alarms.setdefault(alarm.alarm_id, alarm)
        # A write failure of the last run is over once a write succeeds (_on_write_recovered).
        self._failing = any(a.startswith("journal.write_failed.") for a in self._alarms)

    def active_alarms(self) -> list[Alarm]:
        return list(self._alarms.values())

    async def _job(self, run: Callable[[], Awaitable[Any]]) -> Any:
        if self._closing:
            raise JournalClosedError("the journal is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(run, future))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        pending = self._pending
        window = self.settings.group_commit_ms / 1000.0
        max_batch = self.settings.max_batch
        loop = asyncio.get_running_loop()
        idle = True
        while True:
            # Alarm events go first. While writes fail they are retried only ahead of a
            # real write, so an alarm is never journaled after the write that followed it.
            if self._unjournaled and (pending or not self._failing):
                await self._write_alarm_backlog()
            if not pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                idle = True
                continue
            if isinstance(pending[0], _Job):
                job = pending.popleft()
                assert isinstance(job, _Job)
                self._in_flight = [job]
                await self._run_job(job)
                self._in_flight = []
                continue
            # Group commit. After an idle spell, keep collecting while writers are still
            # arriving, for at most `window`: a lone write is not delayed, a burst shares
            # one fsync. Under load, writes queue up during each commit and the next
            # transaction starts at once, while the loop wakes the previous callers.
            if idle and window > 0:
                deadline = loop.time() + window
                seen = len(pending)
                while seen < max_batch and loop.time() < deadline:
                    await asyncio.sleep(0)
                    if len(pending) == seen:
                        break
                    seen = len(pending)
            batch: list[_Write] = []
            while pending and len(batch) < max_batch and isinstance(pending[0], _Write):
                item = pending.popleft()
                assert isinstance(item, _Write)
                if not item.future.cancelled():
                    batch.append(item)
            if batch:
                self._in_flight = batch
                await self._write_batch(batch)
                self._in_flight = []
            idle = False

    def _writer_stopped(self, task: asyncio.Task[None]) -> None:
        """If the writer ever dies of a bug, nobody may wait for it forever."""
        if task.cancelled() or task.exception() is None:
            return
        log.critical("journal.writer_died", error=repr(task.exception()))
        self._closing = True
        error = JournalError(f"the journal's writer stopped: {task.exception()!r}")
        for item in (*self._in_flight, *self._pending):
            _fail(item.future, error)
        self._pending.clear()

    async def _write_batch(self, batch: list[_Write]) -> None:
        try:
            results = await self._apply(batch)
        except Exception as e:
            if isinstance(e, sqlite3.Error) and is_environmental(e):
                error = write_error(e, "journal write failed")
                if isinstance(error, JournalFullError) and await self._use_reserve(error):
                    await self._write_batch(batch)  # once more: the reserve is gone now
                    return
                for w in batch:
                    _fail(w.future, error)
                await self._on_write_failure(error)
            elif len(batch) > 1:
                # Retry one by one, so a bad unit of work fails only its own caller.
                for w in batch:
                    await self._write_batch([w])
            else:
                # The caller's own data was refused (a constraint, a bug): not the disk's
                # fault, so no alarm; and the writer lives on for everyone else.
                self._write_errors += 1
                log.error("journal.write_refused", error=repr(e))
                _fail(batch[0].future, JournalWriteError(f"journal refused the write: {e}"))
            return
        for w, seqs in zip(batch, results, strict=True):
            if not w.future.done():
                w.future.set_result(seqs)
        if self._failing:
            await self._on_write_recovered()

    async def _apply(self, batch: Sequence[_Write]) -> list[list[int]]:
        """The one write path: `batch` in one transaction, in one hop to the writer's thread."""
        seq = self.last_seq
        runs: list[tuple[str, list[tuple[object, ...]]]] = []
        rows: list[tuple[int, str, str, str, str]] = []
        results: list[list[int]] = []
        for w in batch:
            for change in w.changes:
                if runs and runs[-1][0] == change.sql:
                    runs[-1][1].append(change.params())
                else:
                    runs.append((change.sql, [change.params()]))
            seqs = []
            for ev in w.events:
                seq += 1
                rows.append((seq, ev.id, ev.type.value, ev.time, ev.data_json))
                seqs.append(seq)
            results.append(seqs)

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                for sql, params in runs:
                    conn.executemany(sql, params)
                if rows:
                    conn.executemany(INSERT_EVENT_SQL, rows)

        if rows:  # the mark beside the journal stays ahead of every sequence handed out
            await self._seqmark.cover(seq)
        await self._db.run(write)
        self._commits += 1
        self._writes_done += len(batch)
        self._events_written += len(rows)
        self.changes.committed(seq)
        return results

    async def _run_job(self, job: _Job) -> None:
        try:
            result = await job.run()
        except sqlite3.Error as e:
            error = write_error(e, "journal maintenance failed")
            _fail(job.future, error)
            await self._on_write_failure(error)
        except Exception as e:  # a job's own bug must not kill the writer
            _fail(job.future, e)
        else:
            if not job.future.done():
                job.future.set_result(result)

    async def _ack(self, ranges: list[tuple[int, int]]) -> int:
        through: int = await self._db.run(partial(
            _ack_rows, now=rfc3339(self.clock.now()), ranges=ranges,
            acked_through=self._acked_through, last_seq=self.last_seq))
        self._acked_through = through
        return through

    async def _prune(self) -> dict[str, int]:
        """Retention first, then the size cap; unsynced events and open sessions stay.

        Each kind of data goes after its own retention (`retention_days` for synced events,
        `refused_retention_h` for the synced ones that name a plate outside any session,
        `sessions_retention_days` for closed sessions and their payments,
        `audit_retention_days` for the audit log), at most `prune_batch` rows of each per run.
        """
        now = self.clock.now()
        s = self.settings
        retention = _Retention(
            events_before=rfc3339(now - timedelta(days=s.retention_days)),
            refused_before=rfc3339(now - timedelta(hours=s.refused_retention_h)),
            sessions_before=rfc3339(now - timedelta(days=s.sessions_retention_days)),
            audit_before=rfc3339(now - timedelta(days=s.audit_retention_days)),
            limit=s.prune_batch)
        # The newest event always stays: its seq is the high-water mark (see recovery.prepare).
        keep = min(self._acked_through, self.last_seq - 1)
        cap = int(self.settings.max_size_mb * 1024 * 1024)
        pruned = await self._db.run(partial(
            _prune_rows, last_seq=self.last_seq, keep=keep, retention=retention, cap=cap))
        used = pruned["used_bytes"]
        if used > cap:
            unsynced = self.last_seq - self._acked_through
            # Never dropped silently: the operator is told, and the events stay.
            self._raise_internal(Alarm(
                "journal.over_capacity", "critical",
                f"journal holds {used / 2**20:.1f} MiB, over its {cap / 2**20:.1f} MiB cap,"
                f" and {unsynced} events are not yet synced; nothing was dropped",
                {"usedBytes": used, "capBytes": cap, "unsyncedEvents": unsynced}))
        elif "journal.over_capacity" in self._alarms:
            self._clear_internal("journal.over_capacity", "journal back under its size cap")
        if any(n for k, n in pruned.items() if k != "used_bytes"):
            log.info("journal.pruned", **pruned)
        return pruned

    async def purge_plate(self, plate: str, *, actor: str,
                          removed_elsewhere: Mapping[str, int] | None = None) -> dict[str, int]:
        """Delete what the journal holds about `plate` (normalised), on a person's request.

        Its closed sessions and their payments, and the synced events that name it, go; its
        open sessions (the car is inside: it must be let out) and unsynced events (the backend
        has yet to receive them) stay, and are counted. The purge is audited with the counts
        only, never the plate, together with `removed_elsewhere` (what the caller removed
        outside the journal: reads in memory, crops). Deleted rows are overwritten
        (`secure_delete`), and the WAL is checkpointed and truncated, so the plate's text is
        left in neither file.
        """
        keep = min(self._acked_through, self.last_seq - 1)
        at = rfc3339(self.clock.now())
        result: dict[str, int] = await self._job(lambda: self._db.run(partial(
            _purge_plate_rows, plate=plate, names=plate_names(plate, self.pseudonyms),
            keep=keep, at=at, actor=actor,
            removed_elsewhere=dict(removed_elsewhere or {}))))
        log.info("journal.plate_purged", actor=actor, **result)
        return result

    async def _maintain_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.maintenance_interval_s)
            try:
                await self.prune()
            except JournalClosedError:
                return
            except JournalError as e:
                log.error("journal.maintenance_failed", error=str(e))
            except Exception as e:  # a bug in pruning must not end maintenance unseen
                log.exception("journal.maintenance_crashed")
                self._raise_internal(Alarm(
                    "journal.maintenance_failed", "critical",
                    f"journal maintenance (pruning) failed: {e!r}; the journal may outgrow"
                    " its size cap", {"error": repr(e)[:500]}))
            else:
                self._clear_internal("journal.maintenance_failed", "journal maintenance runs")
            await self._watch_disk()

    async def _use_reserve(self, error: JournalFullError) -> bool:
        """The disk is full: give up the ballast, with a critical alarm. False: none left.

        A disk with room for the ballast is not what is full (the page limit is): it stays.
        """
        try:
            if await asyncio.to_thread(free_bytes, self.path.parent) >= self._reserve.size:
                return False
        except OSError:
            pass  # cannot tell: the write failed for a full disk, so take it as one
        if not await asyncio.to_thread(self._reserve.release):
            return False
        log.critical("journal.reserve_used", error=str(error))
        self._raise_internal(Alarm(
            "journal.reserve_used", "critical",
            f"the journal's disk is full: its {self._reserve.size // MB} MiB reserve was given"
            " up to keep the lot writing; free space on it now",
            {"path": str(self.path), "reserveBytes": self._reserve.size}))
        return True

    async def _watch_disk(self) -> None:
        """Warn while free space is low (cleared with some slack), and remake the reserve."""
        low = self.settings.min_free_mb * MB
        try:
            free = await asyncio.to_thread(free_bytes, self.path.parent)
            remade = await asyncio.to_thread(self._reserve.ensure, low)
        except OSError as e:
            log.error("journal.disk_check_failed", error=repr(e))
            return
        if free < low:
            self._raise_internal(Alarm(
                "journal.disk_low", "warning",
                f"the journal's disk has {free / MB:.0f} MiB free, under {low / MB:.0f} MiB:"
                " free space on it before writes fail",
                {"path": str(self.path), "freeBytes": free, "minFreeBytes": low}))
        elif free >= low + max(low // 4, 16 * MB):
            self._clear_internal("journal.disk_low", "the journal's disk has room again")
        if remade:
            self._clear_internal("journal.reserve_used", "the journal's reserve is back")

    # --- alarms raised by the journal itself: a full disk, a read-only file, corruption ---

    def _raise_internal(self, alarm: Alarm) -> None:
        """Raise from inside the writer: the event is written before the next batch."""
        if alarm.alarm_id in self._alarms:
            return
        alarm = self._stamped(alarm)
        log.error("alarm.raised", alarm_id=alarm.alarm_id, message=alarm.message)
        self._unjournaled.append(self._alarm_raised(alarm))
        self._wake.set()

    def _clear_internal(self, alarm_id: str, message: str) -> None:
        alarm = self._alarms.pop(alarm_id, None)
        if alarm is None:
            return
        log.info("alarm.cleared", alarm_id=alarm_id, message=message)
        self._unjournaled.append(self._alarm_cleared(alarm, message))
        self._wake.set()

    async def _write_alarm_backlog(self) -> None:
        writes, self._unjournaled = self._unjournaled, []
        try:
            await self._apply([_Write([c for c, _ in writes], [e for _, e in writes],
                                      asyncio.get_running_loop().create_future())])
        except sqlite3.Error as e:
            self._unjournaled = writes + self._unjournaled
            await self._on_write_failure(write_error(e, "journal write failed"))
        except Exception:
            log.exception("journal.alarm_write_crashed")  # keep the writer alive
        else:
            if self._failing:
                await self._on_write_recovered()

    async def _on_write_failure(self, error: JournalWriteError) -> None:
        self._write_errors += 1
        self._failing = True
        log.error("journal.write_failed", error=str(error))
        kind = ("disk_full" if isinstance(error, JournalFullError)
                else "read_only" if isinstance(error, JournalReadOnlyError) else "io")
        self._raise_internal(Alarm(
            f"journal.write_failed.{kind}", "critical", str(error),
            {"path": str(self.path)}))

    async def _on_write_recovered(self) -> None:
        self._failing = False
        for alarm_id in [a for a in self._alarms if a.startswith("journal.write_failed.")]:
            self._clear_internal(alarm_id, "journal writes succeed again")

    # --- what the daemon reports ---

    @property
    def last_seq(self) -> int:
        return self.changes.last_seq

    @property
    def acked_through(self) -> int:
        return self._acked_through

    async def stats(self) -> JournalStats:
        base = await self._stats(self.settings.max_size_mb)
        mean = self._writes_done / self._commits if self._commits else 0.0
        return JournalStats(
            **{**base, "commits": self._commits, "events_written": self._events_written,
               "mean_group_size": round(mean, 2), "write_errors": self._write_errors,
               "active_alarms": sorted(self._alarms)})

    async def close(self) -> None:
        """Finish every write already handed in, then close. Idempotent."""
        if self._closed:
            return
        self._closed = self._closing = True
        self._wake.set()
        await cancel_and_wait(self._maintainer)
        with contextlib.suppress(Exception):  # a dead writer was reported when it died
            await self._writer
        await self._reads.close()
        # A checkpoint at close keeps the WAL from growing across restarts.
        with contextlib.suppress(sqlite3.Error):
            await self._db.run(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        await self._db.close()
        os.close(self._lock_fd)
        log.info("journal.closed", path=str(self.path), last_seq=self.last_seq)

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- the writer's thread: one transaction per call ---------------------------------------


def _ack_rows(conn: sqlite3.Connection, *, now: str, ranges: list[tuple[int, int]],
              acked_through: int, last_seq: int) -> int:
    """Mark the events acked; return the new `acked_through`."""
    with transaction(conn):
        conn.executemany(
            "UPDATE outbox SET acked_at = ? WHERE seq BETWEEN ? AND ? AND acked_at IS NULL",
            [(now, lo, hi) for lo, hi in ranges])
        # Acks mostly arrive in order, so this scan is short.
        row = conn.execute(
            "SELECT seq FROM outbox WHERE seq > ? AND acked_at IS NULL ORDER BY seq LIMIT 1",
            (acked_through,)).fetchone()
        through: int = row[0] - 1 if row else last_seq
        if through != acked_through:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'acked_through'", (through,))
    return through


@dataclass(frozen=True, slots=True)
class _Retention:
    """What a maintenance run deletes: rows older than these times, at most `limit` each."""

    events_before: str  # synced events
    refused_before: str  # synced events naming a plate outside any session
    sessions_before: str  # closed sessions (by exit time) and their payments
    audit_before: str
    limit: int


# Closed sessions past their retention, oldest exit first (index sessions_by_exit, 0004). An
# open session has no exit time.
EXPIRED_SESSIONS_SQL = ("SELECT session_id FROM sessions WHERE exit_at < ? AND status = 'closed'"
                        " ORDER BY exit_at LIMIT ?")
# Synced violations that name a plate but no session: the car was refused, or matched nobody
# (the lane writes these on their own, docs/privacy.md). Index outbox_violations_by_time.
EXPIRED_REFUSED_SQL = (
    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE type = 'violation.detected'"
    " AND time < ? AND seq <= ? AND json_extract(data, '$.plate') IS NOT NULL"
    " AND json_extract(data, '$.sessionId') IS NULL ORDER BY time LIMIT ?)")


def _prune_rows(conn: sqlite3.Connection, *, last_seq: int, keep: int, retention: _Retention,
                cap: int) -> dict[str, int]:
    """Delete what is past its retention, then synced events while over `cap` bytes.

    Returns how many rows of each kind went, and the bytes in use afterwards.
    """
    r = retention
    with transaction(conn):
        conn.execute("UPDATE meta SET value = ?1 WHERE key = 'last_seq' AND value <> ?1",
                     (last_seq,))
        by_age = conn.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq <= ? AND time < ?"
            " ORDER BY seq LIMIT ?)", (keep, r.events_before, r.limit)).rowcount
        refused = conn.execute(EXPIRED_REFUSED_SQL,
                               (r.refused_before, keep, r.limit)).rowcount
        expired = [row[0] for row in conn.execute(EXPIRED_SESSIONS_SQL,
                                                  (r.sessions_before, r.limit))]
        payments = _delete_sessions(conn, expired)
        audit = conn.execute(
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ? ORDER BY id"
            " LIMIT ?)", (r.audit_before, r.limit)).rowcount
    by_size = 0
    while _used_bytes(conn) > cap:
        (oldest,) = conn.execute("SELECT min(seq) FROM outbox").fetchone()
        if oldest is None or oldest > keep:
            break  # only unsynced events are left
        with transaction(conn):
            by_size += conn.execute("DELETE FROM outbox WHERE seq <= ?",
                                    (min(keep, oldest + 4999),)).rowcount
        _give_back_free_pages(conn)
    if by_age or refused or expired or audit:
        _give_back_free_pages(conn)
    if refused or expired or audit:  # personal data: its old versions leave the WAL as well
        _truncate_wal(conn)
    return {"pruned_by_age": by_age, "pruned_by_size": by_size, "refused_expired": refused,
            "sessions_expired": len(expired), "payments_expired": payments,
            "audit_expired": audit, "used_bytes": _used_bytes(conn)}


def _delete_sessions(conn: sqlite3.Connection, session_ids: Sequence[str]) -> int:
    """Delete these sessions and their payments (in the caller's transaction); return the
    number of payments."""
    params = [(sid,) for sid in session_ids]
    before = conn.total_changes
    conn.executemany("DELETE FROM payments WHERE session_id = ?", params)
    payments = conn.total_changes - before
    conn.executemany("DELETE FROM sessions WHERE session_id = ?", params)
    return payments


def _purge_plate_rows(conn: sqlite3.Connection, *, plate: str, names: Sequence[str], keep: int,
                      at: str, actor: str, removed_elsewhere: dict[str, int]) -> dict[str, int]:
    """`Journal.purge_plate` on the writer's thread: one transaction, then the clean-up.

    `names` are how an event's JSON names the plate: `"AB123CD"`, and its pseudonym."""
    named = naming_sql(len(names))
    with transaction(conn):
        closed = [row[0] for row in conn.execute(
            "SELECT session_id FROM sessions WHERE plate = ? AND status = 'closed'", (plate,))]
        payments = _delete_sessions(conn, closed)
        removed = conn.execute(f"DELETE FROM outbox WHERE seq <= ? AND {named}",
                               (keep, *names)).rowcount
        (open_kept,) = conn.execute(
            "SELECT count(*) FROM sessions WHERE plate = ? AND status = 'open'",
            (plate,)).fetchone()
        (unsynced_kept,) = conn.execute(
            f"SELECT count(*) FROM outbox WHERE seq > ? AND {named}", (keep, *names)).fetchone()
        result = {**removed_elsewhere, "sessions": len(closed), "payments": payments,
                  "events": removed, "open_sessions_kept": int(open_kept),
                  "unsynced_events_kept": int(unsynced_kept)}
        conn.execute(Audit.sql, Audit(at, actor, "privacy.purge", None, None,
                                      events.dumps(result)).params())
    _give_back_free_pages(conn)
    _truncate_wal(conn)
    return result


def _truncate_wal(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the file and truncate it, so deleted rows' old pages leave it.

    A reader in the middle of a query can hold it up (busy): then the WAL is overwritten
    from its start by later commits instead, and the next purge or prune truncates it.
    """
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        log.warning("journal.wal_not_truncated")


def _give_back_free_pages(conn: sqlite3.Connection) -> None:
    """Shrink the file by its free pages (`auto_vacuum = INCREMENTAL`).

    Run as a script: `execute` steps the pragma once, and one step frees one page.
    """
    conn.executescript("PRAGMA incremental_vacuum")


def _used_bytes(conn: sqlite3.Connection) -> int:
    pages, page_size = conn.execute(
        "SELECT (SELECT page_count FROM pragma_page_count())"
        " - (SELECT freelist_count FROM pragma_freelist_count()),"
        " (SELECT page_size FROM pragma_page_size())").fetchone()
    return int(pages) * int(page_size)


# --- helpers -----------------------------------------------------------------------------


def _active_alarm_rows(conn: sqlite3.Connection) -> list[Alarm]:
    rows = conn.execute("SELECT alarm_id, severity, message, details, component, raised_at"
                        " FROM alarms ORDER BY raised_at, alarm_id").fetchall()
    return [Alarm(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]


def _alarm_event(alarm: Alarm, *, raised: bool, clock: Clock) -> Event:
    build = events.alarm_raised if raised else events.alarm_cleared
    return build(at=clock.now(), alarm_id=alarm.alarm_id, code=alarm.code,
                 severity=alarm.severity, message=alarm.message, component=alarm.component,
                 details=alarm.details)


def _ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
