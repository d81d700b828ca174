"""Pay on foot: what a pay station asks (the fee of a stay, found by plate or ticket) and what
it records (a payment, idempotent by the station's own reference). Plain values and the
contract; the desk that answers is :class:`gateway.controllers.paydesk.PayDesk`, the HTTP
routes are in :mod:`gateway.web.routes` (docs/http.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from gateway.core.events import PaymentMethod, rfc3339

StationMethod = Literal["cash", "card", "mobile"]
# The station's words to the event's (docs/schemas/payment.recorded.json): a phone is an app.
EVENT_METHOD: Mapping[StationMethod, PaymentMethod] = {
    "cash": "cash", "card": "card", "mobile": "app"}
# A fixed namespace: one (station, reference) is one payment id, on every gateway and after any
# restart, so a retry is known by the journal alone.
_PAYMENTS = uuid.UUID("6f1c3c1e-5a55-4f43-9b1e-0d3b7a0c2e61")
RefusalKind = Literal["not_found", "ambiguous", "conflict", "unavailable"]


class PayRefused(Exception):
    """The desk cannot do what the station asked; `kind` says how to answer, the message why.

    `not_found`: no open session; `ambiguous`: the plate matches two; `conflict`: the amount
    or currency is not what is due, or the reference was used with another payment;
    `unavailable`: the journal could not take it (the station retries).
    """

    def __init__(self, kind: RefusalKind, code: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.code = kind, code


@dataclass(frozen=True, slots=True)
class Fee:
    """What a stay costs now, what is paid, and what the station must take."""

    session_id: str
    plate: str | None
    entered_at: datetime
    priced_at: datetime
    fee_minor: int  # the tariff's fee had the stay ended now
    paid_minor: int  # the payments recorded so far
    due_minor: int  # what the exit would still want now: 0 once the payments settle it
    currency: str
    # Pay `due_minor` now and leave by then (the payment grace); with nothing due, when the
    # payments made stop letting the car out; None when nothing is paid or due.
    exit_by: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {"session": self.session_id, "plate": self.plate,
                "enteredAt": rfc3339(self.entered_at), "pricedAt": rfc3339(self.priced_at),
                "feeMinor": self.fee_minor, "paidMinor": self.paid_minor,
                "dueMinor": self.due_minor, "currency": self.currency,
                "exitBy": None if self.exit_by is None else rfc3339(self.exit_by)}


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    session_id: str
    amount_minor: int
    currency: str
    method: StationMethod
    reference: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """A payment recorded, or found again for a retry (`replayed`)."""

    payment_id: str
    request: PaymentRequest
    device: str
    paid_at: datetime
    exit_by: datetime
    replayed: bool

    def as_json(self) -> dict[str, Any]:
        r = self.request
        return {"paymentId": self.payment_id, "session": r.session_id,
                "amountMinor": r.amount_minor, "currency": r.currency, "method": r.method,
                "reference": r.reference, "device": self.device,
                "paidAt": rfc3339(self.paid_at), "exitBy": rfc3339(self.exit_by),
                "replayed": self.replayed}


def payment_id(device: str, reference: str) -> str:
    """The payment id of a station's reference: the same for every retry of it."""
    return str(uuid.uuid5(_PAYMENTS, f"{device}\x1f{reference}"))


class PayOnFoot(Protocol):
    """The pay-on-foot desk, as the HTTP server calls it. Each method raises PayRefused."""

    async def fee_by_plate(self, plate: str) -> Fee: ...

    async def fee_by_ticket(self, ticket: str) -> Fee: ...

    async def pay(self, device: str, request: PaymentRequest) -> Receipt: ...
