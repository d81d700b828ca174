"""Paper tickets: what the QR code on a ticket says, and how a scanned one is checked.

A ticket stands for one session: a car whose plate the entry camera could not read (or any car
at a lane in ticket mode) takes one, and its exit finds the session by it. The QR code carries::

    T1.<session id>.<HMAC-SHA256 of the session id under the lot's ticket key, 16 bytes, base32>

so a ticket cannot be forged (nor a session id guessed into a ticket) without the key, and a
ticket names exactly one session: once that session has ended, the same ticket finds nothing
(a second use is refused by the exit). The MAC is truncated to 128 bits: a forger gets one
guess per scan at a barrier, so 2^-128 is far beyond reach, and the code stays small enough
for a coarse QR module on thermal paper.

The version prefix lets a later format live beside this one. Case is forgiven on reading (a
keyboard-wedge scanner with caps lock on flips it): the session id is lower-case hex, the MAC
upper-case base32, so each part is folded back before it is checked.

Pure: no I/O. The key itself is kept in a file (see :func:`gateway.journal.pseudonyms.load_key`),
never journaled nor synced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Literal

VERSION = "T1"
KEY_BYTES = 32
MAC_BYTES = 16
MAX_TEXT = 128  # a scan longer than this is not a ticket of ours (ours are 66 characters)
_DOMAIN = b"parking-gateway/ticket/v1:"  # the key signs tickets only, nothing else
_SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAC_TEXT = re.compile(r"[A-Z2-7]{26}")  # 16 bytes in base32, unpadded

TicketMode = Literal["off", "unreadable", "always"]
"""A lane's use of tickets: none; for cars whose plate is unreadable; for every visitor."""

TicketProblem = Literal["malformed", "version", "forged"]


class TicketError(ValueError):
    """A scanned text is not a valid ticket of this lot; `problem` says how."""

    def __init__(self, problem: TicketProblem, message: str) -> None:
        super().__init__(message)
        self.problem: TicketProblem = problem


def _mac(session_id: str, key: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + session_id.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"a ticket key has {KEY_BYTES} bytes, not {len(key)}")


def issue(session_id: str, key: bytes) -> str:
    """The QR payload of the ticket for `session_id` (a UUID in its text form)."""
    _check_key(key)
    if not _SESSION_ID.fullmatch(session_id):
        raise ValueError(f"not a session id: {session_id[:40]!r}")
    mac = base64.b32encode(_mac(session_id, key)).decode("ascii").rstrip("=")
    return f"{VERSION}.{session_id}.{mac}"


def verify(text: str, key: bytes) -> str:
    """The session id a scanned ticket names; raises :class:`TicketError` if it is not one of
    ours (garbage, another format, or a wrong MAC: forged, or another lot's key)."""
    _check_key(key)
    if len(text) > MAX_TEXT:
        raise TicketError("malformed", f"not a ticket: {len(text)} characters")
    parts = text.strip().split(".")
    if len(parts) != 3:
        raise TicketError("malformed", "not a ticket: expected version.session.mac")
    version, session_id, mac_text = parts[0].upper(), parts[1].lower(), parts[2].upper()
    if version != VERSION:
        raise TicketError("version", f"unknown ticket version {parts[0][:8]!r}")
    if not _SESSION_ID.fullmatch(session_id) or not _MAC_TEXT.fullmatch(mac_text):
        raise TicketError("malformed", "not a ticket: bad session id or signature")
    mac = base64.b32decode(mac_text + "======")
    if not hmac.compare_digest(mac, _mac(session_id, key)):
        raise TicketError("forged", "the ticket's signature does not match")
    return session_id


class TicketSigner:
    """One lot's ticket key, for issuing and checking tickets; never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._key = key

    def issue(self, session_id: str) -> str:
        return issue(session_id, self._key)

    def verify(self, text: str) -> str:
        return verify(text, self._key)

    def __repr__(self) -> str:  # never the key, in a log line or a traceback
        return "TicketSigner(<key>)"
