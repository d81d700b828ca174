"""One lane, entry or exit, as a pure state machine: an event and the time in, effects out.

The machine owns the lane's decisions; :mod:`gateway.controllers.lane` is the thin async shell
around it that turns loop edges, barrier positions, plate reads, timers and commands into
events, carries out the effects (move the barrier, read plates, write the journal, raise an
alarm, start a timer) and feeds their results back. Nothing here awaits, reads a clock or
touches a device, so every transition is tested without mocks (tests/core/test_lane_machine.py).

States::

    idle -> identifying -> refused (waits for the car to back off, a new plate, or a vend)
                        -> opening -> open -> passing -> closing -> idle
    locked_open, locked_closed (by mode), out_of_order (the barrier does not answer)

Safety: the barrier is never commanded down while the safety loop is occupied. The machine
checks it before every lowering, and the barrier driver checks it again at the relay (its lower
guard). A vehicle that reaches the safety loop while the barrier is closing makes it open again.

Closing follows the trailing edge of the closing loop (the safety loop where there is none): a
timer alone never closes on a car. The pass timeout only closes a barrier whose safety loop is
clear, after the vehicle that was let through has backed away.

Tailgating: every vehicle that passes is counted; a second one under one opening is a
``violation.detected`` (tailgating) and an alarm, and gets its own session (plate read if the
camera caught it), so its exit still finds it. Anti-passback is decided by
:mod:`gateway.core.access`.

Tickets (:mod:`gateway.core.tickets`): an entry with a printer asks for a ticket
(:class:`PrintTicket`) for a car that needs one, and opens only once it is printed, under the
session id printed on it; a printer that cannot print raises its alarm and sends ticket cars to
the intercom until it prints again (:class:`PrinterChecked`). At an exit with a scanner, a
scanned ticket (its signature checked by the shell) decides for the car waiting there as a
plate read would, priced and paid the same way; one whose session is not open is refused and
audited (:class:`TicketRefused`).

Requests and answers: some effects ask the shell for something the machine needs before it can
go on (the payments of the stay an exit read found, a follower's plate, a plate read again, the
outcome of a lowering or of a journal write). The shell answers each at once, before it takes
the next event, as the lane did when it awaited them inline; the machine is still total over
any order of events, and ignores an answer it did not ask for.

Failures: a journal write that fails comes back as :class:`RecordFailed`. The lane goes on (the
barrier is where it was, the machine knows it), the record is kept and retried in order on a
timer with a growing delay (then every :data:`RETRY_S`'s last, for as long as it takes: a full
disk may last hours), and an alarm stands until every kept record is written. Nothing is ever
given up. While records are held, the setup's `on_journal_full` policy decides the next cars:
``admit`` lets them in as ever (their records are held with the rest), ``intercom`` refuses
each to the intercom. Past `max_held` held records the lane goes to the intercom whatever the
policy (with an alarm): memory, not time, bounds what is held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gateway.core.access import Access, EntryDecision, ExitDecision, OpenStay
from gateway.core.clock import Stamp
from gateway.core.events import ExitReason, GateCloseReason, GateOpenReason, ViolationKind
from gateway.core.operations import Direction, LaneMode
from gateway.core.reads import PlateResult
from gateway.core.records import Alarm, PaymentRecord
from gateway.core.tickets import TicketMode

RECHECK_S = 3.0  # how often a refused lane looks again at what stands on its arming loop
# Delays before each retry of a journal write that failed; the last repeats until it is written,
# so held records go at most that long after the disk has room again.
RETRY_S = (1.0, 2.0, 5.0, 10.0)

LaneState = Literal[
    "idle", "identifying", "refused", "opening", "open", "passing", "closing", "locked_open",
    "locked_closed", "out_of_order",
]
Position = Literal["up", "down", "moving", "unknown", "fault"]
LoopName = Literal["arming", "safety", "closing"]
TimerName = Literal["pass", "recheck", "retry"]
LowerFor = Literal["close", "lock"]  # closing behind a vehicle, or for a locked mode
Step = Literal["opened", "reopened", "passage", "closed", "retry"]
Price = Callable[[OpenStay, datetime], int]
"""``price(stay, at)``: the stay's fee by the tariff, had it ended at `at`."""
PrinterProblem = Literal["paper_out", "fault"]  # the ticket printer's alarms: printer.<problem>


@dataclass(frozen=True, slots=True)
class LaneSetup:
    """What the machine needs of the lane's configuration."""

    lane_id: str
    name: str
    direction: Direction
    pass_timeout_s: float
    arming_to_safety_end_m: float  # loop geometry, to tell one long vehicle from two
    safety_length_m: float
    max_vehicle_m: float
    closing_loop: bool  # the lane has a closing loop (else the safety loop's edge closes)
    barrier_feedback: bool  # the barrier reports "down" (else lowering is taken as done)
    safety_to_closing_m: float = 1.0  # the gap from the safety loop to the closing loop
    on_journal_full: Literal["admit", "intercom"] = "admit"  # cars while records are held
    max_held: int = 20_000  # records held at most before every car goes to the intercom
    tickets: TicketMode = "off"  # an entry lane with a printer: when a car takes a ticket
    scanner: bool = False  # an exit lane with a ticket scanner


@dataclass(frozen=True, slots=True)
class Read:
    """A plate read for one vehicle at this lane."""

    plate: str | None
    confidence: float
    result: PlateResult | None
    at: Stamp


@dataclass(frozen=True, slots=True)
class LotNow:
    """What the lot around the lane says at a decision."""

    free_bays: int
    online: bool


# --- events: what happens to the lane ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """The lane's task began: where its inputs stand."""

    arming: bool
    safety: bool
    closing: bool
    position: Position


@dataclass(frozen=True, slots=True)
class LoopChanged:
    loop: LoopName
    occupied: bool


@dataclass(frozen=True, slots=True)
class BarrierMoved:
    position: Position
    faulted: bool


@dataclass(frozen=True, slots=True)
class PlateRead:
    """The answer to :class:`StartRead`."""

    read: Read
    lot: LotNow


