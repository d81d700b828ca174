"""What the journal raises, and how a SQLite error becomes one a technician can act on."""

from __future__ import annotations

import sqlite3

# sqlite3 primary result codes (the low byte of an extended code).
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26


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


def code(e: sqlite3.Error) -> int:
    """The primary result code of `e` (0 when SQLite gave none)."""
    return int(getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF


def is_environmental(e: sqlite3.Error) -> bool:
    """Errors of the disk or file, not of the data: retrying each write alone won't help."""
    return code(e) in (SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN,
                       SQLITE_CORRUPT)


def write_error(e: sqlite3.Error, what: str) -> JournalWriteError:
    """The JournalWriteError that says what `e` means for the lot."""
    primary = code(e)
    if primary == SQLITE_FULL:
        return JournalFullError(f"{what}: the disk or the journal's page limit is full ({e})")
    if primary in (SQLITE_READONLY, SQLITE_CANTOPEN):
        return JournalReadOnlyError(f"{what}: the journal or its file system is read-only"
                                    f" or cannot be opened ({e})")
    return JournalWriteError(f"{what}: {e}")
