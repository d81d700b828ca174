"""Fees worked out by hand. The lot is in Europe/Berlin; 2026-03-02 is a Monday."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gateway.core import events
from gateway.core.clock import FakeClock
from gateway.core.tariff import (
    MAX_MINOR,
    PERMIT_FREE,
    Quote,
    RateTable,
    UnknownValidationError,
    free_quote,
    lost_ticket_quote,
    money,
    quote,
    quote_stay,
)
from tests.core.schemas import validate_cloudevent

BERLIN = ZoneInfo("Europe/Berlin")


def at(local: str) -> datetime:
    """A Berlin wall time, e.g. "2026-03-02 08:00"."""
    return datetime.fromisoformat(local).replace(tzinfo=BERLIN)


def price(table: dict[str, Any], start: str, end: str, validations: tuple[str, ...] = ()) -> Quote:
    result = quote(RateTable.model_validate(table), at(start), at(end), tz=BERLIN,
                   validations=validations)
    assert sum(line.amount_minor for line in result.lines) == result.amount_minor
    return result


def hourly(amount: int) -> list[dict[str, int]]:
    return [{"per_minutes": 60, "amount_minor": amount}]


# 3.00 for the first hour, then 1.00 per started 30 min up to 3 h, then 10.00 once.
TIERED = {"currency": "EUR", "grace_minutes": 15, "lines": [
    {"until_minutes": 60, "flat_minor": 300},
    {"until_minutes": 180, "per_minutes": 30, "amount_minor": 100},
    {"flat_minor": 1000},
]}
HOURLY = {"currency": "EUR", "grace_minutes": 10, "lines": hourly(200)}
NIGHT_BAND = {"name": "night", "start": "22:00", "end": "06:00", "lines": [{"flat_minor": 500}]}
NIGHT = {"currency": "EUR", "lines": hourly(200), "bands": [NIGHT_BAND]}
NIGHT_HOURLY = {"currency": "EUR", "lines": hourly(200), "bands": [
    {"name": "night", "start": "22:00", "end": "06:00", "lines": hourly(100)},
]}
WEEKEND = {"currency": "EUR", "lines": hourly(200), "bands": [
    {"name": "weekend", "days": ["sat", "sun"], "start": "00:00", "end": "00:00",
     "lines": hourly(100)},
]}
# On Sundays only; 02:30 does not exist on 2026-03-29 and happens twice on 2026-10-25.
EARLY_SUNDAY = {"currency": "EUR", "lines": hourly(200), "bands": [
    {"name": "early", "days": ["sun"], "start": "02:30", "end": "05:00", "lines": hourly(100)},
]}


def capped(amount: int, mode: str, **more: Any) -> dict[str, Any]:
    return {"currency": "EUR", "lines": hourly(200),
            "daily_cap": {"amount_minor": amount, "mode": mode}, **more}


CONCERT = {"name": "concert", "start": "2026-03-02T18:00", "end": "2026-03-02T23:00",
           "flat_minor": 1000}
EVENT = {"currency": "EUR", "lines": hourly(200), "special_events": [CONCERT]}
EVENT_UTC = {"currency": "EUR", "lines": hourly(200), "special_events": [
    {**CONCERT, "start": "2026-03-02T17:00Z", "end": "2026-03-02T22:00Z"},  # the same window
]}
EVENT_IN_BAND = {**NIGHT, "special_events": [
    {"name": "late show", "start": "2026-03-02T21:00", "end": "2026-03-02T23:00",
     "flat_minor": 1000},
]}
VALIDATIONS = {"cinema": {"free_minutes": 120}, "shop": {"amount_minor": 300},
               "staff": {"percent": 50}}
VALIDATED = {"currency": "EUR", "lines": hourly(200), "validations": VALIDATIONS}


FEES = [
    # Tiers: the first tier's flat is due as soon as the stay is past grace.
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 08:16", (), 300, id="tier-1-flat"),
    # Exactly 60 min does not reach into the second tier.
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 09:00", (), 300, id="tier-1-end"),
    # 61 min: 3.00 + one started 30 min (1 min of it) 1.00.
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 09:01", (), 400, id="tier-2-started"),
    # 90 min: 3.00 + one full 30 min.
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 09:30", (), 400, id="tier-2-full"),
    # 91 min: 3.00 + 2 x 1.00.
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 09:31", (), 500, id="tier-2-second"),
    # 180 min: 3.00 + 4 x 1.00.
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 11:00", (), 700, id="tier-2-end"),
    # 181 min: 7.00 + the third tier's 10.00, once.
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 11:01", (), 1700, id="tier-3"),
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 18:00", (), 1700, id="tier-3-long"),
    # Grace is 15 min: exactly 15 min is free, one second more pays the whole stay.
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 08:00", (), 0, id="grace-zero"),
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 08:15", (), 0, id="grace-exact"),
    pytest.param(TIERED, "2026-03-02 08:00", "2026-03-02 08:15:01", (), 300, id="grace-past"),
    # Hourly with 10 min grace: 70 min is 2 started hours (grace is not deducted).
    pytest.param(HOURLY, "2026-03-02 08:00", "2026-03-02 08:10", (), 0, id="hourly-grace"),
    pytest.param(HOURLY, "2026-03-02 08:00", "2026-03-02 08:10:01", (), 200, id="hourly-1"),
    pytest.param(HOURLY, "2026-03-02 08:00", "2026-03-02 09:00", (), 200, id="hourly-hour"),
    pytest.param(HOURLY, "2026-03-02 08:00", "2026-03-02 09:00:01", (), 400, id="hourly-2"),
    pytest.param(HOURLY, "2026-03-02 08:00", "2026-03-02 09:10", (), 400, id="hourly-no-deduct"),
    # Night band 22:00-06:00: 2 h day (4.00) + night (5.00) + tiers afresh, 1 h (2.00).
    pytest.param(NIGHT, "2026-03-02 20:00", "2026-03-03 07:00", (), 1100, id="night-through"),
    pytest.param(NIGHT, "2026-03-02 23:00", "2026-03-03 01:00", (), 500, id="night-inside"),
    # 30 min of day (a started hour, 2.00) + night 5.00.
    pytest.param(NIGHT, "2026-03-02 21:30", "2026-03-02 22:30", (), 700, id="night-enter"),
    # Tuesday 05:00 is in Monday's band, which runs past midnight: 5.00 + 30 min day 2.00.
    pytest.param(NIGHT, "2026-03-03 05:00", "2026-03-03 06:30", (), 700, id="night-from-eve"),
    # Weekday 3 h at 2.00; Saturday 3 h at 1.00.
    pytest.param(WEEKEND, "2026-03-04 10:00", "2026-03-04 13:00", (), 600, id="weekday"),
    pytest.param(WEEKEND, "2026-03-07 10:00", "2026-03-07 13:00", (), 300, id="weekend"),
    # Friday 22:00-24:00 at 2.00, Saturday 00:00-02:00 at 1.00.
    pytest.param(WEEKEND, "2026-03-06 22:00", "2026-03-07 02:00", (), 600, id="into-weekend"),
    # Saturday 10:00 to Monday 00:00 is one weekend segment, 38 h at 1.00; then 10 h at 2.00.
    pytest.param(WEEKEND, "2026-03-07 10:00", "2026-03-09 10:00", (), 5800, id="whole-weekend"),
    # Calendar-day cap 15.00 from Monday 20:00 to Wednesday 10:00:
    # Mon 4 h 8.00; Tue 24 h 48.00 -> 15.00; Wed 10 h 20.00 -> 15.00.
    pytest.param(capped(1500, "calendar_day"), "2026-03-02 20:00", "2026-03-04 10:00", (),
                 3800, id="cap-calendar"),
    # Rolling 24 h windows from 20:00: 24 h 48.00 -> 15.00; 14 h 28.00 -> 15.00.
    pytest.param(capped(1500, "rolling_24h"), "2026-03-02 20:00", "2026-03-04 10:00", (),
                 3000, id="cap-rolling"),
    pytest.param(capped(1500, "rolling_24h"), "2026-03-02 08:00", "2026-03-02 12:00", (),
                 800, id="cap-under"),
    # Exactly 24 h is one rolling window; one second more starts a second one.
    pytest.param(capped(1500, "rolling_24h"), "2026-03-02 20:00", "2026-03-03 20:00", (),
                 1500, id="cap-rolling-24h"),
    pytest.param(capped(1500, "rolling_24h"), "2026-03-02 20:00", "2026-03-03 20:00:01", (),
                 1700, id="cap-rolling-next"),
    # Calendar: Mon 4 h 8.00; Tue 20 h 40.00 -> 15.00.
    pytest.param(capped(1500, "calendar_day"), "2026-03-02 20:00", "2026-03-03 20:00", (),
                 2300, id="cap-calendar-24h"),
    # Maximum fee 10.00: 3 h is 6.00; 10 h would be 20.00.
    pytest.param({**HOURLY, "max_fee_minor": 1000}, "2026-03-02 08:00", "2026-03-02 11:00", (),
                 600, id="max-under"),
    pytest.param({**HOURLY, "max_fee_minor": 1000}, "2026-03-02 08:00", "2026-03-02 18:00", (),
                 1000, id="max-over"),
    # The cap first (38.00, as in cap-calendar), then the maximum 25.00.
    pytest.param(capped(1500, "calendar_day", max_fee_minor=2500), "2026-03-02 20:00",
                 "2026-03-04 10:00", (), 2500, id="cap-then-max"),
    # Concert 18:00-23:00 for 10.00: 1 h before (2.00) + concert.
    pytest.param(EVENT, "2026-03-02 17:00", "2026-03-02 20:00", (), 1200, id="event-enter"),
    pytest.param(EVENT, "2026-03-02 19:00", "2026-03-02 21:00", (), 1000, id="event-inside"),
    # Concert + 30 min after it, tiers afresh (2.00).
    pytest.param(EVENT, "2026-03-02 19:00", "2026-03-02 23:30", (), 1200, id="event-leave"),
    # 2 h before (4.00) + concert + 1.5 h after (2 started hours, 4.00).
    pytest.param(EVENT, "2026-03-02 16:00", "2026-03-03 00:30", (), 1800, id="event-around"),
    pytest.param(EVENT_UTC, "2026-03-02 17:00", "2026-03-02 20:00", (), 1200, id="event-utc"),
    # 1 h day (2.00), the show 21:00-23:00 over the night band (10.00), then night (5.00).
    pytest.param(EVENT_IN_BAND, "2026-03-02 20:00", "2026-03-03 01:00", (), 1700,
                 id="event-over-band"),
    # Validations on 5 h at 2.00 = 10.00.
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", (), 1000, id="no-validation"),
    # 120 min free: 3 h charged.
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("cinema",), 600,
                 id="free-minutes"),
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 09:30", ("cinema",), 0,
                 id="free-minutes-all"),
    # A validation counts once per stay, free minutes too: 2 h free, 3 h charged.
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("cinema", "cinema"), 600,
                 id="free-minutes-once"),
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("shop",), 700, id="fixed"),
    # 1 h is 2.00; 3.00 off stops at 0.
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 09:00", ("shop",), 0, id="fixed-floor"),
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("staff",), 500, id="percent"),
    # In the order given: (10.00 - 3.00) / 2 = 3.50, but 10.00 / 2 - 3.00 = 2.00.
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("shop", "staff"), 350,
                 id="fixed-then-percent"),
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("staff", "shop"), 200,
                 id="percent-then-fixed"),
    # Free minutes come first whatever the order: 6.00 / 2.
    pytest.param(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("staff", "cinema"), 300,
                 id="percent-and-free"),
    # Discounts come after the maximum: min(10.00, 8.00) - 3.00.
    pytest.param({**VALIDATED, "max_fee_minor": 800}, "2026-03-02 08:00", "2026-03-02 13:00",
                 ("shop",), 500, id="max-then-fixed"),
    # 25% of 1.94 is 0.485: half up takes 0.49 off (half even would take 0.48).
    pytest.param({"currency": "EUR", "lines": hourly(194),
                  "validations": {"quarter": {"percent": 25}}},
                 "2026-03-02 08:00", "2026-03-02 09:00", ("quarter",), 145, id="percent-half-up"),
    # Spring forward, Sunday 2026-03-29 02:00 -> 03:00. Calendar cap 47.00:
    # Sat 24 h 48.00 -> 47.00; Sun has 23 h, 46.00, under the cap.
    pytest.param(capped(4700, "calendar_day"), "2026-03-28 00:00", "2026-03-30 00:00", (),
                 9300, id="dst-spring-cap"),
    # 01:00 to 04:00 on the clock is 2 real hours.
    pytest.param(HOURLY, "2026-03-29 01:00", "2026-03-29 04:00", (), 400, id="dst-spring-hourly"),
    # The night band 22:00-06:00 is 7 real hours that night (8 on another).
    pytest.param(NIGHT_HOURLY, "2026-03-28 22:00", "2026-03-29 06:00", (), 700,
                 id="dst-spring-band"),
    pytest.param(NIGHT_HOURLY, "2026-03-02 22:00", "2026-03-03 06:00", (), 800, id="plain-band"),
    # Band from 02:30, which the clock skips: it starts at the jump (03:00 CEST).
    # 01:00-03:00 CEST is 1 h of day (2.00), then 1 h of band (1.00).
    pytest.param(EARLY_SUNDAY, "2026-03-29 01:00", "2026-03-29 04:00", (), 300,
                 id="dst-spring-band-edge"),
    # Fall back, Sunday 2026-10-25 03:00 -> 02:00. Calendar cap 49.00:
    # Sat 24 h 48.00, under; Sun has 25 h, 50.00 -> 49.00.
    pytest.param(capped(4900, "calendar_day"), "2026-10-24 00:00", "2026-10-26 00:00", (),
                 9700, id="dst-fall-cap"),
    # The same 49 real hours in rolling windows: 48.00 + 48.00 + 2.00.
    pytest.param(capped(4900, "rolling_24h"), "2026-10-24 00:00", "2026-10-26 00:00", (),
                 9800, id="dst-fall-rolling"),
    # 01:00 to 04:00 on the clock is 4 real hours.
    pytest.param(HOURLY, "2026-10-25 01:00", "2026-10-25 04:00", (), 800, id="dst-fall-hourly"),
    pytest.param(NIGHT_HOURLY, "2026-10-24 22:00", "2026-10-25 06:00", (), 900,
                 id="dst-fall-band"),
    # Band from the first 02:30 (00:30 UTC) to 05:00 CET (04:00 UTC); the stay is 22:00-04:00
    # UTC: 2.5 h of day (3 started hours, 6.00) + 3.5 h of band (4 x 1.00).
    pytest.param(EARLY_SUNDAY, "2026-10-25 00:00", "2026-10-25 05:00", (), 1000,
                 id="dst-fall-band-edge"),
    # Leap day, calendar cap 30.00: Feb 28 12 h 24.00; Feb 29 24 h 48.00 -> 30.00; Mar 1 12 h.
    pytest.param(capped(3000, "calendar_day"), "2028-02-28 12:00", "2028-03-01 12:00", (),
                 7800, id="leap-day-cap"),
]


@pytest.mark.parametrize(("table", "start", "end", "validations", "fee"), FEES)
def test_fee(table, start, end, validations, fee):
    assert price(table, start, end, validations).amount_minor == fee


def codes(result: Quote) -> list[tuple[str, int]]:
    return [(line.code, line.amount_minor) for line in result.lines]


def test_lines_across_a_night_band():
    result = price(NIGHT, "2026-03-02 20:00", "2026-03-03 07:00")
    assert codes(result) == [("increment", 400), ("band:night", 500), ("increment", 200)]
    day, night, morning = result.lines
    assert day.description == "2 x 60 min at 2.00 EUR"
    assert (night.start, night.end) == (at("2026-03-02 22:00"), at("2026-03-03 06:00"))
    assert (morning.start, morning.end) == (at("2026-03-03 06:00"), at("2026-03-03 07:00"))


def test_unnamed_band_is_named_by_its_index():
    table = {**NIGHT, "bands": [{**NIGHT_BAND, "name": None}]}
    assert codes(price(table, "2026-03-02 23:00", "2026-03-03 01:00")) == [("band:0", 500)]


def test_tier_lines():
    result = price(TIERED, "2026-03-02 08:00", "2026-03-02 11:01")
    assert [(line.code, line.description) for line in result.lines] == [
        ("tier", "first 60 min: flat 3.00 EUR"),
        ("increment", "60-180 min: 4 x 30 min at 1.00 EUR"),
        ("tier", "after 180 min: flat 10.00 EUR"),
    ]


def test_grace_line():
    result = price(TIERED, "2026-03-02 08:00", "2026-03-02 08:15")
    assert codes(result) == [("grace", 0)]


def test_calendar_cap_lines_on_the_short_day():
    result = price(capped(4700, "calendar_day"), "2026-03-28 00:00", "2026-03-30 00:00")
    caps = [line for line in result.lines if line.code == "daily_cap"]
    assert [(line.description, line.amount_minor) for line in caps] == [
        ("daily cap 47.00 EUR (2026-03-28)", -100),
    ]
    assert (caps[0].start, caps[0].end) == (at("2026-03-28 00:00"), at("2026-03-29 00:00"))


def test_leap_day_is_its_own_calendar_day():
    result = price(capped(3000, "calendar_day"), "2028-02-28 12:00", "2028-03-01 12:00")
    assert [(line.description, line.amount_minor) for line in result.lines
            if line.code == "daily_cap"] == [("daily cap 30.00 EUR (2028-02-29)", -1800)]


def test_event_line():
    result = price(EVENT, "2026-03-02 17:00", "2026-03-02 20:00")
    assert codes(result) == [("increment", 200), ("event:concert", 1000)]
    assert result.lines[1].description == "event concert: flat 10.00 EUR"


def test_lines_in_order_of_application():
    table = {**VALIDATED, "max_fee_minor": 800}
    result = price(table, "2026-03-02 08:00", "2026-03-02 13:00", ("shop", "cinema", "staff"))
    # 3 h charged (6.00), under the maximum; 6.00 - 3.00 = 3.00; half of it off.
    assert codes(result) == [
        ("discount:cinema", 0), ("increment", 600), ("discount:shop", -300),
        ("discount:staff", -150),
    ]
    free = result.lines[0]
    assert (free.start, free.end) == (at("2026-03-02 08:00"), at("2026-03-02 10:00"))


def test_to_json():
    result = price(capped(1500, "rolling_24h"), "2026-03-02 20:00", "2026-03-03 20:00")
    assert result.to_json() == {
        "amount_minor": 1500,
        "currency": "EUR",
        "lines": [
            {"code": "increment", "description": "24 x 60 min at 2.00 EUR", "amount_minor": 4800,
             "start": "2026-03-02T19:00:00.000000Z", "end": "2026-03-03T19:00:00.000000Z"},
            {"code": "daily_cap", "description": "daily cap 15.00 EUR (24 h from 2026-03-02 20:00)",
             "amount_minor": -3300,
             "start": "2026-03-02T19:00:00.000000Z", "end": "2026-03-03T19:00:00.000000Z"},
        ],
    }


def test_times_in_any_zone():
    table = RateTable.model_validate(HOURLY)
    local = quote(table, at("2026-03-02 08:00"), at("2026-03-02 10:30"), tz=BERLIN)
    utc = quote(table, datetime(2026, 3, 2, 7, tzinfo=UTC), datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
                tz=BERLIN)
    assert local == utc
    assert local.amount_minor == 600


def test_a_month_of_hourly_increments():
    result = price(capped(2000, "calendar_day"), "2026-03-01 00:00", "2026-03-31 00:00")
    # 30 calendar days, but 719 real hours (March 29 has 23); every day is capped at 20.00.
    assert result.lines[0].description == "719 x 60 min at 2.00 EUR"
    assert result.amount_minor == 30 * 2000


def test_lost_ticket():
    table = RateTable.model_validate({**HOURLY, "lost_ticket_minor": 5000})
    result = lost_ticket_quote(table)
    assert result.amount_minor == 5000
    assert codes(result) == [("lost_ticket", 5000)]
    assert result.lines[0].description == "lost ticket: 50.00 EUR"


def test_lost_ticket_needs_a_fee():
    with pytest.raises(ValueError, match="lost_ticket_minor"):
        lost_ticket_quote(RateTable.model_validate(HOURLY))


def test_permit_free():
    assert PERMIT_FREE == "free"
    result = free_quote("EUR", "permit 4711")
    assert result.amount_minor == 0
    assert result.to_json()["lines"] == [
        {"code": "permit", "description": "permit 4711", "amount_minor": 0, "start": None,
         "end": None},
    ]


def test_a_validation_counts_once_per_stay():
    """Three stamps of one validation took 3 x 3.00 off; a pay station takes the first only."""
    result = price(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("shop", "shop", "shop"))
    assert result.amount_minor == 700
    assert [(line.code, line.description, line.amount_minor) for line in result.lines[1:]] == [
        ("discount:shop", "validation shop: 3.00 EUR off", -300),
        ("discount:shop", "validation shop: given 3 times, counted once", 0),
    ]


def test_a_validation_larger_than_the_fee_says_what_it_took():
    """It said "3.00 EUR off" beside -1.50: the line and the total must tell the same story."""
    table = {**VALIDATED, "validations": {"shop": {"amount_minor": 300},
                                          "bakery": {"amount_minor": 50}}}
    result = price(table, "2026-03-02 08:00", "2026-03-02 09:00", ("shop", "bakery"))
    assert result.amount_minor == 0
    assert [(line.description, line.amount_minor) for line in result.lines[1:]] == [
        ("validation shop: 2.00 EUR off (worth up to 3.00 EUR)", -200),
        ("validation bakery: 0.00 EUR off (worth up to 0.50 EUR)", 0),
    ]


@pytest.mark.parametrize(("start", "end", "message"), [
    # Each raised OverflowError from the date arithmetic around the stay.
    (datetime(1, 1, 1, 10, tzinfo=UTC), datetime(1, 1, 2, 10, tzinfo=UTC), "from 1900-01-01"),
    (datetime(9999, 12, 30, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC), "to 9999-01-01"),
    (datetime(1, 1, 1, 0, 30, tzinfo=ZoneInfo("Asia/Tokyo")), datetime(2026, 1, 1, tzinfo=UTC),
     "beyond the calendar's end"),
    # Three centuries of nights: some 220,000 lines, a quote that fills memory for minutes.
    (datetime(1990, 1, 1, tzinfo=UTC), datetime(2290, 1, 1, tzinfo=UTC), "longer than 36,525"),
])
def test_a_stay_beyond_what_can_be_priced_is_a_value_error(start, end, message):
    table = RateTable.model_validate({**capped(1500, "calendar_day"), "bands": [NIGHT_BAND]})
    with pytest.raises(ValueError, match=message):
        quote(table, start, end, tz=BERLIN)


def test_a_fee_beyond_what_a_json_reader_holds_exactly_is_refused():
    """Amounts of 10^18 made a two-day quote of 13,300,000,000,000,000,020.20 EUR; the largest
    amounts the config allows still reach past 2^53 over a long enough stay."""
    table = RateTable.model_validate({"currency": "EUR", "lines": [
        {"per_minutes": 1, "amount_minor": MAX_MINOR}]})
    fine = quote(table, at("2026-03-02 08:00"), at("2026-03-04 08:00"), tz=BERLIN)
    assert fine.amount_minor == 2 * 1440 * MAX_MINOR
    with pytest.raises(ValueError, match=r"runs past 90071992547409\.91 EUR"):
        quote(table, at("2026-03-02 08:00"), at("2046-03-02 08:00"), tz=BERLIN)


def test_unknown_validation():
    with pytest.raises(UnknownValidationError, match="'gym'") as raised:
        price(VALIDATED, "2026-03-02 08:00", "2026-03-02 13:00", ("shop", "gym"))
    assert isinstance(raised.value, KeyError)
    assert raised.value.name == "gym"
    assert "cinema, shop, staff" in str(raised.value)


def test_unknown_validation_within_grace():
    # A name the tariff does not know is an error even when the stay is free.
    with pytest.raises(UnknownValidationError):
        price(HOURLY, "2026-03-02 08:00", "2026-03-02 08:01", ("shop",))


def test_end_before_start():
    with pytest.raises(ValueError, match="before start"):
        price(HOURLY, "2026-03-02 08:00", "2026-03-02 07:59")


def test_naive_times_refused():
    table = RateTable.model_validate(HOURLY)
    with pytest.raises(ValueError, match="tz-aware"):
        quote(table, datetime(2026, 3, 2, 8), datetime(2026, 3, 2, 9, tzinfo=UTC), tz=BERLIN)


def test_quote_lines_must_sum():
    with pytest.raises(ValueError, match="sum"):
        Quote(100, "EUR", ())


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (150, "EUR", "1.50 EUR"),
    (5, "EUR", "0.05 EUR"),
    (-3300, "EUR", "-33.00 EUR"),
    (500, "JPY", "500 JPY"),
    (1500, "KWD", "1.500 KWD"),
])
def test_money(amount, currency, text):
    assert money(amount, currency) == text


EXAMPLE_TOML = """
currency = "EUR"
grace_minutes = 10
lines = [
    { until_minutes = 60, flat_minor = 200 },    # first hour 2.00
    { per_minutes = 30, amount_minor = 100 },    # then 1.00 per started half hour
]
daily_cap = { amount_minor = 2000, mode = "calendar_day" }
max_fee_minor = 10000
lost_ticket_minor = 5000

