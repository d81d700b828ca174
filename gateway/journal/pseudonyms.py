"""Pseudonyms for the plates of cars the lanes did not let in: a keyed hash, not the text.

A refused or unmatched plate (a deny-listed car, one turned away by anti-passback, a
tailgater at an exit with no session) is the plate of someone who never parked here. With
`[journal] pseudonymise_refused` on, the journal writes `hmac-sha256:<64 hex>` in its place:
HMAC-SHA256 of the normalised plate under the lot's key. The same plate gives the same
pseudonym, so the backend can still tell a repeat visitor; without the key the text cannot be
had back, even though plates are few enough to try them all.

The key is 32 random bytes, kept as hex in `[journal] plate_key_file` (made 0600 on first use).
It is never journaled nor synced: a copy of the journal without it reveals no refused plate. Give
every gateway of a lot the same file, so their pseudonyms agree; a lost key only means new
pseudonyms from then on.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

import structlog

from gateway.journal.errors import JournalError

log = structlog.get_logger(__name__)

PREFIX = "hmac-sha256:"
KEY_BYTES = 32


class PlatePseudonyms:
    """Turns a normalised plate into its pseudonym under one lot's key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a plate key has {KEY_BYTES} bytes, not {len(key)}")
        self._key = key

    def of(self, plate: str) -> str:
        return PREFIX + hmac.new(self._key, plate.encode(), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never the key, in a log line or a traceback
        return "PlatePseudonyms(<key>)"

    @classmethod
    def from_file(cls, path: Path) -> PlatePseudonyms:
        """The key in `path`, made there (mode 0600) if there is none yet.

        Raises JournalError when the file cannot be read, made, or holds no key: the gateway
        does not start rather than write a refused plate in the clear or under a new key.
        """
        return cls(load_key(path))


def load_key(path: Path, what: str = "plate key") -> bytes:
    """The 32-byte key in `path`, made there (mode 0600) if there is none yet.

    One helper for every per-lot key kept beside the journal (the plate key, the ticket key:
    gateway.core.tickets); `what` names it in errors and logs. Raises JournalError when the
    file cannot be read, made, or holds no key.
    """
    try:
        return _read_key(path, what)
    except FileNotFoundError:
        return _make_key(path, what)
    except OSError as e:
        raise JournalError(f"cannot read the {what} {path}: {e.strerror or e}") from e


def _read_key(path: Path, what: str) -> bytes:
    with path.open("rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        text = f.read(4 * KEY_BYTES).strip()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("journal.key_not_private", key=what, path=str(path),
                    mode=oct(mode & 0o777))
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise JournalError(f"{path} holds no {what}: {2 * KEY_BYTES} hex digits expected"
                           " (openssl rand -hex 32 makes one)")
    return key


def _make_key(path: Path, what: str) -> bytes:
    """A new key, written whole or not at all: another process making it at the same time
    loses (O_EXCL) and reads the winner's."""
    key = secrets.token_bytes(KEY_BYTES)
    part = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(part, path)  # fails if a key appeared meanwhile: that one stands
    except FileExistsError:
        return _read_key(path, what)
    except OSError as e:
        raise JournalError(f"cannot make the {what} {path}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(OSError):
            part.unlink()
    _sync_directory(path.parent)
    log.info("journal.key_made", key=what, path=str(path))
    return key


def _sync_directory(directory: Path) -> None:
    """The new name survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