@dataclass(frozen=True, slots=True)
class Rechecked:
    """The answer to :class:`Recheck`."""

    read: Read
    lot: LotNow


@dataclass(frozen=True, slots=True)
class FollowerRead:
    """The answer to :class:`ReadFollower`: None when no other plate was seen."""

    cycle: int
    read: Read | None


@dataclass(frozen=True, slots=True)
class PaymentsFetched:
    """The answer to :class:`FetchPayments`."""

    session_id: str
    payments: tuple[PaymentRecord, ...]


@dataclass(frozen=True, slots=True)
class TimerFired:
    timer: TimerName


@dataclass(frozen=True, slots=True)
class Vend:
    """A manual vend (technician, intercom, backend), already audited."""

    reason: str
    actor: str


@dataclass(frozen=True, slots=True)
class ModeSet:
    mode: LaneMode
    actor: str


@dataclass(frozen=True, slots=True)
class Lowered:
    """The answer to :class:`LowerBarrier`: the barrier was commanded down."""

    purpose: LowerFor
    reason: GateCloseReason


@dataclass(frozen=True, slots=True)
class LowerRefused:
    """The answer to :class:`LowerBarrier`: the barrier (its guard) refused, or it failed."""

    purpose: LowerFor
    reason: GateCloseReason
    error: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """The answer to :class:`Record`: it is in the journal."""

    record: Record


@dataclass(frozen=True, slots=True)
class RecordFailed:
    """The answer to :class:`Record`: the journal did not take it (disk full, I/O error)."""

    record: Record
    error: str


@dataclass(frozen=True, slots=True)
class TicketPrinted:
    """The answer to :class:`PrintTicket`: the ticket for session `session_id` is out."""

    session_id: str


@dataclass(frozen=True, slots=True)
class TicketNotPrinted:
    """The answer to :class:`PrintTicket`: the printer could not print it."""

    problem: PrinterProblem
    error: str


@dataclass(frozen=True, slots=True)
class PrinterChecked:
    """The printer's status, polled by the shell: None when it can print."""

    problem: PrinterProblem | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class TicketScanned:
    """A ticket scanned at an exit: the session it names (its signature checked by the shell),
    or None with `error` for a text that is no ticket of this lot (forged, garbage)."""

    session_id: str | None
    lot: LotNow
    error: str = ""


LaneEvent = (Started | LoopChanged | BarrierMoved | PlateRead | Rechecked | FollowerRead
             | PaymentsFetched | TimerFired | Vend | ModeSet | Lowered | LowerRefused | Recorded
             | RecordFailed | TicketPrinted | TicketNotPrinted | PrinterChecked | TicketScanned)


# --- what goes into the journal -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateOpened:
    reason: GateOpenReason
    at: datetime
    command_id: str | None = None  # the remote command that opened it


@dataclass(frozen=True, slots=True)
class GateClosed:
    reason: GateCloseReason
    at: datetime
    command_id: str | None = None  # the remote command that locked it closed


@dataclass(frozen=True, slots=True)
class Violation:
    kind: ViolationKind
    plate: str | None
    details: Mapping[str, Any]
    at: datetime
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class StartSession:
    """A vehicle has come in (SessionBook.open)."""

    decision: EntryDecision
    at: Stamp
    confidence: float | None
    flags: Mapping[str, Any] | None = None
    violations: tuple[Violation, ...] = ()
    session_id: str | None = None  # given beforehand: the one its ticket was printed for


@dataclass(frozen=True, slots=True)
class EndSession:
    """A vehicle has left (SessionBook.close); `with_payments`: with the stay's payments."""

    stay: OpenStay
    at: Stamp
    exit_reason: ExitReason
    collected: bool
    with_payments: bool = False
    violations: tuple[Violation, ...] = ()


@dataclass(frozen=True, slots=True)
class LostTicket:
    """A vehicle left with no entry record (SessionBook.lost_ticket)."""

    plate: str | None
    at: Stamp
    collected: bool


@dataclass(frozen=True, slots=True)
class TicketRefused:
    """A ticket scanned at an exit that finds no open session (used before, or its car never
    came in): an audit row, as a technician's action is, for the operator to look into."""

    session_id: str
    at: datetime


Entry = GateOpened | GateClosed | Violation | StartSession | EndSession | LostTicket | TicketRefused


# --- effects: what the shell is to do -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class RaiseBarrier:
    """Open (a relay pulse takes its time: the shell does not wait for it)."""

    reason: GateOpenReason


@dataclass(frozen=True, slots=True)
class LowerBarrier:
    """Close, waiting for the command; answered by :class:`Lowered` or :class:`LowerRefused`."""

    purpose: LowerFor
    reason: GateCloseReason


@dataclass(frozen=True, slots=True)
class StartRead:
    """Read the plate of the vehicle on the arming loop; answered later by :class:`PlateRead`."""


@dataclass(frozen=True, slots=True)
class CancelRead:
    """Forget the read :class:`StartRead` began."""


@dataclass(frozen=True, slots=True)
class Recheck:
    """Read the plate on the arming loop again, now; answered by :class:`Rechecked`."""


@dataclass(frozen=True, slots=True)
class StartFollowerRead:
    """A vehicle came onto the arming loop while the barrier was up: read its plate too."""

    cycle: int


@dataclass(frozen=True, slots=True)
class KeepFollowerFrames:
    """A vehicle reached the barrier: keep the camera's next frames, for one close behind."""

    cycle: int


@dataclass(frozen=True, slots=True)
class ReadFollower:
    """The follower's plate (its read, else the kept frames' earliest plate not the
    leader's); answered by :class:`FollowerRead`.

    `hidden`: a follower found by length, too close behind to be seen apart. The arming loop
    never cleared for it, so no read of its own began: a read under way is of a car that came
    onto the loop after it, and only the kept frames show it.
    """

    cycle: int
    leader: str | None
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class DropFollower:
    """The opening is over: its follower read is not needed."""

    cycle: int


@dataclass(frozen=True, slots=True)
class FetchPayments:
    """The payments recorded for a stay; answered by :class:`PaymentsFetched`."""

    session_id: str


