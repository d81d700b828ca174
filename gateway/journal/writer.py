"""The offline journal: sessions, bay state, config cache, audit and the event outbox.

Everything the lot does is written here first, and the sync side reads the
outbox from here; a lane never waits for the network.

* One writer task owns the write connection. Callers hand it a unit of work,
  a few state changes plus the events that report them, and await it. The
  writer gathers the units that arrive together (group commit), applies them
  in one transaction, and resolves each caller's await only after COMMIT, when
  the WAL has been fsynced (`synchronous=FULL`). One fsync serves many writes.
* Event sequences are given out by the writer inside the transaction, so a
  rolled-back write never leaves a gap; the high-water mark lives in `meta`,
  so pruning old events never makes a sequence repeat.
* Reads use a second connection, so they only ever see committed data.
* At start the file is checked; a corrupt journal is moved aside, its unsynced
  events are salvaged where they can be read, and an alarm is raised. The
  daemon never crash-loops on a bad file.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, cast, get_args

import aiosqlite
import structlog

from gateway.config import JournalConfig
from gateway.core import events
from gateway.core.clock import Clock
from gateway.core.events import BayState, Event, rfc3339
from gateway.core.records import (
    Alarm,
    BayRecord,
    ConfigVersion,
    OutboxRecord,
    PaymentRecord,
    SessionRecord,
)
from gateway.runtime.aio import cancel_and_wait

log = structlog.get_logger(__name__)

T = TypeVar("T")


# sqlite3 primary result codes (the low byte of an extended code).
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26


class JournalError(Exception):
    """The journal cannot do what was asked; the message says why, for a technician."""


class JournalWriteError(JournalError):
    """A write was not made durable, and none of it was applied."""


class JournalFullError(JournalWriteError):
    """The disk (or the journal's page limit) is full."""


class JournalReadOnlyError(JournalWriteError):
    """The journal's file or file system is read-only."""


class JournalLockedError(JournalError):
    """Another process (a second daemon) holds the journal."""


class JournalClosedError(JournalError):
    """The journal was closed; nothing more is accepted."""


# --- state changes ---------------------------------------------------------------------

_BAY_STATES = get_args(BayState)


class Change(Protocol):
    """One row-level state change, applied in the same transaction as its events.

    Each kind has one SQL statement; the writer runs consecutive changes of a
    kind with one executemany.
    """

    sql: ClassVar[str]

    def params(self) -> tuple[object, ...]: ...


@dataclass(frozen=True, slots=True)
class SetBayState:
    sql: ClassVar[str] = (
        "INSERT INTO bay_state (bay_id, state, since, source, healthy) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (bay_id) DO UPDATE SET state = excluded.state, since = excluded.since,"
        " source = excluded.source, healthy = excluded.healthy"
        # An SD card wears out: an unchanged bay is not rewritten.
        " WHERE bay_state.state IS NOT excluded.state OR bay_state.healthy IS NOT excluded.healthy"
    )
    bay_id: str
    state: BayState
    since: str  # RFC 3339 UTC
    source: str
    healthy: bool

    def __post_init__(self) -> None:
        # Checked here rather than by a CHECK constraint, which made the upsert 10x slower.
        if self.state not in _BAY_STATES:
            raise ValueError(f"bay state must be one of {_BAY_STATES}, not {self.state!r}")

    def params(self) -> tuple[object, ...]:
        return (self.bay_id, self.state, self.since, self.source, int(self.healthy))


@dataclass(frozen=True, slots=True)
class OpenSession:
    sql: ClassVar[str] = (
        "INSERT INTO sessions (session_id, plate, status, right_kind, right_ref, entry_lane,"
        " entry_at, entry_mono, entry_boot, entry_synced, data)"
        " VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    session_id: str
    plate: str | None
    right_kind: str
    right_ref: str | None
    entry_lane: str | None
    entry_at: str
    entry_mono: float
    entry_boot: str
    entry_synced: bool
    data: str = "{}"

    def params(self) -> tuple[object, ...]:
        return (self.session_id, self.plate, self.right_kind, self.right_ref, self.entry_lane,
                self.entry_at, self.entry_mono, self.entry_boot, int(self.entry_synced), self.data)


@dataclass(frozen=True, slots=True)
class CloseSession:
    sql: ClassVar[str] = (
        "UPDATE sessions SET status = 'closed', exit_lane = ?, exit_at = ?, exit_mono = ?,"
        " exit_boot = ?, exit_synced = ?, duration_s = ?, clock_reliable = ?, fee_minor = ?,"
        " currency = ? WHERE session_id = ? AND status = 'open'"
    )
    session_id: str
    exit_lane: str | None
    exit_at: str
    exit_mono: float
    exit_boot: str
    exit_synced: bool
    duration_s: float
    clock_reliable: bool
    fee_minor: int
    currency: str

    def params(self) -> tuple[object, ...]:
        return (self.exit_lane, self.exit_at, self.exit_mono, self.exit_boot,
                int(self.exit_synced), self.duration_s, int(self.clock_reliable),
                self.fee_minor, self.currency, self.session_id)


@dataclass(frozen=True, slots=True)
class PutConfig:
    """A new version of pushed config; the highest version of a kind is in force."""

    sql: ClassVar[str] = (
        "INSERT INTO config_cache (kind, version, payload, source, applied_at)"
        " VALUES (?, ?, ?, ?, ?)"
    )
    kind: str  # tariffs | permits | reservations | deny_list
    version: int
    payload: str  # JSON
    source: str
    applied_at: str

    def params(self) -> tuple[object, ...]:
        return (self.kind, self.version, self.payload, self.source, self.applied_at)


@dataclass(frozen=True, slots=True)
class RecordPayment:
    """A payment for a session; the same payment id again is ignored (at-least-once inbound)."""

    sql: ClassVar[str] = (
        "INSERT INTO payments (payment_id, session_id, amount_minor, currency, method, source,"
        " paid_at, valid_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    )
    payment_id: str
    session_id: str
    amount_minor: int
    currency: str
    method: str
    source: str
    paid_at: str
    valid_until: str | None = None

    def params(self) -> tuple[object, ...]:
        return (self.payment_id, self.session_id, self.amount_minor, self.currency, self.method,
                self.source, self.paid_at, self.valid_until)


@dataclass(frozen=True, slots=True)
class Audit:
    sql: ClassVar[str] = (
        "INSERT INTO audit (at, actor, action, subject, reason, details) VALUES (?, ?, ?, ?, ?, ?)"
    )
    at: str
    actor: str  # "technician:<name>", "backend", "lane:<id>"
    action: str
    subject: str | None = None
    reason: str | None = None
    details: str = "{}"

    def params(self) -> tuple[object, ...]:
        return (self.at, self.actor, self.action, self.subject, self.reason, self.details)


@dataclass(frozen=True, slots=True)
class JournalStats:
    path: str
    size_bytes: int  # pages in use
    file_bytes: int  # main file plus WAL, as on disk
    max_size_bytes: int | None  # the configured cap
    events_total: int
    events_unsynced: int
    last_seq: int
    acked_through: int
    oldest_unsynced_time: str | None
    sessions_open: int
    sessions_closed: int
    bays: int
    config_versions: int
    audit_entries: int
    schema_version: int
    commits: int  # since this process opened the journal
    events_written: int
    mean_group_size: float
    write_errors: int
    active_alarms: list[str]


# --- the journal -----------------------------------------------------------------------

INSERT_EVENT_SQL = "INSERT INTO outbox (seq, id, type, time, data) VALUES (?, ?, ?, ?, ?)"
_OUTBOX_COLUMNS = "seq, id, type, time, data, acked_at IS NOT NULL"


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


class Journal:
    """The gateway's durable store. Open with `await Journal.open(...)`; one per file."""

    def __init__(self, settings: JournalConfig, *, clock: Clock, page_limit: int | None = None
                 ) -> None:
        """Prefer `await Journal.open(...)`, which also opens the file and starts the writer."""
        self.path = settings.path
        self.clock = clock
        self.settings = settings
        self._page_limit = page_limit
        self._pending: collections.deque[_Write | _Job] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False  # no new writes are taken
        self._closed = False
        self._in_flight: Sequence[_Write | _Job] = []  # taken off the queue, not yet answered
        self._alarms: dict[str, Alarm] = {}
        self._unjournaled: list[Event] = []  # alarm events that could not be written yet
        self._commits = 0
        self._events_written = 0
        self._writes_done = 0
        self._write_errors = 0
        self._failing = False
        self._last_seq = 0
        self._acked_through = 0
        self._lock_fd = -1
        self._db: aiosqlite.Connection
        self._reader: aiosqlite.Connection
        self._writer: asyncio.Task[None]
        self._maintainer: asyncio.Task[None]

    @classmethod
    async def open(
        cls, settings: JournalConfig, *, clock: Clock, page_limit: int | None = None
    ) -> Journal:
        """Open (or create) the journal at `settings.path` and start its writer.

        `page_limit` caps the file in SQLite pages, a hard stop used to test a full disk.
        """
        self = cls(settings, clock=clock, page_limit=page_limit)
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._lock_fd = _lock(self.path)
        try:
            await self._start()
        except BaseException:
            os.close(self._lock_fd)
            raise
        return self

    async def _start(self) -> None:
        salvage: _Salvage | None = None
        problem = await asyncio.to_thread(_check_file, self.path, self.settings.startup_check)
        if problem is not None:
            moved = _move_aside(self.path, self.clock)
            salvage = await asyncio.to_thread(_salvage, moved)
            log.error("journal.corrupt", path=str(self.path), problem=problem,
                      moved_to=str(moved), salvaged_events=len(salvage.events))
            self._raise_internal(Alarm(
                "journal.corrupt", "critical",
                f"journal was corrupt and has been moved aside to {moved.name}; a fresh one"
                " was started",
                {"problem": problem[:500], "movedTo": str(moved),
                 "salvagedEvents": len(salvage.events),
                 "sequenceRecovered": salvage.last_seq is not None}))

        try:
            # The sqlite3 module begins the transaction itself before the first write
            # (as BEGIN IMMEDIATE): one thread hop fewer per commit than an explicit BEGIN.
            self._db = await aiosqlite.connect(self.path, isolation_level="IMMEDIATE")
        except sqlite3.Error as e:
            raise _write_error(e, f"cannot open the journal {self.path}") from e
        try:
            await self._configure()
            await self._migrate()
            self._last_seq = await self._high_water()
            self._acked_through = await self._meta("acked_through")
            if salvage is not None:
                await self._restore(salvage)
            if self._unjournaled:  # the corruption alarm is durable before open() returns
                await self._write_alarm_backlog()
            self._reader = await aiosqlite.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
        except BaseException as e:
            await self._db.close()  # or its thread outlives the failed open
            if isinstance(e, sqlite3.Error):
                raise _write_error(e, f"cannot prepare the journal {self.path}") from e
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="journal-writer")
        self._writer.add_done_callback(self._writer_stopped)
        self._maintainer = asyncio.create_task(self._maintain_loop(), name="journal-maintenance")
        log.info("journal.opened", path=str(self.path), last_seq=self._last_seq,
                 acked_through=self._acked_through)

    async def _configure(self) -> None:
        db = self._db
        # auto_vacuum only takes effect before the first table; it lets pruning give
        # pages back to the file system instead of keeping the file at its peak size.
        await db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        async with db.execute("PRAGMA journal_mode = WAL") as cur:
            row = await cur.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            raise JournalError(f"{self.path}: cannot switch to WAL mode (got {row})")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA busy_timeout = 5000")
        if self._page_limit is not None:
            await db.execute(f"PRAGMA max_page_count = {int(self._page_limit)}")

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        steps = migrations()
        latest = steps[-1][0] if steps else 0
        if current > latest:
            raise JournalError(
                f"{self.path} has schema version {current}, newer than this gateway knows"
                f" ({latest}); install a newer gateway or restore a backup")
        for version, sql in steps:
            if version <= current:
                continue
            log.info("journal.migrate", to_version=version)
            await self._db.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")

    async def _high_water(self) -> int:
        # meta.last_seq is refreshed when pruning; the newest event is never pruned,
        # so between prunes max(seq) is the mark.
        async with self._db.execute(
            "SELECT max((SELECT value FROM meta WHERE key = 'last_seq'),"
            " coalesce((SELECT max(seq) FROM outbox), 0))"
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _meta(self, key: str) -> int:
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _restore(self, salvage: _Salvage) -> None:
        """Put the salvaged unsynced events of a corrupt journal into the fresh one."""
        last = max(salvage.last_seq or 0, salvage.events[-1][0] if salvage.events else 0)
        await self._db.executemany(INSERT_EVENT_SQL, salvage.events)
        # Everything before the first salvaged event counts as delivered or lost;
        # the alarm says which, and the backend sees any gap.
        first = salvage.events[0][0] - 1 if salvage.events else last
        await self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (last,))
        await self._db.execute("UPDATE meta SET value = ? WHERE key = 'acked_through'", (first,))
        await self._db.commit()
        self._last_seq, self._acked_through = last, first

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
        """Raise an alarm (once per id while active) and journal `alarm.raised`."""
        if alarm.alarm_id in self._alarms:
            return
        self._alarms[alarm.alarm_id] = alarm
        log.warning("alarm.raised", alarm_id=alarm.alarm_id, message=alarm.message)
        await self._append_alarm(_alarm_event(alarm, raised=True, clock=self.clock))

    async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None:
        alarm = self._alarms.pop(alarm_id, None)
        if alarm is None:
            return
        log.info("alarm.cleared", alarm_id=alarm_id, message=message)
        cleared = Alarm(alarm.alarm_id, "info", message, {}, alarm.component)
        await self._append_alarm(_alarm_event(cleared, raised=False, clock=self.clock))

    async def _append_alarm(self, event: Event) -> None:
        try:
            await self.append(event)
        except JournalClosedError:
            raise
        except JournalWriteError:
            # The alarm stands (it is in memory and in the log); its event is written
            # as soon as the journal can write again.
            self._unjournaled.append(event)

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
            if isinstance(e, sqlite3.Error) and _is_environmental(e):
                error = _write_error(e, "journal write failed")
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
        seq = self._last_seq
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

        def transaction(conn: sqlite3.Connection) -> None:
            try:
                for sql, params in runs:
                    conn.executemany(sql, params)
                if rows:
                    conn.executemany(INSERT_EVENT_SQL, rows)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

        await _in_db_thread(self._db, transaction)
        self._last_seq = seq
        self._commits += 1
        self._writes_done += len(batch)
        self._events_written += len(rows)
        return results

    async def _run_job(self, job: _Job) -> None:
        try:
            result = await job.run()
        except sqlite3.Error as e:
            error = _write_error(e, "journal maintenance failed")
            _fail(job.future, error)
            await self._on_write_failure(error)
        except Exception as e:  # a job's own bug must not kill the writer
            _fail(job.future, e)
        else:
            if not job.future.done():
                job.future.set_result(result)

    async def _ack(self, ranges: list[tuple[int, int]]) -> int:
        db = self._db
        now = rfc3339(self.clock.now())
        try:
            await db.executemany(
                "UPDATE outbox SET acked_at = ? WHERE seq BETWEEN ? AND ? AND acked_at IS NULL",
                [(now, lo, hi) for lo, hi in ranges])
            # Acks mostly arrive in order, so this scan is short.
            async with db.execute(
                "SELECT seq FROM outbox WHERE seq > ? AND acked_at IS NULL ORDER BY seq LIMIT 1",
                (self._acked_through,),
            ) as cur:
                row = await cur.fetchone()
            through = row[0] - 1 if row else self._last_seq
            if through != self._acked_through:
                await db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'acked_through'", (through,))
            await db.commit()
        except BaseException:
            await _rollback(db)
            raise
        self._acked_through = through
        return through

    async def _prune(self) -> dict[str, int]:
        """Retention first, then the size cap; unsynced events are never deleted."""
        db = self._db
        cutoff = rfc3339(self.clock.now() - timedelta(days=self.settings.retention_days))
        # The newest event always stays: its seq is the high-water mark (see _high_water).
        keep = min(self._acked_through, self._last_seq - 1)
        try:
            await db.execute("UPDATE meta SET value = ?1 WHERE key = 'last_seq' AND value <> ?1",
                             (self._last_seq,))
            cur = await db.execute("DELETE FROM outbox WHERE seq <= ? AND time < ?", (keep, cutoff))
            by_age = cur.rowcount
            await db.commit()
        except BaseException:
            await _rollback(db)
            raise
        by_size = 0
        cap = int(self.settings.max_size_mb * 1024 * 1024)
        while await self._used_bytes() > cap:
            async with db.execute("SELECT min(seq) FROM outbox") as c:
                row = await c.fetchone()
            oldest = row[0] if row and row[0] is not None else None
            if oldest is None or oldest > keep:
                break  # only unsynced events are left
            upto = min(keep, oldest + 4999)
            try:
                cur = await db.execute("DELETE FROM outbox WHERE seq <= ?", (upto,))
                by_size += cur.rowcount
                await db.commit()
            except BaseException:
                await _rollback(db)
                raise
            await db.execute("PRAGMA incremental_vacuum")
        if by_age:
            await db.execute("PRAGMA incremental_vacuum")
        used = await self._used_bytes()
        if used > cap:
            unsynced = self._last_seq - self._acked_through
            # Never dropped silently: the operator is told, and the events stay.
            self._raise_internal(Alarm(
                "journal.over_capacity", "critical",
                f"journal holds {used / 2**20:.1f} MiB, over its {cap / 2**20:.1f} MiB cap,"
                f" and {unsynced} events are not yet synced; nothing was dropped",
                {"usedBytes": used, "capBytes": cap, "unsyncedEvents": unsynced}))
        elif "journal.over_capacity" in self._alarms:
            self._clear_internal("journal.over_capacity", "journal back under its size cap")
        if by_age or by_size:
            log.info("journal.pruned", by_age=by_age, by_size=by_size, used_bytes=used)
        return {"pruned_by_age": by_age, "pruned_by_size": by_size, "used_bytes": used}

    async def _used_bytes(self) -> int:
        async with self._db.execute(
            "SELECT (SELECT page_count FROM pragma_page_count())"
            " - (SELECT freelist_count FROM pragma_freelist_count()),"
            " (SELECT page_size FROM pragma_page_size())"
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]) * int(row[1])

    async def _maintain_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.maintenance_interval_s)
            try:
                await self.prune()
            except JournalClosedError:
                return
            except JournalError as e:
                log.error("journal.maintenance_failed", error=str(e))

    # --- alarms raised by the journal itself ---

    def _raise_internal(self, alarm: Alarm) -> None:
        """Raise from inside the writer: the event is written before the next batch."""
        if alarm.alarm_id in self._alarms:
            return
        self._alarms[alarm.alarm_id] = alarm
        log.error("alarm.raised", alarm_id=alarm.alarm_id, message=alarm.message)
        self._unjournaled.append(_alarm_event(alarm, raised=True, clock=self.clock))
        self._wake.set()

    def _clear_internal(self, alarm_id: str, message: str) -> None:
        alarm = self._alarms.pop(alarm_id, None)
        if alarm is None:
            return
        log.info("alarm.cleared", alarm_id=alarm_id, message=message)
        cleared = Alarm(alarm_id, "info", message, {}, alarm.component)
        self._unjournaled.append(_alarm_event(cleared, raised=False, clock=self.clock))
        self._wake.set()

    async def _write_alarm_backlog(self) -> None:
        events, self._unjournaled = self._unjournaled, []
        try:
            await self._apply([_Write((), events, asyncio.get_running_loop().create_future())])
        except sqlite3.Error as e:
            self._unjournaled = events + self._unjournaled
            await self._on_write_failure(_write_error(e, "journal write failed"))
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

    # --- reading (a separate connection: only committed data is ever seen) ---

    async def read_events(self, after: int, limit: int = 500) -> list[OutboxRecord]:
        """Stored events with sequence > `after`, synced or not, in order."""
        async with self._reader.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ) as cur:
            return [_record(r) for r in await cur.fetchall()]

    async def read_outbox(self, after: int, limit: int = 500) -> list[OutboxRecord]:
        """Unacknowledged events with sequence > `after`, in order."""
        async with self._reader.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq > ? AND acked_at IS NULL"
            " ORDER BY seq LIMIT ?", (after, limit),
        ) as cur:
            return [_record(r) for r in await cur.fetchall()]

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def acked_through(self) -> int:
        return self._acked_through

    async def config_current(self, kind: str) -> ConfigVersion | None:
        async with self._reader.execute(
            "SELECT kind, version, payload, source, applied_at FROM config_cache"
            " WHERE kind = ? ORDER BY version DESC LIMIT 1", (kind,),
        ) as cur:
            row = await cur.fetchone()
        return ConfigVersion(*row) if row else None

    async def open_sessions(self) -> list[SessionRecord]:
        """Every open session, oldest first: the lanes' memory of who is inside."""
        async with self._reader.execute(
            "SELECT session_id, plate, right_kind, right_ref, entry_lane, entry_at, entry_mono,"
            " entry_boot, entry_synced, data FROM sessions WHERE status = 'open'"
            " ORDER BY entry_at",
        ) as cur:
            rows = await cur.fetchall()
        return [SessionRecord(r[0], r[1], r[2], r[3], r[4], r[5], float(r[6]), r[7], bool(r[8]),
                              r[9]) for r in rows]

    async def payments(self, session_id: str) -> list[PaymentRecord]:
        async with self._reader.execute(
            "SELECT payment_id, session_id, amount_minor, currency, method, source, paid_at,"
            " valid_until FROM payments WHERE session_id = ? ORDER BY paid_at", (session_id,),
        ) as cur:
            return [PaymentRecord(*r) for r in await cur.fetchall()]

    async def bay_states(self) -> dict[str, BayRecord]:
        """The last journaled state of each bay, for a restart to begin from."""
        async with self._reader.execute(
            "SELECT bay_id, state, since, source, healthy FROM bay_state",
        ) as cur:
            return {r[0]: BayRecord(r[0], r[1], r[2], r[3], bool(r[4]))
                    for r in await cur.fetchall()}

    async def stats(self) -> JournalStats:
        base = await _read_stats(self._reader, self.path, self.settings.max_size_mb)
        mean = self._writes_done / self._commits if self._commits else 0.0
        return JournalStats(
            **{**base, "commits": self._commits, "events_written": self._events_written,
               "mean_group_size": round(mean, 2), "write_errors": self._write_errors,
               "active_alarms": sorted(self._alarms)})

    async def integrity_check(self, full: bool = True) -> list[str]:
        """`ok` alone when the file is sound."""
        pragma = "integrity_check" if full else "quick_check"
        async with self._reader.execute(f"PRAGMA {pragma}") as cur:
            return [str(r[0]) for r in await cur.fetchall()]

    async def close(self) -> None:
        """Finish every write already handed in, then close. Idempotent."""
        if self._closed:
            return
        self._closed = self._closing = True
        self._wake.set()
        await cancel_and_wait(self._maintainer)
        with contextlib.suppress(Exception):  # a dead writer was reported when it died
            await self._writer
        await self._reader.close()
        # A checkpoint at close keeps the WAL from growing across restarts.
        with contextlib.suppress(sqlite3.Error):
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._db.close()
        os.close(self._lock_fd)
        log.info("journal.closed", path=str(self.path), last_seq=self._last_seq)

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class JournalReader:
    """Read-only access to a journal file, for the CLI while the daemon runs."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> JournalReader:
        if not await asyncio.to_thread(path.exists):
            raise JournalError(f"no journal at {path}")
        try:
            db = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error as e:
            raise JournalError(f"cannot read the journal {path}: {e}") from e
        try:
            async with db.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
        except sqlite3.Error as e:
            await db.close()  # its thread would keep the process alive
            raise JournalError(f"cannot read the journal {path}: {e}") from e
        if not row or int(row[0]) == 0:
            await db.close()
            raise JournalError(f"{path} is not a gateway journal (no schema)")
        return cls(db, path)

    async def stats(self, max_size_mb: float | None = None) -> dict[str, Any]:
        """The figures of `Journal.stats`; the size cap is the config's, if known."""
        return await _read_stats(self._db, self.path, max_size_mb)

    async def tail(self, count: int) -> list[OutboxRecord]:
        async with self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY seq DESC LIMIT ?", (count,),
        ) as cur:
            rows = list(await cur.fetchall())
        return [_record(r) for r in reversed(rows)]

    async def iter_events(self, after: int = 0, chunk: int = 1000) -> AsyncIterator[OutboxRecord]:
        """Every stored event in order, read in chunks so memory stays flat."""
        while True:
            async with self._db.execute(
                f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, chunk),
            ) as cur:
                rows = list(await cur.fetchall())
            if not rows:
                return
            for r in rows:
                yield _record(r)
            after = int(rows[-1][0])

    async def close(self) -> None:
        await self._db.close()


