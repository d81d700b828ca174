"""Parking fees: rate tables from the config, and the quote for one stay.

Pure functions: every time is passed in, nothing is read from a clock or a file.
Money is integer minor units of the table's ISO 4217 currency, never a float.

How `quote(table, start, end, tz=...)` prices a stay:

1. Grace. A stay no longer than `grace_minutes` costs nothing (one "grace" line).
   A longer stay is charged in full: the grace period is not deducted.
2. Free minutes. `free_minutes` validations push the start of pricing later by
   their sum; the time before it is not charged.
3. Segments. The priced time is cut where bands and special events begin and
   end, in lot-local time (`tz`), so a band from 22:00 follows the lot's clock
   across DST and a DST day has 23 or 25 hours. Each stretch is priced by the
   first special event covering it, else the band covering it, else the
   table's own `lines`. A segment is a maximal stretch priced the same way, so
   consecutive days of one band are one segment, and with no bands and no
   events the whole stay is one segment.
4. Tiers. A segment's tiers are measured from the segment's start: tier i
   covers elapsed time from the previous tier's `until_minutes` (0 for the
   first) to its own. A flat tier is charged once when the segment reaches
   into it (strictly past its lower bound); an increment tier charges
   `amount_minor` for every started `per_minutes` inside it. A special event
   charges its `flat_minor` once for its whole segment. Durations are real
   elapsed time, not differences of wall-clock readings.
5. Daily cap. Every charge belongs to the instant it is incurred (the tier's
   entry, an increment's start, the event's entry). Charges are summed per
   window, 24 h windows from entry (`rolling_24h`) or lot-local calendar days
   (`calendar_day`), and each window's sum is cut to the cap.
6. Then `max_fee_minor` caps the whole stay, and fixed-amount and percentage
   validations are taken off in the order given (a percentage of what is left,
   rounded half up to the minor unit). The fee never goes below 0.

Each validation counts once per stay, as at a pay station: a name given again adds a
line saying so and takes nothing off.

The `Quote` lists every step as a `QuoteLine`, in the order above (charges in
time order); the lines always sum to the fee.

A wall time a DST jump skips (02:30 on a spring-forward day in Berlin) is read
as the instant of the jump, and a repeated one (02:30 on a fall-back day) as
its first occurrence, so band and day edges keep their order in real time.

Every number is bounded (`MAX_MINOR`, `MAX_MINUTES`), and so is a stay (`EARLIEST`
to `LATEST`, at most `MAX_STAY`): a fee and each of its lines stay within
`MAX_FEE_MINOR`, which SQLite and every JSON reader hold exactly, or the quote is
refused with a ValueError.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gateway.core.clock import Elapsed, Stamp, elapsed
from gateway.core.events import FeeLine, rfc3339

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_FEE_MINOR",
    "MAX_MINOR",
    "MAX_MINUTES",
    "MAX_STAY",
    "PERMIT_FREE",
    "WEEKDAYS",
    "Band",
    "DailyCap",
    "Quote",
    "QuoteLine",
    "RateLine",
    "RateTable",
    "SpecialEvent",
    "StayQuote",
    "Tiers",
    "UnknownValidationError",
    "Validation",
    "Weekday",
    "free_quote",
    "local_to_utc",
    "lost_ticket_quote",
    "money",
    "quote",
    "quote_stay",
]

PERMIT_FREE = "free"
"""The tariff name a permit gives to park free of charge (see `free_quote`)."""

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)

MAX_MINOR = 10**9
"""The most one amount of a tariff may be: 10,000,000.00 EUR, ample in any currency."""
MAX_MINUTES = 366 * 24 * 60
"""The most minutes a tariff may name (a tier's bound, an increment, a grace): a year."""
MAX_TIERS = 50  # duration tiers of one table or band
MAX_FEE_MINOR = 2**53 - 1
"""The largest fee or line a quote gives: exact in SQLite and in every JSON reader."""
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""A stay is priced between these: the calendar's own ends leave no room for the days
around it that bands and caps look at."""
MAX_STAY = timedelta(days=36_525)
"""The longest stay priced, a century: the lines of a longer one would fill memory."""

# ISO 4217 minor units where they are not 2; only used to write amounts in descriptions.
_MINOR_DIGITS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
    "XPF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "CLF": 4, "UYW": 4,
}  # fmt: skip


class _Config(BaseModel):
    # A mistyped key must stop start-up, and a loaded tariff must not change under a quote.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _whole_number(value: Any) -> Any:
    """Refuse what pydantic's lax mode would take for an int: `true` (1), 250.0 and "250".

    Text of a subclass of str still parses: that is how the config hands over an
    environment variable, the one place where a number can only be text.
    """
    if isinstance(value, bool | float) or type(value) is str:
        raise ValueError("must be a whole number, written without quotes or a decimal point")
    return value


Minor = Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=MAX_MINOR)]
"""An amount in minor units of the table's currency."""
Minutes = Annotated[int, BeforeValidator(_whole_number), Field(ge=1, le=MAX_MINUTES)]


class RateLine(_Config):
    """One duration tier: `flat_minor`, or `amount_minor` per started `per_minutes`.

    `until_minutes` is the tier's upper bound, counted from the start of the
    segment; the tier starts where the previous one ends. The last tier has
    none: it runs on for ever, so every minute of a stay has a price.
    """

    until_minutes: Minutes | None = None
    flat_minor: Minor | None = None
    per_minutes: Minutes | None = None
    amount_minor: Minor | None = None

    @model_validator(mode="after")
    def _one_price(self) -> Self:
        increment = (self.per_minutes, self.amount_minor)
        if self.flat_minor is not None:
            if increment != (None, None):
                raise ValueError("a rate line is either flat_minor, or per_minutes with "
                                 "amount_minor, not both")
        elif None in increment:
            raise ValueError("a rate line needs flat_minor, or both per_minutes and amount_minor")
        return self


def _check_tiers(lines: tuple[RateLine, ...]) -> tuple[RateLine, ...]:
    # Counted here rather than by Field(min_length=...), which also reports a tuple with a bad
    # line as one that is too short.
    if not 1 <= len(lines) <= MAX_TIERS:
        raise ValueError(f"a tariff takes at least 1 and at most {MAX_TIERS} tiers")
    previous = 0
    for i, line in enumerate(lines[:-1]):
        if line.until_minutes is None:
            raise ValueError(f"only the last tier may leave out until_minutes (tier {i} does)")
        if line.until_minutes <= previous:
            raise ValueError(f"until_minutes must increase: tier {i} has {line.until_minutes} "
                             f"after {previous}")
        previous = line.until_minutes
    if lines[-1].until_minutes is not None:
        raise ValueError("the last tier must leave out until_minutes, so that every minute has a "
                         "price (add a last line with flat_minor = 0 if the rest is free)")
    return lines


Tiers = Annotated[tuple[RateLine, ...], AfterValidator(_check_tiers)]
"""Duration tiers in order: `until_minutes` increasing, the last one unbounded."""


class Band(_Config):
    """A time-of-day band with its own tiers, in lot-local wall time.

    It starts at `start` on each of its `days` and ends at `end`: the same day,
    or the next one when `end <= start` (22:00-06:00 on "fri" is Friday night
    into Saturday morning; `start == end` is a whole day).
    """

    name: str | None = Field(default=None, min_length=1)
    days: tuple[Weekday, ...] = Field(default=WEEKDAYS, min_length=1)
    start: time
    end: time
    lines: Tiers

    @field_validator("days")
    @classmethod
    def _distinct_days(cls, days: tuple[Weekday, ...]) -> tuple[Weekday, ...]:
        if len(set(days)) != len(days):
            raise ValueError("a day is listed twice")
        return days

    @field_validator("start", "end")
    @classmethod
    def _wall_time(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("band times are lot-local wall times; leave out the UTC offset")
        return value


class DailyCap(_Config):
    """The most charged per window: 24 h from entry, or one lot-local calendar day."""

    amount_minor: Minor
    mode: Literal["rolling_24h", "calendar_day"]


class SpecialEvent(_Config):
    """A window (a concert, a fair) whose part of a stay costs `flat_minor`, once.

    `start` and `end` both carry a UTC offset, or both leave it out and are lot-local.
    """

    name: str = Field(min_length=1)
    start: datetime
    end: datetime
    flat_minor: Minor

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if (self.start.tzinfo is None) != (self.end.tzinfo is None):
            raise ValueError("start and end must both have a UTC offset, or both be lot-local")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Validation(_Config):
    """A discount the operator hands out (a shop's stamp): exactly one of the three kinds."""

    amount_minor: Minor | None = None
    percent: Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=100)] | None = None
    free_minutes: Minutes | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        given = [v for v in (self.amount_minor, self.percent, self.free_minutes) if v is not None]
        if len(given) != 1:
            raise ValueError("a validation takes exactly one of amount_minor, percent, "
                             "free_minutes")
        return self


