"""The clock interface, the fake the simulator drives, and durations that survive a Pi
without a real-time clock: NTP steps, reboots, and a wall clock that starts in 1970."""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import clock as clock_module
from gateway.core.clock import (
    EARLIEST_PLAUSIBLE,
    JUMP_TOLERANCE_S,
    MAX_PLAUSIBLE_STAY,
    Clock,
    FakeClock,
    Stamp,
    SystemClock,
    elapsed,
)

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- SystemClock -----------------------------------------------------------------------


def test_system_and_fake_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), FakeClock()]  # mypy checks the protocol here
    for clock in clocks:
        assert isinstance(clock.stamp(), Stamp)


def test_system_now_is_utc_and_agrees_with_time_time() -> None:
    clock = SystemClock()
    before = time.time()
    now = clock.now()
    after = time.time()
    assert now.tzinfo is UTC
    assert before - 0.01 <= now.timestamp() <= after + 0.01


def test_system_monotonic_never_decreases() -> None:
    clock = SystemClock()
    before = time.monotonic()
    readings = [clock.monotonic() for _ in range(20_000)]
    after = time.monotonic()
    assert all(a <= b for a, b in itertools.pairwise(readings))
    assert readings[-1] > readings[0]  # it does move
    assert before <= readings[0] <= readings[-1] <= after  # CLOCK_MONOTONIC, not wall time


def test_system_boot_id_is_stable() -> None:
    first = SystemClock()
    assert first.boot_id()
    assert first.boot_id() == first.boot_id() == SystemClock().boot_id()


@pytest.mark.skipif(not BOOT_ID_FILE.exists(), reason="Linux only")
def test_system_boot_id_is_the_kernels() -> None:
    assert SystemClock().boot_id() == BOOT_ID_FILE.read_text().strip()


def test_system_stamp_is_one_instant_on_both_clocks() -> None:
    clock = SystemClock()
    wall_before, mono_before = clock.now(), clock.monotonic()
    stamp = clock.stamp()
    wall_after, mono_after = clock.now(), clock.monotonic()
    assert wall_before <= stamp.wall <= wall_after
    assert mono_before <= stamp.mono <= mono_after
    assert stamp.wall.tzinfo is UTC
    assert stamp.boot_id == clock.boot_id()
    assert isinstance(stamp.synced, bool)


def test_system_synchronized_is_a_bool() -> None:
    assert isinstance(SystemClock().synchronized(), bool)


@pytest.mark.parametrize("kernel", [lambda: True, None], ids=["kernel-synced", "no-adjtime"])
def test_system_clock_before_earliest_plausible_is_not_synchronized(
    monkeypatch: pytest.MonkeyPatch, kernel: object
) -> None:
    # Even when the kernel (or, off Linux, nothing) vouches for the time, a date
    # before this software existed is a Pi that has not synced yet.
    clock = SystemClock()
    monkeypatch.setattr(clock, "_adjtime", kernel)
    monkeypatch.setattr(clock, "now", lambda: EARLIEST_PLAUSIBLE)
    assert clock.synchronized() is True
    monkeypatch.setattr(clock, "now", lambda: datetime(1970, 1, 1, 0, 0, 42, tzinfo=UTC))
    assert clock.synchronized() is False
    assert clock.stamp().synced is False
    monkeypatch.setattr(clock, "now", lambda: EARLIEST_PLAUSIBLE - timedelta(microseconds=1))
    assert clock.synchronized() is False


def test_system_clock_believes_the_kernel_about_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SystemClock()
    monkeypatch.setattr(clock, "now", lambda: T0)
    monkeypatch.setattr(clock, "_adjtime", lambda: False)
    assert clock.synchronized() is False
    monkeypatch.setattr(clock, "_adjtime", lambda: True)
    assert clock.synchronized() is True


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex from <sys/timex.h>, for an LP64 glibc (x86_64, aarch64)."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


