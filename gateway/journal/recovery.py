"""Opening a journal file: the lock, the start-up check, corrupt-file recovery, migrations.

At start the file is checked; a corrupt journal is moved aside, what the lot needs of it
(open sessions, payments, bays, config, settings, alarms, audit, unsynced events) is salvaged
row by row where it can be read into a fresh one, and an alarm says what came back: the
daemon never crash-loops on a bad file, and the cars inside stay inside. The schema lives
in numbered SQL files under `migrations/`, applied in order.
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
from typing import Any

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


# What a recovery carries over to the fresh journal, table by table: the rows to keep (an
# SQL condition), how the alarm names what it counts, and the columns that hold JSON.
# Closed sessions and synced events are the backend's already; of the config, the newest
# version of each kind is in force.
_SALVAGED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sessions": ("status = 'open'", "open sessions", ("data",)),
    "payments": ("1", "payments", ()),
    "bay_state": ("1", "bays", ()),
    "config_cache": ("1", "config kinds", ("payload",)),
    "settings": ("1", "settings", ("value",)),
    # The fresh journal raises its own journal.corrupt, with what this recovery found.
    "alarms": ("alarm_id <> 'journal.corrupt'", "alarms", ("details",)),
    "audit": ("1", "audit entries", ("details",)),
    "outbox": ("acked_at IS NULL", "unsynced events", ("data",)),
}
_MAX_ROWID = 2**63 - 1

Row = tuple[Any, ...]


@dataclass(slots=True)
class Table:
    """What could be read of one table of a corrupt journal: its columns and the rows kept."""

    columns: tuple[str, ...]
    rows: list[Row]
    damaged: bool  # part of it (or all) could not be read
    read: int  # the rows read, kept or not


@dataclass(slots=True)
class Salvage:
    """What could be read of a corrupt journal: the state to carry over, and its sequence."""

    last_seq: int | None
    tables: dict[str, Table]  # a table the old file's schema did not have is left out

    @property
    def events(self) -> list[Row]:
        """The unsynced events, in sequence order, as `outbox` columns."""
        found = self.tables.get("outbox")
        return found.rows if found else []

    def counts(self) -> dict[str, int]:
        return {name: len(t.rows) for name, t in self.tables.items() if t.rows or not t.damaged}

    def partly_readable(self) -> list[str]:
        return [name for name, t in self.tables.items() if t.damaged and t.read]

    def unreadable(self) -> list[str]:
        return [name for name, t in self.tables.items() if t.damaged and not t.read]

    def config_versions(self) -> dict[str, int]:
        """The version of each config kind recovered (`command_nonces` among them)."""
        found = self.tables.get("config_cache")
        if found is None or not found.rows:
            return {}
        kind, version = found.columns.index("kind"), found.columns.index("version")
        return {str(r[kind]): int(r[version]) for r in found.rows}

    def summary(self) -> str:
        """What was recovered and what was not, for a technician."""
        counts = self.counts()
        said = ", ".join(f"{counts[name]} {_SALVAGED[name][1]}" for name in _SALVAGED
                         if name in counts)
        parts = [f"recovered {said or 'nothing'}"]
        if partly := self.partly_readable():
            parts.append("partly readable: " + ", ".join(partly))
        if unreadable := self.unreadable():
            parts.append("unreadable: " + ", ".join(unreadable))
        return "; ".join(parts)


def salvage(path: Path) -> Salvage:
    """Read what can still be read of a corrupt journal, row by row past its bad pages."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return Salvage(None, {})
    try:
        # Else a file shorter than its header says (cut short) is refused as a whole; on
        # a read-only connection this only lets the pages that are there be read.
        with contextlib.suppress(sqlite3.DatabaseError):
            con.execute("PRAGMA writable_schema = ON")
        tables: dict[str, Table] = {}
        present = _tables(con)
        for name, (keep, _, json) in _SALVAGED.items():
            if present is None or name in present:
                tables[name] = _salvage_table(con, name, keep, json)
        if "config_cache" in tables:
            tables["config_cache"].rows = _newest_per_kind(tables["config_cache"])
        last = _last_seq(con, tables.get("outbox"))
    finally:
        con.close()
    return Salvage(last, tables)


