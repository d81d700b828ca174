"""Properties of every fee, over random tables and stays around Berlin's DST days."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, reject, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.core.tariff import WEEKDAYS, Quote, RateTable, quote

BERLIN = ZoneInfo("Europe/Berlin")
DAY = timedelta(days=1)

# Fixed examples, enough to cover the shapes below and quick enough for every test run.
SETTINGS = settings(max_examples=150, derandomize=True, deadline=None)


@st.composite
def tiers(draw: st.DrawFn) -> list[dict[str, int]]:
    bounds = sorted(draw(st.sets(st.integers(1, 600), max_size=3)))
    lines = []
    for until in [*bounds, None]:
        if draw(st.booleans()):
            line = {"flat_minor": draw(st.integers(0, 1000))}
        else:
            line = {"per_minutes": draw(st.sampled_from([1, 15, 30, 45, 60, 120])),
                    "amount_minor": draw(st.integers(0, 500))}
        lines.append(line if until is None else {"until_minutes": until, **line})
    return lines


@st.composite
def bands(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to two bands that cannot overlap: their times are disjoint on every day."""
    # Quarter hours, so that 02:30 (skipped or repeated on a DST day) comes up.
    edges = sorted(draw(st.sets(st.integers(0, 95), min_size=4, max_size=4)))
    t0, t1, t2, t3 = (time(q // 4, q % 4 * 15) for q in edges)
    shape = draw(st.sampled_from(["none", "one", "two", "two-wrapping", "whole-day"]))
    spans = {"none": [], "one": [(t0, t1)], "two": [(t0, t1), (t2, t3)],
             "two-wrapping": [(t0, t1), (t2, t0)], "whole-day": [(t0, t0)]}[shape]
    days = st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True)
    return [{"name": f"b{i}", "days": draw(days), "start": start, "end": end,
             "lines": draw(tiers())} for i, (start, end) in enumerate(spans)]


BASES = [datetime(2026, 3, 28), datetime(2026, 6, 10), datetime(2026, 10, 24)]  # lot-local


@st.composite
def events(draw: st.DrawFn, base: datetime) -> list[dict[str, Any]]:
    found = []
    begin = base + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
    for i in range(draw(st.integers(0, 2))):
        end = begin + timedelta(minutes=draw(st.integers(1, 600)))
        start, stop = begin, end
        if draw(st.booleans()):  # the same window given in UTC
            start, stop = (t.replace(tzinfo=BERLIN).astimezone(UTC) for t in (begin, end))
        found.append({"name": f"e{i}", "start": start, "end": stop,
                      "flat_minor": draw(st.integers(0, 3000))})
        begin = end + timedelta(minutes=draw(st.integers(0, 600)))
    return found


@st.composite
def tables(draw: st.DrawFn, base: datetime, *, adjustments: bool = True) -> RateTable:
    cap = draw(st.none() | st.fixed_dictionaries({
        "amount_minor": st.integers(0, 5000),
        "mode": st.sampled_from(["rolling_24h", "calendar_day"]),
    }))
    table: dict[str, Any] = {
        "currency": "EUR",
        "grace_minutes": draw(st.integers(0, 30)),
        "lines": draw(tiers()),
        "bands": draw(bands()),
        "daily_cap": cap,
        "special_events": draw(events(base)),
    }
    if adjustments:
        table["max_fee_minor"] = draw(st.none() | st.integers(0, 20000))
        table["validations"] = {"free": {"free_minutes": draw(st.integers(1, 300))},
                                "fixed": {"amount_minor": draw(st.integers(0, 2000))},
                                "percent": {"percent": draw(st.integers(0, 100))}}
    try:
        return RateTable.model_validate(table)
    except ValidationError:  # an event given in UTC that runs backwards in a DST jump
        reject()


@st.composite
def stays(draw: st.DrawFn, *, adjustments: bool = True) -> tuple[RateTable, datetime]:
    """A table, and an entry within a few days of a base day; the exit is drawn by each test."""
    base = draw(st.sampled_from(BASES))
    table = draw(tables(base, adjustments=adjustments))
    local = base + timedelta(seconds=draw(st.integers(0, 3 * 24 * 3600)))
    return table, local.replace(tzinfo=BERLIN).astimezone(UTC)


validation_lists = st.lists(st.sampled_from(["free", "fixed", "percent"]), max_size=3)
durations = st.integers(0, 4 * 24 * 3600).map(lambda s: timedelta(seconds=s))


def check(result: Quote) -> int:
    assert sum(line.amount_minor for line in result.lines) == result.amount_minor
    assert result.amount_minor >= 0
    return result.amount_minor


@SETTINGS
@given(stays(), validation_lists, durations, durations)
def test_fee_never_falls_as_the_stay_grows(stay, validations, first, more):
    table, start = stay
    shorter = quote(table, start, start + first, tz=BERLIN, validations=validations)
    longer = quote(table, start, start + first + more, tz=BERLIN, validations=validations)
    assert check(shorter) <= check(longer)


@SETTINGS
@given(stays(), validation_lists, st.data())
def test_grace_is_free(stay, validations, data):
    table, start = stay
    grace = timedelta(minutes=table.grace_minutes)
    stay_length = data.draw(st.integers(0, int(grace.total_seconds())).map(
        lambda s: timedelta(seconds=s)))
    result = quote(table, start, start + stay_length, tz=BERLIN, validations=validations)
    assert check(result) == 0
    assert [line.code for line in result.lines] == ["grace"]


def cap_windows(mode: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    if mode == "rolling_24h":
        count = -((start - end) // DAY)
        return [(start + i * DAY, start + (i + 1) * DAY) for i in range(count)]
    day = start.astimezone(BERLIN).date()
    windows = []
    while (midnight := datetime.combine(day, time(), BERLIN)) < end:  # Berlin: no midnight jump
        windows.append((midnight.astimezone(UTC),
                        datetime.combine(day + DAY, time(), BERLIN).astimezone(UTC)))
        day += DAY
    return windows


@SETTINGS
@given(stays(adjustments=False), durations)
def test_daily_cap_holds_in_every_window(stay, length):
    table, start = stay
    end = start + length
    uncapped = table.model_copy(update={"daily_cap": None, "grace_minutes": 0})

    def charged_before(at: datetime) -> int:
        # Every charge belongs to an instant, and those before `at` do not depend on the exit.
        return quote(uncapped, start, at, tz=BERLIN).amount_minor

    result = quote(table, start, end, tz=BERLIN)
    check(result)
    if end - start <= timedelta(minutes=table.grace_minutes) or table.daily_cap is None:
        return
    cap = table.daily_cap.amount_minor
    windows = cap_windows(table.daily_cap.mode, start, end)
    cuts = {line.start: line.amount_minor for line in result.lines if line.code == "daily_cap"}
    total = 0
    for w_start, w_end in windows:
        lo, hi = max(w_start, start), min(w_end, end)
        charged = charged_before(hi) - charged_before(lo)
        kept = charged + cuts.pop(lo, 0)
        assert kept == min(charged, cap)
        total += kept
    assert not cuts  # every cap line is for one of the windows
    assert result.amount_minor == total <= cap * len(windows)