_STA_UNSYNC = 0x0040


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_long) != 8,
    reason="struct timex layout spelled out for 64-bit Linux",
)
def test_kernel_sync_state_agrees_with_a_fully_declared_struct_timex() -> None:
    assert ctypes.sizeof(_Timex) == 208  # the layout above is the kernel's
    probe = clock_module._ntp_adjtime()
    assert probe is not None, "ntp_adjtime should be found in glibc"
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.ntp_adjtime.argtypes = [ctypes.POINTER(_Timex)]
    libc.ntp_adjtime.restype = ctypes.c_int
    timex = _Timex()  # modes = 0: read only, allowed without CAP_SYS_TIME
    state = libc.ntp_adjtime(ctypes.byref(timex))
    assert state >= 0, ctypes.get_errno()
    synced = probe()
    assert synced is (not timex.status & _STA_UNSYNC)
    assert synced is (state != 5)  # TIME_ERROR
    assert probe() is synced  # reading does not change the state


# --- FakeClock -------------------------------------------------------------------------


def test_fake_advance_moves_both_clocks_together() -> None:
    clock = FakeClock(T0)
    before = clock.stamp()
    clock.advance(90.5)
    after = clock.stamp()
    assert after.wall - before.wall == timedelta(seconds=90.5)
    assert after.mono - before.mono == 90.5
    assert (after.boot_id, after.synced) == (before.boot_id, before.synced)


def test_fake_refuses_to_run_backwards() -> None:
    clock = FakeClock(T0)
    before = clock.stamp()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert clock.stamp() == before


@pytest.mark.parametrize("synced", [True, False])
def test_fake_jump_wall_moves_only_the_wall_clock(synced: bool) -> None:
    clock = FakeClock(T0, synced=not synced)
    before = clock.stamp()
    clock.jump_wall(-3600, synced=synced)
    after = clock.stamp()
    assert after.wall == T0 - timedelta(hours=1)
    assert after.mono == before.mono
    assert after.boot_id == before.boot_id
    assert after.synced is synced


def test_fake_jump_wall_is_an_ntp_sync_by_default() -> None:
    clock = FakeClock(T0, synced=False)
    clock.jump_wall(10)
    assert clock.synchronized() is True


def test_fake_set_synchronized() -> None:
    clock = FakeClock(T0)
    clock.set_synchronized(False)
    assert clock.stamp().synced is False
    clock.set_synchronized(True)
    assert clock.stamp().synced is True


def test_fake_reboot_is_a_new_boot_with_a_wrong_unsynced_clock() -> None:
    clock = FakeClock(T0)
    clock.advance(5000)
    before = clock.stamp()
    clock.reboot(wall=datetime(1970, 1, 1, tzinfo=UTC))
    after = clock.stamp()
    assert after.boot_id != before.boot_id
    assert after.mono < before.mono  # monotonic time starts again
    assert after.wall == datetime(1970, 1, 1, tzinfo=UTC)
    assert after.synced is False
    clock.reboot()
    assert clock.boot_id() not in (before.boot_id, after.boot_id)


def test_fake_reboot_keeps_the_wall_clock_unless_told_and_may_come_up_synced() -> None:
    clock = FakeClock(T0)
    clock.reboot(synced=True)
    assert clock.now() == T0
    assert clock.synchronized() is True


def test_fake_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="tz-aware"):
        FakeClock(datetime(2026, 3, 2, 8, 0))
    clock = FakeClock(T0)
    with pytest.raises(ValueError, match="tz-aware"):
        clock.reboot(wall=datetime(2026, 3, 3, 9, 0))  # would be read as host-local time
    assert clock.boot_id() == "fake-boot-1"  # a refused reboot did not happen