def _tables(con: sqlite3.Connection) -> set[str] | None:
    """The tables the file's schema names; None when the schema itself is unreadable."""
    try:
        rows = con.execute("SELECT name FROM sqlite_schema WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError:
        return None
    return {str(r[0]) for r in rows}


def _last_seq(con: sqlite3.Connection, outbox: Table | None) -> int | None:
    """The highest sequence the file shows: meta's marks (kept across pruning, and the acks'
    cursor) or the newest event read, whichever are readable."""
    seen: list[int] = []
    for query in ("SELECT value FROM meta WHERE key IN ('last_seq', 'acked_through')",
                  "SELECT max(seq) FROM outbox"):
        with contextlib.suppress(sqlite3.DatabaseError):
            seen += [int(r[0]) for r in con.execute(query) if r[0] is not None]
    if outbox is not None and outbox.rows:
        seen.append(int(outbox.rows[-1][outbox.columns.index("seq")]))
    return max(seen) if seen else None


def _salvage_table(con: sqlite3.Connection, table: str, keep: str, json: tuple[str, ...]
                   ) -> Table:
    """Every readable row of `table` for which `keep` holds.

    The table is walked in key order until a row cannot be read (SQLite says the page is
    malformed, or keys come out of order: a page of noise). A rowid table is then walked on
    from the next rowid whose row can be read again, found by probing twice as far each
    time and then halving back; any other table is read from its far end back to where the
    first walk stopped. So what is lost is the rows of the damaged pages, not the table.
    A row garbled where SQLite cannot see it (text cut off by zeroes, JSON that no longer
    parses in its `json` columns) is passed over too.
    """
    try:
        columns = tuple(d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description)
        key = _key_columns(con, table)
    except sqlite3.DatabaseError:
        return Table((), [], damaged=True, read=0)
    sane = " AND ".join([f'coalesce(instr("{c}", char(0)), 0) = 0' for c in columns]
                        + [f'json_valid("{c}")' for c in json if c in columns])
    walk = _Walk(con, table, key, columns, keep, sane)
    walk.run(after=None)
    if key == ("rowid",):
        while not walk.finished and (resume := walk.past_damage()) is not None:
            walk.run(after=(resume,))
    elif not walk.finished:
        walk.run(after=None, descending=True, stop=walk.reached)
    return Table(columns, walk.rows, walk.damaged, walk.read)


def _key_columns(con: sqlite3.Connection, table: str) -> tuple[str, ...]:
    """The primary key of a WITHOUT ROWID table, else `rowid`."""
    (without_rowid,) = con.execute(
        "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_schema WHERE name = ?", (table,)
    ).fetchone()
    if not without_rowid:
        return ("rowid",)
    info = con.execute(f"PRAGMA table_info({table})").fetchall()
    return tuple(str(r[1]) for r in sorted(info, key=lambda r: int(r[5])) if int(r[5]) > 0)


class _Walk:
    """Reads one table in key order, in stretches between the rows that cannot be read."""

    def __init__(self, con: sqlite3.Connection, table: str, key: tuple[str, ...],
                 columns: tuple[str, ...], keep: str, sane: str) -> None:
        self.con = con
        self.key = key
        self.rows: list[Row] = []
        self.damaged = False
        self.read = 0
        self.finished = False  # the last stretch reached the end
        self.reached: tuple[Any, ...] | None = None  # the key of the last row read
        self._keys = ", ".join(key)
        # Every row's key is read (so the walk knows where it is), the other columns only
        # of the rows kept.
        picked = ", ".join(f'CASE WHEN {keep} THEN "{c}" END' for c in columns)
        self._select = (f"SELECT {self._keys}, ({keep}), CASE WHEN {keep} THEN ({sane}) END,"
                        f" {picked} FROM {table}")

    def run(self, *, after: tuple[Any, ...] | None, descending: bool = False,
            stop: tuple[Any, ...] | None = None) -> None:
        """Read past `after` (or from the start) towards `stop` (or the end) while rows read."""
        n = len(self.key)
        self.finished = False
        past, before = ("<", ">") if descending else (">", "<")
        where: list[str] = []
        params: list[Any] = []
        for op, bound in ((past, after), (before, stop)):
            if bound is not None:
                where.append(f"({self._keys}) {op} ({_marks(n)})")
                params += bound
        order = ", ".join(f"{k} DESC" if descending else k for k in self.key)
        sql = f"{self._select}{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {order}"
        if after is not None and not descending:
            self.reached = after
        try:
            for row in self.con.execute(sql, params):
                key = tuple(row[:n])
                if after is not None and not _beyond(key, after, descending):
                    raise sqlite3.DatabaseError(f"{key} out of order after {after}")
                after = key
                self.read += 1
                if not descending:
                    self.reached = key
                if row[n] and row[n + 1]:
                    self.rows.append(tuple(row[n + 2:]))
                elif row[n]:
                    self.damaged = True  # garbled: passed over
        except sqlite3.DatabaseError:
            self.damaged = True
        else:
            self.finished = True

    def past_damage(self) -> int | None:
        """The rowid past the damage from which a walk reads again; None: nothing further."""
        failed = int(self.reached[0]) if self.reached else 0
        step = 1
        while not self._reads_after(probe := min(failed + step, _MAX_ROWID)):
            if probe == _MAX_ROWID:
                return None
            failed, step = probe, step * 2
        good = probe
        while good - failed > 1:
            middle = (failed + good) // 2
            if self._reads_after(middle):
                good = middle
            else:
                failed = middle
        return good

    def _reads_after(self, rowid: int) -> bool:
        """Whether the row that follows `rowid` can be read (or none follows)."""
        try:
            row = self.con.execute(f"{self._select} WHERE rowid > ? ORDER BY rowid LIMIT 1",
                                   (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            return False
        return row is None or row[0] > rowid


def _beyond(key: tuple[Any, ...], after: tuple[Any, ...], descending: bool) -> bool:
    try:
        return key < after if descending else key > after
    except TypeError:  # a key of the wrong type: noise
        return False


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _newest_per_kind(found: Table) -> list[Row]:
    """The newest version of each config kind: the one in force."""
    if not found.rows:
        return []
    kind, version = found.columns.index("kind"), found.columns.index("version")
    newest: dict[Any, Row] = {}
    for row in found.rows:
        if row[kind] not in newest or row[version] > newest[row[kind]][version]:
            newest[row[kind]] = row
    return list(newest.values())


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
    # Deleted rows (plates past their retention, a purge) are overwritten with zeros, not
    # left readable in free pages: deleted means deleted.
    conn.execute("PRAGMA secure_delete = ON")
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


def restore(conn: sqlite3.Connection, found: Salvage, floor: int | None) -> Marks:
    """Put what was salvaged of a corrupt journal into the fresh one, in one transaction.

    The sequence goes on above both the salvaged mark and `floor`, the mark kept beside the
    journal (seqmark): a gap the backend sees, never a sequence used twice.
    """
    events = found.events
    seq = found.tables["outbox"].columns.index("seq") if events else 0
    last = max(found.last_seq or 0, floor or 0)
    # Everything before the first salvaged event counts as delivered or lost;
    # the alarm says which, and the backend sees any gap.
    first = int(events[0][seq]) - 1 if events else last
    with transaction(conn):
        for name, table in found.tables.items():
            if table.rows:
                # OR IGNORE: a row garbled past what SQLite noticed is dropped, not the rest.
                conn.executemany(
                    f"INSERT OR IGNORE INTO {name} ({', '.join(table.columns)})"
                    f" VALUES ({_marks(len(table.columns))})", table.rows)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (last,))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'acked_through'", (first,))
    return Marks(last, first)
