"""Opening a journal file: the lock, the start-up check, corrupt-file recovery, migrations.

At start the file is checked; a corrupt journal is moved aside, its unsynced events are
salvaged where they can be read, and an alarm is raised: the daemon never crash-loops on a
bad file. The schema lives in numbered SQL files under `migrations/`, applied in order.
Everything here that touches the database runs on the writer's thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import structlog

from gateway.core.clock import Clock
from gateway.journal.connection import transaction
from gateway.journal.errors import (
    SQLITE_CORRUPT,
    SQLITE_NOTADB,
    JournalError,
    JournalLockedError,
    code,
    write_error,
)
from gateway.journal.reader import journal_files
from gateway.journal.rows import INSERT_EVENT_SQL

log = structlog.get_logger(__name__)


def lock(path: Path) -> int:
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


def check_file(path: Path, mode: str) -> str | None:
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
        if code(e) in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return str(e)
        raise write_error(e, f"cannot check the journal {path}") from e
    if mode == "off" or rows == [("ok",)]:
        return None
    return "; ".join(str(r[0]) for r in rows[:10])


def move_aside(path: Path, clock: Clock) -> Path:
    """Rename a corrupt journal (and its WAL) out of the way; return its new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", clock.now().timetuple())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for src in journal_files(path):
        if src.exists():
            src.rename(target.with_name(target.name + src.name[len(path.name):]))
    return target


@dataclass(slots=True)
class Salvage:
    """What could be read of a corrupt journal."""

    last_seq: int | None
    events: list[tuple[int, str, str, str, str]]


def salvage(path: Path) -> Salvage:
    """Read what can still be read of a corrupt journal: its sequence and unsynced events."""
    last: int | None = None
    events: list[tuple[int, str, str, str, str]] = []
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return Salvage(None, [])
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
    return Salvage(last, events)


def migrations() -> list[tuple[int, str]]:
    """The numbered SQL files in gateway/journal/migrations, in order."""
    found = []
    for entry in (resources.files("gateway.journal") / "migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def connect_writer(path: Path) -> sqlite3.Connection:
    """The write connection: opened on the writer's thread, which alone uses it."""
    # The sqlite3 module begins the transaction itself before the first write (as BEGIN
    # IMMEDIATE), so a transaction needs no statement of its own.
    return sqlite3.connect(path, isolation_level="IMMEDIATE")


@dataclass(frozen=True, slots=True)
class Marks:
    """The outbox's cursors as the file holds them."""

    last_seq: int
    acked_through: int


def prepare(conn: sqlite3.Connection, *, path: Path, page_limit: int | None) -> Marks:
    """Configure the connection, bring the schema up to date, and read the cursors."""
    _configure(conn, path, page_limit)
    _migrate(conn, path)
    # meta.last_seq is refreshed when pruning; the newest event is never pruned,
    # so between prunes max(seq) is the mark.
    (last_seq,) = conn.execute(
        "SELECT max((SELECT value FROM meta WHERE key = 'last_seq'),"
        " coalesce((SELECT max(seq) FROM outbox), 0))").fetchone()
    acked = conn.execute("SELECT value FROM meta WHERE key = 'acked_through'").fetchone()
    return Marks(int(last_seq), int(acked[0]) if acked else 0)


def _configure(conn: sqlite3.Connection, path: Path, page_limit: int | None) -> None:
    # auto_vacuum only takes effect before the first table; it lets pruning give
    # pages back to the file system instead of keeping the file at its peak size.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if row is None or str(row[0]).lower() != "wal":
        raise JournalError(f"{path}: cannot switch to WAL mode (got {row})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    if page_limit is not None:
        conn.execute(f"PRAGMA max_page_count = {int(page_limit)}")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    steps = migrations()
    latest = steps[-1][0] if steps else 0
    if current > latest:
        raise JournalError(
            f"{path} has schema version {current}, newer than this gateway knows"
            f" ({latest}); install a newer gateway or restore a backup")
    for version, sql in steps:
        if version <= current:
            continue
        log.info("journal.migrate", to_version=version)
        conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")


def restore(conn: sqlite3.Connection, found: Salvage) -> Marks:
    """Put the salvaged unsynced events of a corrupt journal into the fresh one."""
    last = max(found.last_seq or 0, found.events[-1][0] if found.events else 0)
    # Everything before the first salvaged event counts as delivered or lost;
    # the alarm says which, and the backend sees any gap.
    first = found.events[0][0] - 1 if found.events else last
    with transaction(conn):
        conn.executemany(INSERT_EVENT_SQL, found.events)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (last,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'acked_through'", (first,))
    return Marks(last, first)