@dataclass(frozen=True, slots=True)
class Record:
    """Write `entry` to the journal; answered by :class:`Recorded` or :class:`RecordFailed`.

    `then` is where the machine goes on once it is answered; `attempt` counts the tries.
    """

    entry: Entry
    then: Step | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class RaiseAlarm:
    alarm: Alarm


@dataclass(frozen=True, slots=True)
class ClearAlarm:
    alarm_id: str
    message: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Fire :class:`TimerFired` in `seconds`, replacing the timer of that name."""

    timer: TimerName
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer: TimerName


@dataclass(frozen=True, slots=True)
class NotePassage:
    """A vehicle went through (the lot counts it)."""


@dataclass(frozen=True, slots=True)
class Remember:
    """A decision on a plate, for the recent-plates view."""

    read: Read
    decision: str
    allowed: bool


@dataclass(frozen=True, slots=True)
class Hold:
    """A session's start or end is held for the journal: the lot's memory of who is inside
    changes now (SessionBook.hold), so the lanes decide on it before the record is written."""

    entry: StartSession | EndSession


@dataclass(frozen=True, slots=True)
class Log:
    level: Literal["info", "warning", "error"]
    event: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PrintTicket:
    """Print a ticket for a new session (the shell makes its id); answered by
    :class:`TicketPrinted` or :class:`TicketNotPrinted`."""


Effect = (RaiseBarrier | LowerBarrier | StartRead | CancelRead | Recheck | StartFollowerRead
          | KeepFollowerFrames | ReadFollower | DropFollower | FetchPayments | Record | RaiseAlarm
          | ClearAlarm | StartTimer | CancelTimer | NotePassage | Remember | Hold | Log
          | PrintTicket)


# --- the machine ----------------------------------------------------------------------------


@dataclass(slots=True)
class Cycle:
    """One opening of the barrier: who it was opened for and who went through."""

    number: int
    reason: GateOpenReason
    entry: EntryDecision | None = None
    exit: ExitDecision | None = None
    read: Read | None = None
    vend_reason: str | None = None
    command_id: str | None = None  # a vend by a remote command (actor `backend:<id>`)
    ticket: str | None = None  # the session id of the ticket printed for it
    passed: int = 0
    hidden_followers: int = 0  # vehicles found by length, too close behind to be seen apart
    cleared_at: list[float] = field(default_factory=list)  # closing loop trailing edges
    follower_reading: bool = False  # a vehicle behind, on the arming loop, is being read
    safety_on_at: float | None = None  # monotonic time the safety loop last became occupied
    arming_off_at: float | None = None  # monotonic time the arming loop last cleared
    front_at_closing: float | None = None  # when the front on the safety loop reached closing


@dataclass(frozen=True, slots=True)
class _ExitPending:
    """An exit read waiting for its stay's payments."""

    read: Read
    at: Stamp
    online: bool
    session_id: str
    stay: OpenStay | None = None  # found by a scanned ticket (else by the read's plate)


@dataclass(slots=True)
class Unwritten:
    """A record the journal did not take, and how often it failed."""

    entry: Entry
    failures: int


