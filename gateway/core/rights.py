"""Rights the backend pushes down: permits, reservations and the deny list.

One definition serves both sides: :mod:`gateway.sync.inbound` validates an update against
these models before storing it, and :mod:`gateway.core.access` decides entries by them. Field names
are the wire's (camelCase, as in docs/asyncapi.yaml).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from gateway.core.events import BayType, Rfc3339Time

Plate = Annotated[str, Field(min_length=1, max_length=20)]
Ident = Annotated[str, Field(min_length=1, max_length=128)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Permit(_Model):
    """A standing right to park (a season ticket, a staff permit)."""

    permitId: Ident
    plates: tuple[Plate, ...] = Field(min_length=1, max_length=20)
    validFrom: Rfc3339Time | None = None
    validUntil: Rfc3339Time | None = None
    zones: tuple[Ident, ...] = ()  # empty: every zone
    holder: Annotated[str, Field(max_length=200)] | None = None
    # The tariff the holder pays by; absent: the permit parks free.
    rateTable: Ident | None = None
    # An account holder's stays are charged to the account (a `charge` transaction).
    accountId: Ident | None = None
    # The pool (pushed as `permit_pools`) whose spaces this permit shares with the others.
    poolId: Ident | None = None

    def valid_at(self, at: datetime) -> bool:
        return ((self.validFrom is None or self.validFrom <= at)
                and (self.validUntil is None or at < self.validUntil))

    @model_validator(mode="after")
    def _ordered(self) -> Permit:
        if self.validFrom and self.validUntil and self.validUntil <= self.validFrom:
            raise ValueError("validUntil must be after validFrom")
        return self


class Reservation(_Model):
    """A booked stay: the plate may enter from `start` (less the lot's tolerance) to `end`."""

    reservationId: Ident
    plate: Plate
    start: Rfc3339Time
    end: Rfc3339Time
    bayType: BayType | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Reservation:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class DenyEntry(_Model):
    """A plate that must not be let in (until `until`, if given)."""

    plate: Plate
    reason: Annotated[str, Field(max_length=500)] | None = None
    until: Rfc3339Time | None = None

    def active_at(self, at: datetime) -> bool:
        return self.until is None or at < self.until


# --- permit pools and weekly reservations ---------------------------------------------------

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class PermitPool(_Model):
    """Permits that share spaces: a company's 50 permits for 20 spaces.

    While `spaces` of the pool's members are inside, the next member is a visitor
    (`whenFull = "visitor"`: parks, and pays, by the lot's default tariff) or is refused
    (`"refuse"`).
    """

    poolId: Ident
    spaces: int = Field(ge=0, le=100_000)
    whenFull: Literal["visitor", "refuse"] = "visitor"


class RecurringReservation(_Model):
    """A weekly booking (a "monthly pass"): on each of `days`, from `startTime` to `endTime`
    lot-local, for the start days from `validFrom` to `validUntil` (both included).

    An `endTime` at or before `startTime` ends the next day (a night pass). Lot-local wall
    times, so 08:00 stays 08:00 across a DST change; a start in the hour skipped in spring
    is taken at the clock's time before the change (02:30 is 03:30), an hour repeated in
    autumn at its first pass.
    """

    reservationId: Ident
    plate: Plate
    days: tuple[Weekday, ...] = Field(min_length=1, max_length=7)
    startTime: time
    endTime: time
    validFrom: date
    validUntil: date
    bayType: BayType | None = None

    @model_validator(mode="after")
    def _sane(self) -> RecurringReservation:
        if len(set(self.days)) != len(self.days):
            raise ValueError("days: each day at most once")
        if self.startTime.tzinfo is not None or self.endTime.tzinfo is not None:
            raise ValueError("startTime and endTime are lot-local: no offset")
        if self.validUntil < self.validFrom:
            raise ValueError("validUntil must not be before validFrom")
        return self

    def occurrences(self, around: datetime, tz: tzinfo) -> list[Reservation]:
        """The bookings, as one-off reservations in UTC, that start from two days before
        `around` to the day after (lot-local): those whose window, with a grace of up to a
        day, can hold `around`."""
        local = around.astimezone(tz).date()
        found = []
        for offset in range(-2, 2):
            day = local + timedelta(days=offset)
            if not self.validFrom <= day <= self.validUntil or WEEKDAYS[day.weekday()] not in (
                    self.days):
                continue
            ends = day + timedelta(days=1) if self.endTime <= self.startTime else day
            found.append(Reservation(
                reservationId=self.reservationId, plate=self.plate, bayType=self.bayType,
                start=_utc(day, self.startTime, tz), end=_utc(ends, self.endTime, tz)))
        return found


def _utc(day: date, at: time, tz: tzinfo) -> datetime:
    """A lot-local wall time as UTC. Converted before any arithmetic: Python compares two
    times of one zone by their wall clocks, which is an hour off across a DST change."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


PERMITS: TypeAdapter[tuple[Permit, ...]] = TypeAdapter(tuple[Permit, ...])
RESERVATIONS: TypeAdapter[tuple[Reservation, ...]] = TypeAdapter(tuple[Reservation, ...])
DENY_LIST: TypeAdapter[tuple[DenyEntry, ...]] = TypeAdapter(tuple[DenyEntry, ...])
PERMIT_POOLS: TypeAdapter[tuple[PermitPool, ...]] = TypeAdapter(tuple[PermitPool, ...])
RECURRING_RESERVATIONS: TypeAdapter[tuple[RecurringReservation, ...]] = TypeAdapter(
    tuple[RecurringReservation, ...])
RIGHTS: dict[str, TypeAdapter[Any]] = {
    "permits": PERMITS, "reservations": RESERVATIONS, "deny_list": DENY_LIST,
    "permit_pools": PERMIT_POOLS, "recurring_reservations": RECURRING_RESERVATIONS}