def test_fake_keeps_wall_time_in_utc() -> None:
    berlin_winter = timezone(timedelta(hours=1))
    clock = FakeClock(datetime(2026, 3, 2, 9, 0, tzinfo=berlin_winter))
    assert clock.now() == T0
    assert clock.now().tzinfo is UTC
    clock.reboot(wall=datetime(2026, 3, 2, 10, 0, tzinfo=berlin_winter))
    assert clock.now().tzinfo is UTC


# --- elapsed(): one boot -----------------------------------------------------------------


def test_elapsed_within_one_boot() -> None:
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.advance(3600)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 3600
    assert (result.start, result.end) == (T0, at(3600))
    assert result.reliable is True
    assert result.reason is None


def test_elapsed_of_a_stamp_with_itself_is_zero() -> None:
    stamp = FakeClock(T0).stamp()
    result = elapsed(stamp, stamp)
    assert (result.seconds, result.start, result.end, result.reliable) == (0, T0, T0, True)
    assert result.reason is None


@pytest.mark.parametrize("step", [3 * 365 * 86400, 7200, -7200, -86400 * 30])
def test_ntp_step_after_an_unsynced_entry_corrects_the_start(step: float) -> None:
    clock = FakeClock(T0 - timedelta(seconds=step), synced=False)
    entry = clock.stamp()
    clock.advance(600)
    clock.jump_wall(step)  # NTP syncs
    clock.advance(1200)
    exit_ = clock.stamp()
    result = elapsed(entry, exit_)
    assert result.seconds == 1800
    assert (result.start, result.end) == (T0, at(1800))
    assert result.reliable is True
    assert result.reason is not None
    assert "start corrected" in result.reason


@pytest.mark.parametrize("step", [3600, -3600])
def test_wall_step_after_a_synced_entry_corrects_the_end(step: float) -> None:
    # An operator sets the date by hand (dropping sync) while a car is parked.
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.advance(600)
    clock.jump_wall(step, synced=False)
    clock.advance(600)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 1200
    assert (result.start, result.end) == (T0, at(1200))
    assert result.reliable is True
    assert result.reason is not None
    assert "end corrected" in result.reason


def test_wall_step_between_synced_ends_keeps_the_later_reading() -> None:
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.jump_wall(-60)  # chrony makestep on a drifted clock
    clock.advance(600)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 600
    assert (result.start, result.end) == (at(-60), at(540))
    assert result.reliable is True


def test_wall_step_with_neither_end_synced_keeps_the_duration_but_not_the_times() -> None:
    # Booted from a stale fake-hwclock, stepped again without NTP, never synced.
    clock = FakeClock(T0, synced=False)
    entry = clock.stamp()
    clock.advance(600)
    clock.jump_wall(86400, synced=False)
    clock.advance(600)
    exit_ = clock.stamp()
    result = elapsed(entry, exit_)
    assert result.seconds == 1200
    assert result.end == exit_.wall
    assert result.end - result.start == timedelta(seconds=1200)
    assert result.reliable is False
    assert result.reason is not None
    assert "not synchronised" in result.reason


def test_no_step_with_neither_end_synced_is_not_trusted() -> None:
    clock = FakeClock(datetime(2024, 5, 1, tzinfo=UTC), synced=False)
    entry = clock.stamp()
    clock.advance(900)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 900
    assert result.reliable is False
    assert result.reason is not None


@pytest.mark.parametrize(("entry_synced", "exit_synced"), [(True, False), (False, True)])
def test_one_synced_end_without_a_step_is_trusted(entry_synced: bool, exit_synced: bool) -> None:
    clock = FakeClock(T0, synced=entry_synced)
    entry = clock.stamp()
    clock.advance(900)
    clock.set_synchronized(exit_synced)
    result = elapsed(entry, clock.stamp())
    assert (result.seconds, result.reliable, result.reason) == (900, True, None)


@pytest.mark.parametrize("jitter", [JUMP_TOLERANCE_S, 0.75 * JUMP_TOLERANCE_S])
def test_jitter_within_the_tolerance_is_not_a_step(jitter: float) -> None:
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.advance(300)
    clock.jump_wall(jitter)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 300
    assert (result.start, result.end) == (T0, at(300 + jitter))  # wall times as read
    assert result.reason is None