class LaneMachine:
    """The lane's state and decisions. :meth:`handle` takes one event and returns the effects.

    `access` decides entries and exits (and knows who is inside); `price` is the tariff.
    """

    def __init__(self, setup: LaneSetup, *, access: Access, price: Price, mode: LaneMode
                 ) -> None:
        self.setup = setup
        self.access = access
        self.price = price
        self.mode: LaneMode = mode
        self.state: LaneState = "idle"
        self.arming = self.safety = self.closing = False
        self.position: Position = "unknown"
        self.commanded: Literal["up", "down"] | None = None  # the last barrier command
        self.passages = 0
        self.tailgates = 0
        self.refusals = 0
        self.lower_refusals = 0
        self.unwritten: deque[Unwritten] = deque()
        self._now = Stamp(datetime.min, 0.0, "", False)
        self._out: list[Effect] = []
        self._cycle: Cycle | None = None
        self._cycles = 0
        self._reading = False
        self._refused_read: Read | None = None
        self._exit_pending: _ExitPending | None = None
        self._closing_reason: GateCloseReason = "vehicle_passed"
        self._lower_pending: GateCloseReason | None = None
        self._lock_command: str | None = None  # the remote command that locked the lane closed
        self._passing: Cycle | None = None  # the cycle whose passages are being recorded
        self._due = 0  # passages of it still to record
        self._hidden_due = 0  # of those, the followers found by length
        self._extra_at: Stamp | None = None  # when the passage waiting for its follower was
        self._closed: Cycle | None = None
        self._closing_recorded = False  # gate.closed is being written
        self._retry_armed = False  # the retry timer runs
        self._retrying = False  # a kept record is being written again
        self._refused_for_journal = False  # the refused car was sent to the intercom for that
        # Tickets (gateway.core.tickets): the printer's state, the car waiting for its ticket.
        self.printer_problem: PrinterProblem | None = None
        self._ticket_for: tuple[Read, EntryDecision] | None = None
        self._refused_for_printer = False
        self.tickets_issued = 0
        self.tickets_invalid = 0  # forged or garbage scans
        self.tickets_refused = 0  # scans of tickets whose session is not open (used twice)
        self._held_full = False  # as many records are held as the setup allows

    @property
    def cycle(self) -> int | None:
        """The number of the opening under way, if any."""
        return None if self._cycle is None else self._cycle.number

    def handle(self, event: LaneEvent, now: Stamp) -> list[Effect]:
        """Take one event that happened at `now`; return what is to be done, in order."""
        self._now, self._out = now, []
        match event:
            case Started():
                self._started(event)
            case LoopChanged(loop="arming", occupied=occupied):
                self.arming = occupied
                self._on_arming(occupied)
            case LoopChanged(loop="safety", occupied=occupied):
                self.safety = occupied
                self._on_safety(occupied)
            case LoopChanged(occupied=occupied):
                self.closing = occupied
                self._on_closing(occupied)
            case BarrierMoved():
                self._on_barrier(event.position, event.faulted)
            case PlateRead():
                self._on_read(event.read, event.lot)
            case Rechecked():
                self._rechecked(event.read, event.lot)
            case FollowerRead():
                self._follower_read(event.cycle, event.read)
            case PaymentsFetched():
                self._payments_fetched(event.session_id, event.payments)
            case TimerFired():
                self._on_timer(event.timer)
            case Vend():
                self._on_vend(event.reason, event.actor)
            case ModeSet():
                self._enter_mode(event.mode, event.actor)
            case Lowered():
                self._lowered(event.purpose, event.reason)
            case LowerRefused():
                self._lower_refused(event.purpose, event.reason, event.error)
            case Recorded():
                self._recorded(event.record)
            case RecordFailed():
                self._record_failed(event.record, event.error)
            case TicketPrinted():
                self._ticket_printed(event.session_id)
            case TicketNotPrinted():
                self._ticket_not_printed(event.problem, event.error)
            case PrinterChecked():
                self._printer_checked(event.problem, event.error)
            case TicketScanned():
                self._ticket_scanned(event.session_id, event.lot, event.error)
        return self._out

    def _emit(self, *effects: Effect) -> None:
        self._out.extend(effects)

    def _log(self, level: Literal["info", "warning", "error"], event: str, **fields: Any
             ) -> None:
        self._emit(Log(level, event, {"lane": self.setup.lane_id, **fields}))

    def _new_cycle(self, reason: GateOpenReason, **kw: Any) -> Cycle:
        self._cycles += 1
        return Cycle(self._cycles, reason, **kw)

    def _started(self, event: Started) -> None:
        self.arming, self.safety, self.closing = event.arming, event.safety, event.closing
        self.position = event.position
        self._enter_mode(self.mode, None)
        if self.state == "idle" and self.arming:
            self._on_arming(True)

    # --- loops ---

    def _on_arming(self, occupied: bool) -> None:
        now = self._now.mono
        if not occupied and self._cycle is not None and self.state in (
                "open", "passing", "closing"):
            self._cycle.arming_off_at = now
        if self.state in ("locked_closed", "out_of_order"):
            return
        if occupied and self.state == "idle":
            self.state = "identifying"
            self._reading = True
            self._emit(StartRead())
        elif occupied and self.state in ("open", "passing", "closing", "locked_open"):
            # A second vehicle while the barrier is up: read it too, in case it slips through.
            cycle = self._cycle
            if cycle is None and self.state == "locked_open":
                cycle = self._cycle = self._new_cycle("locked_open")
            if cycle is not None and not cycle.follower_reading:
                cycle.follower_reading = True
                self._emit(StartFollowerRead(cycle.number))
        elif not occupied and self.state == "identifying" and not self.safety:
            self._cancel_read()  # backed off before a decision: forget it
            self.state = "idle"
        elif not occupied and self.state == "refused":
            self._refused_read = None
            self.state = "idle"

    def _on_safety(self, occupied: bool) -> None:
        if self._cycle is not None:
            if occupied:
                self._cycle.safety_on_at = self._now.mono
                self._cycle.front_at_closing = None
                self._emit(KeepFollowerFrames(self._cycle.number))
            else:
                self._count_long_vehicle(self._cycle)
        if occupied:
            if self.state == "closing":
                self._reopen()
            elif self.state == "open":
                self.state = "passing"
            return
        if self.state == "locked_closed" and self._lower_pending is not None:
            self._lower_when_clear(self._lower_pending)
            return
        if not self.setup.closing_loop:
            self._vehicle_cleared()  # the safety loop's trailing edge: it passed
        elif self.state == "open" and self._cycle is not None and self._cycle.passed:
            self._close_if_clear("vehicle_passed")

    def _count_long_vehicle(self, cycle: Cycle) -> None:
        """The safety loop cleared: was what crossed it one vehicle, or two close together?"""
        now = self._now.mono
        on, off, front = cycle.safety_on_at, cycle.arming_off_at, cycle.front_at_closing
        cycle.safety_on_at = cycle.front_at_closing = None
        if on is None or off is None or not on <= off < now:
            return  # the tail left the arming loop before the safety loop saw the front
        setup = self.setup
        # The tail's speed over its last metres, when the vehicle is surely moving.
        speed = setup.arming_to_safety_end_m / (now - off)
        if setup.closing_loop and front is not None and on <= front <= now:
            # Where its front is now, from where it was when it reached the closing loop:
            # only the last metres at that speed, so a standstill before does not count.
            length = speed * (now - front) + setup.safety_to_closing_m
        else:
            # No closing loop, or the vehicle ahead still held it when this front came: its
            # front's metres since it reached the safety loop, at that speed. This runs long
            # for a car that stood with its front on the loop and pulled away.
            length = speed * (now - on) - setup.safety_length_m
        # Vehicles the closing loop told apart while this one crossed are already counted.
        seen_apart = sum(1 for t in cycle.cleared_at if on <= t <= now)
        if length > self.setup.max_vehicle_m and not seen_apart:
            cycle.hidden_followers += 1
            self._log("info", "lane.long_vehicle", length_m=round(length, 1),
                      speed_mps=round(speed, 2))

    def _on_closing(self, occupied: bool) -> None:
        if occupied:
            cycle = self._cycle
            if (cycle is not None and cycle.safety_on_at is not None
                    and cycle.front_at_closing is None):
                cycle.front_at_closing = self._now.mono
            return
        if self._cycle is not None:
            self._cycle.cleared_at.append(self._now.mono)
        self._vehicle_cleared()

    # --- passages ---

    def _vehicle_cleared(self) -> None:
        """A vehicle's tail left the closing loop (or the safety loop): it has gone through."""
        if self.state not in ("open", "passing", "closing", "locked_open"):
            return
        if self._passing is not None:
            return  # the shell answers a passage's records before the next edge
        cycle = self._cycle
        if cycle is None:
            if self.state != "locked_open":
                return
            cycle = self._cycle = self._new_cycle("locked_open")
        self._passing, self._due = cycle, 1 + cycle.hidden_followers
        self._hidden_due = cycle.hidden_followers  # the last of those due
        cycle.hidden_followers = 0
        self._next_passage()

    def _next_passage(self) -> None:
        """Record the passages still due, one at a time: each waits for its records."""
        cycle = self._passing
        if cycle is None:
            return
        while self._due:
            self._due -= 1
            cycle.passed += 1
            self.passages += 1
            self._emit(NotePassage())
            if cycle.passed == 1 and cycle.reason != "locked_open":
                if self._first_passed(cycle):
                    return
            else:
                self._extra_at = self._now
                hidden = self._due < self._hidden_due
                if not hidden:
                    cycle.follower_reading = False  # the read under way is this one's
                self._emit(ReadFollower(cycle.number, cycle.read.plate if cycle.read else None,
                                        hidden=hidden))
                return
        self._passing = None
        if self.state == "locked_open":
            self._cycle = None
            self._emit(DropFollower(cycle.number))
            return
        if self.state == "closing":
            return  # already coming down behind it
        self.state = "open"
        self._close_if_clear("vehicle_passed")

    def _first_passed(self, cycle: Cycle) -> bool:
        """The vehicle the barrier opened for went through. True: a record to wait for."""
        if self.setup.direction == "entry":
            self._entered(cycle)
            return True
        return self._exited(cycle)

    def _entered(self, cycle: Cycle) -> None:
        at, read = self._now, cycle.read
        # A manual vend: the plate, if one was read, still gets a session.
        decision = cycle.entry or self.access.right_of(read.plate if read else None, at.wall)
        violations: tuple[Violation, ...] = ()
        if decision.passback == "flagged" and decision.existing is not None:
            # The earlier session is the one still running; its car came in again.
            violation = Violation("anti_passback", decision.plate,
                                  {"mode": "soft", "refused": False}, at.wall,
                                  decision.existing.session_id)
            if cycle.ticket is None:
                self._record(violation, then="passage")
                return
            violations = (violation,)  # its ticket names a session of its own: open it
        if decision.passback == "replaced" and decision.existing is not None:
            self._record(EndSession(decision.existing, at, "lost_ticket", collected=False))
        flags: dict[str, Any] | None = None
        if cycle.ticket is not None:
            flags = {"ticket": True}
        elif cycle.vend_reason:
            flags = {"manualVend": cycle.vend_reason}
        self._record(StartSession(decision, at, read.confidence if read else None, flags,
                                  violations, cycle.ticket), then="passage")

    def _exited(self, cycle: Cycle) -> bool:
        at, decision = self._now, cycle.exit
        if decision is None:  # a manual vend at an exit: close the session the read found
            stay = self._stay_for(cycle.read)
            if stay is None:
                return False
            self._record(EndSession(stay, at, "manual_vend", collected=False), then="passage")
        elif decision.stay is None:  # no entry record
            self._record(LostTicket(decision.plate, at, collected=False), then="passage")
        elif decision.reason == "unable_to_collect":
            self._record(EndSession(decision.stay, at, "unable_to_collect", collected=False,
                                    with_payments=True), then="passage")
        else:
            self._record(EndSession(decision.stay, at, "normal", collected=True,
                                    with_payments=True), then="passage")
        return True

    def _follower_read(self, number: int, read: Read | None) -> None:
        """A vehicle beyond the one the barrier opened for (or any, when locked open)."""
        cycle, at = self._passing, self._extra_at
        if cycle is None or at is None or cycle.number != number:
            return
        self._extra_at = None
        waits = (self._locked_passage(read, at) if cycle.reason == "locked_open"
                 else self._tailgated(cycle, read, at))
        if not waits:
            self._next_passage()

    def _tailgated(self, cycle: Cycle, read: Read | None, at: Stamp) -> bool:
        plate = read.plate if read else None
        self.tailgates += 1
        self._log("warning", "lane.tailgating", plate=plate)
        violation = Violation("tailgating", plate, {"vehiclesUnderOneOpening": cycle.passed},
                              self._now.wall)
        self._emit(RaiseAlarm(Alarm(
            f"lane.tailgating:{self.setup.lane_id}", "warning",
            f"{cycle.passed} vehicles passed under one opening at {self.setup.name}",
            {"plate": plate}, component="lane")))
        if self.setup.direction == "entry":
            self._record(StartSession(EntryDecision(True, "visitor", plate), at,
                                      read.confidence if read else None, {"tailgated": True},
                                      (violation,)), then="passage")
            return True
        stay = self._stay_for(read)
        if stay is None:
            self._record(violation, then="passage")
        else:
            self._record(EndSession(stay, at, "unable_to_collect", collected=False,
                                    violations=(violation,)), then="passage")
        return True

    def _locked_passage(self, read: Read | None, at: Stamp) -> bool:
        """Locked open: no decisions, but sessions are still kept for plates that were read."""
        if self.setup.direction == "entry":
            if read is None or not read.plate or self.access.stay_of(read.plate) is not None:
                return False
            self._record(StartSession(self.access.right_of(read.plate, self._now.wall), at,
                                      read.confidence, {"lockedOpen": True}), then="passage")
            return True
        stay = self._stay_for(read)
        if stay is None:
            return False
        self._record(EndSession(stay, at, "unable_to_collect", collected=False),
                     then="passage")
        return True

    def _stay_for(self, read: Read | None) -> OpenStay | None:
        if read is None or not read.plate:
            return None
        found = self.access.find_stay(read.plate)
        return self.access.stay_of(found.plate) if found.accepted and found.plate else None

    # --- identifying and deciding ---

    def _cancel_read(self) -> None:
        if self._reading:
            self._reading = False
            self._emit(CancelRead())

    def _on_read(self, read: Read, lot: LotNow) -> None:
        if self.state != "identifying":
            return
        self._reading = False
        now = self._now
        if self._to_intercom():
            self._emit(Remember(read, "journal_full", False))
            self._refuse(read, "journal_full", read.plate, None)
            return
        if self.setup.direction == "entry":
            decision = self.access.entry(read.plate, at=now.wall, free_bays=lot.free_bays)
            if self._takes_ticket(decision):
                self._ticket_entry(read, decision, lot)
                return
            self._emit(Remember(read, decision.reason, decision.allow))
            if decision.allow:
                self._open_for(self._new_cycle("decision", entry=decision, read=read))
            else:
                self._refuse(read, decision.reason, decision.plate, decision.deny_reason)
            return
        stay = self._stay_for(read)
        if stay is None:
            self._decide_exit(read, now, lot.online, ())
            return
        self._exit_pending = _ExitPending(read, now, lot.online, stay.session_id)
        self._emit(FetchPayments(stay.session_id))

    def _payments_fetched(self, session_id: str, payments: Sequence[PaymentRecord]) -> None:
        pending, self._exit_pending = self._exit_pending, None
        if pending is None or pending.session_id != session_id or self.state != "identifying":
            return
        self._decide_exit(pending.read, pending.at, pending.online, payments, pending.stay)

    def _decide_exit(self, read: Read, at: Stamp, online: bool,
                     payments: Sequence[PaymentRecord], stay: OpenStay | None = None) -> None:
        """`stay`: the session a scanned ticket named, else the read's plate finds it."""
        if stay is None:
            decision = self.access.exit(read.plate, at=at.wall, payments=payments,
                                        price=self.price, online=online)
        else:
            decision = self.access.settle(stay, at=at.wall, payments=payments, price=self.price,
                                          online=online)
        self._emit(Remember(read, decision.reason, decision.allow))
        if decision.allow:
            self._open_for(self._new_cycle("decision", exit=decision, read=read))
            return
        if stay is not None and decision.reason == "unpaid":
            # No display at the lane yet: the fee goes to the log, the intercom and the console.
            self._log("info", "lane.ticket_unpaid", session=stay.session_id,
                      fee_minor=self.price(stay, at.wall), paid_minor=decision.paid_minor)
        self._refuse(read, decision.reason, decision.plate, None)

    def _to_intercom(self) -> bool:
        """Records are held and the policy (or the memory they take) wants a person to decide."""
        held = len(self.unwritten)
        return held > 0 and (self.setup.on_journal_full == "intercom"
                             or held >= self.setup.max_held)

    def _refuse(self, read: Read, reason: str, plate: str | None, deny_reason: str | None
                ) -> None:
        self.refusals += 1
        self.state = "refused"
        self._refused_read = read
        self._refused_for_journal = reason == "journal_full"
        self._refused_for_printer = reason == "ticket_unavailable"
        self._log("info", "lane.refused", plate=plate, reason=reason)
        self._emit(StartTimer("recheck", RECHECK_S))
        if reason == "deny_listed":
            self._record(Violation("deny_listed", plate, {"reason": deny_reason or "deny list"},
                                   self._now.wall))
        elif reason == "anti_passback":
            self._record(Violation("anti_passback", plate,
                                   {"mode": self.access.lot.anti_passback, "refused": True},
                                   self._now.wall))

    def _rechecked(self, read: Read, lot: LotNow) -> None:
        """Refused, and the arming loop never cleared: is it still the same vehicle?

        The refused car may have backed away while the next one in the queue pulled up so close
        that the loop never saw a gap. A different plate in view is a new arrival.
        """
        if self.state != "refused":
            return
        before = self._refused_read.plate if self._refused_read else None
        if self._refused_for_journal and not self._to_intercom():
            self._log("info", "lane.journal_back", plate=read.plate)  # decide it now
            self.state = "identifying"
            self._on_read(read, lot)
            return
        if self._refused_for_printer and self.printer_problem is None:
            self._log("info", "lane.printer_back", plate=read.plate)  # its ticket, now
            self.state = "identifying"
            self._on_read(read, lot)
            return
        if read.plate is not None and read.plate != before:
            self._log("info", "lane.next_vehicle", plate=read.plate, refused=before)
            self.state = "identifying"
            self._on_read(read, lot)
            return
        self._emit(StartTimer("recheck", RECHECK_S))

    # --- tickets ---

    def _takes_ticket(self, decision: EntryDecision) -> bool:
        """An unreadable plate takes a ticket (with tickets on); in ``always`` mode so does
        every visitor let in by plate. Permits and reservations go in by their plate."""
        mode = self.setup.tickets
        if mode == "off":
            return False
        if decision.reason == "unreadable":
            return True
        return mode == "always" and decision.allow and decision.reason == "visitor"

    def _ticket_entry(self, read: Read, decision: EntryDecision, lot: LotNow) -> None:
        if decision.reason == "unreadable":  # a visitor, if the lot has room for one
            decision = self.access.ticket_entry(at=self._now.wall, free_bays=lot.free_bays)
            if not decision.allow:
                self._emit(Remember(read, decision.reason, False))
                self._refuse(read, decision.reason, None, None)
                return
        if self.printer_problem is not None:  # no ticket to give: a person decides
            self._emit(Remember(read, "ticket_unavailable", False))
            self._refuse(read, "ticket_unavailable", decision.plate, None)
            return
        self._ticket_for = (read, decision)
        self._emit(PrintTicket())

    def _ticket_printed(self, session_id: str) -> None:
        waiting, self._ticket_for = self._ticket_for, None
        if waiting is None or self.state != "identifying":
            return
        read, decision = waiting
        self.tickets_issued += 1
        self._log("info", "lane.ticket_issued", session=session_id, plate=decision.plate)
        self._emit(Remember(read, "ticket", True))
        self._open_for(self._new_cycle("decision", entry=decision, read=read, ticket=session_id))

    def _ticket_not_printed(self, problem: PrinterProblem, error: str) -> None:
        waiting, self._ticket_for = self._ticket_for, None
        self._printer_checked(problem, error)
        if waiting is not None and self.state == "identifying":
            read, decision = waiting
            self._emit(Remember(read, "ticket_unavailable", False))
            self._refuse(read, "ticket_unavailable", decision.plate, None)

    def _printer_checked(self, problem: PrinterProblem | None, error: str) -> None:
        """The printer's alarm follows its state: raised once, cleared when it prints again."""
        before, self.printer_problem = self.printer_problem, problem
        if problem == before:
            return
        lane = self.setup.lane_id
        if before is not None:
            self._emit(ClearAlarm(f"printer.{before}:{lane}", "the ticket printer prints again"
                                  if problem is None else f"now: {problem}"))
        if problem is None:
            self._log("info", "lane.printer_ok")
            return
        self._log("error", "lane.printer_down", problem=problem, error=error)
        what = "is out of paper" if problem == "paper_out" else "does not print"
        self._emit(RaiseAlarm(Alarm(
            f"printer.{problem}:{lane}", "critical",
            f"{self.setup.name}: the ticket printer {what}; cars that need a ticket go to the "
            "intercom", {"laneId": lane, "error": error}, component="printer")))

    def _ticket_scanned(self, session_id: str | None, lot: LotNow, error: str) -> None:
        """A ticket at the exit: the car on the arming loop is waiting for a decision."""
        if not self.setup.scanner or self.state not in ("identifying", "refused"):
            self._log("info", "lane.ticket_ignored", state=self.state, session=session_id)
            return
        self._cancel_read()
        self._exit_pending = None
        self.state = "identifying"
        read = Read(None, 0.0, None, self._now)
        if session_id is None:
            self.tickets_invalid += 1
            self._log("warning", "lane.ticket_invalid", error=error)
            self._emit(Remember(read, "ticket_invalid", False))
            self._refuse(read, "ticket_invalid", None, None)
            return
        stay = self.access.inside.get(session_id)
        if stay is None:
            self.tickets_refused += 1
            self._log("warning", "lane.ticket_refused", session=session_id)
            self._emit(Remember(read, "ticket_used", False))
            self._refuse(read, "ticket_used", None, None)
            self._record(TicketRefused(session_id, self._now.wall))
            return
        read = Read(stay.plate, 0.0, None, self._now)
        if self._to_intercom():
            self._emit(Remember(read, "journal_full", False))
            self._refuse(read, "journal_full", stay.plate, None)
            return
        self._exit_pending = _ExitPending(read, self._now, lot.online, session_id, stay)
        self._emit(FetchPayments(session_id))

    # --- opening ---

    def _open_for(self, cycle: Cycle) -> None:
        self._cycle = cycle
        self.state = "opening"
        self._raise(cycle.reason)
        self._record(GateOpened(cycle.reason, self._now.wall, cycle.command_id), then="opened")

    def _raise(self, reason: GateOpenReason) -> None:
        self.commanded = "up"
        self._emit(RaiseBarrier(reason))

    def _opened(self) -> None:
        if self.state != "opening":
            return
        self.state = "passing" if self.safety else "open"
        self._emit(StartTimer("pass", self.setup.pass_timeout_s))

    def _reopen(self) -> None:
        self.state = "passing"
        self._log("warning", "lane.safety_reopen")
        self._raise("safety_reopen")
        self._record(GateOpened("safety_reopen", self._now.wall), then="reopened")

    # --- closing ---

    def _close_if_clear(self, reason: GateCloseReason) -> None:
        """Lower the barrier unless a vehicle is under it or about to pass."""
        if self.mode != "auto" or self.state in ("closing", "idle"):
            return
        if self.safety or self.closing:
            return  # the next trailing edge brings us back here
        self.state = "closing"
        self._emit(CancelTimer("pass"), LowerBarrier("close", reason))

    def _lower_when_clear(self, reason: GateCloseReason) -> None:
        """Lower for a lock; over a vehicle, wait for the safety loop to clear first."""
        if self.position == "down":
            return
        if self.safety:
            self._lower_pending = reason  # the safety loop's trailing edge comes back here
            return
        self._lower_pending = None
        self._emit(LowerBarrier("lock", reason))

    def _lowered(self, purpose: LowerFor, reason: GateCloseReason) -> None:
        self.commanded = "down"
        if purpose == "lock":
            self._record(GateClosed(reason, self._now.wall,
                                    self._lock_command if reason == "command" else None))
            return
        if self.state != "closing":
            return
        self._closing_reason = reason
        if not self.setup.barrier_feedback:
            self._close()

    def _lower_refused(self, purpose: LowerFor, reason: GateCloseReason, error: str) -> None:
        """A car arrived this instant (the barrier's guard saw it), or the barrier failed."""
        self.lower_refusals += 1
        self._log("warning", "lane.lower_refused", error=error)
        if purpose == "lock":
            self._lower_pending = reason
        elif self.state == "closing":
            self.state = "passing"
            self._emit(StartTimer("pass", self.setup.pass_timeout_s))

    def _on_barrier(self, position: Position, faulted: bool) -> None:
        self.position = position
        if position == "fault":
            self._fault()
            return
        if self.state == "out_of_order" and not faulted:
            self._emit(ClearAlarm(f"lane.out_of_order:{self.setup.lane_id}",
                                  "barrier answers again"))
            self.state = "idle"
        if position == "down" and self.state == "closing":
            self._close()

    def _close(self) -> None:
        """The barrier is down behind the opening: record it, then take the next car."""
        if self._closing_recorded:
            return
        self._closing_recorded = True
        self._closed, self._cycle = self._cycle, None
        self._record(GateClosed(self._closing_reason, self._now.wall), then="closed")

    def _after_close(self) -> None:
        cycle, self._closed = self._closed, None
        self._closing_recorded = False
        if cycle is not None and cycle.passed == 1 and cycle.reason == "decision":
            self._emit(ClearAlarm(f"lane.tailgating:{self.setup.lane_id}", "normal passage"))
        if self.state == "closing":
            self.state = "idle"
        if cycle is not None and cycle.follower_reading:
            self._emit(DropFollower(cycle.number))
        if self.arming:  # the next car is already waiting
            self._on_arming(True)

    def _fault(self) -> None:
        if self.state == "out_of_order":
            return
        self.state = "out_of_order"
        self._log("error", "lane.out_of_order")
        self._emit(RaiseAlarm(Alarm(
            f"lane.out_of_order:{self.setup.lane_id}", "critical",
            f"{self.setup.name}: the barrier does not answer; the lane is out of order",
            {"laneId": self.setup.lane_id}, component="lane")))

    # --- timers ---

    def _on_timer(self, timer: TimerName) -> None:
        if timer == "recheck":
            if self.state == "refused" and self.arming:
                self._emit(Recheck())
        elif timer == "retry":
            self._retry()
        elif self.state in ("open", "passing"):
            self._pass_timeout()

    def _pass_timeout(self) -> None:
        cycle = self._cycle
        waiting = self.arming and cycle is not None and not cycle.passed
        if self.safety or waiting:
            self._emit(StartTimer("pass", self.setup.pass_timeout_s))  # still there: wait on
            return
        if cycle is not None and not cycle.passed:
            self._log("info", "lane.vehicle_backed_off")
        self.state = "open"
        self._close_if_clear("timeout")

    # --- commands ---

    def _on_vend(self, reason: str, actor: str) -> None:
        if self.state in ("open", "passing", "locked_open", "opening"):
            return  # already up
        self._cancel_read()
        command_id = actor.removeprefix("backend:") if actor.startswith("backend:") else None
        open_reason: GateOpenReason = "manual" if command_id is None else "command"
        cycle = self._new_cycle(open_reason, read=self._refused_read, vend_reason=reason,
                                command_id=command_id)
        self._refused_read = None
        self._open_for(cycle)

    def _enter_mode(self, mode: LaneMode, actor: str | None) -> None:
        previous, self.mode = self.mode, mode
        if mode == "locked_open":
            self.state = "locked_open"
            self._emit(CancelTimer("pass"))
            self._raise("locked_open")
            self._record(GateOpened("locked_open", self._now.wall))
        elif mode == "locked_closed":
            self._cancel_read()
            self.state = "locked_closed"
            # A remote command's lock carries its id; a technician's (or one restored at start)
            # is manual.
            command_id = (actor.removeprefix("backend:")
                          if actor is not None and actor.startswith("backend:") else None)
            self._lock_command = command_id
            self._lower_when_clear("lock_released" if previous == "locked_open"
                                   else "command" if command_id is not None else "manual")
        else:
            self.state = "idle" if self.position != "up" else "open"
            if previous == "locked_open":
                self._cycle = self._new_cycle("decision", passed=1)
                self._close_if_clear("lock_released")
        if actor is not None:
            self._log("info", "lane.mode", mode=mode, actor=actor)

    # --- the journal ---

    def _record(self, entry: Entry, then: Step | None = None) -> None:
        if self.unwritten:
            # Older records wait for the journal: this one queues behind them, so the journal
            # gets the lane's records in the order they happened (a session's end never
            # before its start), and the lane goes on as it does after a failed write.
            self._hold(Unwritten(entry, 0))
            if then is not None:
                self._resume(then)
            return
        self._emit(Record(entry, then))

    def _recorded(self, record: Record) -> None:
        if record.then == "retry":
            self._written_late(record)
        elif record.then is not None:
            self._resume(record.then)

    def _record_failed(self, record: Record, error: str) -> None:
        """The journal refused a record: keep it for a retry, and go on as if written."""
        if record.then == "retry":
            self._retry_failed(record, error)
            return
        self._hold(Unwritten(record.entry, 1))
        self._log("error", "lane.record_failed", entry=type(record.entry).__name__, error=error)
        self._emit(RaiseAlarm(self._journal_alarm(error)))
        self._arm_retry()
        if record.then is not None:
            self._resume(record.then)

    def _hold(self, kept: Unwritten) -> None:
        self.unwritten.append(kept)
        if isinstance(kept.entry, StartSession | EndSession):
            self._emit(Hold(kept.entry))
        if len(self.unwritten) >= self.setup.max_held and not self._held_full:
            self._held_full = True
            self._log("error", "lane.records_held_full", held=len(self.unwritten))
            self._emit(RaiseAlarm(Alarm(
                f"lane.records_held:{self.setup.lane_id}", "critical",
                f"{self.setup.name}: {len(self.unwritten)} records wait for the journal; every"
                " car goes to the intercom until they are written",
                {"laneId": self.setup.lane_id, "held": len(self.unwritten)},
                component="lane")))

    def _resume(self, step: Step) -> None:
        if step == "opened":
            self._opened()
        elif step == "reopened":
            self._emit(StartTimer("pass", self.setup.pass_timeout_s))
        elif step == "passage":
            self._next_passage()
        elif step == "closed":
            self._after_close()

    def _journal_alarm(self, error: str) -> Alarm:
        return Alarm(f"lane.journal:{self.setup.lane_id}", "critical",
                     f"{self.setup.name}: the journal does not take the lane's records; "
                     "they are kept and retried", {"laneId": self.setup.lane_id, "error": error},
                     component="lane")

    def _arm_retry(self) -> None:
        if self._retry_armed or self._retrying or not self.unwritten:
            return
        self._retry_armed = True
        failures = self.unwritten[0].failures
        self._emit(StartTimer("retry", RETRY_S[min(max(failures, 1), len(RETRY_S)) - 1]))

    def _retry(self) -> None:
        """Write the oldest kept record again; the rest follow it, in order."""
        self._retry_armed = False
        if self.unwritten and not self._retrying:
            self._retrying = True
            head = self.unwritten[0]
            self._emit(Record(head.entry, "retry", head.failures + 1))

    def _written_late(self, record: Record) -> None:
        if not self.unwritten or self.unwritten[0].entry != record.entry:
            return
        self._retrying = False
        self.unwritten.popleft()
        self._log("info", "lane.record_written", entry=type(record.entry).__name__,
                  attempt=record.attempt)
        if self.unwritten:
            self._retry()
            return
        if self._held_full:
            self._held_full = False
            self._emit(ClearAlarm(f"lane.records_held:{self.setup.lane_id}",
                                  "the lane's records are written"))
        self._emit(ClearAlarm(f"lane.journal:{self.setup.lane_id}",
                              "the lane's records are written"))

    def _retry_failed(self, record: Record, error: str) -> None:
        if not self.unwritten or self.unwritten[0].entry != record.entry:
            return
        self._retrying = False
        self.unwritten[0].failures += 1
        self._emit(RaiseAlarm(self._journal_alarm(error)))
        self._arm_retry()