class RateTable(_Config):
    """One tariff (APDS RateTable), e.g. `[tariffs.standard]` in the config."""

    currency: str
    grace_minutes: Annotated[int, BeforeValidator(_whole_number),
                             Field(ge=0, le=MAX_MINUTES)] = 0
    lines: Tiers
    bands: tuple[Band, ...] = Field(default=(), max_length=50)
    daily_cap: DailyCap | None = None
    max_fee_minor: Minor | None = None
    lost_ticket_minor: Minor | None = None
    special_events: tuple[SpecialEvent, ...] = Field(default=(), max_length=1000)
    validations: dict[str, Validation] = Field(default_factory=dict, max_length=100)

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, value: str) -> str:
        if len(value) != 3 or not (value.isascii() and value.isalpha() and value.isupper()):
            raise ValueError(f"currency must be an ISO 4217 code of 3 upper-case letters, "
                             f"e.g. EUR (got {value!r})")
        return value

    @field_validator("bands")
    @classmethod
    def _bands_disjoint(cls, bands: tuple[Band, ...]) -> tuple[Band, ...]:
        spans = sorted(
            (span_start, span_end, _band_label(i, band), day)
            for i, band in enumerate(bands)
            for day in band.days
            for span_start, span_end in _weekly_spans(band, day)
        )
        for (_, end, label, day), (start, _, next_label, next_day) in pairwise(spans):
            if start < end:
                raise ValueError(f"bands overlap: {label} on {day} and {next_label} on {next_day}")
        return bands

    @field_validator("special_events")
    @classmethod
    def _events_disjoint(cls, events: tuple[SpecialEvent, ...]) -> tuple[SpecialEvent, ...]:
        # Lot-local and offset-carrying times only compare once a lot's zone is known:
        # should two such events overlap, the one that starts first wins (see `_segments`).
        for aware in (False, True):
            same_kind = sorted((e for e in events if (e.start.tzinfo is not None) == aware),
                               key=lambda e: e.start)
            for event, following in pairwise(same_kind):
                if following.start < event.end:
                    raise ValueError(f"special events overlap: {event.name} and {following.name}")
        return events


