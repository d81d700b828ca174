"""Permit pools, weekly reservations and the anti-passback reset, as the entry decides them.

Pure decisions: no journal, no lane. The weekly bookings are lot-local (Europe/Paris here),
so one DST change falls in the tests' fortnight (Sunday 29 March 2026, 02:00 -> 03:00).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gateway.core.access import Access, OpenStay
from gateway.core.clock import Stamp
from gateway.core.rights import (
    PERMIT_POOLS,
    PERMITS,
    RECURRING_RESERVATIONS,
    RecurringReservation,
)

PARIS = ZoneInfo("Europe/Paris")
AT = datetime(2026, 3, 25, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Policy:
    initial_state: Any = "open"
    full_when_free_at_most: int = 0
    anti_passback: Any = "hard"
    passback_minutes: int = 60
    reservation_grace_minutes: int = 10
    payment_grace_minutes: int = 15
    offline_exit: Any = "let_out"
    no_entry_record: Any = "lost_ticket"


def inside(access: Access, plate: str, kind: str = "permit", ref: str | None = None,
           session: str | None = None) -> OpenStay:
    stay = OpenStay(session or f"s-{plate}", plate, kind, ref, "entry-1",
                    Stamp(AT, 0.0, "boot", True))
    access.admit(stay)
    return stay


# --- permit pools ---


def pooled(when_full: str = "visitor", spaces: int = 2) -> Access:
    access = Access(Policy(), tz=PARIS)
    access.load("permits", PERMITS.validate_python([
        {"permitId": f"acme-{i}", "plates": [f"ACME{i}"], "poolId": "acme"} for i in range(5)
    ] + [{"permitId": "solo", "plates": ["SOLO1"]}]))
    access.load("permit_pools", PERMIT_POOLS.validate_python([
        {"poolId": "acme", "spaces": spaces, "whenFull": when_full}]))
    return access


def test_a_pool_member_enters_on_the_permit_while_the_pool_has_room() -> None:
    access = pooled()
    inside(access, "ACME0", ref="acme-0")
    decision = access.entry("ACME1", at=AT, free_bays=50)
    assert (decision.allow, decision.reason, decision.right_ref) == (True, "permit", "acme-1")


def test_a_full_pool_makes_the_next_member_a_visitor() -> None:
    access = pooled("visitor")
    inside(access, "ACME0", ref="acme-0")
    inside(access, "ACME1", kind="account", ref="acme-1")
    decision = access.entry("ACME2", at=AT, free_bays=50)
    assert (decision.allow, decision.reason, decision.right_kind) == (True, "visitor", "visitor")
    assert decision.rate_table is None  # priced by the lot's default tariff
    # ... and as a visitor, the lot's own capacity counts for them.
    assert access.entry("ACME2", at=AT, free_bays=0).reason == "lot_full"
    # A permit outside the pool is not limited by it.
    assert access.entry("SOLO1", at=AT, free_bays=50).reason == "permit"


def test_a_full_pool_refuses_the_next_member_when_so_configured() -> None:
    access = pooled("refuse")
    inside(access, "ACME0", ref="acme-0")
    inside(access, "ACME1", ref="acme-1")
    decision = access.entry("ACME2", at=AT, free_bays=50)
    assert (decision.allow, decision.reason) == (False, "pool_full")
    # A member leaves: room again.
    access.release("s-ACME0")
    assert access.entry("ACME2", at=AT, free_bays=50).allow


def test_visitors_and_other_permits_inside_do_not_fill_a_pool() -> None:
    access = pooled("refuse", spaces=1)
    inside(access, "VISIT1", kind="visitor")
    inside(access, "SOLO1", ref="solo")
    assert access.entry("ACME3", at=AT, free_bays=50).reason == "permit"


def test_a_pool_not_pushed_yet_limits_nothing() -> None:
    access = Access(Policy())
    access.load("permits", PERMITS.validate_python([
        {"permitId": "a", "plates": ["ACME0"], "poolId": "nowhere"}]))
    assert access.entry("ACME0", at=AT, free_bays=50).reason == "permit"


def test_a_pool_of_no_spaces_is_always_full() -> None:
    access = pooled("refuse", spaces=0)
    assert access.entry("ACME0", at=AT, free_bays=50).reason == "pool_full"


# --- weekly reservations ---


def weekly(**over: Any) -> RecurringReservation:
    fields = {"reservationId": "w-1", "plate": "WEEK1",
              "days": ["mon", "tue", "wed", "thu", "fri"], "startTime": "08:00",
              "endTime": "18:00", "validFrom": "2026-03-23", "validUntil": "2026-04-10", **over}
    (found,) = RECURRING_RESERVATIONS.validate_python([fields])
    return found


def booked(**over: Any) -> Access:
    access = Access(Policy(), tz=PARIS)
    access.load("recurring_reservations", [weekly(**over)])
    return access


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(("at", "reason"), [
    (utc(2026, 3, 25, 6, 51), "reservation"),  # Wed 07:51 CET: within the 10 min grace
    (utc(2026, 3, 25, 6, 45), "visitor"),  # 07:45: too early
    (utc(2026, 3, 25, 17, 9), "reservation"),  # 18:09: the end's grace
    (utc(2026, 3, 25, 17, 11), "visitor"),
    (utc(2026, 3, 28, 9, 0), "visitor"),  # a Saturday
    (utc(2026, 3, 20, 9, 0), "visitor"),  # before validFrom
    (utc(2026, 4, 10, 9, 0), "reservation"),  # validUntil is the last day
    (utc(2026, 4, 13, 9, 0), "visitor"),
])
def test_a_weekly_reservation_admits_in_its_window_with_the_grace(at: datetime,
                                                                  reason: str) -> None:
    decision = booked().entry("WEEK1", at=at, free_bays=50)
    assert decision.reason == reason
    if reason == "reservation":
        assert (decision.right_kind, decision.right_ref) == ("reservation", "w-1")


def test_a_weekly_reservation_keeps_its_wall_time_across_the_dst_change() -> None:
    """08:00 Paris is 07:00 UTC the Friday before the change and 06:00 UTC the Monday after."""
    access = booked()
    # 06:45 UTC: 07:45 on the Friday (too early), 08:45 on the Monday.
    assert access.entry("WEEK1", at=utc(2026, 3, 27, 6, 45), free_bays=50).reason == "visitor"
    assert access.entry("WEEK1", at=utc(2026, 3, 30, 6, 45), free_bays=50).reason == (
        "reservation")
    assert access.entry("WEEK1", at=utc(2026, 3, 30, 16, 5), free_bays=50).reason == (
        "reservation")  # 18:05 CEST
    assert access.entry("WEEK1", at=utc(2026, 3, 30, 16, 15), free_bays=50).reason == "visitor"


def test_a_night_pass_over_the_dst_change_is_seven_hours_long() -> None:
    """Saturday 22:00 CET to Sunday 06:00 CEST: eight hours on the wall, seven in fact."""
    night = weekly(days=["sat"], startTime="22:00", endTime="06:00")
    (booking,) = [o for o in night.occurrences(utc(2026, 3, 29, 2, 0), PARIS)
                  if o.start <= utc(2026, 3, 29, 2, 0) <= o.end]
    assert (booking.start, booking.end) == (utc(2026, 3, 28, 21, 0), utc(2026, 3, 29, 4, 0))


def test_a_start_in_the_skipped_hour_is_taken_by_the_clock_before_the_change() -> None:
    early = weekly(days=["sun"], startTime="02:30", endTime="05:00")
    (booking,) = early.occurrences(utc(2026, 3, 29, 2, 0), PARIS)
    assert booking.start == utc(2026, 3, 29, 1, 30)  # 03:30 CEST
    assert booking.end == utc(2026, 3, 29, 3, 0)


def test_a_weekly_reservation_holds_a_bay_in_its_window_until_its_car_is_in() -> None:
    access = booked()
    at = utc(2026, 3, 25, 9, 0)
    assert access.pending_reservations(at) == 1
    assert access.pending_reservations(utc(2026, 3, 28, 9, 0)) == 0
    # Held: a visitor is turned away when the only free bay is the booked one...
    assert access.entry("VISIT1", at=at, free_bays=1).reason == "lot_full"
    inside(access, "WEEK1", kind="reservation", ref="w-1")
    assert access.pending_reservations(at) == 0


def test_the_booking_a_stay_entered_under_is_the_days_one() -> None:
    access = booked()
    entered = utc(2026, 3, 30, 6, 5)
    booking = access.reservation("WEEK1", "w-1", entered)
    assert booking is not None
    assert booking.end == utc(2026, 3, 30, 16, 0)  # 18:00 CEST: overstays are reported from it
    assert access.reservation("WEEK1", "w-1", utc(2026, 3, 28, 9, 0)) is None


@pytest.mark.parametrize("bad", [
    {"days": []}, {"days": ["mon", "mon"]}, {"days": ["monday"]},
    {"startTime": "25:00"}, {"startTime": "08:00+01:00"},
    {"validFrom": "2026-05-01", "validUntil": "2026-04-01"}, {"extra": 1},
])
def test_a_bad_weekly_reservation_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        weekly(**bad)


def test_times_parse_as_wall_times() -> None:
    assert weekly().startTime == time(8, 0)


# --- anti-passback reset ---


def test_a_reset_lets_the_credential_in_once_replacing_its_stale_session() -> None:
    access = Access(Policy(anti_passback="hard"))
    stale = inside(access, "AB123CD", kind="visitor")
    assert access.entry("AB123CD", at=AT, free_bays=50).reason == "anti_passback"
    assert access.reset_passback("ab-123-cd") == stale  # as written on the car
    decision = access.entry("AB123CD", at=AT, free_bays=50)
    assert (decision.allow, decision.passback, decision.existing) == (True, "replaced", stale)
    # The stale session ends (the lane closes it); a new one of the plate is not cleared.
    access.release(stale.session_id)
    assert access.passback_resets == set()
    inside(access, "AB123CD", kind="visitor", session="s-new")
    assert access.entry("AB123CD", at=AT, free_bays=50).reason == "anti_passback"


def test_a_reset_of_a_plate_not_inside_clears_nothing() -> None:
    access = Access(Policy())
    assert access.reset_passback("ZZ999ZZ") is None
    assert access.passback_resets == set()
