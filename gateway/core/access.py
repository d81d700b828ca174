"""Who may enter and who may leave: permits, reservations, visitors, deny list, lot state.

Pure decisions over in-memory indexes; the lanes journal what they decide. The indexes come
from the journal's config cache (pushed by the backend, versioned) and from the open sessions,
so a restarted gateway decides as it did before.

Plates are matched with :func:`gateway.core.plates.match`: exact, or the one plate within the
configured confusable-weighted distance. An ambiguous match (two plates equally close) is never
auto-accepted: the lane falls back to the intercom.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal, Protocol, TypeVar

import structlog

from gateway.core import plates
from gateway.core.clock import Stamp
from gateway.core.events import RightKind
from gateway.core.operations import LotState
from gateway.core.plates import Match
from gateway.core.records import PaymentRecord, SessionRecord
from gateway.core.rights import (
    DenyEntry,
    Permit,
    PermitPool,
    RecurringReservation,
    Reservation,
)

log = structlog.get_logger("gateway.core.access")

EntryReason = Literal[
    "permit", "reservation", "visitor", "deny_listed", "lot_full", "lot_closed", "anti_passback",
    "ambiguous", "unreadable", "permit_expired", "pool_full",
]
ExitReasonCode = Literal[
    "paid", "free", "permit", "account", "unable_to_collect", "lost_ticket", "unpaid",
    "ambiguous", "unreadable", "no_entry_record",
]
Passback = Literal["none", "refused", "flagged", "replaced"]


# --- decisions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenStay:
    """A vehicle inside: its open session, as the lanes need it."""

    session_id: str
    plate: str | None
    right_kind: str
    right_ref: str | None
    entry_lane: str | None
    entry: Stamp
    data: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: SessionRecord) -> OpenStay:
        return cls(record.session_id, record.plate, record.right_kind, record.right_ref,
                   record.entry_lane,
                   Stamp(datetime.fromisoformat(record.entry_at), record.entry_mono,
                         record.entry_boot, record.entry_synced),
                   json.loads(record.data))


@dataclass(frozen=True, slots=True)
class EntryDecision:
    allow: bool
    reason: EntryReason
    plate: str | None  # the plate to record: the matched known plate, else the read
    right_kind: RightKind = "visitor"
    right_ref: str | None = None
    rate_table: str | None = None  # the table the stay is priced by, None: the default
    passback: Passback = "none"
    existing: OpenStay | None = None  # the session already open for this plate
    match: Match | None = None
    deny_reason: str | None = None

    @property
    def fallback(self) -> bool:
        """Refused for want of a sure plate: the intercom or a technician decides."""
        return self.reason in ("ambiguous", "unreadable")


@dataclass(frozen=True, slots=True)
class ExitDecision:
    allow: bool
    reason: ExitReasonCode
    plate: str | None
    stay: OpenStay | None = None
    match: Match | None = None
    paid_minor: int = 0

    @property
    def fallback(self) -> bool:
        return self.reason in ("ambiguous", "unreadable", "unpaid", "no_entry_record")


AntiPassback = Literal["hard", "soft", "timed", "off"]
OfflineExit = Literal["let_out", "hold"]
NoEntryRecord = Literal["lost_ticket", "hold"]
InitialState = Literal["open", "closed"]


class LotPolicy(Protocol):
    """The lot's rules that decisions read (the settings' ``LotConfig`` is one).

    A protocol, not the config class, so the core imports nothing above it.
    """

    @property
    def initial_state(self) -> InitialState: ...
    @property
    def full_when_free_at_most(self) -> int: ...
    @property
    def anti_passback(self) -> AntiPassback: ...
    @property
    def passback_minutes(self) -> int: ...
    @property
    def reservation_grace_minutes(self) -> int: ...
    @property
    def payment_grace_minutes(self) -> int: ...
    @property
    def offline_exit(self) -> OfflineExit: ...
    @property
    def no_entry_record(self) -> NoEntryRecord: ...


class Access:
    """The lot's rights and who is inside; decides entries and exits."""

    def __init__(self, lot: LotPolicy, *, max_distance: float = plates.DEFAULT_MAX_DISTANCE,
                 tz: tzinfo = UTC) -> None:
        self.lot = lot
        self.max_distance = max_distance
        self.tz = tz  # the lot's: weekly reservations are in its wall time
        self.operator_state: LotState = "open" if lot.initial_state == "open" else "closed"
        self.permits: dict[str, list[Permit]] = {}
        self.reservations: dict[str, list[Reservation]] = {}
        self.deny: dict[str, DenyEntry] = {}
        self.pools: dict[str, PermitPool] = {}
        self.recurring: dict[str, list[RecurringReservation]] = {}
        self._pool_of: dict[str, str] = {}  # permit id -> pool id
        # Open sessions whose plate a technician cleared: its next entry replaces the session.
        self.passback_resets: set[str] = set()
        self.inside: dict[str, OpenStay] = {}  # by session id
        self._by_plate: dict[str, str] = {}  # plate -> session id
        self.versions: dict[str, int] = {}

    # --- loading ---

    def load(self, kind: str, items: Iterable[
                 Permit | Reservation | DenyEntry | PermitPool | RecurringReservation],
             version: int = 0) -> None:
        """Put a validated pushed config in force, replacing the previous version whole."""
        items = tuple(items)
        if kind == "permits":
            self.permits = _index((plate, p) for p in items if isinstance(p, Permit)
                                  for plate in p.plates)
            self._pool_of = {p.permitId: p.poolId for p in items
                             if isinstance(p, Permit) and p.poolId is not None}
        elif kind == "permit_pools":
            self.pools = {p.poolId: p for p in items if isinstance(p, PermitPool)}
        elif kind == "recurring_reservations":
            self.recurring = _index((r.plate, r) for r in items
                                    if isinstance(r, RecurringReservation))
        elif kind == "reservations":
            self.reservations = _index((r.plate, r) for r in items if isinstance(r, Reservation))
        elif kind == "deny_list":
            self.deny = {plates.normalize(d.plate): d for d in items if isinstance(d, DenyEntry)}
        else:
            raise ValueError(f"unknown config kind {kind!r}")
        self.versions[kind] = version
        log.info("access.config_loaded", kind=kind, version=version, items=len(items))

    def admit(self, stay: OpenStay) -> None:
        self.inside[stay.session_id] = stay
        if stay.plate:
            self._by_plate[stay.plate] = stay.session_id

    def release(self, session_id: str) -> OpenStay | None:
        self.passback_resets.discard(session_id)
        stay = self.inside.pop(session_id, None)
        if stay is not None and stay.plate and self._by_plate.get(stay.plate) == session_id:
            del self._by_plate[stay.plate]
        return stay

    def stay_of(self, plate: str) -> OpenStay | None:
        session_id = self._by_plate.get(plate)
        return None if session_id is None else self.inside.get(session_id)

    # --- lot state ---

    def lot_state(self, occupancy_full: bool) -> LotState:
        if self.operator_state == "closed":
            return "closed"
        if self.operator_state == "full" or occupancy_full:
            return "full"
        return "open"

    def pending_reservations(self, at: datetime) -> int:
        """Reservations in their window whose car is not inside yet: each holds a bay."""
        inside = set(self._by_plate)
        return sum(1 for plate in {*self.reservations, *self.recurring} if plate not in inside
                   for _ in self._bookings(plate, at))

    def _bookings(self, plate: str, at: datetime) -> list[Reservation]:
        """The plate's reservations whose window, with the grace, holds `at`: one-off ones,
        and the day's booking of a weekly one."""
        grace = timedelta(minutes=self.lot.reservation_grace_minutes)
        weekly = [o for r in self.recurring.get(plate, []) for o in r.occurrences(at, self.tz)]
        return [r for r in [*self.reservations.get(plate, []), *weekly]
                if r.start - grace <= at <= r.end + grace]

    # --- entry ---

    def entry(self, read: str | None, *, at: datetime, free_bays: int) -> EntryDecision:
        """May this plate come in now? `free_bays`: bays free by the sensors."""
        if not read:
            return EntryDecision(False, "unreadable", None)
        read = plates.normalize(read)
        deny = self._match(read, [p for p, d in self.deny.items() if d.active_at(at)])
        if deny.accepted and deny.plate is not None:
            return EntryDecision(False, "deny_listed", deny.plate, match=deny,
                                 deny_reason=self.deny[deny.plate].reason or "deny list")
        known = self._match(read, {**self.permits, **self.reservations, **self.recurring})
        if known.outcome == "ambiguous" or deny.outcome == "ambiguous":
            return EntryDecision(False, "ambiguous", read, match=known)
        plate = known.plate if known.accepted and known.plate else read
        decision = self._right(plate, at, free_bays)
        decision = replace(decision, match=known)
        if decision.allow:
            decision = self._passback(decision, at)
        return decision

    def ticket_entry(self, *, at: datetime, free_bays: int) -> EntryDecision:
        """A car with no plate read that takes a ticket: a visitor, if the lot is open and has
        a bay for one (its ticket, not a plate, will find its session at the exit)."""
        if self.lot_state(False) == "closed":
            return EntryDecision(False, "lot_closed", None)
        if (self.operator_state == "full" or free_bays - self.pending_reservations(at)
                <= self.lot.full_when_free_at_most):
            return EntryDecision(False, "lot_full", None)  # as for a visitor read by plate
        return EntryDecision(True, "visitor", None)

    def _right(self, plate: str, at: datetime, free_bays: int) -> EntryDecision:
        if self.lot_state(False) == "closed":
            return EntryDecision(False, "lot_closed", plate)
        held = self.right_of(plate, at)
        if held.reason == "permit" and (pool := self.pool_full(held.right_ref, plate)):
            log.info("access.pool_full", pool=pool.poolId, when_full=pool.whenFull)
            if pool.whenFull == "refuse":
                return EntryDecision(False, "pool_full", plate, right_ref=held.right_ref)
            held = EntryDecision(True, "visitor", plate)
        if held.reason != "visitor":
            return held
        # Visitors only: bays held by reservations are not theirs.
        pending = self.pending_reservations(at)
        if (self.operator_state == "full"
                or free_bays - pending <= self.lot.full_when_free_at_most):
            return EntryDecision(False, "lot_full", plate)
        return held

    def right_of(self, plate: str | None, at: datetime) -> EntryDecision:
        """The right a plate holds now: a valid permit, a reservation in its window (with the
        grace), else a visitor's. Whatever the lot's state: also for a vehicle let in by hand."""
        if not plate:
            return EntryDecision(True, "visitor", None)
        permits = self.permits.get(plate, [])
        valid = [p for p in permits if p.valid_at(at)]
        if valid:
            p = valid[0]
            kind: Literal["permit", "account"] = "account" if p.accountId else "permit"
            return EntryDecision(True, "permit", plate, kind, p.permitId, p.rateTable)
        for r in self._bookings(plate, at):
            return EntryDecision(True, "reservation", plate, "reservation", r.reservationId)
        if permits:  # an expired permit parks as a visitor, and says so in the log
            log.info("access.permit_not_valid_now", plate=plate)
        return EntryDecision(True, "visitor", plate)

    def _passback(self, decision: EntryDecision, at: datetime) -> EntryDecision:
        existing = self.stay_of(decision.plate) if decision.plate else None
        mode = self.lot.anti_passback
        if existing is None or mode == "off":
            return decision
        if existing.session_id in self.passback_resets:  # a technician cleared it
            return replace(decision, passback="replaced", existing=existing)
        if mode == "soft":
            return replace(decision, passback="flagged", existing=existing)
        if mode == "timed":
            window = timedelta(minutes=self.lot.passback_minutes)
            if at - existing.entry.wall >= window:
                return replace(decision, passback="replaced", existing=existing)
        return replace(decision, allow=False, reason="anti_passback", passback="refused",
                       existing=existing)

    # --- exit ---

    def exit(self, read: str | None, *, at: datetime, payments: Sequence[PaymentRecord],
             price: Callable[[OpenStay, datetime], int], online: bool) -> ExitDecision:
        """May this plate leave now?

        `payments` are the recorded payments of the stay that :meth:`find_stay` finds for the
        read (the lane fetches them from the journal); `price(stay, at)` is the stay's fee by
        the tariff had it ended at `at`. A payment settles the stay while it is valid (until its
        `valid_until`, else for the lot's payment grace) if it covered the fee at the time it
        was made: the minutes spent walking back to the car are not charged again.
        """
        if not read:
            return ExitDecision(False, "unreadable", None)
        found = self.find_stay(read)
        if found.outcome == "ambiguous":
            return ExitDecision(False, "ambiguous", plates.normalize(read), match=found)
        stay = self.stay_of(found.plate) if found.accepted and found.plate else None
        plate = found.plate if stay is not None else plates.normalize(read)
        if stay is None:
            if self.lot.no_entry_record == "lost_ticket":
                return ExitDecision(True, "lost_ticket", plate, match=found)
            return ExitDecision(False, "no_entry_record", plate, match=found)
        return self.settle(stay, at=at, payments=payments, price=price, online=online,
                           plate=plate, match=found)

    def settle(self, stay: OpenStay, *, at: datetime, payments: Sequence[PaymentRecord],
               price: Callable[[OpenStay, datetime], int], online: bool,
               plate: str | None = None, match: Match | None = None) -> ExitDecision:
        """May this stay leave now, found by its plate (:meth:`exit`) or by its ticket?"""
        found, plate = match, plate if plate is not None else stay.plate
        if stay.right_kind == "account":
            return ExitDecision(True, "account", plate, stay, found)
        fee = price(stay, at)
        if fee <= 0:
            reason: ExitReasonCode = "permit" if stay.right_kind == "permit" else "free"
            return ExitDecision(True, reason, plate, stay, found)
        made = [p for p in payments if p.session_id == stay.session_id]
        paid = sum(p.amount_minor for p in made)
        if self.paid_up(stay, made, at, price):
            return ExitDecision(True, "paid", plate, stay, found, paid)
        if not online and self.lot.offline_exit == "let_out":
            return ExitDecision(True, "unable_to_collect", plate, stay, found, paid)
        return ExitDecision(False, "unpaid", plate, stay, found, paid)

    def paid_up(self, stay: OpenStay, payments: Sequence[PaymentRecord], at: datetime,
                price: Callable[[OpenStay, datetime], int]) -> bool:
        """Whether the stay's `payments` settle it at `at`: they cover the fee now, or a valid
        one (until its `valid_until`, else for the lot's payment grace) covered the fee at the
        time it was made. The exit lane and the pay station ask the same question."""
        paid = sum(p.amount_minor for p in payments)
        valid = [p for p in payments if _payment_valid(p, at, self.lot)]
        return paid >= price(stay, at) or bool(valid and paid >= price(stay, max(
            datetime.fromisoformat(p.paid_at) for p in valid)))

    def reservation(self, plate: str | None, reservation_id: str | None,
                    entered: datetime | None = None) -> Reservation | None:
        """The reservation a stay came in under, if it is still known; of a weekly one, the
        day's booking it `entered` in."""
        if plate is None:
            return None
        known = [*self.reservations.get(plate, []),
                 *(self._bookings(plate, entered) if entered is not None else [])]
        return next((r for r in known if r.reservationId == reservation_id), None)

    # --- permit pools, passback resets ---

    def pool_full(self, permit_id: str | None, plate: str) -> PermitPool | None:
        """The permit's pool, if all its spaces are taken by other members inside.

        A pool the backend has not pushed (yet) limits nothing: its permits stay valid.
        """
        pool = self.pools.get(self._pool_of.get(permit_id or "", ""))
        if pool is None:
            return None
        members = sum(1 for s in self.inside.values()
                      if s.plate != plate and s.right_kind in ("permit", "account")
                      and self._pool_of.get(s.right_ref or "") == pool.poolId)
        return pool if members >= pool.spaces else None

    def reset_passback(self, plate: str) -> OpenStay | None:
        """Clear a credential's anti-passback: the plate's open session no longer keeps it
        out. Its next entry ends that session (as a lost ticket, uncollected) and opens a new
        one. None: the plate is not inside, nothing to clear."""
        stay = self.stay_of(plates.normalize(plate))
        if stay is not None:
            self.passback_resets.add(stay.session_id)
        return stay

    def find_stay(self, read: str) -> Match:
        return plates.match(read, self._by_plate, max_distance=self.max_distance)

    def stay_permit(self, stay: OpenStay) -> Permit | None:
        """The permit a stay entered under, if it is still known."""
        if stay.right_kind not in ("permit", "account") or stay.plate is None:
            return None
        return next((p for p in self.permits.get(stay.plate, [])
                     if p.permitId == stay.right_ref), None)

    def _match(self, read: str, known: Iterable[str]) -> Match:
        return plates.match(read, known, max_distance=self.max_distance)


def _payment_valid(payment: PaymentRecord, at: datetime, lot: LotPolicy) -> bool:
    """A payment lets the car out until its valid_until, or the lot's grace after paying."""
    if payment.valid_until is not None:
        return at <= datetime.fromisoformat(payment.valid_until)
    paid_at = datetime.fromisoformat(payment.paid_at)
    return at <= paid_at + timedelta(minutes=lot.payment_grace_minutes)


T = TypeVar("T")


def _index(pairs: Iterable[tuple[str, T]]) -> dict[str, list[T]]:
    out: dict[str, list[T]] = {}
    for plate, item in pairs:
        out.setdefault(plates.normalize(plate), []).append(item)
    return out
