"""The lane machine with no I/O and no mocks: every state against every event, the exact effects
of the transitions that matter, and properties over random event orders.

`Shell` below answers the machine's requests the way gateway.controllers.lane does (at once,
before the next event), with a journal that can refuse writes and a barrier that can refuse to
come down.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.access import Access, EntryDecision, OpenStay
from gateway.core.clock import Stamp
from gateway.core.lane_machine import (
    RETRY_S,
    BarrierMoved,
    CancelTimer,
    ClearAlarm,
    Effect,
    EndSession,
    FetchPayments,
    FollowerRead,
    GateClosed,
    GateOpened,
    KeepFollowerFrames,
    LaneEvent,
    LaneMachine,
    LaneSetup,
    Log,
    LoopChanged,
    LostTicket,
    LotNow,
    LowerBarrier,
    Lowered,
    LowerRefused,
    ModeSet,
    NotePassage,
    PaymentsFetched,
    PlateRead,
    RaiseAlarm,
    RaiseBarrier,
    Read,
    ReadFollower,
    Recheck,
    Rechecked,
    Record,
    Recorded,
    RecordFailed,
    Remember,
    Started,
    StartFollowerRead,
    StartSession,
    StartTimer,
    TimerFired,
    Unwritten,
    Vend,
    Violation,
)
from gateway.core.records import Alarm, PaymentRecord
from gateway.core.rights import DenyEntry, Permit

PERMIT, VISITOR, DENIED, FOLLOWER = "PERMIT1", "VIS1234", "BAD666", "TAIL999"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LOT = LotNow(free_bays=50, online=True)
FEE = 250


def stamp(t: float) -> Stamp:
    return Stamp(T0 + timedelta(seconds=t), 1000.0 + t, "boot-1", True)


def read(plate: str | None, t: float = 0.0) -> Read:
    return Read(plate, 1.0 if plate else 0.0, None, stamp(t))


@dataclass(frozen=True)
class Policy:
    """The lot's rules (a LotPolicy)."""

    initial_state: Any = "open"
    full_when_free_at_most: int = 0
    anti_passback: Any = "hard"
    passback_minutes: int = 60
    reservation_grace_minutes: int = 10
    payment_grace_minutes: int = 15
    offline_exit: Any = "let_out"
    no_entry_record: Any = "lost_ticket"


def setup(direction: Any = "entry", *, closing_loop: bool = True, feedback: bool = True
          ) -> LaneSetup:
    return LaneSetup(f"{direction}-1", f"Lane {direction}", direction, pass_timeout_s=30.0,
                     arming_to_safety_end_m=2.5, safety_length_m=2.6, max_vehicle_m=7.1,
                     closing_loop=closing_loop, barrier_feedback=feedback)


def make_access(**policy: Any) -> Access:
    access = Access(Policy(**policy))
    access.load("permits", [Permit(permitId="p-1", plates=(PERMIT,))])
    access.load("deny_list", [DenyEntry(plate=DENIED, reason="stolen")])
    return access


def machine(direction: Any = "entry", *, access: Access | None = None, **kw: Any
            ) -> LaneMachine:
    return LaneMachine(setup(direction, **kw), access=access or make_access(),
                       price=lambda stay, at: FEE, mode="auto")


class Shell:
    """Feeds events and answers the machine's requests at once, as the lane's shell does."""

    def __init__(self, m: LaneMachine) -> None:
        self.m = m
        self.t = 0.0
        self.journal_full = False
        self.refuse_lower = False
        self.hold_records = False  # leave records unanswered (the machine waits on them)
        self.follower: str | None = FOLLOWER
        self.recheck: str | None = None
        self.payments: tuple[PaymentRecord, ...] = ()
        self.written: list[Any] = []  # entries the journal took
        self.late: list[Any] = []  # of those, the ones taken on a retry
        self.failed: list[RecordFailed] = []
        self.lost = 0  # records given up

    def feed(self, event: LaneEvent, after: float = 0.0) -> list[Effect]:
        """All effects of `event`, with those of the answers to its requests, in order."""
        self.t += after
        out: list[Effect] = []
        pending = deque(self.m.handle(event, stamp(self.t)))
        while pending:
            effect = pending.popleft()
            out.append(effect)
            answer = self.answer(effect)
            if answer is not None:
                before = self.m.state
                effects = self.m.handle(answer, stamp(self.t))
                self.check(answer, before, effects)
                pending.extendleft(reversed(effects))
        return out

    def check(self, answer: LaneEvent, before: str, effects: list[Effect]) -> None:
        """Called with every answer the machine took, the state before it, and its effects."""
        self.lost += sum(1 for e in effects
                         if isinstance(e, Log) and e.event == "lane.record_lost")

    def answer(self, effect: Effect) -> LaneEvent | None:
        if isinstance(effect, Record):
            if self.hold_records:
                return None
            if self.journal_full:
                failed = RecordFailed(effect, "JournalFullError('disk full')")
                self.failed.append(failed)
                return failed
            self.written.append(effect.entry)
            if effect.then == "retry":
                self.late.append(effect.entry)
            return Recorded(effect)
        if isinstance(effect, LowerBarrier):
            if self.refuse_lower:
                return LowerRefused(effect.purpose, effect.reason, "vehicle under the barrier")
            return Lowered(effect.purpose, effect.reason)
        if isinstance(effect, ReadFollower):
            return FollowerRead(effect.cycle, None if self.follower is None
                                else read(self.follower, self.t))
        if isinstance(effect, FetchPayments):
            return PaymentsFetched(effect.session_id, self.payments)
        if isinstance(effect, Recheck):
            return Rechecked(read(self.recheck, self.t), LOT)
        return None

    def drive_through(self) -> list[Effect]:
        """Under the barrier, over the closing loop, and away, 0.5 s a step."""
        steps = [LoopChanged("safety", True), LoopChanged("arming", False),
                 LoopChanged("closing", True), LoopChanged("safety", False),
                 LoopChanged("closing", False)]
        return [effect for step in steps for effect in self.feed(step, after=0.5)]