[[bands]]
name = "night"
start = 22:00:00                                 # TOML local times
end = 06:00:00
lines = [{ flat_minor = 500 }]

[[bands]]
name = "sunday"
days = ["sun"]
start = 06:00:00
end = 22:00:00
lines = [{ per_minutes = 60, amount_minor = 100 }]

[[special_events]]
name = "cup final"
start = 2026-05-23T15:00:00                      # lot-local
end = 2026-05-23T20:00:00
flat_minor = 1500

[validations]
cinema = { free_minutes = 180 }
shop = { amount_minor = 200 }
staff = { percent = 100 }
"""


def test_example_config_from_toml():
    table = RateTable.model_validate(tomllib.loads(EXAMPLE_TOML))
    # Sunday 2026-03-01 10:00-12:30: the Sunday band, 3 started hours at 1.00.
    result = quote(table, at("2026-03-01 10:00"), at("2026-03-01 12:30"), tz=BERLIN)
    assert codes(result) == [("band:sunday", 300)]


VALID_LINES = [{"per_minutes": 60, "amount_minor": 200}]
INVALID = [
    pytest.param({"grace_minute": 10}, "grace_minute", id="typo"),
    pytest.param({"currency": "eur"}, "ISO 4217", id="lower-case-currency"),
    pytest.param({"currency": "EURO"}, "ISO 4217", id="long-currency"),
    pytest.param({"currency": "E1R"}, "ISO 4217", id="digit-currency"),
    pytest.param({"grace_minutes": -1}, "grace_minutes", id="negative-grace"),
    pytest.param({"lines": []}, "at least 1", id="no-lines"),
    pytest.param({"lines": [{"until_minutes": 60, "flat_minor": 100},
                            {"until_minutes": 60, "flat_minor": 100}, {"flat_minor": 0}]},
                 "must increase", id="tiers-not-increasing"),
    pytest.param({"lines": [{"until_minutes": 90, "flat_minor": 100},
                            {"until_minutes": 60, "flat_minor": 100}, {"flat_minor": 0}]},
                 "must increase", id="tiers-decreasing"),
    pytest.param({"lines": [{"flat_minor": 100}, {"until_minutes": 60, "flat_minor": 100}]},
                 "only the last tier", id="unbounded-tier-first"),
    pytest.param({"lines": [{"until_minutes": 60, "flat_minor": 100}]},
                 "last tier must leave out", id="last-tier-bounded"),
    pytest.param({"lines": [{"flat_minor": 100, "per_minutes": 30, "amount_minor": 50}]},
                 "not both", id="flat-and-increment"),
    pytest.param({"lines": [{"per_minutes": 30}]}, "both per_minutes and amount_minor",
                 id="increment-without-amount"),
    pytest.param({"lines": [{"until_minutes": 30}, {"flat_minor": 0}]}, "needs flat_minor",
                 id="line-without-price"),
    pytest.param({"lines": [{"flat_minor": -100}]}, "flat_minor", id="negative-amount"),
    pytest.param({"lines": [{"per_minutes": 0, "amount_minor": 100}]}, "per_minutes",
                 id="zero-increment"),
    pytest.param({"lines": [{"flat_minor": 100, "price": 3}]}, "price", id="line-typo"),
    pytest.param({"bands": [
        {"name": "evening", "days": ["mon"], "start": "18:00", "end": "23:00",
         "lines": VALID_LINES},
        {"name": "late", "days": ["mon"], "start": "22:00", "end": "02:00", "lines": VALID_LINES},
    ]}, "bands overlap: evening on mon and late on mon", id="bands-overlap"),
    pytest.param({"bands": [
        {"name": "night", "days": ["mon"], "start": "22:00", "end": "02:00",
         "lines": VALID_LINES},
        {"name": "early", "days": ["tue"], "start": "01:00", "end": "05:00",
         "lines": VALID_LINES},
    ]}, "bands overlap", id="bands-overlap-past-midnight"),
    pytest.param({"bands": [
        {"name": "sunday night", "days": ["sun"], "start": "22:00", "end": "06:00",
         "lines": VALID_LINES},
        {"name": "monday", "days": ["mon"], "start": "05:00", "end": "09:00",
         "lines": VALID_LINES},
    ]}, "bands overlap", id="bands-overlap-across-the-week"),
    pytest.param({"bands": [{"days": ["mon", "mon"], "start": "08:00", "end": "09:00",
                             "lines": VALID_LINES}]}, "twice", id="day-twice"),
    pytest.param({"bands": [{"days": ["monday"], "start": "08:00", "end": "09:00",
                             "lines": VALID_LINES}]}, "monday", id="bad-day"),
    pytest.param({"bands": [{"start": "08:00+01:00", "end": "09:00", "lines": VALID_LINES}]},
                 "lot-local", id="band-time-with-offset"),
    pytest.param({"bands": [{"start": "08:00", "end": "09:00", "lines": [
        {"until_minutes": 60, "flat_minor": 100}]}]}, "last tier", id="band-tiers-checked"),
    pytest.param({"daily_cap": {"amount_minor": 1000, "mode": "daily"}}, "rolling_24h",
                 id="bad-cap-mode"),
    pytest.param({"special_events": [{"name": "fair", "start": "2026-05-02T10:00",
                                      "end": "2026-05-02T09:00", "flat_minor": 100}]},
                 "after start", id="event-backwards"),
    pytest.param({"special_events": [{"name": "fair", "start": "2026-05-02T10:00",
                                      "end": "2026-05-02T18:00Z", "flat_minor": 100}]},
                 "both", id="event-mixed-zones"),
    pytest.param({"special_events": [
        {"name": "fair", "start": "2026-05-02T10:00", "end": "2026-05-02T18:00",
         "flat_minor": 100},
        {"name": "concert", "start": "2026-05-02T17:00", "end": "2026-05-02T23:00",
         "flat_minor": 100},
    ]}, "special events overlap: fair and concert", id="events-overlap"),
    pytest.param({"validations": {"shop": {"amount_minor": 100, "percent": 10}}},
                 "exactly one", id="validation-two-kinds"),
    pytest.param({"validations": {"shop": {}}}, "exactly one", id="validation-no-kind"),
    pytest.param({"validations": {"shop": {"percent": 101}}}, "percent", id="percent-over-100"),
    pytest.param({"validations": {"shop": {"free_minute": 30}}}, "free_minute",
                 id="validation-typo"),
    # Every number is bounded, and written as a number: lax pydantic read `true` as 1.
    pytest.param({"lines": [{"flat_minor": 10**18}]}, "less than or equal to 1000000000",
                 id="amount-too-large"),
    pytest.param({"max_fee_minor": 10**18}, "max_fee_minor", id="max-fee-too-large"),
    pytest.param({"lines": [{"per_minutes": 10**18, "amount_minor": 1}]},
                 "less than or equal to 527040", id="minutes-too-many"),
    pytest.param({"grace_minutes": 10**12}, "grace_minutes", id="grace-too-long"),
    pytest.param({"lines": [{"flat_minor": True}]}, "whole number", id="amount-true"),
    pytest.param({"lines": [{"flat_minor": "100"}]}, "whole number", id="amount-text"),
    pytest.param({"lines": [{"flat_minor": 100.0}]}, "whole number", id="amount-float"),
    pytest.param({"validations": {"shop": {"percent": True}}}, "whole number",
                 id="percent-true"),
    pytest.param({"lines": [*[{"until_minutes": m, "flat_minor": 1} for m in range(1, 51)],
                            {"flat_minor": 0}]}, "at most 50 tiers", id="too-many-tiers"),
]


@pytest.mark.parametrize(("change", "message"), INVALID)
def test_invalid_config(change, message):
    with pytest.raises(ValidationError, match=message):
        RateTable.model_validate({"currency": "EUR", "lines": VALID_LINES, **change})


def test_adjacent_bands_are_fine():
    table = RateTable.model_validate({"currency": "EUR", "lines": VALID_LINES, "bands": [
        {"name": "day", "start": "06:00", "end": "22:00", "lines": VALID_LINES},
        {"name": "night", "start": "22:00", "end": "06:00", "lines": VALID_LINES},
    ]})
    assert len(table.bands) == 2


def test_config_is_frozen():
    table = RateTable.model_validate(HOURLY)
    with pytest.raises(ValidationError, match="frozen"):
        table.grace_minutes = 0  # type: ignore[misc]


# --- stays stamped by the gateway's clock ------------------------------------------------

STAMPED = RateTable.model_validate({
    "currency": "EUR",
    "lines": [{"until_minutes": 60, "flat_minor": 200}, {"per_minutes": 30, "amount_minor": 100}],
})


def test_a_stay_across_an_ntp_step_is_priced_by_real_time() -> None:
    # A Pi without an RTC boots believing it is 1 January; a car enters; NTP then
    # steps the clock forward by two months; the car leaves 2 h after it came.
    clock = FakeClock(datetime(2026, 1, 1, 0, 5, tzinfo=UTC), synced=False)
    entry = clock.stamp()
    clock.advance(1800)
    clock.jump_wall((datetime(2026, 3, 2, 9, 0, tzinfo=UTC) - clock.now()).total_seconds())
    clock.advance(5400)
    stay = quote_stay(STAMPED, entry, clock.stamp(), tz=BERLIN)
    # 2 h: first hour 2.00, then 2 x 30 min at 1.00 = 4.00 EUR, not two months of parking.
    assert stay.quote.amount_minor == 400
    assert stay.elapsed.seconds == 7200
    assert stay.elapsed.start == datetime(2026, 3, 2, 8, 30, tzinfo=UTC)  # corrected entry
    assert stay.reliable


def test_a_stay_across_a_reboot_with_a_wrong_clock_is_flagged_not_trusted() -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    entry = clock.stamp()
    # Power cut; the Pi comes back believing it is 1970, before the entry.
    clock.reboot(wall=datetime(1970, 1, 1, tzinfo=UTC), synced=False)
    stay = quote_stay(STAMPED, entry, clock.stamp(), tz=BERLIN)
    assert not stay.reliable
    assert stay.elapsed.seconds == 0
    assert stay.elapsed.reason is not None


def test_a_stay_quote_becomes_a_valid_session_ended_event() -> None:
    clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
    entry = clock.stamp()
    clock.advance(5400)
    exit_ = clock.stamp()
    stay = quote_stay(STAMPED, entry, exit_, tz=BERLIN)
    ev = events.session_ended(
        at=exit_.wall, session_id="s-1", lane_id="exit-1", actual_start=stay.elapsed.start,
        actual_end=stay.elapsed.end, duration_seconds=round(stay.elapsed.seconds),
        credentials=[{"type": "licensePlate", "identifier": "B-AB123", "confidence": 0.97}],
        segments=[events.segment(start=stay.elapsed.start, end=stay.elapsed.end)],
        right={"kind": "visitor"},
        clock={"synchronized": exit_.synced, "reliable": stay.reliable},
        currency=stay.quote.currency, fee_lines=stay.quote.fee_lines())
    envelope = json.loads(events.envelope_json(
        source=events.source_uri("lot-1", "gw-1"), sequence=7, id=ev.id, type=ev.type.value,
        time=ev.time, data_json=ev.data_json))
    validate_cloudevent(envelope)
    assert envelope["data"]["fee"]["amountMinor"] == stay.quote.amount_minor == 300
