"""Wall time (UTC) and monotonic time behind one interface, and safe durations.

A Pi has no real-time clock: it boots with the time it last saved (or 1970) and
jumps when NTP syncs. Wall time is still what tariff bands need, but durations
are taken from the monotonic clock whenever both ends were stamped in the same
boot, and every stamp records whether the wall clock was synchronised.
"""

from __future__ import annotations

import ctypes
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

# No lot ran this software before this date: a wall clock earlier than it is wrong.
EARLIEST_PLAUSIBLE = datetime(2026, 1, 1, tzinfo=UTC)

# A stay longer than this is taken as a clock error, not a real stay.
MAX_PLAUSIBLE_STAY = timedelta(days=366)

# Wall and monotonic durations that differ by more than this mean the wall clock jumped.
JUMP_TOLERANCE_S = 2.0


@dataclass(frozen=True, slots=True)
class Stamp:
    """One instant, as both clocks saw it."""

    wall: datetime  # tz-aware UTC
    mono: float  # seconds of CLOCK_MONOTONIC; only comparable within one boot
    boot_id: str
    synced: bool  # the wall clock was NTP-synchronised when stamped


@dataclass(frozen=True, slots=True)
class Elapsed:
    """A duration between two stamps, and how far to trust it."""

    seconds: float  # never negative
    start: datetime  # best estimate of the start in UTC (corrected for a wall-clock jump)
    end: datetime
    reliable: bool
    reason: str | None = None  # why it is not reliable, for the journal and the operator


class Clock(Protocol):
    def now(self) -> datetime:
        """Current wall time, tz-aware UTC."""

    def monotonic(self) -> float:
        """Seconds of a clock that never goes back (within one boot)."""

    def synchronized(self) -> bool:
        """Whether the wall clock is believed right (NTP-synchronised)."""

    def boot_id(self) -> str:
        """Identifies the boot, so monotonic readings from another boot are not compared."""

    def stamp(self) -> Stamp:
        """Both clocks at one instant."""


class SystemClock:
    """The real clocks of the machine."""

    def __init__(self) -> None:
        self._boot_id = _read_boot_id()
        self._adjtime = _ntp_adjtime()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def boot_id(self) -> str:
        return self._boot_id

    def synchronized(self) -> bool:
        if self.now() < EARLIEST_PLAUSIBLE:
            return False
        if self._adjtime is not None:
            return self._adjtime()
        # Without ntp_adjtime (not Linux), a plausible date is the best we know.
        return True

    def stamp(self) -> Stamp:
        return Stamp(self.now(), self.monotonic(), self._boot_id, self.synchronized())


class FakeClock:
    """A clock the tests and the simulator move by hand."""

    def __init__(
        self,
        start: datetime = datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
        *,
        synced: bool = True,
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a tz-aware start time")
        self._wall = start.astimezone(UTC)
        self._mono = 1000.0
        self._synced = synced
        self._boot = 1

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def synchronized(self) -> bool:
        return self._synced

    def boot_id(self) -> str:
        return f"fake-boot-{self._boot}"

    def stamp(self) -> Stamp:
        return Stamp(self._wall, self._mono, self.boot_id(), self._synced)

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move together."""
        if seconds < 0:
            raise ValueError("time does not run backwards; use jump_wall for a clock step")
        self._wall += timedelta(seconds=seconds)
        self._mono += seconds

    def jump_wall(self, seconds: float, *, synced: bool = True) -> None:
        """The wall clock is stepped (NTP sync, an operator); monotonic time is not."""
        self._wall += timedelta(seconds=seconds)
        self._synced = synced

    def set_synchronized(self, synced: bool) -> None:
        self._synced = synced

    def reboot(self, *, wall: datetime | None = None, synced: bool = False) -> None:
        """A power cycle: a new boot id, monotonic time restarts, the wall clock may be wrong."""
        if wall is not None and wall.tzinfo is None:
            # astimezone() would read a naive time as the host's local time.
            raise ValueError("FakeClock needs a tz-aware wall time")
        self._boot += 1
        self._mono = 10.0
        if wall is not None:
            self._wall = wall.astimezone(UTC)
        self._synced = synced


def elapsed(start: Stamp, end: Stamp) -> Elapsed:
    """The duration from start to end, guarded against clock jumps and reboots.

    Within one boot the monotonic clock gives the duration; if the wall clock
    jumped in between, the less trustworthy end is moved to agree with it. If
    neither end was synchronised the duration stands but the times are not
    trusted. Across a reboot only wall time is left: a negative duration becomes
    0 and a huge one is flagged, never trusted. The start is never after the end.
    """
    if start.boot_id == end.boot_id:
        mono_seconds = end.mono - start.mono
        if mono_seconds < 0:
            # Cannot happen with a real monotonic clock; the stamps are inconsistent.
            return Elapsed(0.0, end.wall, end.wall, reliable=False,
                           reason="monotonic clock went backwards within one boot; clamped to 0")
        span = timedelta(seconds=mono_seconds)
        trusted = start.synced or end.synced
        untrusted = None if trusted else "wall clock not synchronised at either end"
        wall_seconds = (end.wall - start.wall).total_seconds()
        if wall_seconds >= 0 and abs(wall_seconds - mono_seconds) <= JUMP_TOLERANCE_S:
            return Elapsed(mono_seconds, start.wall, end.wall, reliable=trusted, reason=untrusted)
        # The wall clock stepped between the stamps (or went back by less than the
        # tolerance). Keep the synchronised end; with neither, the later reading.
        if end.synced or not start.synced:
            return Elapsed(mono_seconds, end.wall - span, end.wall, reliable=trusted,
                           reason=untrusted
                           or "wall clock stepped; start corrected from monotonic time")
        return Elapsed(mono_seconds, start.wall, start.wall + span, reliable=True,
                       reason="wall clock stepped; end corrected from monotonic time")

    wall_seconds = (end.wall - start.wall).total_seconds()
    trusted = start.synced and end.synced
    if wall_seconds < 0:
        return Elapsed(0.0, end.wall, end.wall, reliable=False,
                       reason="negative duration across a reboot; clamped to 0")
    if wall_seconds > MAX_PLAUSIBLE_STAY.total_seconds():
        # A clock error, not a stay: no fee is computed from it. The caller sees
        # reliable=False and applies its policy (e.g. the lost-ticket fee).
        return Elapsed(0.0, end.wall, end.wall, reliable=False,
                       reason="implausibly long duration across a reboot; not used")
    if not trusted:
        return Elapsed(wall_seconds, start.wall, end.wall, reliable=False,
                       reason="wall clock not synchronised at one end, across a reboot")
    return Elapsed(wall_seconds, start.wall, end.wall, reliable=True)


def _read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        # Not Linux: one id per process start is the honest fallback.
        return f"process-{uuid.uuid4()}"


_TIME_ERROR = 5  # ntp_adjtime() state: the kernel clock is not synchronised


def _ntp_adjtime() -> _AdjTime | None:
    """The kernel's own view of NTP sync (set by chrony, ntpd or systemd-timesyncd)."""
    try:
        # The symbols already loaded into this process (libc among them): no
        # find_library subprocess, and it works on minimal and musl images too.
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.ntp_adjtime
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p]
    fn.restype = ctypes.c_int
    # struct timex is about 208 bytes on 64-bit Linux; modes=0 (first field) only reads.
    buf = ctypes.create_string_buffer(512)

    def synced() -> bool:
        ctypes.memset(buf, 0, len(buf))
        state: int = fn(buf)
        return state >= 0 and state != _TIME_ERROR

    return synced


class _AdjTime(Protocol):
    def __call__(self) -> bool: ...
