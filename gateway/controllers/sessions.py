"""Parking sessions: opened when a vehicle has passed an entry, closed when it has passed an exit.

Each change and the event that reports it are one journal transaction (the outbox), so the
backend hears of exactly the sessions the lot has. Fees come from the tariff engine over the
gateway's own clock stamps (monotonic durations within a boot).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from gateway.config import Settings
from gateway.core import events
from gateway.core.access import Access, EntryDecision, OpenStay
from gateway.core.clock import Clock, Stamp, elapsed
from gateway.core.events import (
    ClockStatus,
    Credential,
    Event,
    ExitReason,
    FinancialTransaction,
    Right,
    Vehicle,
)
from gateway.core.tariff import (
    PERMIT_FREE,
    Quote,
    RateTable,
    StayQuote,
    free_quote,
    lost_ticket_quote,
    quote_stay,
)
from gateway.core.tickets import TicketSigner
from gateway.journal import (
    CloseSession,
    Journal,
    JournalWriteError,
    OpenSession,
    PaymentRecord,
    RecordPayment,
)

log = structlog.get_logger("gateway.controllers.sessions")


def plate_credentials(plate: str | None, confidence: float | None, session_id: str
                      ) -> list[Credential]:
    """The plate read, or with none (a manual vend) the session's own id as its ticket."""
    if not plate:
        return [{"type": "ticket", "identifier": session_id}]
    cred: Credential = {"type": "licensePlate", "identifier": plate}
    if confidence is not None:
        cred["confidence"] = round(max(0.0, min(1.0, confidence)), 4)
    return [cred]


def stay_credentials(stay: OpenStay, confidence: float | None) -> list[Credential]:
    """The stay's credentials: its plate (or its id as a ticket), and its paper ticket if it took
    one with its plate read too (a lane in ``ticket = "always"`` mode)."""
    creds = plate_credentials(stay.plate, confidence, stay.session_id)
    if stay.plate and stay.data.get("ticket"):
        creds.append({"type": "ticket", "identifier": stay.session_id})
    return creds


def _right(stay: OpenStay) -> Right:
    right: Right = {"kind": stay.right_kind}  # type: ignore[typeddict-item]
    if stay.right_ref is not None:
        right["reference"] = stay.right_ref
    return right


