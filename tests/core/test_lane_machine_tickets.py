"""The lane machine's ticket additions, with no I/O: printing at an entry, the printer's alarm,
scans at an exit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.access import EntryDecision, OpenStay
from gateway.core.lane_machine import (
    ClearAlarm,
    FetchPayments,
    LaneEvent,
    LaneMachine,
    LoopChanged,
    PlateRead,
    PrinterChecked,
    PrintTicket,
    RaiseAlarm,
    RaiseBarrier,
    Record,
    Started,
    StartSession,
    TicketNotPrinted,
    TicketPrinted,
    TicketRefused,
    TicketScanned,
)
from tests.core.test_lane_machine import FEE, LOT, Shell, make_access, read, setup, stamp

SESSION = "0190f1c2-3d4e-7a5b-8c6d-9e0f1a2b3c4d"


def ticket_machine(direction: Any = "entry", tickets: Any = "unreadable") -> LaneMachine:
    lane = replace(setup(direction), tickets=tickets if direction == "entry" else "off",
                   scanner=direction == "exit")
    return LaneMachine(lane, access=make_access(), price=lambda stay, at: FEE, mode="auto")


class TicketShell(Shell):
    """Prints every ticket asked for, under SESSION, unless `printer` names a problem."""

    printer: Any = None

    def answer(self, effect: Any) -> LaneEvent | None:
        if isinstance(effect, PrintTicket):
            if self.printer is not None:
                return TicketNotPrinted(self.printer, "test")
            return TicketPrinted(SESSION)
        return super().answer(effect)


def started(m: LaneMachine) -> TicketShell:
    shell = TicketShell(m)
    shell.feed(Started(False, False, False, "down"))
    return shell


def test_an_unreadable_plate_gets_a_ticket_then_the_barrier_and_a_session_under_its_id() -> None:
    shell = started(ticket_machine())
    shell.feed(LoopChanged("arming", True))
    effects = shell.feed(PlateRead(read(None), LOT))
    assert [type(e) for e in effects if isinstance(e, PrintTicket | RaiseBarrier)] == [
        PrintTicket, RaiseBarrier]
    shell.drive_through()
    (start,) = [e for e in shell.written if isinstance(e, StartSession)]
    assert start.session_id == SESSION
    assert start.flags == {"ticket": True}
    assert start.decision.plate is None
    assert shell.m.tickets_issued == 1


def test_a_lane_without_tickets_prints_nothing() -> None:
    shell = started(ticket_machine(tickets="off"))
    shell.feed(LoopChanged("arming", True))
    effects = shell.feed(PlateRead(read(None), LOT))
    assert not any(isinstance(e, PrintTicket | RaiseBarrier) for e in effects)
    assert shell.m.state == "refused"


def test_the_printer_alarm_is_raised_once_and_cleared_once() -> None:
    shell = started(ticket_machine())
    first = shell.feed(PrinterChecked("paper_out", "empty"))
    again = shell.feed(PrinterChecked("paper_out", "empty"))
    changed = shell.feed(PrinterChecked("fault", "no answer"))
    cleared = shell.feed(PrinterChecked(None))
    assert [e.alarm.alarm_id for e in first if isinstance(e, RaiseAlarm)] == [
        "printer.paper_out:entry-1"]
    assert not any(isinstance(e, RaiseAlarm | ClearAlarm) for e in again)
    assert [type(e).__name__ for e in changed if isinstance(e, RaiseAlarm | ClearAlarm)] == [
        "ClearAlarm", "RaiseAlarm"]
    assert [e.alarm_id for e in cleared if isinstance(e, ClearAlarm)] == ["printer.fault:entry-1"]


def test_a_ticket_nobody_waits_for_opens_nothing() -> None:
    shell = started(ticket_machine())
    assert shell.feed(TicketPrinted(SESSION)) == []
    assert shell.m.state == "idle"


def test_a_scan_at_a_lane_without_a_scanner_is_ignored() -> None:
    m = LaneMachine(setup("exit"), access=make_access(), price=lambda stay, at: FEE,
                    mode="auto")
    shell = started(m)
    shell.feed(LoopChanged("arming", True))
    effects = shell.feed(TicketScanned(SESSION, LOT))
    assert not any(isinstance(e, FetchPayments | RaiseBarrier) for e in effects)


def test_a_scanned_ticket_of_a_stay_inside_fetches_its_payments_and_opens_when_paid() -> None:
    m = ticket_machine("exit")
    m.access.admit(OpenStay(SESSION, None, "visitor", None, "entry-1", stamp(-3600)))
    shell = started(m)
    shell.feed(LoopChanged("arming", True))
    shell.feed(PlateRead(read(None), LOT))
    assert m.state == "refused"
    shell.payments = ()
    effects = shell.feed(TicketScanned(SESSION, LOT))
    assert FetchPayments(SESSION) in effects
    assert m.state == "refused"  # unpaid, FEE owed


def test_a_ticket_whose_session_is_closed_is_refused_and_recorded_for_audit() -> None:
    shell = started(ticket_machine("exit"))
    shell.feed(LoopChanged("arming", True))
    effects = shell.feed(TicketScanned(SESSION, LOT))
    assert [e.entry for e in effects if isinstance(e, Record)] == [
        TicketRefused(SESSION, stamp(shell.t).wall)]
    assert shell.m.tickets_refused == 1


ENTRY_EVENTS = st.sampled_from([
    LoopChanged("arming", True), LoopChanged("arming", False), LoopChanged("safety", True),
    LoopChanged("safety", False), PlateRead(read(None), LOT), PlateRead(read("VIS1234"), LOT),
    TicketPrinted(SESSION), PrinterChecked("paper_out", "x"), PrinterChecked(None),
])


@given(st.lists(ENTRY_EVENTS, max_size=40), st.sampled_from([None, "paper_out", "fault"]))
def test_a_ticket_car_never_opens_the_barrier_without_its_ticket(
        events: list[LaneEvent], printer: Any) -> None:
    """With the printer down, every opening is for a plate (a visitor read), never a ticket."""
    shell = started(ticket_machine())
    shell.printer = printer
    for event in events:
        shell.feed(event, after=0.1)
    for entry in shell.written:
        if isinstance(entry, StartSession) and entry.session_id is not None:
            assert printer is None
            assert entry.decision == EntryDecision(True, "visitor", None)