def _band_label(index: int, band: Band) -> str:
    return band.name or str(index)


def _since_midnight(t: time) -> timedelta:
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


def _weekly_spans(band: Band, day: Weekday) -> Iterator[tuple[timedelta, timedelta]]:
    """Where the band's occurrence on `day` lies in a wall-clock week from Monday 00:00."""
    start = WEEKDAYS.index(day) * _DAY + _since_midnight(band.start)
    length = _since_midnight(band.end) - _since_midnight(band.start)
    end = start + (length if length > timedelta(0) else length + _DAY)
    if end > _WEEK:  # Sunday night runs into Monday morning
        yield start, _WEEK
        yield timedelta(0), end - _WEEK
    else:
        yield start, end


# --- the quote -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuoteLine:
    """One line of a fee: a charge, or a reduction (negative), or information (0).

    `code` is "grace", "tier", "increment", "band:<name or index>", "event:<name>",
    "daily_cap", "max_fee", "discount:<validation>", "lost_ticket" or "permit";
    `start`/`end` (UTC) are the stretch of the stay it is about, if any.
    """

    code: str
    description: str
    amount_minor: int
    start: datetime | None = None
    end: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "description": self.description,
            "amount_minor": self.amount_minor,
            "start": None if self.start is None else rfc3339(self.start),
            "end": None if self.end is None else rfc3339(self.end),
        }


