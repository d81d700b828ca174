"""The ESC/POS printer driver against the simulator's printer, over a real pty."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from parking_sim.tickets import NEAR_END_AT, SimPrinter

from gateway.config import PrinterConfig
from gateway.drivers.printer import (
    EscPosPrinter,
    PaperOut,
    PrinterFault,
    PrinterNoAnswer,
    qr_code,
    status_ok,
    text_line,
    ticket,
)

QR = "T1.0190f1c2-3d4e-7a5b-8c6d-9e0f1a2b3c4d.ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.fixture
async def sim() -> AsyncIterator[SimPrinter]:
    printer = SimPrinter(paper=100)
    await printer.start()
    yield printer
    await printer.close()


@pytest.fixture
async def driver(sim: SimPrinter) -> AsyncIterator[EscPosPrinter]:
    printer = EscPosPrinter(PrinterConfig(port=sim.port, timeout_ms=200))
    yield printer
    printer.close()


async def until(condition: object, timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not callable(condition) or not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_ticket_comes_out_with_its_lines_and_qr_code(sim: SimPrinter,
                                                            driver: EscPosPrinter) -> None:
    paper = await driver.print_ticket(["Parking ticket", "Entry North", "No. 9e0f1a2b3c4d"], QR)
    assert not paper.near_end
    await until(lambda: len(sim.tickets) == 1)
    printed = sim.tickets[0]
    assert printed.qr == QR
    assert printed.lines[:3] == ["Parking ticket", "Entry North", "No. 9e0f1a2b3c4d"]
    assert sim.status_requests == 2  # paper sensor and offline cause, before the ticket
    assert sim.paper == 99


async def test_an_empty_roll_is_paper_out_and_nothing_is_sent(sim: SimPrinter,
                                                             driver: EscPosPrinter) -> None:
    sim.paper = 0
    with pytest.raises(PaperOut):
        await driver.print_ticket(["x"], QR)
    sim.paper = 10
    await driver.print_ticket(["x"], QR)  # a new roll: it prints again, no reopening needed
    await until(lambda: len(sim.tickets) == 1)


async def test_a_roll_near_its_end_still_prints_and_says_so(sim: SimPrinter,
                                                           driver: EscPosPrinter) -> None:
    sim.paper = NEAR_END_AT
    assert (await driver.check()).near_end


async def test_an_open_cover_or_an_error_is_a_fault(sim: SimPrinter,
                                                   driver: EscPosPrinter) -> None:
    sim.cover_open = True
    with pytest.raises(PrinterFault, match="cover"):
        await driver.check()
    sim.cover_open, sim.error = False, True
    with pytest.raises(PrinterFault, match="error"):
        await driver.check()


async def test_a_printer_that_does_not_answer_is_a_fault_after_the_timeout(
        sim: SimPrinter, driver: EscPosPrinter) -> None:
    sim.silent = True
    started = asyncio.get_running_loop().time()
    with pytest.raises(PrinterNoAnswer):
        await driver.print_ticket(["x"], QR)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert sim.tickets == []
    sim.silent = False
    await driver.check()  # answers again: the late answer did not confuse the next one


async def test_a_port_that_cannot_be_opened_is_a_fault(tmp_path: os.PathLike[str]) -> None:
    printer = EscPosPrinter(PrinterConfig(port=f"{tmp_path}/no-such-tty", timeout_ms=100))
    with pytest.raises(PrinterFault, match="cannot open"):
        await printer.check()


async def test_a_status_request_waits_for_a_ticket_being_printed(sim: SimPrinter,
                                                                 driver: EscPosPrinter) -> None:
    """The poll and a ticket share one line: their exchanges never interleave."""
    results = await asyncio.gather(driver.print_ticket(["a"], QR), driver.check(),
                                   driver.print_ticket(["b"], QR))
    assert len(results) == 3
    await until(lambda: len(sim.tickets) == 2)
    assert [t.lines[0] for t in sim.tickets] == ["a", "b"]


def test_the_commands_are_esc_pos() -> None:
    code = qr_code("HELLO", 6)
    assert code.startswith(b"\x1d(k\x04\x00\x31\x41\x32\x00")  # model 2
    assert b"\x1d(k\x08\x00\x31\x50\x30HELLO" in code  # store: 5 bytes + 3
    assert code.endswith(b"\x1d(k\x03\x00\x31\x51\x30")  # print
    whole = ticket(["A"], "HELLO")
    assert whole.startswith(b"\x1b@")
    assert whole.endswith(b"\x1dVB\x00")  # partial cut
    assert text_line("a\x1bb" + "x" * 80) == b"a b" + b"x" * 39 + b"\n"  # no control bytes
    with pytest.raises(ValueError, match="QR payload"):
        qr_code("", 6)
    assert status_ok(0x12)
    assert not status_ok(0xFF)