def test_a_step_just_past_the_tolerance_is_corrected() -> None:
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.advance(300)
    clock.jump_wall(JUMP_TOLERANCE_S + 0.5)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 300
    assert result.end - result.start == timedelta(seconds=300)
    assert result.reason is not None


def test_small_backward_jitter_never_puts_the_end_before_the_start() -> None:
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.jump_wall(-1.5)
    clock.advance(0.5)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 0.5
    assert result.start <= result.end
    assert result.end == at(-1.0)


def test_monotonic_time_going_back_within_a_boot_is_clamped_and_flagged() -> None:
    # Impossible with a real clock; stamps mixed up in storage must still not give
    # a negative duration or a trusted one.
    start = Stamp(T0, 500.0, "boot-a", True)
    for end in (Stamp(at(10), 495.0, "boot-a", True), Stamp(at(-1), 495.0, "boot-a", True)):
        result = elapsed(start, end)
        assert result.seconds == 0
        assert result.start <= result.end
        assert result.reliable is False
        assert result.reason is not None
        assert "monotonic" in result.reason


# --- elapsed(): across a reboot -----------------------------------------------------------


def test_across_a_reboot_with_synced_clocks_wall_time_is_trusted() -> None:
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.advance(1800)
    clock.reboot(wall=at(2400), synced=True)  # the power was off for ten minutes
    clock.advance(600)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 3000
    assert (result.start, result.end) == (T0, at(3000))
    assert result.reliable is True
    assert result.reason is None


def test_across_a_reboot_a_negative_duration_is_clamped_to_zero() -> None:
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.reboot(wall=at(-7200), synced=True)
    clock.advance(60)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 0
    assert result.start <= result.end
    assert result.reliable is False
    assert result.reason is not None
    assert "negative" in result.reason


def test_across_a_reboot_an_implausibly_long_stay_is_not_trusted() -> None:
    clock = FakeClock(T0)
    entry = clock.stamp()
    clock.reboot(wall=T0 + MAX_PLAUSIBLE_STAY + timedelta(seconds=1), synced=True)
    result = elapsed(entry, clock.stamp())
    assert result.reliable is False
    assert result.reason is not None
    assert "implausibly long" in result.reason
    assert result.seconds == 0  # no fee is ever computed from a clock error
    assert result.start == result.end
    # One second less is a long stay, not a clock error.
    clock.reboot(wall=T0 + MAX_PLAUSIBLE_STAY, synced=True)
    assert elapsed(entry, clock.stamp()).reliable is True


@pytest.mark.parametrize(("entry_synced", "exit_synced"), [(True, False), (False, True)])
def test_across_a_reboot_an_unsynced_end_is_not_trusted(
    entry_synced: bool, exit_synced: bool
) -> None:
    clock = FakeClock(T0, synced=entry_synced)
    entry = clock.stamp()
    clock.reboot(wall=at(3600), synced=exit_synced)
    result = elapsed(entry, clock.stamp())
    assert result.seconds == 3600
    assert result.reliable is False
    assert result.reason is not None
    assert "not synchronised" in result.reason


# --- the Pi without a real-time clock ----------------------------------------------------