@dataclass(frozen=True, slots=True)
class Quote:
    """A fee and the lines that make it up (they always sum to it)."""

    amount_minor: int
    currency: str
    lines: tuple[QuoteLine, ...]

    def __post_init__(self) -> None:
        if sum(line.amount_minor for line in self.lines) != self.amount_minor:
            raise ValueError("quote lines do not sum to the amount")

    def to_json(self) -> dict[str, Any]:
        return {
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "lines": [line.to_json() for line in self.lines],
        }

    def fee_lines(self) -> list[FeeLine]:
        """The lines as `session.ended` carries them."""
        return [{"code": line.code, "description": line.description,
                 "amountMinor": line.amount_minor} for line in self.lines]


class UnknownValidationError(KeyError):
    """A validation name that the tariff does not define."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:
        known = ", ".join(sorted(self.known)) or "none"
        return f"unknown validation {self.name!r} (this tariff has: {known})"


def free_quote(currency: str, reason: str) -> Quote:
    """A zero fee, e.g. for a permit whose tariff is `PERMIT_FREE`; `reason` goes on the line."""
    return Quote(0, currency, (QuoteLine("permit", reason, 0),))


def lost_ticket_quote(table: RateTable) -> Quote:
    """The flat fee for a stay with no entry record."""
    if table.lost_ticket_minor is None:
        raise ValueError("this tariff has no lost_ticket_minor: a lost ticket cannot be priced")
    amount = table.lost_ticket_minor
    line = QuoteLine("lost_ticket", f"lost ticket: {money(amount, table.currency)}", amount)
    return Quote(amount, table.currency, (line,))


def quote(
    table: RateTable,
    start: datetime,
    end: datetime,
    *,
    tz: ZoneInfo,
    validations: Sequence[str] = (),
) -> Quote:
    """The fee for a stay from `start` to `end` (tz-aware) at a lot in zone `tz`.

    `validations` are names from `table.validations`, applied in that order, each once.
    Raises ValueError if `end` is before `start`, a time is naive, the stay is not within
    `EARLIEST`..`LATEST` and `MAX_STAY`, or a line or the fee would pass `MAX_FEE_MINOR`;
    `UnknownValidationError` for a name the table does not define.
    """
    start, end = _utc(start, "start"), _utc(end, "end")
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    if start < EARLIEST or end > LATEST:
        raise ValueError(f"a stay is priced from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} (UTC)")
    if end - start > MAX_STAY:
        raise ValueError(f"a stay longer than {MAX_STAY.days:,} days (a century) is not priced")
    unknown = [name for name in validations if name not in table.validations]
    if unknown:
        raise UnknownValidationError(unknown[0], list(table.validations))
    given = Counter(validations)
    chosen = [(name, table.validations[name]) for name in given]  # each once, in order
    currency = table.currency

    if end - start <= timedelta(minutes=table.grace_minutes):
        grace = QuoteLine("grace", f"within {table.grace_minutes} min grace", 0, start, end)
        return Quote(0, currency, (grace,))

    lines: list[QuoteLine] = []
    priced_from = start
    for name, validation in chosen:
        if validation.free_minutes is not None:
            free_until = min(end, priced_from + timedelta(minutes=validation.free_minutes))
            lines.append(QuoteLine(f"discount:{name}",
                                   f"validation {name}: {validation.free_minutes} min free",
                                   0, priced_from, free_until))
            priced_from = free_until

    runs = [run for segment in _segments(table, priced_from, end, tz)
            for run in _segment_runs(segment, currency)]
    lines += [run.line() for run in runs]
    total = sum(run.amount for run in runs)

    if table.daily_cap is not None:
        cap = table.daily_cap
        windows = _cap_windows(cap, start, end, tz)
        for (w_start, w_end, label), charged in zip(windows, _window_totals(runs, windows),
                                                    strict=True):
            if charged > cap.amount_minor:
                lines.append(QuoteLine(
                    "daily_cap", f"daily cap {money(cap.amount_minor, currency)} ({label})",
                    cap.amount_minor - charged, max(w_start, start), min(w_end, end)))
                total = total - charged + cap.amount_minor

    if table.max_fee_minor is not None and total > table.max_fee_minor:
        lines.append(QuoteLine("max_fee", f"maximum fee {money(table.max_fee_minor, currency)}",
                               table.max_fee_minor - total))
        total = table.max_fee_minor

    for name, validation in chosen:
        if validation.amount_minor is not None:
            off = min(total, validation.amount_minor)
            what = f"{money(off, currency)} off"
            if off < validation.amount_minor:  # the line says what it took, as the total does
                what += f" (worth up to {money(validation.amount_minor, currency)})"
        elif validation.percent is not None:
            off = (total * validation.percent + 50) // 100  # half up; total >= 0
            what = f"{validation.percent}% off"
        else:
            continue  # free minutes, applied above
        lines.append(QuoteLine(f"discount:{name}", f"validation {name}: {what}", -off))
        total -= off
    lines += [QuoteLine(f"discount:{name}",
                        f"validation {name}: given {count} times, counted once", 0)
              for name, count in given.items() if count > 1]

    if total > MAX_FEE_MINOR or any(abs(line.amount_minor) > MAX_FEE_MINOR for line in lines):
        raise ValueError(f"the fee runs past {money(MAX_FEE_MINOR, currency)}: this tariff "
                         "cannot price so long a stay")
    return Quote(total, currency, tuple(lines))


@dataclass(frozen=True, slots=True)
class StayQuote:
    """The fee for a stay the gateway stamped, and how far its times can be trusted."""

    quote: Quote
    elapsed: Elapsed  # the duration used, the corrected start/end, reliable and why not

    @property
    def reliable(self) -> bool:
        return self.elapsed.reliable


def quote_stay(
    table: RateTable,
    entry: Stamp,
    exit: Stamp,
    *,
    tz: ZoneInfo,
    validations: Sequence[str] = (),
) -> StayQuote:
    """Price a stay from the gateway's own clock stamps.

    Within one boot the duration is monotonic time, so the wall clock stepping
    at NTP sync (a Pi without an RTC) does not change the fee; bands and caps are
    read in wall time at the corrected start and end. When the result is not
    `reliable` (a reboot with an unsynchronised clock, say), the caller decides
    what to charge, e.g. by its lost-ticket policy.
    """
    span = elapsed(entry, exit)
    return StayQuote(quote(table, span.start, span.end, tz=tz, validations=validations), span)


def money(amount_minor: int, currency: str) -> str:
    """An amount for people to read: `money(150, "EUR") == "1.50 EUR"`."""
    digits = _MINOR_DIGITS.get(currency, 2)
    units, minor = divmod(abs(amount_minor), 10**digits)
    sign = "-" if amount_minor < 0 else ""
    fraction = f".{minor:0{digits}d}" if digits else ""
    return f"{sign}{units}{fraction} {currency}"


def _utc(at: datetime, name: str) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be tz-aware")
    try:
        return at.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        raise ValueError(f"{name} {at.isoformat()} is beyond the calendar's end") from None


def local_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant a naive lot-local wall time names (see the module docstring for DST).

    Raises ValueError for a wall time whose instant is beyond the calendar's end.
    """
    try:
        instant = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{wall.isoformat()} in {tz.key} is beyond the calendar's end") from None
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant  # it exists; fold=0 picks the first of a repeated hour
    # Skipped by a forward jump: read with the offset from after the jump (fold=1) it lands
    # before the jump, with the one from before (fold=0) after it. Bisect between the two for
    # the jump itself; tzdata transitions fall on whole seconds.
    before = math.floor(wall.replace(tzinfo=tz, fold=1).timestamp())
    after = math.ceil(instant.timestamp())
    offset_before = datetime.fromtimestamp(before, tz).utcoffset()
    while after - before > 1:
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == offset_before:
            before = middle
        else:
            after = middle
    return datetime.fromtimestamp(after, UTC)


