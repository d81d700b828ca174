"""Ticket lanes: an entry that prints a ticket for an unreadable plate, an exit that takes it
back; with fake loops, barrier, camera, printer and scanner, and a real journal."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.config import LaneConfig, PrinterConfig, ScannerConfig, Settings, load_settings
from gateway.controllers.lane import TicketPrinter, TicketScanner
from gateway.controllers.sessions import SessionBook
from gateway.core.access import Access, EntryDecision, OpenStay
from gateway.core.clock import FakeClock
from gateway.core.rights import Permit
from gateway.core.tickets import TicketError, TicketSigner
from gateway.drivers.printer import PaperOut, PaperStatus, PrinterFault
from gateway.journal import Journal
from tests.conftest import EXAMPLE
from tests.controllers.lanes import Lot, Rig, settle, until_idle

KEY = bytes(range(32))
PERMIT = "PERMIT1"


class FakePrinter:
    def __init__(self) -> None:
        self.tickets: list[tuple[list[str], str]] = []
        self.problem: Exception | None = None
        self.status: PaperStatus | None = None
        self.checks = 0
        self.closed = False

    async def check(self) -> PaperStatus | None:
        self.checks += 1
        if self.problem is not None:
            raise self.problem
        return self.status

    async def print_ticket(self, lines: Sequence[str], qr: str) -> PaperStatus | None:
        status = await self.check()
        self.tickets.append((list(lines), qr))
        return status

    def close(self) -> None:
        self.closed = True


class FakeScanner:
    def __init__(self) -> None:
        self.scans: asyncio.Queue[str] = asyncio.Queue()
        self.fail_open: OSError | None = None
        self.opened = 0

    def open(self) -> None:
        if self.fail_open is not None:
            raise self.fail_open
        self.opened += 1

    def close(self) -> None:
        pass

    async def next_scan(self) -> str:
        text = await self.scans.get()
        self.scans.task_done()
        return text

    def scan(self, text: str) -> None:
        self.scans.put_nowait(text)


@pytest.fixture
def settings() -> Settings:
    return load_settings(EXAMPLE, env={})


@pytest.fixture
def access(settings: Settings) -> Access:
    access = Access(settings.lot)
    access.load("permits", [Permit(permitId="p-1", plates=(PERMIT,))])
    return access


@pytest.fixture
def sessions(settings: Settings, journal: Journal, access: Access, clock: FakeClock
             ) -> SessionBook:
    book = SessionBook(settings, journal, access, clock)
    book.tickets = TicketSigner(KEY)
    return book


class TicketRig(Rig):
    """One lane with fakes around it (a printer at an entry, a scanner at an exit), unless
    the test gives its own."""

    def __init__(self, config: LaneConfig, journal: Journal, clock: FakeClock, access: Access,
                 sessions: SessionBook, lot: Lot | None = None, *,
                 printer: TicketPrinter | None = None, scanner: TicketScanner | None = None
                 ) -> None:
        self.printer = FakePrinter()
        self.scanner = FakeScanner()
        super().__init__(config, journal, clock, access, sessions, lot or Lot(),
                         printer=printer or self.printer, scanner=scanner or self.scanner)

    async def scan(self, text: str) -> None:
        """A ticket at the scanner, and the lane's decision on it carried out."""
        self.scanner.scan(text)
        async with asyncio.timeout(5.0):
            await self.scanner.scans.join()  # taken, so posted to the lane
        await until_idle(self.lane)


def lane_config(settings: Settings, lane_id: str, **update: Any) -> LaneConfig:
    config = next(c for c in settings.lanes if c.id == lane_id)
    if config.direction == "entry":
        update.setdefault("printer", PrinterConfig(port="/dev/null", poll_s=3600))
    else:
        update.setdefault("scanner", ScannerConfig(port="/dev/null"))
    return config.model_copy(update=update)


def entry(settings: Settings, journal: Journal, clock: FakeClock, access: Access,
          sessions: SessionBook, **update: Any) -> TicketRig:
    return TicketRig(lane_config(settings, "entry-north", **update), journal, clock, access,
                     sessions)


def exit_(settings: Settings, journal: Journal, clock: FakeClock, access: Access,
          sessions: SessionBook, lot: Lot | None = None) -> TicketRig:
    return TicketRig(lane_config(settings, "exit"), journal, clock, access, sessions, lot)