class SessionBook:
    """Opens, prices and closes sessions; keeps :class:`Access`'s view of who is inside."""

    def __init__(self, settings: Settings, journal: Journal, access: Access, clock: Clock
                 ) -> None:
        self.settings = settings
        self.journal = journal
        self.access = access
        self.clock = clock
        self.tz = settings.gateway.tzinfo
        self.tariffs: dict[str, RateTable] = dict(settings.tariffs)  # pushed ones join later
        self.paid_until: dict[str, datetime] = {}  # session id -> when its payment runs out
        self.overstay_reported: set[str] = set()
        # The lot's ticket key, where a lane prints or scans tickets (set by the app).
        self.tickets: TicketSigner | None = None
        self._unwritten: dict[int, OpenStay] = {}  # stays inside whose start is not journaled
        self.opened = 0
        self.closed = 0

    async def restore(self) -> int:
        """Load the open sessions, and what their payments allow, from the journal."""
        records = await self.journal.open_sessions()
        for record in records:
            self.access.admit(OpenStay.from_record(record))
            for payment in await self.journal.payments(record.session_id):
                self._paid(payment.session_id, datetime.fromisoformat(payment.paid_at),
                           None if payment.valid_until is None
                           else datetime.fromisoformat(payment.valid_until))
        return len(records)

    # --- stays beyond their time ---

    def _paid(self, session_id: str, at: datetime, valid_until: datetime | None) -> None:
        until = valid_until or at + timedelta(minutes=self.settings.lot.payment_grace_minutes)
        self.paid_until[session_id] = max(until, self.paid_until.get(session_id, until))

    async def check_overstays(self) -> int:
        """Report stays beyond their reservation's end or their payment's validity, once each.

        A reservation's end counts with the lot's reservation grace; a paid visitor still
        inside after the payment expired owes for the extra time (`unpaid_overstay`).
        """
        now = self.clock.now()
        grace = timedelta(minutes=self.settings.lot.reservation_grace_minutes)
        found: list[Event] = []
        for stay in list(self.access.inside.values()):
            if stay.session_id in self.overstay_reported:
                continue
            details: dict[str, Any] | None = None
            kind: events.ViolationKind = "overstay"
            if stay.right_kind == "reservation":
                booking = self.access.reservation(stay.plate, stay.right_ref, stay.entry.wall)
                if booking is not None and now > booking.end + grace:
                    details = {"reservationId": booking.reservationId,
                               "reservedUntil": events.rfc3339(booking.end)}
            elif stay.session_id in self.paid_until and now > self.paid_until[stay.session_id]:
                kind = "unpaid_overstay"
                details = {"paidUntil": events.rfc3339(self.paid_until[stay.session_id])}
            if details is None:
                continue
            self.overstay_reported.add(stay.session_id)
            found.append(events.violation_detected(
                at=now, kind=kind, plate=stay.plate, session_id=stay.session_id,
                details=details))
        if found:
            await self.journal.commit([], found)
        return len(found)

    # --- tickets ---

    def by_ticket(self, text: str) -> OpenStay | None:
        """The open session a scanned ticket names; None if it is not open (the car left, or
        never came in). Raises TicketError for a text that is no ticket of this lot (forged,
        garbage), and RuntimeError where no lane uses tickets (no key loaded)."""
        if self.tickets is None:
            raise RuntimeError("tickets are not in use at this lot (no lane has a printer)")
        return self.access.inside.get(self.tickets.verify(text))

    # --- pricing ---

    def table_name(self, stay: OpenStay) -> str:
        """The key of the stay's rate table. Tariff names are lower case (the config refuses
        another, pushed tariffs are stored so); a permit from the backend may say "Staff"."""
        name = stay.data.get("rateTable")
        return str(name).lower() if name else self.settings.gateway.default_tariff

    def table(self, stay: OpenStay) -> RateTable | None:
        """The stay's rate table; None for a free permit."""
        name = self.table_name(stay)
        if name == PERMIT_FREE:
            return None
        return self.tariffs.get(name) or self.tariffs[self.settings.gateway.default_tariff]

    def price(self, stay: OpenStay, end: Stamp) -> StayQuote | Quote:
        table = self.table(stay)
        if table is None:
            default = self.tariffs[self.settings.gateway.default_tariff]
            return free_quote(default.currency, "permit: free")
        return quote_stay(table, stay.entry, end, tz=self.tz)

    def fee_at(self, stay: OpenStay, at: datetime) -> int:
        """The fee had the stay ended at wall time `at` (for checking a payment)."""
        now = self.clock.stamp()
        end = Stamp(at, now.mono - (now.wall - at).total_seconds(), now.boot_id, now.synced)
        return _quote(self.price(stay, end)).amount_minor

    # --- opening and closing ---

    async def open(self, decision: EntryDecision, *, lane_id: str, at: Stamp,
                   confidence: float | None, extra_events: Sequence[Event] = (),
                   flags: dict[str, Any] | None = None, record: int | None = None,
                   session_id: str | None = None) -> OpenStay:
        """A vehicle has come in: its session opens, with the right it came in under.

        `record` names a lane's record that is retried until the journal takes it (a full
        disk): it opens the stay `hold` put inside for it, under the same session id.
        `session_id`: the id chosen beforehand (the one printed on its ticket), else a new one.
        """
        if record is None:
            stay = self._new_stay(decision, lane_id, at, flags, session_id)
        else:
            stay = self.hold(decision, lane_id=lane_id, at=at, flags=flags, record=record,
                             session_id=session_id)
        session_id = stay.session_id
        data = stay.data
        clock: ClockStatus = {"synchronized": at.synced, "reliable": at.synced}
        if not at.synced:
            clock["reason"] = "wall clock not synchronised at entry"
        vehicle: Vehicle | None = {"plate": decision.plate} if decision.plate else None
        ev = events.session_started(
            at=self.clock.now(), session_id=session_id, lane_id=lane_id, actual_start=at.wall,
            credentials=stay_credentials(stay, confidence),
            segments=[events.segment(start=at.wall, rate_table_id=self.table_name(stay))],
            right=_right(stay), clock=clock, vehicle=vehicle)
        change = OpenSession(session_id, decision.plate, decision.right_kind, decision.right_ref,
                             lane_id, events.rfc3339(at.wall), at.mono, at.boot_id, at.synced,
                             json.dumps(data))
        await self.journal.commit([change], [ev, *extra_events])
        if record is not None:
            del self._unwritten[record]
        self.access.admit(stay)
        self.opened += 1
        return stay

    def hold(self, decision: EntryDecision, *, lane_id: str, at: Stamp,
             flags: dict[str, Any] | None, record: int, session_id: str | None = None
             ) -> OpenStay:
        """A car let in while its session's start waits for the journal (a full disk): it is
        inside now, under the session id its start will be written with, so the lanes decide
        on it (an exit finds it) before the record is written. Its end waits for its start
        (`close`)."""
        stay = self._unwritten.get(record)
        if stay is None:
            stay = self._new_stay(decision, lane_id, at, flags, session_id)
            self._unwritten[record] = stay
            self.access.admit(stay)
        return stay

    def hold_exit(self, stay: OpenStay) -> None:
        """A car let out while its session's end waits for the journal: no longer inside."""
        self.access.release(stay.session_id)

    def _new_stay(self, decision: EntryDecision, lane_id: str, at: Stamp,
                  flags: dict[str, Any] | None, session_id: str | None = None) -> OpenStay:
        data: dict[str, Any] = dict(flags or {})
        if decision.rate_table is not None:
            data["rateTable"] = decision.rate_table
        elif decision.right_kind in ("permit", "account"):
            data["rateTable"] = PERMIT_FREE
        return OpenStay(session_id or events.uuid7(), decision.plate, decision.right_kind,
                        decision.right_ref, lane_id, at, data)

    async def close(self, stay: OpenStay, *, lane_id: str, at: Stamp, exit_reason: ExitReason,
                    payments: Sequence[PaymentRecord] = (), collected: bool = True,
                    extra_events: Sequence[Event] = ()) -> Quote:
        """A vehicle has left: its session closes with the tariff's fee.

        `collected` False (let out offline with no payment, or a tailgater) records the fee as
        an ``uncollected`` transaction, for the backend to pursue. Raises JournalWriteError
        while the session's start is still waiting to be written (the exit lane retries), so
        the backend never hears of an end before its start.
        """
        if any(s.session_id == stay.session_id for s in self._unwritten.values()):
            raise JournalWriteError(f"session {stay.session_id}: its start is not written yet")
        priced = self.price(stay, at)
        fee = _quote(priced)
        span_seconds, reliable, why = _span(priced, stay, at)
        transactions: list[FinancialTransaction] = [
            {"type": "payment", "amount": {"amountMinor": p.amount_minor, "currency": p.currency},
             "reference": p.payment_id} for p in payments]
        paid = sum(p.amount_minor for p in payments)
        if stay.right_kind == "account" and fee.amount_minor > 0:
            transactions.append({"type": "charge", "amount": {
                "amountMinor": fee.amount_minor, "currency": fee.currency},
                "reference": stay.right_ref or ""})
        elif not collected and fee.amount_minor > paid:
            transactions.append({"type": "uncollected", "amount": {
                "amountMinor": fee.amount_minor - paid, "currency": fee.currency}})
        clock: ClockStatus = {"synchronized": at.synced, "reliable": reliable}
        if why:
            clock["reason"] = why
        vehicle: Vehicle | None = {"plate": stay.plate} if stay.plate else None
        ev = events.session_ended(
            at=self.clock.now(), session_id=stay.session_id, lane_id=lane_id,
            actual_start=stay.entry.wall, actual_end=at.wall, duration_seconds=span_seconds,
            credentials=stay_credentials(stay, None),
            segments=[events.segment(start=stay.entry.wall, end=at.wall,
                                     rate_table_id=self.table_name(stay),
                                     amount={"amountMinor": fee.amount_minor,
                                             "currency": fee.currency})],
            right=_right(stay), clock=clock, currency=fee.currency,
            fee_lines=fee.fee_lines(), vehicle=vehicle, transactions=transactions,
            exit_reason=exit_reason)
        change = CloseSession(stay.session_id, lane_id, events.rfc3339(at.wall), at.mono,
                              at.boot_id, at.synced, float(span_seconds), reliable,
                              fee.amount_minor, fee.currency)
        await self.journal.commit([change], [ev, *extra_events])
        self.access.release(stay.session_id)
        self.paid_until.pop(stay.session_id, None)
        self.overstay_reported.discard(stay.session_id)
        self.closed += 1
        return fee

    async def lost_ticket(self, plate: str | None, *, lane_id: str, at: Stamp,
                          collected: bool) -> Quote:
        """A vehicle leaving with no entry record: a session of no length at the lost-ticket fee.

        The entry time is unknown, so the session starts and ends at the exit.
        """
        table = self.tariffs[self.settings.gateway.default_tariff]
        try:
            fee = lost_ticket_quote(table)
        except ValueError:
            fee = free_quote(table.currency, "no entry record; tariff has no lost-ticket fee")
        decision = EntryDecision(True, "visitor", plate)
        stay = await self.open(decision, lane_id=lane_id, at=at, confidence=None,
                               flags={"noEntryRecord": True})
        transactions: list[FinancialTransaction] = []
        if not collected and fee.amount_minor > 0:
            transactions.append({"type": "uncollected", "amount": {
                "amountMinor": fee.amount_minor, "currency": fee.currency}})
        ev = events.session_ended(
            at=self.clock.now(), session_id=stay.session_id, lane_id=lane_id,
            actual_start=at.wall, actual_end=at.wall, duration_seconds=0,
            credentials=plate_credentials(plate, None, stay.session_id),
            segments=[events.segment(start=at.wall, end=at.wall,
                                     amount={"amountMinor": fee.amount_minor,
                                             "currency": fee.currency})],
            right={"kind": "visitor"},
            clock={"synchronized": at.synced, "reliable": False,
                   "reason": "no entry record"},
            currency=fee.currency, fee_lines=fee.fee_lines(),
            vehicle={"plate": plate} if plate else None, transactions=transactions,
            exit_reason="lost_ticket")
        change = CloseSession(stay.session_id, lane_id, events.rfc3339(at.wall), at.mono,
                              at.boot_id, at.synced, 0.0, False, fee.amount_minor, fee.currency)
        await self.journal.commit([change], [ev])
        self.access.release(stay.session_id)
        self.closed += 1
        return fee

    async def record_payment(self, *, payment_id: str, session_id: str, amount_minor: int,
                             currency: str, method: events.PaymentMethod,
                             source: events.PaymentSource,
                             valid_until: datetime | None = None, device: str | None = None,
                             reference: str | None = None) -> datetime:
        """A payment from a pay station or the backend (the same id twice is kept once); when
        it was recorded. `device` and `reference`: the station's account and its reference."""
        at = self.clock.now()
        self._paid(session_id, at, valid_until)
        await self.journal.commit(
            [RecordPayment(payment_id, session_id, amount_minor, currency, method, source,
                           events.rfc3339(at),
                           None if valid_until is None else events.rfc3339(valid_until))],
            [events.payment_recorded(
                at=at, payment_id=payment_id, session_id=session_id,
                amount={"amountMinor": amount_minor, "currency": currency}, method=method,
                source=source, valid_until=valid_until, device=device, reference=reference)])
        return at


def _quote(priced: StayQuote | Quote) -> Quote:
    return priced.quote if isinstance(priced, StayQuote) else priced


def _span(priced: StayQuote | Quote, stay: OpenStay, end: Stamp) -> tuple[int, bool, str | None]:
    """Duration in whole seconds, whether the times are reliable, and why not."""
    if isinstance(priced, StayQuote):
        e = priced.elapsed
        return int(e.seconds), e.reliable, e.reason
    e = elapsed(stay.entry, end)  # a free stay still reports its duration
    return int(e.seconds), e.reliable, e.reason