@dataclass(frozen=True, slots=True, eq=False)
class _Pricing:
    """What prices a stretch of time; compared by identity, one per band or event."""

    code: str  # "" for the table's own lines, else "band:<label>" or "event:<name>"
    label: str  # for descriptions
    lines: tuple[RateLine, ...] = ()
    event_flat_minor: int | None = None


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime
    end: datetime
    pricing: _Pricing


def _segments(table: RateTable, start: datetime, end: datetime, tz: ZoneInfo) -> list[_Window]:
    """Cut [start, end) into maximal stretches priced the same way, in time order."""
    events = sorted(
        (w for w in _event_windows(table, tz) if w.start < end and w.end > start),
        key=lambda w: w.start,
    )
    bands = _band_windows(table, start, end, tz)
    edges = {start, end} | {t for w in (*events, *bands) for t in (w.start, w.end)
                            if start < t < end}
    default = _Pricing("", "", table.lines)
    segments: list[_Window] = []
    band_at = 0  # bands are disjoint and sorted, and the stretches come in time order
    for a, b in pairwise(sorted(edges)):
        while band_at < len(bands) and bands[band_at].end <= a:
            band_at += 1
        pricing = next((w.pricing for w in events if w.start <= a < w.end), None)
        if pricing is None:
            in_band = band_at < len(bands) and bands[band_at].start <= a
            pricing = bands[band_at].pricing if in_band else default
        if segments and segments[-1].pricing is pricing:
            segments[-1] = _Window(segments[-1].start, b, pricing)
        else:
            segments.append(_Window(a, b, pricing))
    return segments