def kinds(effects: Sequence[Effect]) -> list[str]:
    return [type(e).__name__ for e in effects]


def started(m: LaneMachine) -> Shell:
    shell = Shell(m)
    shell.feed(Started(False, False, False, "down"))
    return shell


def reach(state: str, direction: Any = "entry") -> Shell:
    """A lane driven into `state` by the events that lead there."""
    shell = started(machine(direction))
    if state == "idle":
        return shell
    if state == "locked_open":
        shell.feed(ModeSet("locked_open", "cli:bob"))
        shell.feed(BarrierMoved("up", False))
        return shell
    if state == "locked_closed":
        shell.feed(ModeSet("locked_closed", "cli:bob"))
        return shell
    if state == "out_of_order":
        shell.feed(BarrierMoved("fault", True))
        return shell
    shell.feed(LoopChanged("arming", True))
    if state == "identifying":
        return shell
    if state == "refused":
        shell.feed(PlateRead(read(DENIED), LOT))
        return shell
    shell.hold_records = state == "opening"
    shell.feed(PlateRead(read(PERMIT), LOT))
    if state == "opening":
        return shell
    shell.feed(BarrierMoved("up", False))
    if state == "open":
        return shell
    shell.feed(LoopChanged("safety", True))
    if state == "passing":
        return shell
    shell.feed(LoopChanged("arming", False))
    shell.feed(LoopChanged("closing", True))
    shell.feed(LoopChanged("safety", False))
    shell.feed(LoopChanged("closing", False))
    assert state == "closing"
    return shell


EVENTS: dict[str, LaneEvent] = {
    "arming+": LoopChanged("arming", True),
    "arming-": LoopChanged("arming", False),
    "safety+": LoopChanged("safety", True),
    "safety-": LoopChanged("safety", False),
    "closing+": LoopChanged("closing", True),
    "closing-": LoopChanged("closing", False),
    "up": BarrierMoved("up", False),
    "down": BarrierMoved("down", False),
    "fault": BarrierMoved("fault", True),
    "read": PlateRead(read(PERMIT), LOT),
    "pass": TimerFired("pass"),
    "recheck": TimerFired("recheck"),
    "vend": Vend("intercom", "cli:alice"),
    "auto": ModeSet("auto", "cli:bob"),
    "locked_open": ModeSet("locked_open", "cli:bob"),
    "locked_closed": ModeSet("locked_closed", "cli:bob"),
}

