"""The event sequence's high-water mark, kept where a corrupt journal cannot take it with it.

The journal's own mark (`meta.last_seq`, the newest event) goes when its file is corrupt or
lost, and a sequence that starts again at 1 makes the backend drop the new events as
duplicates of old ones. So a small file beside the journal, `<journal>.seq`, holds a number
that is never below a sequence handed out: before the writer gives out a sequence past it,
the file is rewritten (atomically: a temporary file, fsync, rename, fsync of the directory)
with `RESERVE` more, so it is rewritten once per `RESERVE / 2` events or so, not per commit.
After a recovery the sequence goes on above the higher of the salvaged mark and this one: the
backend may see a gap, never a sequence used twice (docs/events.md).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# How far ahead of the sequence the mark is written: the most a recovery can skip. The mark is
# refreshed once half of it is used, so a commit waits for the file only if that half goes
# by during one rewrite.
RESERVE = 1000

Hop = Callable[[Callable[[sqlite3.Connection], None]], Awaitable[None]]


def mark_path(journal: Path) -> Path:
    """The mark's file beside `journal`."""
    return journal.with_name(journal.name + ".seq")


def read_mark(journal: Path) -> int | None:
    """The mark beside `journal`; None if there is none (a first start, an upgrade) or it
    cannot be read (then it is logged)."""
    path = mark_path(journal)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        log.error("journal.seqmark_unreadable", path=str(path), error=str(e))
        return None
    if not text.strip().isdigit():
        log.error("journal.seqmark_unreadable", path=str(path), content=text[:40])
        return None
    return int(text)


def write_mark(journal: Path, value: int) -> None:
    """Replace the mark with `value`, durably: the old or the new one survives a power cut."""
    path = mark_path(journal)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, f"{value}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself is durable only once its directory is
    finally:
        os.close(dir_fd)


class SeqMark:
    """Keeps the mark on disk ahead of every sequence the writer hands out.

    The file is rewritten on a journal connection's thread through `hop` (the reader's: off
    the writer's path, and a hop that the simulator's virtual time waits for).
    """

    def __init__(self, journal: Path, on_disk: int, hop: Hop, reserve: int = RESERVE) -> None:
        self.journal = journal
        self.on_disk = on_disk
        self._hop = hop
        self._reserve = reserve
        self._rewrite: asyncio.Task[None] | None = None
        self._failing = False  # logged once per spell of failures, not at every commit

    async def cover(self, last: int) -> None:
        """Return once the mark on disk is at least `last` (the last sequence of a commit).

        If the file cannot be written, that is logged and the commit goes on: the lanes do
        not stop for the mark; it is tried again at the next commit.
        """
        if self._rewrite is None and last > self.on_disk - self._reserve // 2:
            self._start(last)
        while last > self.on_disk and self._rewrite is not None:
            await asyncio.shield(self._rewrite)  # the writer's stop must not cut a rewrite
            if last > self.on_disk and not self._failing:
                self._start(last)  # the one under way was for fewer than this commit takes

    def _start(self, last: int) -> None:
        self._rewrite = asyncio.create_task(self._write(last + self._reserve),
                                            name="journal-seqmark")

    async def _write(self, value: int) -> None:
        try:
            await self._hop(lambda _conn: write_mark(self.journal, value))
        except OSError as e:
            if not self._failing:
                log.error("journal.seqmark_write_failed", path=str(mark_path(self.journal)),
                          error=str(e))
            self._failing = True
        else:
            self.on_disk = value
            self._failing = False
        finally:
            self._rewrite = None

