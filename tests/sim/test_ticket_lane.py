"""A ticket lane pair with the real printer and scanner drivers on the simulator's devices,
over real ptys: cars with unreadable plates take tickets, pay, and leave on them; the roll runs
out and the alarm follows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from parking_sim.tickets import SimPrinter, SimScanner

from gateway.config import PrinterConfig, ScannerConfig, Settings, load_settings
from gateway.controllers.sessions import SessionBook
from gateway.core.access import Access
from gateway.core.clock import FakeClock
from gateway.core.tickets import TicketSigner
from gateway.drivers.printer import EscPosPrinter
from gateway.drivers.scanner import BarcodeScanner
from gateway.journal import Journal
from tests.conftest import EXAMPLE
from tests.controllers.test_lane_tickets import TicketRig, lane_config


@pytest.fixture
def settings() -> Settings:
    return load_settings(EXAMPLE, env={})


@pytest.fixture
def access(settings: Settings) -> Access:
    return Access(settings.lot)


@pytest.fixture
def sessions(settings: Settings, journal: Journal, access: Access, clock: FakeClock
             ) -> SessionBook:
    book = SessionBook(settings, journal, access, clock)
    book.tickets = TicketSigner(bytes(range(32)))
    return book


@pytest.fixture
async def devices() -> AsyncIterator[tuple[SimPrinter, SimScanner]]:
    printer, scanner = SimPrinter(paper=2), SimScanner()
    await printer.start()
    await scanner.start()
    yield printer, scanner
    await printer.close()
    await scanner.close()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_ticket_cars_enter_pay_and_leave_with_one_session_each(
        settings: Settings, journal: Journal, clock: FakeClock, access: Access,
        sessions: SessionBook, devices: tuple[SimPrinter, SimScanner]) -> None:
    sim_printer, sim_scanner = devices
    printer = EscPosPrinter(PrinterConfig(port=sim_printer.port, timeout_ms=300, poll_s=1))
    scanner = BarcodeScanner(ScannerConfig(port=sim_scanner.port))
    entry = TicketRig(lane_config(settings, "entry-north", printer=PrinterConfig(
        port=sim_printer.port, poll_s=1)), journal, clock, access, sessions, printer=printer)
    exit_ = TicketRig(lane_config(settings, "exit"), journal, clock, access, sessions,
                      scanner=scanner)
    alarms = lambda: {a.alarm_id for a in journal.active_alarms()}  # noqa: E731
    async with entry.running(), exit_.running():
        for n in (1, 2):  # two cars, no plate the camera can read
            await entry.arrive(None)
            await until(lambda n=n: len(sim_printer.tickets) == n)  # type: ignore[misc]
            await until(lambda: entry.barrier.position == "up")
            await entry.drive_through()
        await entry.arrive(None)  # the roll is empty: the third goes to the intercom
        await until(lambda: entry.lane.state == "refused")
        assert "printer.paper_out:entry-north" in alarms()
        assert len(sim_printer.tickets) == 2

        clock.advance(2 * 3600)
        paid_qr, unpaid_qr = (t.qr for t in sim_printer.tickets)
        assert paid_qr is not None
        assert unpaid_qr is not None
        stay = sessions.by_ticket(paid_qr)
        assert stay is not None
        fee = sessions.fee_at(stay, clock.now())
        await sessions.record_payment(payment_id="ps-1", session_id=stay.session_id,
                                      amount_minor=fee, currency="EUR", method="cash",
                                      source="pay_station")
        await exit_.arrive(None)
        sim_scanner.scan(unpaid_qr)  # not paid: refused, the fee goes to the log
        await until(lambda: exit_.lane.recent[-1].decision == "unpaid")
        assert exit_.barrier.commands == []
        sim_scanner.scan(paid_qr)
        await until(lambda: exit_.barrier.position == "up")
        await exit_.drive_through()

        sim_printer.paper = 100  # a new roll: the next poll clears the alarm
        await until(lambda: "printer.paper_out:entry-north" not in alarms())

    started = await entry.events("session.started")
    ended = await exit_.events("session.ended")
    assert len(started) == 2
    assert [e["sessionId"] for e in ended] == [stay.session_id]
    assert ended[0]["exitReason"] == "normal"
    assert len(access.inside) == 1  # the unpaid car is still inside
