"""The pay-on-foot desk: a station finds a stay, learns what is due, and pays it.

A stay is found by plate as the exit lane finds it (`Access.find_stay`: exact, or the one plate
within the confusable-weighted distance; two equally close is an `ambiguous` refusal), or by
the session id a ticket carries (`tickets`, given by the composition root: a verifier that
raises ValueError on a forged or unreadable ticket). What is due is what the exit would still
want now (`Access.paid_up`), so a station never takes money the barrier would not ask for.

A payment must be exactly what is due, in the tariff's currency: no partial payments, no
change given by the gateway (the station gives change; it asks again when the fee stepped up
since it showed it). It is journaled as `payment.recorded` (with the station's account and
reference) like every other record, with no network. Its id comes from (station, reference),
so a retry after a lost answer, or after a restart, finds the first payment in the journal and
gets the same receipt; the same reference with another session, amount, currency or method is
a conflict. One payment at a time goes through the check and the write.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog

from gateway.controllers.sessions import SessionBook
from gateway.core.access import OpenStay
from gateway.core.pay import EVENT_METHOD, Fee, PaymentRequest, PayRefused, Receipt, payment_id
from gateway.core.records import PaymentRecord
from gateway.journal import Journal, JournalWriteError

log = structlog.get_logger(__name__)

TicketReader = Callable[[str], str]  # ticket text -> session id; ValueError if not genuine


class PayDesk:
    """Implements :class:`gateway.core.pay.PayOnFoot` over the lot's sessions and journal."""

    def __init__(self, sessions: SessionBook, journal: Journal, *,
                 tickets: TicketReader | None = None) -> None:
        self.sessions = sessions
        self.access = sessions.access
        self.clock = sessions.clock
        self.journal = journal
        self.tickets = tickets
        self.grace = timedelta(minutes=sessions.settings.lot.payment_grace_minutes)
        self._one_at_a_time = asyncio.Lock()
        self.recorded = 0
        self.replayed = 0
        self.refused: Counter[str] = Counter()  # payments refused, by the refusal's code

    # --- finding a stay ---

    async def fee_by_plate(self, plate: str) -> Fee:
        found = self.access.find_stay(plate)
        if found.outcome == "ambiguous":
            raise PayRefused("ambiguous", "ambiguous",
                             "the plate matches more than one car inside: enter it in full,"
                             " or use the ticket")
        stay = self.access.stay_of(found.plate) if found.accepted and found.plate else None
        if stay is None:
            raise PayRefused("not_found", "not_found", "no car inside with this plate")
        return await self._fee(stay)

    async def fee_by_ticket(self, ticket: str) -> Fee:
        if self.tickets is None:
            raise PayRefused("not_found", "no_tickets", "this lot issues no tickets")
        try:
            session_id = self.tickets(ticket)
        except ValueError:
            log.warning("pay.ticket_refused")  # not the text: it may be a forgery's payload
            raise PayRefused("not_found", "bad_ticket", "the ticket is not one of this lot's"
                             " or cannot be read") from None
        stay = self.access.inside.get(session_id)
        if stay is None:
            raise PayRefused("not_found", "not_found",
                             "the ticket's session is closed: the car has left")
        return await self._fee(stay)

    async def _fee(self, stay: OpenStay) -> Fee:
        return self._price(stay, await self.journal.payments(stay.session_id))

    def _price(self, stay: OpenStay, payments: list[PaymentRecord]) -> Fee:
        now = self.clock.now()
        fee = self.sessions.fee_at(stay, now)
        table = self.sessions.table(stay) or self.sessions.tariffs[
            self.sessions.settings.gateway.default_tariff]
        paid = sum(p.amount_minor for p in payments)
        settled = (stay.right_kind == "account"  # charged to the account at the exit
                   or self.access.paid_up(stay, payments, now, self.sessions.fee_at))
        due = 0 if settled else max(0, fee - paid)
        exit_by = (now + self.grace if due > 0
                   else self.sessions.paid_until.get(stay.session_id) if payments else None)
        return Fee(stay.session_id, stay.plate, stay.entry.wall, now, fee, paid, due,
                   table.currency, exit_by)

    # --- paying ---

    def summary(self) -> dict[str, Any]:
        """Payments since start, for `status` and /metrics."""
        return {"recorded": self.recorded, "replayed": self.replayed,
                "refused": dict(sorted(self.refused.items()))}

    async def pay(self, device: str, request: PaymentRequest) -> Receipt:
        try:
            return await self._pay(device, request)
        except PayRefused as e:
            self.refused[e.code] += 1
            raise

    async def _pay(self, device: str, request: PaymentRequest) -> Receipt:
        pid = payment_id(device, request.reference)
        async with self._one_at_a_time:
            earlier = await self.journal.payment(pid)
            if earlier is not None:
                return self._again(pid, device, request, earlier)
            stay = self.access.inside.get(request.session_id)
            if stay is None:
                raise PayRefused("not_found", "not_found",
                                 f"no open session {request.session_id!r}")
            fee = self._price(stay, await self.journal.payments(stay.session_id))
            self._check(request, fee)
            try:
                paid_at = await self.sessions.record_payment(
                    payment_id=pid, session_id=stay.session_id,
                    amount_minor=request.amount_minor, currency=request.currency,
                    method=EVENT_METHOD[request.method], source="pay_station", device=device,
                    reference=request.reference)
            except JournalWriteError as e:
                raise PayRefused("unavailable", "unavailable",
                                 f"the payment could not be recorded ({e}); try again") from None
        self.recorded += 1
        log.info("pay.recorded", device=device, session_id=stay.session_id,
                 amount_minor=request.amount_minor, method=request.method)
        return Receipt(pid, request, device, paid_at, paid_at + self.grace, replayed=False)

    def _check(self, request: PaymentRequest, fee: Fee) -> None:
        if request.currency != fee.currency:
            raise PayRefused("conflict", "wrong_currency",
                             f"the lot charges in {fee.currency}, not {request.currency}")
        if fee.due_minor == 0:
            raise PayRefused("conflict", "nothing_due", "nothing is due: the car may leave")
        if request.amount_minor != fee.due_minor:
            raise PayRefused("conflict", "amount_mismatch",
                             f"{fee.due_minor} is due now, not {request.amount_minor}: ask"
                             " the fee again")

    def _again(self, pid: str, device: str, request: PaymentRequest,
               earlier: PaymentRecord) -> Receipt:
        """A retry: the first payment's receipt if it is the same payment, else a conflict."""
        same = (earlier.session_id, earlier.amount_minor, earlier.currency, earlier.method) == (
            request.session_id, request.amount_minor, request.currency,
            EVENT_METHOD[request.method])
        if not same:
            raise PayRefused("conflict", "reference_reused",
                             f"reference {request.reference!r} was used for another payment")
        self.replayed += 1
        paid_at = datetime.fromisoformat(earlier.paid_at)
        exit_by = (datetime.fromisoformat(earlier.valid_until) if earlier.valid_until
                   else paid_at + self.grace)
        return Receipt(pid, request, device, paid_at, exit_by, replayed=True)
