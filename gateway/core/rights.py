"""Rights the backend pushes down: permits, reservations and the deny list.

One definition serves both sides: :mod:`gateway.sync.inbound` validates an update against
these models before storing it, and :mod:`gateway.core.access` decides entries by them. Field names
are the wire's (camelCase, as in docs/asyncapi.yaml).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

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



PERMITS: TypeAdapter[tuple[Permit, ...]] = TypeAdapter(tuple[Permit, ...])
RESERVATIONS: TypeAdapter[tuple[Reservation, ...]] = TypeAdapter(tuple[Reservation, ...])
DENY_LIST: TypeAdapter[tuple[DenyEntry, ...]] = TypeAdapter(tuple[DenyEntry, ...])
RIGHTS: dict[str, TypeAdapter[Any]] = {
    "permits": PERMITS, "reservations": RESERVATIONS, "deny_list": DENY_LIST}