async def ticket_session(sessions: SessionBook, clock: FakeClock) -> tuple[OpenStay, str]:
    """A car inside on a ticket, as the entry would have let it in."""
    session_id = "0190f1c2-3d4e-7a5b-8c6d-9e0f1a2b3c4d"
    stay = await sessions.open(EntryDecision(True, "visitor", None), lane_id="entry-north",
                               at=clock.stamp(), confidence=None, flags={"ticket": True},
                               session_id=session_id)
    assert sessions.tickets is not None
    return stay, sessions.tickets.issue(session_id)


# --- the entry ---------------------------------------------------------------------------


async def test_an_unreadable_plate_takes_a_ticket_and_its_session_is_the_tickets(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    rig = entry(settings, journal, clock, access, sessions)
    async with rig.running():
        await rig.arrive(None)
        assert len(rig.printer.tickets) == 1
        assert rig.barrier.commands == ["raise"]
        await rig.drive_through()
        assert rig.lane.status()["tickets"] == {"issued": 1, "printer": "ok"}
    lines, qr = rig.printer.tickets[0]
    assert lines[1] == rig.lane.config.name
    (started,) = await rig.events("session.started")
    assert sessions.tickets is not None
    session_id = sessions.tickets.verify(qr)
    assert started["sessionId"] == session_id
    assert {"type": "ticket", "identifier": session_id} in started["identifiedCredentials"]
    assert sessions.by_ticket(qr) is not None


async def test_without_tickets_an_unreadable_plate_still_goes_to_the_intercom(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    rig = entry(settings, journal, clock, access, sessions, ticket="off")
    async with rig.running():
        await rig.arrive(None)
        assert rig.printer.tickets == []
        assert rig.lane.state == "refused"
        assert rig.barrier.commands == []


async def test_in_always_mode_visitors_take_tickets_and_permit_holders_do_not(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    rig = entry(settings, journal, clock, access, sessions, ticket="always")
    async with rig.running():
        await rig.arrive("VIS1234")
        await rig.drive_through()
        await rig.arrive(PERMIT)
        await rig.drive_through()
    assert len(rig.printer.tickets) == 1
    visitor, permit = await rig.events("session.started")
    assert visitor["identifiedVehicle"]["plate"] == "VIS1234"
    assert {c["type"] for c in visitor["identifiedCredentials"]} == {"licensePlate", "ticket"}
    assert {c["type"] for c in permit["identifiedCredentials"]} == {"licensePlate"}


async def test_a_full_lot_gives_no_ticket(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    rig = TicketRig(lane_config(settings, "entry-north"), journal, clock, access, sessions,
                    Lot(free=0))
    async with rig.running():
        await rig.arrive(None)
        assert rig.printer.tickets == []
        assert rig.lane.state == "refused"


@pytest.mark.parametrize(("error", "alarm"), [
    (PaperOut("the paper roll is empty"), "printer.paper_out:entry-north"),
    (PrinterFault("no answer"), "printer.fault:entry-north"),
])
async def test_a_printer_that_cannot_print_sends_ticket_cars_to_the_intercom_until_it_can(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook, error: Exception, alarm: str) -> None:
    rig = entry(settings, journal, clock, access, sessions)
    async with rig.running():
        rig.printer.problem = error
        await rig.arrive(None)
        assert rig.lane.state == "refused"
        assert rig.barrier.commands == []
        (raised,) = [a for a in journal.active_alarms() if a.alarm_id == alarm]
        assert raised.severity == "critical"
        assert rig.lane.status()["tickets"]["printer"] == alarm.split(".")[1].split(":")[0]
        checks = rig.printer.checks
        rig.arming.set(False)  # it backs away; the next ticket car is not even tried
        await settle()
        await rig.arrive(None)
        assert rig.lane.state == "refused"
        assert rig.printer.checks == checks
        assert await rig.events("session.started") == []
        rig.printer.problem = None  # a new roll: the poll sees it, the alarm clears
        rig.lane.post("printer", (None, ""))
        await settle()
        assert alarm not in {a.alarm_id for a in journal.active_alarms()}
        rig.lane.post("timeout", "recheck")  # the waiting car gets its ticket now
        await settle()
        assert len(rig.printer.tickets) == 1
        assert rig.barrier.commands == ["raise"]


async def test_the_printer_is_polled_and_its_alarm_raised_before_a_car_needs_it(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    rig = entry(settings, journal, clock, access, sessions)
    rig.printer.problem = PaperOut("empty")
    async with rig.running():
        assert rig.printer.checks >= 1
        assert "printer.paper_out:entry-north" in {a.alarm_id for a in journal.active_alarms()}
    assert rig.printer.closed


# --- the exit ----------------------------------------------------------------------------


async def test_an_unpaid_ticket_is_refused_then_paid_and_let_out(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    stay, qr = await ticket_session(sessions, clock)
    clock.advance(3 * 3600)
    rig = exit_(settings, journal, clock, access, sessions)
    async with rig.running():
        await rig.arrive(None)  # no plate to read: the driver scans the ticket
        assert rig.lane.state == "refused"
        await rig.scan(qr)
        assert rig.lane.state == "refused"  # unpaid
        assert rig.barrier.commands == []
        fee = sessions.fee_at(stay, clock.now())
        assert fee > 0
        await sessions.record_payment(payment_id="pay-1", session_id=stay.session_id,
                                      amount_minor=fee, currency="EUR", method="cash",
                                      source="pay_station")
        await rig.scan(qr)
        assert rig.barrier.commands == ["raise"]
        await rig.drive_through()
    (ended,) = await rig.events("session.ended")
    assert ended["sessionId"] == stay.session_id
    assert ended["exitReason"] == "normal"
    assert stay.session_id not in access.inside
    assert sessions.by_ticket(qr) is None


async def test_a_short_stay_on_a_ticket_leaves_free(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    _, qr = await ticket_session(sessions, clock)
    clock.advance(5 * 60)  # within the tariff's grace
    rig = exit_(settings, journal, clock, access, sessions)
    async with rig.running():
        await rig.arrive(None)
        await rig.scan(qr)
        assert rig.barrier.commands == ["raise"]


async def test_a_ticket_used_twice_is_refused_and_audited(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    stay, qr = await ticket_session(sessions, clock)
    rig = exit_(settings, journal, clock, access, sessions)
    async with rig.running():
        await rig.arrive(None)
        await rig.scan(qr)
        await rig.drive_through()
        await rig.arrive(None)  # another car, the same ticket
        await rig.scan(qr)
        assert rig.lane.state == "refused"
        assert rig.barrier.commands == ["raise", "lower"]
        assert rig.lane.status()["tickets"] == {"invalid": 0, "refused": 1}
    with contextlib.closing(sqlite3.connect(journal.path)) as db:
        audit = db.execute("SELECT actor, action, subject FROM audit").fetchall()
    assert audit == [("lane:exit", "ticket.refused", stay.session_id)]
    assert len(await rig.events("session.ended")) == 1


async def test_a_forged_ticket_is_refused_and_counted(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    stay, _ = await ticket_session(sessions, clock)
    forged = TicketSigner(bytes(32)).issue(stay.session_id)
    rig = exit_(settings, journal, clock, access, sessions)
    async with rig.running():
        await rig.arrive(None)
        await rig.scan(forged)
        await rig.scan("just some barcode")
        assert rig.lane.state == "refused"
        assert rig.barrier.commands == []
        assert rig.lane.status()["tickets"]["invalid"] == 2
    assert stay.session_id in access.inside
    with pytest.raises(TicketError):
        sessions.by_ticket(forged)


async def test_a_scan_with_no_car_at_the_exit_opens_nothing(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    _, qr = await ticket_session(sessions, clock)
    rig = exit_(settings, journal, clock, access, sessions)
    async with rig.running():
        await rig.scan(qr)
        assert rig.barrier.commands == []
        assert rig.lane.state == "idle"


async def test_a_lost_ticket_with_a_plate_read_keeps_the_lost_ticket_fee(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    """A car whose session the exit cannot find (no ticket, a plate never recorded) leaves
    through the existing lost-ticket path."""
    rig = exit_(settings, journal, clock, access, sessions)
    async with rig.running():
        await rig.arrive("NOENTRY1")
        await rig.drive_through()
    (ended,) = await rig.events("session.ended")
    assert ended["exitReason"] == "lost_ticket"
    assert ended["segments"][0]["amount"]["amountMinor"] == settings.tariffs[
        "standard"].lost_ticket_minor


async def test_a_failed_scanner_port_raises_an_alarm(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    rig = exit_(settings, journal, clock, access, sessions)
    rig.scanner.fail_open = OSError("could not open port /dev/ttyUSB2")
    async with rig.running():
        assert "scanner.down:exit" in {a.alarm_id for a in journal.active_alarms()}


@pytest.mark.parametrize("lookup_s", [0.0, 0.3])
async def test_an_entry_then_the_exit_one_session_the_right_fee(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook, monkeypatch: pytest.MonkeyPatch, lookup_s: float) -> None:
    """`lookup_s`: the journal's payments answer that late, as a busy machine's did on CI (the
    test drove the car through before the exit had decided, until the rig waited for it)."""
    payments = journal.payments

    async def slow_payments(session_id: str) -> list[Any]:
        await asyncio.sleep(lookup_s)
        return await payments(session_id)

    monkeypatch.setattr(journal, "payments", slow_payments)
    entry_rig = entry(settings, journal, clock, access, sessions)
    exit_rig = exit_(settings, journal, clock, access, sessions)
    async with entry_rig.running(), exit_rig.running():
        await entry_rig.arrive(None)
        await entry_rig.drive_through()
        (_, qr), = entry_rig.printer.tickets
        clock.advance(2 * 3600)
        stay = sessions.by_ticket(qr)
        assert stay is not None
        fee = sessions.fee_at(stay, clock.now())
        await sessions.record_payment(payment_id="pay-2", session_id=stay.session_id,
                                      amount_minor=fee, currency="EUR", method="card",
                                      source="pay_station")
        clock.advance(5 * 60)  # the walk back to the car, within the payment grace
        await exit_rig.arrive(None)
        await exit_rig.scan(qr)
        await exit_rig.drive_through()
        at_exit = sessions.fee_at(stay, clock.now())  # the tariff's fee for the whole stay
    (started,) = await entry_rig.events("session.started")
    (ended,) = await exit_rig.events("session.ended")
    assert started["sessionId"] == ended["sessionId"] == stay.session_id
    assert ended["segments"][0]["amount"]["amountMinor"] == at_exit
    assert {"type": "payment", "amount": {"amountMinor": fee, "currency": "EUR"},
            "reference": "pay-2"} in ended["financialTransactions"]
    assert access.inside == {}


def test_a_ticket_printer_needs_the_lots_key(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access) -> None:
    sessions = SessionBook(settings, journal, access, clock)
    with pytest.raises(ValueError, match="ticket key"):
        entry(settings, journal, clock, access, sessions)


async def test_a_roll_near_its_end_is_logged_once(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook) -> None:
    rig = entry(settings, journal, clock, access, sessions)
    low = PaperStatus(near_end=True)
    rig.printer.status = low
    with capture_logs() as logs:
        async with rig.running():
            await rig.arrive(None)
            await rig.drive_through()
            await rig.arrive(None)
    assert len(rig.printer.tickets) == 2  # it still prints
    assert [e["event"] for e in logs].count("lane.printer_paper_low") == 1


async def test_the_gateway_makes_the_ticket_key_where_a_lane_prints(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        tmp_path: Path) -> None:
    lanes = tuple(lane_config(settings, c.id) if c.id == "entry-north" else c
                  for c in settings.lanes)
    key_file = tmp_path / "keys" / "ticket.key"
    with_printer = settings.model_copy(update={
        "lanes": lanes, "journal": settings.journal.model_copy(
            update={"ticket_key_file": key_file})})
    gateway = Gateway(with_printer, clock=clock, sync=False, control=False)
    gateway._sessions = SessionBook(with_printer, journal, access, clock)
    await gateway._load_ticket_key()
    assert gateway.sessions.tickets is not None
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() not in repr(gateway.sessions.tickets)
    assert set(gateway._ticket_devices(lanes[0])) == {"printer"}
    without = Gateway(settings, clock=clock, sync=False, control=False)
    without._sessions = SessionBook(settings, journal, access, clock)
    await without._load_ticket_key()
    assert without.sessions.tickets is None  # no lane uses tickets: no key is made