def _event_windows(table: RateTable, tz: ZoneInfo) -> Iterator[_Window]:
    for event in table.special_events:
        pricing = _Pricing(f"event:{event.name}", f"event {event.name}",
                           event_flat_minor=event.flat_minor)
        if event.start.tzinfo is None:
            yield _Window(local_to_utc(event.start, tz), local_to_utc(event.end, tz), pricing)
        else:
            yield _Window(event.start.astimezone(UTC), event.end.astimezone(UTC), pricing)


def _band_windows(table: RateTable, start: datetime, end: datetime, tz: ZoneInfo) -> list[_Window]:
    """The band occurrences that overlap [start, end), in time order."""
    pricings = [_Pricing(f"band:{_band_label(i, band)}", f"band {_band_label(i, band)}",
                         band.lines) for i, band in enumerate(table.bands)]
    windows = []
    day = start.astimezone(tz).date() - _DAY  # the day before may run past midnight into ours
    while table.bands and day <= end.astimezone(tz).date():
        for band, pricing in zip(table.bands, pricings, strict=True):
            if WEEKDAYS[day.weekday()] in band.days:
                end_day = day if band.end > band.start else day + _DAY
                w_start = local_to_utc(datetime.combine(day, band.start), tz)
                w_end = local_to_utc(datetime.combine(end_day, band.end), tz)
                if w_start < end and w_end > start and w_start < w_end:
                    windows.append(_Window(w_start, w_end, pricing))
        day += _DAY
    return sorted(windows, key=lambda w: w.start)