# state, event -> the next state and the effects (by kind, answers' effects included). In each
# state the lane is as `reach` leaves it: open for a permit holder, nobody on any loop but the
# arming loop (and the safety loop when passing); closing behind the car, the barrier still up.
TRANSITIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("idle", "arming+"): ("identifying", "StartRead"),
    ("idle", "arming-"): ("idle", ""),
    ("idle", "safety+"): ("idle", ""),
    ("idle", "safety-"): ("idle", ""),
    ("idle", "closing+"): ("idle", ""),
    ("idle", "closing-"): ("idle", ""),
    ("idle", "up"): ("idle", ""),
    ("idle", "down"): ("idle", ""),
    ("idle", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("idle", "read"): ("idle", ""),
    ("idle", "pass"): ("idle", ""),
    ("idle", "recheck"): ("idle", ""),
    ("idle", "vend"): ("open", "RaiseBarrier Record StartTimer"),
    ("idle", "auto"): ("idle", "Log"),
    ("idle", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("idle", "locked_closed"): ("locked_closed", "Log"),
    ("identifying", "arming+"): ("identifying", ""),
    ("identifying", "arming-"): ("idle", "CancelRead"),
    ("identifying", "safety+"): ("identifying", ""),
    ("identifying", "safety-"): ("identifying", ""),
    ("identifying", "closing+"): ("identifying", ""),
    ("identifying", "closing-"): ("identifying", ""),
    ("identifying", "up"): ("identifying", ""),
    ("identifying", "down"): ("identifying", ""),
    ("identifying", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("identifying", "read"): ("open", "Remember RaiseBarrier Record StartTimer"),
    ("identifying", "pass"): ("identifying", ""),
    ("identifying", "recheck"): ("identifying", ""),
    ("identifying", "vend"): ("open", "CancelRead RaiseBarrier Record StartTimer"),
    ("identifying", "auto"): ("idle", "Log"),
    ("identifying", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("identifying", "locked_closed"): ("locked_closed", "CancelRead Log"),
    ("refused", "arming+"): ("refused", ""),
    ("refused", "arming-"): ("idle", ""),
    ("refused", "safety+"): ("refused", ""),
    ("refused", "safety-"): ("refused", ""),
    ("refused", "closing+"): ("refused", ""),
    ("refused", "closing-"): ("refused", ""),
    ("refused", "up"): ("refused", ""),
    ("refused", "down"): ("refused", ""),
    ("refused", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("refused", "read"): ("refused", ""),
    ("refused", "pass"): ("refused", ""),
    ("refused", "recheck"): ("refused", "Recheck StartTimer"),
    ("refused", "vend"): ("open", "RaiseBarrier Record StartTimer"),
    ("refused", "auto"): ("idle", "Log"),
    ("refused", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("refused", "locked_closed"): ("locked_closed", "Log"),
    ("opening", "arming+"): ("opening", ""),
    ("opening", "arming-"): ("opening", ""),
    ("opening", "safety+"): ("opening", "KeepFollowerFrames"),
    ("opening", "safety-"): ("opening", ""),
    ("opening", "closing+"): ("opening", ""),
    ("opening", "closing-"): ("opening", ""),
    ("opening", "up"): ("opening", ""),
    ("opening", "down"): ("opening", ""),
    ("opening", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("opening", "read"): ("opening", ""),
    ("opening", "pass"): ("opening", ""),
    ("opening", "recheck"): ("opening", ""),
    ("opening", "vend"): ("opening", ""),
    ("opening", "auto"): ("idle", "Log"),
    ("opening", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("opening", "locked_closed"): ("locked_closed", "Log"),  # the barrier is not up yet
    ("open", "arming+"): ("open", "StartFollowerRead"),
    ("open", "arming-"): ("open", ""),
    ("open", "safety+"): ("passing", "KeepFollowerFrames"),
    ("open", "safety-"): ("open", ""),
    ("open", "closing+"): ("open", ""),
    ("open", "closing-"): ("closing",
                           "NotePassage Record CancelTimer LowerBarrier"),
    ("open", "up"): ("open", ""),
    ("open", "down"): ("open", ""),
    ("open", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("open", "read"): ("open", ""),
    ("open", "pass"): ("open", "StartTimer"),
    ("open", "recheck"): ("open", ""),
    ("open", "vend"): ("open", ""),
    ("open", "auto"): ("open", "Log"),
    ("open", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("open", "locked_closed"): ("locked_closed", "LowerBarrier Record Log"),
    ("passing", "arming+"): ("passing", "StartFollowerRead"),
    ("passing", "arming-"): ("passing", ""),
    ("passing", "safety+"): ("passing", "KeepFollowerFrames"),
    ("passing", "safety-"): ("passing", ""),
    ("passing", "closing+"): ("passing", ""),
    ("passing", "closing-"): ("open", "NotePassage Record"),  # closes once the loop clears
    ("passing", "up"): ("passing", ""),
    ("passing", "down"): ("passing", ""),
    ("passing", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("passing", "read"): ("passing", ""),
    ("passing", "pass"): ("passing", "StartTimer"),
    ("passing", "recheck"): ("passing", ""),
    ("passing", "vend"): ("passing", ""),
    ("passing", "auto"): ("open", "Log"),
    ("passing", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("passing", "locked_closed"): ("locked_closed", "Log"),
    ("closing", "arming+"): ("closing", "StartFollowerRead"),
    ("closing", "arming-"): ("closing", ""),
    ("closing", "safety+"): ("passing", "KeepFollowerFrames Log RaiseBarrier Record StartTimer"),
    ("closing", "safety-"): ("closing", ""),
    ("closing", "closing+"): ("closing", ""),
    # A trailing edge on the closing loop while the barrier comes down: a second vehicle.
    ("closing", "closing-"): ("closing", "NotePassage ReadFollower Log RaiseAlarm Record"),
    ("closing", "up"): ("closing", ""),
    ("closing", "down"): ("idle", "Record ClearAlarm"),
    ("closing", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("closing", "read"): ("closing", ""),
    ("closing", "pass"): ("closing", ""),
    ("closing", "recheck"): ("closing", ""),
    ("closing", "vend"): ("open", "RaiseBarrier Record StartTimer"),
    ("closing", "auto"): ("open", "Log"),
    ("closing", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("closing", "locked_closed"): ("locked_closed", "LowerBarrier Record Log"),
    ("locked_open", "arming+"): ("locked_open", "StartFollowerRead"),
    ("locked_open", "arming-"): ("locked_open", ""),
    ("locked_open", "safety+"): ("locked_open", ""),
    ("locked_open", "safety-"): ("locked_open", ""),
    ("locked_open", "closing+"): ("locked_open", ""),
    ("locked_open", "closing-"): ("locked_open",
                                  "NotePassage ReadFollower Record DropFollower"),
    ("locked_open", "up"): ("locked_open", ""),
    ("locked_open", "down"): ("locked_open", ""),
    ("locked_open", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("locked_open", "read"): ("locked_open", ""),
    ("locked_open", "pass"): ("locked_open", ""),
    ("locked_open", "recheck"): ("locked_open", ""),
    ("locked_open", "vend"): ("locked_open", ""),
    ("locked_open", "auto"): ("closing", "CancelTimer LowerBarrier Log"),
    ("locked_open", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("locked_open", "locked_closed"): ("locked_closed", "LowerBarrier Record Log"),
    ("locked_closed", "arming+"): ("locked_closed", ""),
    ("locked_closed", "arming-"): ("locked_closed", ""),
    ("locked_closed", "safety+"): ("locked_closed", ""),
    ("locked_closed", "safety-"): ("locked_closed", ""),
    ("locked_closed", "closing+"): ("locked_closed", ""),
    ("locked_closed", "closing-"): ("locked_closed", ""),
    ("locked_closed", "up"): ("locked_closed", ""),
    ("locked_closed", "down"): ("locked_closed", ""),
    ("locked_closed", "fault"): ("out_of_order", "Log RaiseAlarm"),
    ("locked_closed", "read"): ("locked_closed", ""),
    ("locked_closed", "pass"): ("locked_closed", ""),
    ("locked_closed", "recheck"): ("locked_closed", ""),
    ("locked_closed", "vend"): ("open", "RaiseBarrier Record StartTimer"),
    ("locked_closed", "auto"): ("idle", "Log"),
    ("locked_closed", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("locked_closed", "locked_closed"): ("locked_closed", "Log"),
    ("out_of_order", "arming+"): ("out_of_order", ""),
    ("out_of_order", "arming-"): ("out_of_order", ""),
    ("out_of_order", "safety+"): ("out_of_order", ""),
    ("out_of_order", "safety-"): ("out_of_order", ""),
    ("out_of_order", "closing+"): ("out_of_order", ""),
    ("out_of_order", "closing-"): ("out_of_order", ""),
    ("out_of_order", "up"): ("idle", "ClearAlarm"),
    ("out_of_order", "down"): ("idle", "ClearAlarm"),
    ("out_of_order", "fault"): ("out_of_order", ""),
    ("out_of_order", "read"): ("out_of_order", ""),
    ("out_of_order", "pass"): ("out_of_order", ""),
    ("out_of_order", "recheck"): ("out_of_order", ""),
    ("out_of_order", "vend"): ("open", "RaiseBarrier Record StartTimer"),
    ("out_of_order", "auto"): ("idle", "Log"),
    ("out_of_order", "locked_open"): ("locked_open", "CancelTimer RaiseBarrier Record Log"),
    ("out_of_order", "locked_closed"): ("locked_closed", "LowerBarrier Record Log"),
}


def test_the_table_covers_every_state_and_event() -> None:
    states = {s for s, _ in TRANSITIONS}
    assert len(states) == 10
    assert set(TRANSITIONS) == {(s, e) for s in states for e in EVENTS}


@pytest.mark.parametrize(("state", "event"), sorted(TRANSITIONS))
def test_transition(state: str, event: str) -> None:
    shell = reach(state)
    assert shell.m.state == state
    effects = shell.feed(EVENTS[event])
    assert (shell.m.state, " ".join(kinds(effects))) == TRANSITIONS[state, event]


# --- the effects of the transitions that matter --------------------------------------------


def test_a_permit_holder_is_let_in_and_the_barrier_closes_behind_the_car() -> None:
    shell = reach("identifying")
    the_read = read(PERMIT)
    effects = shell.feed(PlateRead(the_read, LOT))
    decision = shell.m.access.entry(PERMIT, at=T0, free_bays=50)
    assert effects == [
        Remember(the_read, "permit", True), RaiseBarrier("decision"),
        Record(GateOpened("decision", T0), then="opened"), StartTimer("pass", 30.0)]
    assert (shell.m.state, shell.m.commanded) == ("open", "up")
    effects = shell.drive_through()
    at = stamp(2.5)  # the closing loop's trailing edge
    assert effects == [
        KeepFollowerFrames(1),
        NotePassage(), Record(StartSession(decision, at, 1.0), then="passage"),
        CancelTimer("pass"), LowerBarrier("close", "vehicle_passed")]
    assert shell.m.state == "closing"
    assert shell.feed(BarrierMoved("down", False)) == [
        Record(GateClosed("vehicle_passed", at.wall), then="closed"),
        ClearAlarm("lane.tailgating:entry-1", "normal passage")]
    assert (shell.m.state, shell.m.passages, shell.m.cycle) == ("idle", 1, None)


def test_without_feedback_or_a_closing_loop_the_safety_loop_closes_the_barrier() -> None:
    shell = started(machine(closing_loop=False, feedback=False))
    shell.feed(LoopChanged("arming", True))
    shell.feed(PlateRead(read(PERMIT), LOT))
    shell.feed(LoopChanged("safety", True))
    shell.feed(LoopChanged("arming", False))
    effects = shell.feed(LoopChanged("safety", False))
    assert kinds(effects) == ["NotePassage", "Record", "CancelTimer", "LowerBarrier", "Record",
                              "ClearAlarm"]
    assert effects[-2] == Record(GateClosed("vehicle_passed", T0), then="closed")
    assert shell.m.state == "idle"


def test_a_refused_plate_is_reported_and_the_lane_looks_again() -> None:
    shell = reach("identifying")
    effects = shell.feed(PlateRead(read(DENIED), LOT))
    assert effects[1:] == [
        Log("info", "lane.refused", {"lane": "entry-1", "plate": DENIED,
                                     "reason": "deny_listed"}),
        StartTimer("recheck", 3.0),
        Record(Violation("deny_listed", DENIED, {"reason": "stolen"}, T0))]
    assert (shell.m.state, shell.m.refusals) == ("refused", 1)
    shell.recheck = DENIED  # the same car is still there
    assert shell.feed(TimerFired("recheck")) == [Recheck(), StartTimer("recheck", 3.0)]
    shell.recheck = PERMIT  # it backed away; the next one pulled up without a gap
    effects = shell.feed(TimerFired("recheck"))
    assert kinds(effects)[:4] == ["Recheck", "Log", "Remember", "RaiseBarrier"]
    assert shell.m.state == "open"


def test_anti_passback_refuses_a_plate_already_inside() -> None:
    access = make_access()
    shell = started(machine(access=access))
    access.admit(OpenStay("s-1", VISITOR, "visitor", None, "entry-1", stamp(-60)))
    shell.feed(LoopChanged("arming", True))
    effects = shell.feed(PlateRead(read(VISITOR), LOT))
    assert effects[-1] == Record(Violation("anti_passback", VISITOR,
                                           {"mode": "hard", "refused": True}, T0))


def test_a_follower_under_one_opening_is_tailgating_with_its_own_session() -> None:
    shell = reach("passing")
    assert shell.feed(LoopChanged("arming", False)) == []
    assert shell.feed(LoopChanged("arming", True)) == [StartFollowerRead(1)]
    shell.feed(LoopChanged("closing", True))
    shell.feed(LoopChanged("closing", False))  # the first car is through
    shell.feed(LoopChanged("arming", False))
    shell.feed(LoopChanged("closing", True))
    effects = shell.feed(LoopChanged("closing", False), after=1.0)
    at = stamp(1.0)
    violation = Violation("tailgating", FOLLOWER, {"vehiclesUnderOneOpening": 2}, at.wall)
    assert effects[:5] == [
        NotePassage(), ReadFollower(1, PERMIT),
        Log("warning", "lane.tailgating", {"lane": "entry-1", "plate": FOLLOWER}),
        RaiseAlarm(Alarm("lane.tailgating:entry-1", "warning",
                         "2 vehicles passed under one opening at Lane entry",
                         {"plate": FOLLOWER}, component="lane")),
        Record(StartSession(EntryDecision(True, "visitor", FOLLOWER), at, 1.0,
                            {"tailgated": True}, (violation,)), then="passage")]
    assert (shell.m.tailgates, shell.m.passages) == (1, 2)


def test_a_long_vehicle_on_the_safety_loop_is_two_passages() -> None:
    shell = reach("passing")  # the safety loop became occupied at t=0
    shell.feed(LoopChanged("closing", True), after=1.0)  # its front reached the closing loop
    shell.feed(LoopChanged("arming", False), after=1.0)  # the tail left the arming loop
    # ... and 0.5 s later the safety loop: 2.5 m in 0.5 s, 5 m/s * 1.5 s + 1.0 m = 8.5 m.
    effects = shell.feed(LoopChanged("safety", False), after=0.5)
    assert effects == [Log("info", "lane.long_vehicle",
                           {"lane": "entry-1", "length_m": 8.5, "speed_mps": 5.0})]
    effects = shell.feed(LoopChanged("closing", False))
    assert kinds(effects) == ["NotePassage", "Record", "NotePassage", "ReadFollower", "Log",
                              "RaiseAlarm", "Record", "CancelTimer", "LowerBarrier"]
    assert shell.m.passages == 2


def test_a_hidden_followers_plate_is_asked_of_the_kept_frames_not_of_a_read_under_way() -> None:
    shell = reach("passing")  # a car and, less than a metre behind, a tailgater
    shell.feed(LoopChanged("closing", True), after=1.0)
    shell.feed(LoopChanged("arming", False), after=1.0)  # the tailgater's tail
    shell.feed(LoopChanged("safety", False), after=0.5)  # 5 m/s * 1.5 s + 1 m: two vehicles
    effects = shell.feed(LoopChanged("arming", True), after=0.3)  # the next car in the queue
    assert effects == [StartFollowerRead(1)]  # it may slip through too: read it
    effects = shell.feed(LoopChanged("closing", False))
    assert ReadFollower(1, PERMIT, hidden=True) in effects  # the tailgater: the kept frames


def test_a_car_that_pulls_away_from_a_standstill_on_the_safety_loop_is_one_passage() -> None:
    shell = reach("passing")  # its front on the safety loop at t=0, where it stands 20 s
    shell.feed(LoopChanged("closing", True), after=21.0)  # then pulls away
    shell.feed(LoopChanged("arming", False), after=0.4)
    # Its tail's 2.5 m in 0.5 s: 5 m/s * 0.9 s + 1.0 m = 5.5 m. Timed from the safety loop's
    # edge, the standstill would count: 5 m/s * 21.9 s - 2.6 m, over 100 m.
    assert shell.feed(LoopChanged("safety", False), after=0.5) == []
    effects = shell.feed(LoopChanged("closing", False))
    assert kinds(effects).count("NotePassage") == 1
    assert (shell.m.passages, shell.m.tailgates) == (1, 0)


def test_a_front_that_found_the_closing_loop_held_is_timed_over_the_safety_loop() -> None:
    shell = reach("open")
    shell.feed(LoopChanged("closing", True))  # something ahead holds the closing loop
    shell.feed(LoopChanged("safety", True))  # the front: no closing edge will time it
    shell.feed(LoopChanged("arming", False), after=2.0)
    # 2.5 m in 0.5 s: 5 m/s * 2.5 s over the safety loop - 2.6 m = 9.9 m, two vehicles.
    effects = shell.feed(LoopChanged("safety", False), after=0.5)
    assert effects[0] == Log("info", "lane.long_vehicle",
                             {"lane": "entry-1", "length_m": 9.9, "speed_mps": 5.0})


def test_without_a_closing_loop_the_length_is_timed_over_the_safety_loop() -> None:
    shell = started(machine(closing_loop=False))
    shell.feed(LoopChanged("arming", True))
    shell.feed(PlateRead(read(PERMIT), LOT))
    shell.feed(BarrierMoved("up", False))
    shell.feed(LoopChanged("safety", True))
    shell.feed(LoopChanged("arming", False), after=2.0)
    # 2.5 m in 0.5 s: 5 m/s * 2.5 s - 2.6 m = 9.9 m, two vehicles.
    effects = shell.feed(LoopChanged("safety", False), after=0.5)
    assert effects[0] == Log("info", "lane.long_vehicle",
                             {"lane": "entry-1", "length_m": 9.9, "speed_mps": 5.0})
    assert kinds(effects).count("NotePassage") == 2


def test_an_exit_reads_the_stays_payments_before_it_decides() -> None:
    access = make_access()
    stay = OpenStay("s-1", VISITOR, "visitor", None, "entry-1", stamp(-7200))
    access.admit(stay)
    shell = started(machine("exit", access=access))
    shell.feed(LoopChanged("arming", True))
    shell.payments = (PaymentRecord("pay-1", "s-1", FEE, "EUR", "card", "pay_station",
                                    (T0 - timedelta(minutes=5)).isoformat(), None),)
    effects = shell.feed(PlateRead(read(VISITOR), LOT))
    assert effects[:2] == [FetchPayments("s-1"), Remember(read(VISITOR), "paid", True)]
    effects = shell.drive_through()
    assert Record(EndSession(stay, stamp(2.5), "normal", collected=True, with_payments=True),
                  then="passage") in effects


def test_an_unpaid_exit_is_held_and_an_unknown_plate_pays_a_lost_ticket() -> None:
    access = make_access()
    access.admit(OpenStay("s-1", VISITOR, "visitor", None, "entry-1", stamp(-7200)))
    shell = started(machine("exit", access=access))
    shell.feed(LoopChanged("arming", True))
    shell.feed(PlateRead(read(VISITOR), LOT))
    assert shell.m.state == "refused"
    shell.feed(LoopChanged("arming", False))
    shell.feed(LoopChanged("arming", True))
    shell.feed(PlateRead(read("NOENTRY1"), LOT))
    effects = shell.drive_through()
    assert Record(LostTicket("NOENTRY1", stamp(2.5), collected=False),
                  then="passage") in effects


def test_a_manual_vend_at_an_exit_closes_the_session_the_read_found() -> None:
    access = make_access()
    stay = OpenStay("s-1", VISITOR, "visitor", None, "entry-1", stamp(-7200))
    access.admit(stay)
    shell = started(machine("exit", access=access))
    shell.feed(LoopChanged("arming", True))
    shell.feed(PlateRead(read(VISITOR), LOT))  # unpaid: refused
    assert shell.feed(Vend("intercom", "backend:c-7"))[:1] == [RaiseBarrier("command")]
    effects = shell.drive_through()
    assert Record(EndSession(stay, stamp(2.5), "manual_vend", collected=False),
                  then="passage") in effects


def test_a_lowering_the_barrier_refuses_waits_for_the_car() -> None:
    shell = reach("passing")
    shell.refuse_lower = True
    shell.feed(LoopChanged("arming", False))
    shell.feed(LoopChanged("safety", False))
    effects = shell.feed(LoopChanged("closing", False))
    assert effects[-2:] == [
        Log("warning", "lane.lower_refused",
            {"lane": "entry-1", "error": "vehicle under the barrier"}),
        StartTimer("pass", 30.0)]
    assert (shell.m.state, shell.m.lower_refusals) == ("passing", 1)


def test_the_pass_timeout_closes_only_behind_a_car_that_backed_away() -> None:
    shell = reach("open")
    assert shell.feed(TimerFired("pass")) == [StartTimer("pass", 30.0)]  # still waiting
    shell.feed(LoopChanged("arming", False))
    assert shell.feed(TimerFired("pass")) == [
        Log("info", "lane.vehicle_backed_off", {"lane": "entry-1"}),
        CancelTimer("pass"), LowerBarrier("close", "timeout")]


def test_locked_closed_lowers_only_once_the_safety_loop_clears() -> None:
    shell = reach("locked_open")
    shell.feed(LoopChanged("safety", True))
    assert kinds(shell.feed(ModeSet("locked_closed", "cli:bob"))) == ["Log"]
    assert shell.feed(LoopChanged("safety", False)) == [
        LowerBarrier("lock", "lock_released"), Record(GateClosed("lock_released", T0))]


def test_a_barrier_fault_takes_the_lane_out_of_order_until_it_answers() -> None:
    shell = reach("idle")
    assert shell.feed(BarrierMoved("fault", True))[1:] == [RaiseAlarm(Alarm(
        "lane.out_of_order:entry-1", "critical",
        "Lane entry: the barrier does not answer; the lane is out of order",
        {"laneId": "entry-1"}, component="lane"))]
    assert shell.feed(BarrierMoved("down", True)) == []  # still faulted
    assert shell.feed(BarrierMoved("down", False)) == [
        ClearAlarm("lane.out_of_order:entry-1", "barrier answers again")]
    assert shell.m.state == "idle"


# --- failures ----------------------------------------------------------------------------


def test_a_refused_write_while_opening_keeps_the_barrier_up_retries_and_alarms() -> None:
    shell = reach("identifying")
    shell.journal_full = True
    effects = shell.feed(PlateRead(read(PERMIT), LOT))
    journal_alarm = shell.m._journal_alarm("JournalFullError('disk full')")
    assert effects[1:] == [
        RaiseBarrier("decision"), Record(GateOpened("decision", T0), then="opened"),
        Log("error", "lane.record_failed", {"lane": "entry-1", "entry": "GateOpened",
                                            "error": "JournalFullError('disk full')"}),
        RaiseAlarm(journal_alarm), StartTimer("retry", RETRY_S[0]),
        StartTimer("pass", 30.0)]
    assert (shell.m.state, shell.m.commanded) == ("open", "up")
    shell.drive_through()  # the session record fails too; the barrier still closes
    assert shell.m.state == "closing"
    shell.feed(BarrierMoved("down", False))
    assert shell.m.state == "idle"  # type: ignore[comparison-overlap]  # mypy keeps "closing"
    assert [type(u.entry).__name__ for u in shell.m.unwritten] == [
        "GateOpened", "StartSession", "GateClosed"]
    shell.journal_full = False
    effects = shell.feed(TimerFired("retry"))
    # The first record failed; the two after it queued behind it untried, in order.
    assert [(type(e.entry).__name__, e.attempt) for e in effects if isinstance(e, Record)] == [
        ("GateOpened", 2), ("StartSession", 1), ("GateClosed", 1)]
    assert effects[-1] == ClearAlarm("lane.journal:entry-1", "the lane's records are written")
    assert [type(e).__name__ for e in shell.written] == [
        "GateOpened", "StartSession", "GateClosed"]
    assert not shell.m.unwritten


def test_a_record_made_while_an_older_one_waits_is_written_after_it() -> None:
    """The journal is back before the retry timer: the session must not overtake its opening."""
    shell = reach("identifying")
    shell.journal_full = True
    shell.feed(PlateRead(read(PERMIT), LOT))  # GateOpened fails and is kept
    shell.journal_full = False
    effects = shell.drive_through()  # the car passes: StartSession waits behind GateOpened
    assert not [e for e in effects if isinstance(e, Record)]
    assert [type(u.entry).__name__ for u in shell.m.unwritten] == ["GateOpened", "StartSession"]
    shell.feed(TimerFired("retry"))
    assert [type(e).__name__ for e in shell.written] == ["GateOpened", "StartSession"]


# --- properties over random event orders -------------------------------------------------

PLATES = st.sampled_from([None, PERMIT, VISITOR, DENIED, FOLLOWER])
OUTSIDE = st.one_of(
    st.builds(LoopChanged, st.sampled_from(["arming", "safety", "closing"]), st.booleans()),
    st.builds(BarrierMoved, st.sampled_from(["up", "down", "moving", "unknown", "fault"]),
              st.booleans()),
    st.builds(lambda plate: PlateRead(read(plate), LOT), PLATES),
    st.builds(TimerFired, st.sampled_from(["pass", "recheck", "retry"])),
    st.builds(Vend, st.just("intercom"), st.sampled_from(["cli:alice", "backend:c-1"])),
    st.builds(ModeSet, st.sampled_from(["auto", "locked_open", "locked_closed"]),
              st.just("cli:bob")),
)
STEP = st.tuples(OUTSIDE, st.booleans(), st.booleans(), PLATES,
                 st.floats(0.0, 40.0, allow_nan=False))
SETTINGS = settings(max_examples=300, derandomize=True, deadline=None)


class _Kept(deque[Unwritten]):
    """The machine's queue of unwritten records, noting each record as it is kept."""

    def __init__(self, kept: list[Any]) -> None:
        super().__init__()
        self._kept = kept

    def append(self, item: Unwritten) -> None:
        self._kept.append(item.entry)
        super().append(item)


class Watched(Shell):
    """A shell that checks every answer: the safety rule, and what a failed write leaves."""

    def __init__(self, m: LaneMachine) -> None:
        super().__init__(m)
        self.safety = False  # the safety loop as the events said
        self.kept: list[Any] = []  # every record the machine kept, in the order it kept them
        m.unwritten = _Kept(self.kept)

    def feed(self, event: LaneEvent, after: float = 0.0) -> list[Effect]:
        if isinstance(event, LoopChanged) and event.loop == "safety":
            self.safety = event.occupied
        return super().feed(event, after)

    def answer(self, effect: Effect) -> LaneEvent | None:
        if isinstance(effect, LowerBarrier):
            assert not self.safety, "lowered over an occupied safety loop"
        return super().answer(effect)

    def check(self, answer: LaneEvent, before: str, effects: list[Effect]) -> None:
        super().check(answer, before, effects)
        if not isinstance(answer, RecordFailed):
            return
        assert RaiseAlarm(self.m._journal_alarm(answer.error)) in effects
        assert self.m.unwritten or self.lost  # kept for a retry, or given up with an alarm
        if before != "idle" and self.m.commanded == "up":
            assert self.m.state != "idle", "idle with the barrier up"


def run_steps(shell: Watched, steps: list[tuple[Any, bool, bool, str | None, float]]) -> None:
    shell.feed(Started(False, False, False, "down"))
    for event, full, refuse, plate, after in steps:
        shell.journal_full, shell.refuse_lower = full, refuse
        shell.follower = shell.recheck = plate
        shell.feed(event, after)


@SETTINGS
@given(st.sampled_from(["entry", "exit"]), st.booleans(), st.booleans(),
       st.lists(STEP, max_size=60))
def test_no_order_of_events_lowers_the_barrier_over_the_safety_loop(
        direction: str, closing_loop: bool, feedback: bool,
        steps: list[tuple[Any, bool, bool, str | None, float]]) -> None:
    shell = Watched(machine(direction, closing_loop=closing_loop, feedback=feedback))
    run_steps(shell, steps)


@SETTINGS
@given(st.lists(STEP, max_size=60))
def test_every_refused_write_is_written_once_the_journal_takes_writes_again(
        steps: list[tuple[Any, bool, bool, str | None, float]]) -> None:
    shell = Watched(machine())
    run_steps(shell, steps)
    shell.journal_full = False
    for _ in range(len(shell.failed) + 1):
        shell.feed(TimerFired("retry"))
    assert not shell.m.unwritten
    # Kept: each record whose write failed, and each one made while older ones waited.
    assert len(shell.late) + shell.lost == len(shell.kept)
    left = iter(shell.kept)  # written in the order they were made
    assert all(any(entry == e for e in left) for entry in shell.late)
    if not shell.lost:
        assert shell.late == shell.kept


@pytest.mark.parametrize(("actor", "reason", "command_id"), [
    ("backend:cmd-9", "command", "cmd-9"), ("cli:alice", "manual", None)])
def test_a_lock_closed_records_who_locked_it(actor: str, reason: str,
                                             command_id: str | None) -> None:
    """gate.closed with reason `command` must carry the command's id (its schema says so); a
    technician's lock is manual."""
    shell = reach("open")
    shell.feed(ModeSet("locked_closed", actor))
    (closed,) = [e for e in shell.written if isinstance(e, GateClosed)]
    assert (closed.reason, closed.command_id) == (reason, command_id)
