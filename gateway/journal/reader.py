"""Reading the journal: the outbox, the lot's state, and the figures `status` shows.

Reads use a read-only connection of their own, on its own thread: they only ever see
committed data, and never wait behind a commit's fsync. The daemon's `Journal` and the
CLI's `JournalReader` share these queries.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from gateway.core.records import (
    BayRecord,
    ConfigVersion,
    OutboxRecord,
    PaymentRecord,
    SessionRecord,
)
from gateway.journal.connection import DbThread
from gateway.journal.errors import JournalError
from gateway.journal.pseudonyms import PlatePseudonyms

log = structlog.get_logger(__name__)

_OUTBOX_COLUMNS = "seq, id, type, time, data, acked_at IS NOT NULL"


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


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write, beside the daemon's writer: opened on the reading thread."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                           isolation_level=None)


def connect_from_outside(path: Path) -> sqlite3.Connection:
    """A read-only connection for a reader outside the daemon (the CLI) that leaves no file.

    A read-only connection to a WAL journal creates the missing -wal and -shm files and,
    unable to checkpoint, leaves them behind. They are missing only when no connection has
    the journal open (the last one to close removes them): the main file then holds every
    commit, and is read as immutable, which needs neither. Otherwise they are the daemon's,
    and a plain read-only connection uses them. (A daemon that starts during an immutable read
    and checkpoints into the file under it may make that read fail: it can be run again.)
    """
    if journal_files(path)[1].exists():
        return connect_read_only(path)
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True,
                           isolation_level=None)


class JournalQueries:
    """The queries a journal file answers, through `self._reads`."""

    _reads: DbThread
    path: Path
    # The lot's plate key, where this reader has it (the daemon's journal, with
    # `pseudonymise_refused` on): a plate is then also found under its pseudonym.
    pseudonyms: PlatePseudonyms | None = None

    async def _fetch(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        rows: list[Any] = await self._reads.run(lambda conn: conn.execute(sql, params).fetchall())
        return rows

    async def read_events(self, after: int, limit: int = 500) -> list[OutboxRecord]:
        """Stored events with sequence > `after`, synced or not, in order."""
        rows = await self._fetch(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit))
        return [_record(r) for r in rows]

    async def read_outbox(self, after: int, limit: int = 500) -> list[OutboxRecord]:
        """Unacknowledged events with sequence > `after`, in order."""
        rows = await self._fetch(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE seq > ? AND acked_at IS NULL"
            " ORDER BY seq LIMIT ?", (after, limit))
        return [_record(r) for r in rows]

    async def tail(self, count: int) -> list[OutboxRecord]:
        """The newest `count` events, oldest first."""
        rows = await self._fetch(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY seq DESC LIMIT ?", (count,))
        return [_record(r) for r in reversed(rows)]

    async def iter_events(self, after: int = 0, chunk: int = 1000) -> AsyncIterator[OutboxRecord]:
        """Every stored event in order, read in chunks so memory stays flat."""
        while records := await self.read_events(after, chunk):
            for record in records:
                yield record
            after = records[-1].seq

    async def config_current(self, kind: str) -> ConfigVersion | None:
        rows = await self._fetch(
            "SELECT kind, version, payload, source, applied_at FROM config_cache"
            " WHERE kind = ? ORDER BY version DESC LIMIT 1", (kind,))
        return ConfigVersion(*rows[0]) if rows else None

    async def open_sessions(self) -> list[SessionRecord]:
        """Every open session, oldest first: the lanes' memory of who is inside."""
        rows = await self._fetch(
            "SELECT session_id, plate, right_kind, right_ref, entry_lane, entry_at, entry_mono,"
            " entry_boot, entry_synced, data FROM sessions WHERE status = 'open'"
            " ORDER BY entry_at")
        return [SessionRecord(r[0], r[1], r[2], r[3], r[4], r[5], float(r[6]), r[7], bool(r[8]),
                              r[9]) for r in rows]

    async def payments(self, session_id: str) -> list[PaymentRecord]:
        rows = await self._fetch(
            "SELECT payment_id, session_id, amount_minor, currency, method, source, paid_at,"
            " valid_until FROM payments WHERE session_id = ? ORDER BY paid_at", (session_id,))
        return [PaymentRecord(*r) for r in rows]

    async def payment(self, payment_id: str) -> PaymentRecord | None:
        """One payment by its id (a pay station's retry finds the first one)."""
        rows = await self._fetch(
            "SELECT payment_id, session_id, amount_minor, currency, method, source, paid_at,"
            " valid_until FROM payments WHERE payment_id = ?", (payment_id,))
        return PaymentRecord(*rows[0]) if rows else None

    async def bay_states(self) -> dict[str, BayRecord]:
        """The last journaled state of each bay, for a restart to begin from."""
        rows = await self._fetch("SELECT bay_id, state, since, source, healthy FROM bay_state")
        return {r[0]: BayRecord(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows}

    async def lot_settings(self) -> dict[str, Any]:
        """The technician's settings (`lot.state`, `lane.mode:<lane>`, `bay.service:<bay>`) as
        they were last set; a value that is not JSON is left out, and logged."""
        found: dict[str, Any] = {}
        for key, value in await self._fetch("SELECT key, value FROM settings ORDER BY key"):
            try:
                found[str(key)] = json.loads(value)
            except (TypeError, ValueError):
                log.error("journal.setting_unreadable", key=key)
        return found

    async def plate_records(self, plate: str, max_events: int = 1000) -> dict[str, Any]:
        """What the journal holds about `plate` (normalised), for a subject-access request:
        its sessions with their payments, and the stored events that name it, by its text or
        its pseudonym (the newest `max_events`, with the total)."""
        columns = ("session_id", "status", "right_kind", "right_ref", "entry_lane", "entry_at",
                   "exit_lane", "exit_at", "duration_s", "fee_minor", "currency")
        sessions = [dict(zip(columns, r, strict=True)) for r in await self._fetch(
            f"SELECT {', '.join(columns)} FROM sessions WHERE plate = ? ORDER BY entry_at",
            (plate,))]
        for session in sessions:
            session["payments"] = [
                {"payment_id": p.payment_id, "amount_minor": p.amount_minor,
                 "currency": p.currency, "method": p.method, "paid_at": p.paid_at}
                for p in await self.payments(session["session_id"])]
        names = plate_names(plate, self.pseudonyms)
        where = naming_sql(len(names))
        rows = await self._fetch(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {where} ORDER BY seq DESC LIMIT ?",
            (*names, max_events))
        ((total,),) = await self._fetch(f"SELECT count(*) FROM outbox WHERE {where}", names)
        return {"plate": plate, "sessions": sessions, "events_total": int(total),
                "events": [{"seq": e.seq, "type": e.type, "time": e.time, "synced": e.acked,
                            "data": json.loads(e.data_json)} for e in map(_record, rows[::-1])]}

    async def integrity_check(self, full: bool = True) -> list[str]:
        """`ok` alone when the file is sound."""
        pragma = "integrity_check" if full else "quick_check"
        return [str(r[0]) for r in await self._fetch(f"PRAGMA {pragma}")]

    async def _stats(self, max_size_mb: float | None) -> dict[str, Any]:
        figures: dict[str, Any] = await self._reads.run(
            partial(_read_stats, path=self.path, max_size_mb=max_size_mb))
        return figures


class JournalReader(JournalQueries):
    """Read-only access to a journal file, for the CLI while the daemon runs."""

    def __init__(self, reads: DbThread, path: Path) -> None:
        """Prefer `await JournalReader.open(path)`, which checks the file first."""
        self._reads = reads
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> JournalReader:
        if not await asyncio.to_thread(path.exists):
            raise JournalError(f"no journal at {path}")
        try:
            reads = await DbThread.open("journal-cli-reader",
                                        partial(connect_from_outside, path))
        except sqlite3.Error as e:
            raise JournalError(f"cannot read the journal {path}: {e}") from e
        try:
            ((version,),) = await reads.run(
                lambda conn: conn.execute("PRAGMA user_version").fetchall())
        except sqlite3.Error as e:
            await reads.close()  # its thread would keep the process alive
            raise JournalError(f"cannot read the journal {path}: {e}") from e
        if int(version) == 0:
            await reads.close()
            raise JournalError(f"{path} is not a gateway journal (no schema)")
        return cls(reads, path)

    async def stats(self, max_size_mb: float | None = None) -> dict[str, Any]:
        """The figures of `Journal.stats`; the size cap is the config's, if known."""
        return await self._stats(max_size_mb)

    async def close(self) -> None:
        await self._reads.close()


def _record(row: Any) -> OutboxRecord:
    return OutboxRecord(int(row[0]), row[1], row[2], row[3], row[4], bool(row[5]))


def plate_names(plate: str, pseudonyms: PlatePseudonyms | None) -> tuple[str, ...]:
    """How an event's JSON names `plate` (normalised): its text, and its pseudonym if known."""
    if pseudonyms is None:
        return (json.dumps(plate),)
    return json.dumps(plate), json.dumps(pseudonyms.of(plate))


def naming_sql(count: int) -> str:
    """SQL: an outbox row's data holds one of `count` names (parameters) of a plate."""
    return "(" + " OR ".join(["instr(data, ?) > 0"] * count) + ")"


def journal_files(path: Path) -> list[Path]:
    """The journal's database file and the WAL and shared-memory files beside it."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _read_stats(conn: sqlite3.Connection, *, path: Path, max_size_mb: float | None
                ) -> dict[str, Any]:
    row = conn.execute(
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
    ).fetchone()
    file_bytes = sum(p.stat().st_size for p in journal_files(path) if p.exists())
    return {
        "path": str(path), "size_bytes": int(row[11]) * int(row[12]), "file_bytes": file_bytes,
        "max_size_bytes": None if max_size_mb is None else int(max_size_mb * 2**20),
        "events_total": row[2], "events_unsynced": row[3], "last_seq": row[0],
        "acked_through": row[1], "oldest_unsynced_time": row[4], "sessions_open": row[5],
        "sessions_closed": row[6], "bays": row[7], "config_versions": row[8],
        "audit_entries": row[9], "schema_version": row[10],
    }