@dataclass(frozen=True, slots=True)
class _Run:
    """The charges of one tier in one segment: `count` times `each`, the k-th at first + k * step.

    A flat charge is a run of one, its step the stretch it pays for.
    """

    code: str
    description: str
    first: datetime
    end: datetime  # end of the stretch the run pays for
    step: timedelta
    count: int
    each: int

    @property
    def amount(self) -> int:
        return self.count * self.each

    def charged_before(self, at: datetime) -> int:
        """How many of the run's charges are incurred before `at`."""
        if at <= self.first:
            return 0
        return min(self.count, -((self.first - at) // self.step))  # started steps

    def line(self) -> QuoteLine:
        return QuoteLine(self.code, self.description, self.amount, self.first, self.end)


def _segment_runs(segment: _Window, currency: str) -> Iterator[_Run]:
    pricing = segment.pricing
    length = segment.end - segment.start
    if pricing.event_flat_minor is not None:
        flat = pricing.event_flat_minor
        yield _Run(pricing.code, f"{pricing.label}: flat {money(flat, currency)}",
                   segment.start, segment.end, length, 1, flat)
        return
    lower = 0
    for line in pricing.lines:
        low = timedelta(minutes=lower)
        if length <= low:
            return
        high = length if line.until_minutes is None else min(length, timedelta(
            minutes=line.until_minutes))
        where = ", ".join(part for part in (pricing.label, _tier_span(lower, line.until_minutes))
                          if part)
        prefix = f"{where}: " if where else ""
        if line.flat_minor is not None:
            yield _Run(pricing.code or "tier", f"{prefix}flat {money(line.flat_minor, currency)}",
                       segment.start + low, segment.start + high, high - low, 1, line.flat_minor)
        else:
            assert line.per_minutes is not None  # the model's validator saw to both
            assert line.amount_minor is not None
            step = timedelta(minutes=line.per_minutes)
            count = -((low - high) // step)  # a started increment is charged in full
            yield _Run(pricing.code or "increment",
                       f"{prefix}{count} x {line.per_minutes} min at "
                       f"{money(line.amount_minor, currency)}",
                       segment.start + low, segment.start + high, step, count, line.amount_minor)
        if line.until_minutes is not None:
            lower = line.until_minutes


def _tier_span(lower: int, upper: int | None) -> str:
    if upper is None:
        return f"after {lower} min" if lower else ""
    return f"first {upper} min" if lower == 0 else f"{lower}-{upper} min"


def _cap_windows(
    cap: DailyCap, start: datetime, end: datetime, tz: ZoneInfo
) -> list[tuple[datetime, datetime, str]]:
    """The cap's windows over [start, end) with a label for each, in time order."""
    windows = []
    if cap.mode == "rolling_24h":
        w_start = start
        while w_start < end:
            label = f"24 h from {w_start.astimezone(tz):%Y-%m-%d %H:%M}"
            windows.append((w_start, w_start + _DAY, label))
            w_start += _DAY
        return windows
    day = start.astimezone(tz).date()
    w_start = _local_midnight(day, tz)
    while w_start < end:
        w_end = _local_midnight(day + _DAY, tz)
        windows.append((w_start, w_end, day.isoformat()))
        day, w_start = day + _DAY, w_end
    return windows


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return local_to_utc(datetime.combine(day, time()), tz)


def _window_totals(runs: Sequence[_Run], windows: Sequence[tuple[datetime, datetime, str]]
                   ) -> list[int]:
    """The sum of the charges incurred in each window."""
    starts = [w_start for w_start, _, _ in windows]
    totals = [0] * len(windows)
    for run in runs:
        last_charge = run.first + (run.count - 1) * run.step
        # Only the windows from the run's first charge to its last; a run may span many days.
        for i in range(bisect_right(starts, run.first) - 1, bisect_right(starts, last_charge)):
            w_start, w_end, _ = windows[i]
            totals[i] += run.each * (run.charged_before(w_end) - run.charged_before(w_start))
    return totals