@pytest.mark.parametrize(
    "boot_wall",
    [datetime(1970, 1, 1, tzinfo=UTC), datetime(2023, 3, 2, 7, 10, tzinfo=UTC)],
    ids=["epoch", "stale-fake-hwclock"],
)
def test_pi_boots_with_a_wrong_clock_and_ntp_syncs_while_a_car_is_parked(
    boot_wall: datetime,
) -> None:
    real_entry = datetime(2026, 3, 2, 7, 12, 30, tzinfo=UTC)
    clock = FakeClock(boot_wall, synced=False)
    clock.advance(30)  # boot, the gateway starts
    entry = clock.stamp()  # the car enters before the network is up
    assert entry.synced is False
    assert entry.wall < EARLIEST_PLAUSIBLE
    clock.advance(75)
    clock.jump_wall((real_entry + timedelta(seconds=75) - clock.now()).total_seconds())
    clock.advance(2 * 3600 + 5)
    exit_ = clock.stamp()
    assert exit_.wall == real_entry + timedelta(seconds=2 * 3600 + 80)
    result = elapsed(entry, exit_)
    assert result.seconds == 2 * 3600 + 80  # real time, not decades
    assert result.start == real_entry
    assert result.end == exit_.wall
    assert result.reliable is True


# --- properties -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Taken:
    stamp: Stamp
    true_time: float  # seconds that really passed since the clock was made


_walls = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_ops = st.one_of(
    st.tuples(st.just("advance"), st.floats(0, 10 * 86400)),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.25, JUMP_TOLERANCE_S, 3.0])),
    st.tuples(st.just("jump"), st.floats(-1e9, 1e9), st.booleans()),
    st.tuples(st.just("jump"), st.floats(-2 * JUMP_TOLERANCE_S, 2 * JUMP_TOLERANCE_S),
              st.booleans()),
    st.tuples(st.just("reboot"), st.none() | _walls, st.booleans()),
    st.tuples(st.just("stamp")),
)


def _run(start: datetime, synced: bool, ops: list[tuple[object, ...]]) -> list[_Taken]:
    clock = FakeClock(start, synced=synced)
    true_time = 0.0
    taken = [_Taken(clock.stamp(), true_time)]
    for op in ops:
        match op:
            case ("advance", float(seconds)):
                clock.advance(seconds)
                true_time += seconds
            case ("jump", float(seconds), bool(now_synced)):
                clock.jump_wall(seconds, synced=now_synced)
            case ("reboot", wall, bool(now_synced)):
                clock.reboot(wall=wall if isinstance(wall, datetime) else None,
                             synced=now_synced)
            case _:
                pass
        taken.append(_Taken(clock.stamp(), true_time))
    return taken


@settings(max_examples=300, deadline=None)
@given(start=_walls, synced=st.booleans(), ops=st.lists(_ops, max_size=25))
def test_elapsed_is_never_negative_and_keeps_real_time_within_a_boot(
    start: datetime, synced: bool, ops: list[tuple[object, ...]]
) -> None:
    taken = _run(start, synced, ops)
    for i, first in enumerate(taken):
        for last in taken[i:]:
            result = elapsed(first.stamp, last.stamp)
            assert result.seconds >= 0
            assert math.isfinite(result.seconds)
            assert result.start <= result.end
            if first.stamp.boot_id == last.stamp.boot_id:
                assert math.isclose(result.seconds, last.true_time - first.true_time,
                                    rel_tol=1e-9, abs_tol=1e-6)
                assert result.reliable is (first.stamp.synced or last.stamp.synced)
            elif result.reliable:
                assert first.stamp.synced
                assert last.stamp.synced
                assert result.seconds <= MAX_PLAUSIBLE_STAY.total_seconds()


_stamps = st.builds(
    Stamp,
    wall=_walls,
    mono=st.floats(0, 1e9),
    boot_id=st.sampled_from(["boot-a", "boot-b"]),
    synced=st.booleans(),
)


@settings(max_examples=500)
@given(start=_stamps, end=_stamps)
def test_elapsed_of_any_two_stamps_is_never_negative_or_backwards(start: Stamp, end: Stamp) -> None:
    result = elapsed(start, end)
    assert result.seconds >= 0
    assert result.start <= result.end
    assert result.reliable or result.reason
    if result.reliable and start.boot_id == end.boot_id:
        assert result.seconds == end.mono - start.mono
    if result.reliable and start.boot_id != end.boot_id:
        assert result.seconds <= MAX_PLAUSIBLE_STAY.total_seconds()