# --- helpers ---------------------------------------------------------------------------


def _record(row: Any) -> OutboxRecord:
    return OutboxRecord(int(row[0]), row[1], row[2], row[3], row[4], bool(row[5]))


async def _read_stats(
    db: aiosqlite.Connection, path: Path, max_size_mb: float | None
) -> dict[str, Any]:
    async with db.execute(
        "SELECT"
        " max((SELECT value FROM meta WHERE key = 'last_seq'),"
        "     coalesce((SELECT max(seq) FROM outbox), 0)),"
        " (SELECT value FROM meta WHERE key = 'acked_through'),"
        " (SELECT count(*) FROM outbox),"
        " (SELECT count(*) FROM outbox WHERE seq > (SELECT value FROM meta"
        "   WHERE key = 'acked_through') AND acked_at IS NULL),"
        " (SELECT time FROM outbox WHERE seq > (SELECT value FROM meta"
        "   WHERE key = 'acked_through') AND acked_at IS NULL ORDER BY seq LIMIT 1),"
        " (SELECT count(*) FROM sessions WHERE status = 'open'),"
        " (SELECT count(*) FROM sessions WHERE status = 'closed'),"
        " (SELECT count(*) FROM bay_state),"
        " (SELECT count(*) FROM config_cache),"
        " (SELECT count(*) FROM audit),"
        " (SELECT user_version FROM pragma_user_version()),"
        " (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count"
        "   FROM pragma_freelist_count()),"
        " (SELECT page_size FROM pragma_page_size())"
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    file_bytes = sum(p.stat().st_size for p in _journal_files(path) if p.exists())
    return {
        "path": str(path), "size_bytes": int(row[11]) * int(row[12]), "file_bytes": file_bytes,
        "max_size_bytes": None if max_size_mb is None else int(max_size_mb * 2**20),
        "events_total": row[2], "events_unsynced": row[3], "last_seq": row[0],
        "acked_through": row[1], "oldest_unsynced_time": row[4], "sessions_open": row[5],
        "sessions_closed": row[6], "bays": row[7], "config_versions": row[8],
        "audit_entries": row[9], "schema_version": row[10],
    }


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


async def _in_db_thread(db: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` on the connection's own thread: a whole transaction in one hop.

    Each aiosqlite call is a round trip between threads (~0.2 ms on a small VM);
    three per commit halved the journal's throughput with few producers.
    aiosqlite has no public call for this; `_execute` is the primitive all its
    methods use. pyproject.toml caps the aiosqlite version, and the journal tests
    exercise this path.
    """
    return cast(T, await db._execute(fn, db._conn))  # type: ignore[no-untyped-call]


async def _rollback(db: aiosqlite.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            await db.rollback()


def _code(e: sqlite3.Error) -> int:
    return int(getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF


def _is_environmental(e: sqlite3.Error) -> bool:
    """Errors of the disk or file, not of the data: retrying each write alone won't help."""
    return _code(e) in (_SQLITE_FULL, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN,
                        _SQLITE_CORRUPT)


def _write_error(e: sqlite3.Error, what: str) -> JournalWriteError:
    code = _code(e)
    if code == _SQLITE_FULL:
        return JournalFullError(f"{what}: the disk or the journal's page limit is full ({e})")
    if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
        return JournalReadOnlyError(f"{what}: the journal or its file system is read-only"
                                    f" or cannot be opened ({e})")
    return JournalWriteError(f"{what}: {e}")


def _journal_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _lock(path: Path) -> int:
    """An exclusive lock beside the journal: two daemons on one file would corrupt it."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalLockedError(
            f"{path} is in use by another process (lock {lock_path}); is a second"
            " parking-gateway running?") from None
    return fd


def _check_file(path: Path, mode: str) -> str | None:
    """None when the journal is sound (or absent); otherwise what is wrong with it.

    Only corruption is reported: a busy or unreadable file raises, so a journal
    is never moved aside for a reason that is not its own.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    pragma = {"quick": "PRAGMA quick_check", "full": "PRAGMA integrity_check",
              "off": "SELECT count(*) FROM sqlite_schema"}[mode]
    try:
        con = sqlite3.connect(path, isolation_level=None)
        try:
            rows = con.execute(pragma).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        if _code(e) in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return str(e)
        raise _write_error(e, f"cannot check the journal {path}") from e
    if mode == "off" or rows == [("ok",)]:
        return None
    return "; ".join(str(r[0]) for r in rows[:10])


def _move_aside(path: Path, clock: Clock) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", clock.now().timetuple())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for src in _journal_files(path):
        if src.exists():
            src.rename(target.with_name(target.name + src.name[len(path.name):]))
    return target


@dataclass(slots=True)
class _Salvage:
    last_seq: int | None
    events: list[tuple[int, str, str, str, str]]


def _salvage(path: Path) -> _Salvage:
    """Read what can still be read of a corrupt journal: its sequence and unsynced events."""
    last: int | None = None
    events: list[tuple[int, str, str, str, str]] = []
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return _Salvage(None, [])
    try:
        # The high-water mark: meta's (kept across pruning) or the newest event's, whichever
        # is readable and higher. Restarting at 1 would make the backend drop new events
        # as duplicates of old ones.
        for query in ("SELECT value FROM meta WHERE key = 'last_seq'",
                      "SELECT max(seq) FROM outbox"):
            with contextlib.suppress(sqlite3.Error):
                row = con.execute(query).fetchone()
                if row and row[0] is not None:
                    last = max(last or 0, int(row[0]))
        with contextlib.suppress(sqlite3.Error):
            for r in con.execute(
                "SELECT seq, id, type, time, data FROM outbox WHERE acked_at IS NULL ORDER BY seq"
            ):
                events.append((int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])))
    finally:
        con.close()
    return _Salvage(last, events)


def migrations() -> list[tuple[int, str]]:
    """The numbered SQL files in gateway/journal/migrations, in order."""
    found = []
    for entry in (resources.files("gateway.journal") / "migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(found)
