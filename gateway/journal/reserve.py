"""The journal's reserve: space held beside it in a ballast file, given up when the disk fills.

An SD card fills up slowly (logs, a backlog the backend never took) and then all at once.
SQLite then refuses every write (SQLITE_FULL), and a lane that cannot record cannot decide.
The writer keeps a preallocated ballast file of `reserve_mb` beside the journal; the first
write that fails for a full disk deletes it and is retried, so the lot goes on writing into
the space it held (hours of a busy lot for the default) while the alarm brings a technician.
The ballast is made again once the disk has room for it and `min_free_mb` besides.

The maintenance loop asks :func:`free_bytes` for the early warning (`journal.disk_low`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from gateway.config import JournalConfig

MB = 1024 * 1024
_CHUNK = 1024 * 1024  # zeros written at a time where the system cannot preallocate


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Reserve:
    """The ballast file `<journal>.reserve`: `size` bytes that are ours to give up."""

    def __init__(self, journal: Path, size: int) -> None:
        self.path = journal.with_name(journal.name + ".reserve")
        self.size = size

    @classmethod
    def open(cls, settings: JournalConfig) -> Reserve:
        """The journal's reserve, made now if the disk has room for it."""
        self = cls(settings.path, settings.reserve_mb * MB)
        self.ensure(settings.min_free_mb * MB)
        return self

    @property
    def held(self) -> bool:
        """The ballast is on the disk (a size of 0 holds nothing)."""
        return self.size > 0 and self.path.exists()

    def ensure(self, keep_free: int) -> bool:
        """Make the ballast if it is missing and the disk keeps `keep_free` bytes besides.

        Written under a temporary name and renamed, so a ballast cut short by a full disk or
        a power cut is never taken for a whole one. True when it was made now.
        """
        if self.size <= 0 or self.held:
            return False
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            if free_bytes(self.path.parent) < self.size + keep_free:
                return False
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                _fill(fd, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False
        return True

    def release(self) -> bool:
        """Give the space back to the file system. True when there was a ballast to give."""
        if self.size <= 0:
            return False
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


def _fill(fd: int, size: int) -> None:
    """Allocate `size` bytes for real: a sparse file would hold no space at all."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # the file system cannot
                raise
    zeros = bytes(_CHUNK)
    left = size
    while left > 0:
        left -= os.write(fd, zeros[:min(left, _CHUNK)])
