"""The daemon's free-space signs: the example lot's entrance and level signs (simulated ASCII
signs on a pty) and its EV sign (a Modbus slave on a pty) show their counts, follow a bay
change within 500 ms, take a technician's mode through the control socket and the CLI
(audited, kept across a restart), and appear in `status`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from click.testing import CliRunner
from gpiozero.pins.mock import MockFactory
from parking_sim.camera import GroundTruthReader
from parking_sim.signs import SignLine

from gateway.app import Gateway, HardwareOverrides
from gateway.cli.main import cli
from gateway.config import Settings
from gateway.core.clock import SystemClock
from gateway.drivers import BayReading
from gateway.runtime.control import ControlClient, RemoteError
from gateway.runtime.notify import Notifier
from tests.controllers.lanes import FakeCamera
from tests.drivers.test_signs import ModbusSlave
from tests.e2e.test_app import settings  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow  # the whole daemon on simulated hardware


@pytest.fixture
def lot(settings: Settings) -> Settings:  # noqa: F811
    # No detector bus: the bays keep what the test tells them, no poller overrides it.
    return settings.model_copy(update={"bus": None})


@contextlib.asynccontextmanager
async def running(lot: Settings) -> AsyncIterator[tuple[Gateway, SignLine, ModbusSlave]]:
    line = SignLine(addresses=[1, 2])
    port = await line.start()
    slave = ModbusSlave(10)
    clock = SystemClock()
    gateway = Gateway(
        lot, clock=clock, plates=GroundTruthReader(), sync=False, notifier=Notifier(None),
        hardware=HardwareOverrides(
            pin_factory=MockFactory(),
            cameras={lane.id: FakeCamera(lane.id, clock) for lane in lot.lanes},
            sign_ports={"entrance": port, "level-1": port, "ev-bays": slave.port}))
    task = asyncio.create_task(gateway.run())
    try:
        await asyncio.wait_for(gateway.started.wait(), 20)
        yield gateway, line, slave
    finally:
        gateway.stop()
        await asyncio.wait_for(task, 30)
        await line.close()
        slave.close()


async def until(check: Callable[[], bool], timeout_s: float = 5.0) -> float:
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout_s, "condition not met in time"
        await asyncio.sleep(0.005)
    return time.monotonic() - began


def free(gateway: Gateway, key: str | None = None, name: str | None = None) -> int:
    current = gateway.availability.current
    assert current is not None
    document = current.document()
    counts = document["lot"] if key is None else document[key][name]
    return int(counts["free"])


def expected(count: int, offset: int = 0) -> str:
    return str(count - offset) if count - offset > 0 else "FULL"


def cli_run(*args: str) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


async def test_the_signs_show_their_counts_and_follow_a_change(lot: Settings) -> None:
    async with running(lot) as (gateway, line, slave):
        await until(lambda: gateway.availability.current is not None)
        await until(lambda: line.text(1) == expected(free(gateway), 2)
                    and line.text(2) == expected(free(gateway, "floors", "1"))
                    and slave.registers.get(1) == 1)  # FULL: every EV bay reads unknown
        assert free(gateway, "bayTypes", "ev") == 0
        assert slave.registers[0] == 0xFFFF
        assert line.shown[1].brightness == 80
        before = free(gateway, "floors", "1")
        gateway.occupancy.on_reading(BayReading("B-01", "free", "modbus:11",
                                                gateway.clock.stamp()))
        took = await until(lambda: line.text(2) == expected(before + 1))
        assert took < 0.5
        await until(lambda: line.text(1) == expected(free(gateway), 2))
        gateway.occupancy.on_reading(BayReading("A-03", "free", "modbus:1",
                                                gateway.clock.stamp()))
        await until(lambda: (slave.registers[0], slave.registers[1]) == (1, 0))  # one free

        status = await ControlClient(lot.control.socket_path).call("status")
        assert [(s["signId"], s["answering"]) for s in status["signs"]] == [
            ("entrance", True), ("level-1", True), ("ev-bays", True)]


async def test_a_technicians_mode_is_audited_and_kept_across_a_restart(lot: Settings) -> None:
    async with running(lot) as (gateway, line, _):
        await until(lambda: line.text(1) is not None)
        client = ControlClient(lot.control.socket_path)
        row = await client.call("sign.mode", {"sign": "entrance", "mode": "test", "offset": 3})
        assert (row["mode"], row["offset"], row["wanted"]) == ("test", 3, "8888")
        await until(lambda: line.text(1) == "8888" and line.shown[1].brightness == 100)
        with pytest.raises(RemoteError) as refused:
            await client.call("sign.mode", {"sign": "exit-sign", "mode": "full"})
        assert refused.value.code == "refused"
        assert "entrance" in str(refused.value)
        with pytest.raises(RemoteError) as invalid:
            await client.call("sign.mode", {"sign": "entrance", "mode": "sideways"})
        assert invalid.value.code == "invalid_params"
    con = sqlite3.connect(lot.journal.path)
    audited = con.execute("SELECT action, subject, details FROM audit WHERE action = 'sign.mode'"
                          ).fetchall()
    con.close()
    assert [(a, s, json.loads(d)) for a, s, d in audited] == [
        ("sign.mode", "entrance", {"mode": "test", "offset": 3})]
    async with running(lot) as (gateway, line, _):
        assert gateway.sign_board is not None
        state = gateway.sign_board.state("entrance")
        assert (state.mode, state.offset) == ("test", 3)
        await until(lambda: line.text(1) == "8888")


async def test_sign_list_and_sign_mode_from_the_cli(lot: Settings) -> None:
    socket = str(lot.control.socket_path)
    async with running(lot) as (_gateway, line, _):
        await until(lambda: line.text(2) is not None and line.text(1) is not None)
        listed = await asyncio.to_thread(cli_run, "sign", "list", "--socket", socket)
        assert listed.exit_code == 0, listed.output
        assert "entrance" in listed.output
        assert "floor:1" in listed.output
        rows = json.loads((await asyncio.to_thread(
            cli_run, "sign", "list", "--socket", socket, "--json")).output)
        assert [r["signId"] for r in rows] == ["entrance", "level-1", "ev-bays"]
        done = await asyncio.to_thread(cli_run, "sign", "mode", "level-1", "closed",
                                       "--socket", socket)
        assert done.exit_code == 0, done.output
        await until(lambda: line.text(2) == "CLOSED")
        unknown = await asyncio.to_thread(cli_run, "sign", "mode", "nope", "full",
                                          "--socket", socket)
        assert unknown.exit_code == 1
        shown = await asyncio.to_thread(cli_run, "status", "--socket", socket)
        assert "sign level-1" in shown.output
