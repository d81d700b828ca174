"""The Modbus master against the simulated RS-485 bus: real code on both ends of a real pty.

In the style of bellows' ASH tests: the gateway's poller and the firmware's own slave code talk
over a pty through a link that can deliver a byte at a time, drop and corrupt frames and go
silent, with a fixed seed. The simulator counts what it injected; the gateway must count the
same, report no false bay change, and report a silent node's bay unknown (never free).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from parking_sim.bus import LinkFaults, LinkStats, SensorBus

from gateway.config import BusConfig, load_settings
from gateway.core.clock import FakeClock
from gateway.drivers import BayReading
from gateway.drivers.modbus import (
    Counters,
    ExceptionReply,
    ModbusBus,
    ReplyTimeout,
    RtuLink,
    bays_on_bus,
)
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow  # the nodes' firmware on a pty bus, hostile links (about 25 s)

UNITS = (1, 2, 3, 4, 5, 6)
BAUD = 115200
FAST = {"dwell_on_ms": 300, "dwell_off_ms": 300}  # node dwell times short enough for a test


@dataclass
class Lot:
    sim: SensorBus
    bus: ModbusBus
    readings: list[BayReading] = field(default_factory=list)

    def of(self, unit: int, since: int = 0) -> list[str]:
        return [r.state for r in self.readings[since:] if r.bay_id == f"bay-{unit}"]

    def state(self, unit: int) -> str:
        return self.bus.nodes[unit].state

    async def poll_until(self, done: Callable[[], bool], max_cycles: int = 60) -> None:
        for _ in range(max_cycles):
            if done():
                return
            await self.bus.poll_once()
        raise AssertionError(f"not reached in {max_cycles} cycles: {self.bus.health()}")


def _config(port: str, **kw: object) -> BusConfig:
    # A reply takes ~4 ms at 115200 baud; 100 ms leaves room for a loaded CI machine.
    values: dict[str, object] = {"port": port, "baudrate": BAUD, "timeout_ms": 100,
                                 "retries": 1, "fault_after_failures": 3, "poll_interval_s": 0}
    values.update(kw)
    return BusConfig.model_validate(values)


@pytest.fixture
async def lot() -> AsyncIterator[Lot]:
    sim = SensorBus(units=UNITS, seed=11, baudrate=BAUD, node_settings=FAST)
    await sim.start()
    readings: list[BayReading] = []
    bus = ModbusBus(_config(sim.port), {u: f"bay-{u}" for u in UNITS}, FakeClock(),
                    readings.append)
    bus.link.open()
    lot = Lot(sim, bus, readings)
    try:
        yield lot
    finally:
        bus.link.close()
        await sim.close()


async def test_bays_follow_cars_parking_and_leaving(lot: Lot):
    await lot.bus.poll_once()
    assert [r.state for r in lot.readings] == ["free"] * len(UNITS)
    assert {r.source for r in lot.readings} == {f"modbus:{u}" for u in UNITS}
    lot.sim.park(2)
    await lot.poll_until(lambda: lot.state(2) == "occupied")
    assert lot.readings[-1].raw is not None
    lot.sim.leave(2)
    await lot.poll_until(lambda: lot.state(2) == "free")
    assert lot.of(2) == ["free", "occupied", "free"]
    assert all(lot.of(u) == ["free"] for u in UNITS if u != 2)
    counters = lot.bus.health().counters
    assert counters["requests"] == counters["replies"] == lot.sim.stats.requests
    assert counters["timeouts"] == counters["crc_errors"] == counters["garbage_bytes"] == 0


async def test_a_car_across_two_bays_takes_both_on_the_bus(lot: Lot):
    lot.sim.park(3, offset=0.5)  # between bays 3 and 4
    assert (lot.sim.truth(3), lot.sim.truth(4)) == ("occupied", "occupied")
    await lot.poll_until(lambda: lot.state(3) == lot.state(4) == "occupied")
    await lot.bus.poll_once()
    assert [lot.state(u) for u in UNITS] == [lot.sim.truth(u) for u in UNITS]


async def test_a_silent_node_goes_unknown_never_free_and_recovers(lot: Lot):
    lot.sim.park(4)
    await lot.poll_until(lambda: lot.state(4) == "occupied")
    mark = len(lot.readings)
    lot.sim.faults.silent.add(4)
    for _ in range(2):
        await lot.bus.poll_once()
    assert lot.of(4, mark) == []  # two failed cycles: not yet faulty
    await lot.bus.poll_once()
    (unknown,) = [r for r in lot.readings[mark:] if r.bay_id == "bay-4"]
    assert unknown.state == "unknown"
    assert unknown.fault == "node not answering (timeout)"
    health = lot.bus.health()
    assert health.nodes_faulty == 1
    node4 = next(n for n in health.nodes if n["unit_id"] == 4)
    assert node4["faulty"]
    assert node4["counters"]["timeouts"] == 6  # 3 cycles, 2 attempts each
    lot.sim.faults.silent.clear()
    await lot.bus.poll_once()  # answers again: recovered at once
    assert lot.of(4, mark) == ["unknown", "occupied"]
    assert lot.bus.health().nodes_faulty == 0
    assert lot.sim.stats.silent_ignored == 6
    assert all(lot.of(u, mark) == [] for u in UNITS if u != 4)


async def _hostile_scenario(lot: Lot) -> tuple[dict[str, int], dict[str, int]]:
    """Byte-at-a-time delivery, 5% corrupted and 20% dropped frames, seed 11; a node goes silent.

    Meanwhile one car parks, another leaves, and node 6 is silent for a while. Asserts that no
    bay flips falsely; returns what the gateway counted and what the link injected meanwhile.
    """
    lot.sim.park(2)
    lot.sim.park(5)
    await lot.poll_until(lambda: lot.state(2) == lot.state(5) == "occupied"
                         and all(lot.state(u) != "unknown" for u in UNITS))
    mark = len(lot.readings)
    before_bus = lot.bus.health().counters
    before_sim = lot.sim.stats.as_dict()

    lot.sim.faults = LinkFaults.hostile(drop=0.20, corrupt=0.05)
    assert lot.sim.faults.byte_at_a_time
    for cycle in range(40):
        if cycle == 5:
            lot.sim.park(3)
        if cycle == 10:
            lot.sim.faults.silent.add(6)
        if cycle == 20:
            lot.sim.leave(5)
        if cycle == 25:
            assert lot.bus.nodes[6].faulty
            lot.sim.faults.silent.clear()
        await lot.bus.poll_once()
    await lot.poll_until(lambda: lot.state(3) == "occupied" and lot.state(5) == "free")

    # No false flips: exactly the real changes; only the silent node's bay went unknown
    # (never free), and came back.
    changes = {u: lot.of(u, mark) for u in UNITS}
    assert changes == {1: [], 2: [], 3: ["occupied"], 4: [], 5: ["free"],
                       6: ["unknown", "free"]}
    assert not lot.bus.nodes[6].faulty
    assert [lot.state(u) for u in UNITS] == [lot.sim.truth(u) for u in UNITS]

    bus = {k: v - before_bus[k] for k, v in lot.bus.health().counters.items()}
    sim = {k: v - before_sim[k] for k, v in lot.sim.stats.as_dict().items()}
    for kind in ("requests_dropped", "requests_corrupted", "responses_dropped",
                 "responses_corrupted", "silent_ignored"):
        assert sim[kind] > 0, f"the test injected no {kind}"
    # The per-node counters add up to the bus's.
    nodes = lot.bus.health().nodes
    totals = lot.bus.health().counters
    for kind in ("requests", "timeouts", "crc_errors"):
        assert sum(n["counters"][kind] for n in nodes) == totals[kind]
    return bus, sim


def _injected(sim: dict[str, int]) -> int:
    return (sim["requests_dropped"] + sim["requests_corrupted"] + sim["responses_dropped"]
            + sim["responses_corrupted"] + sim["silent_ignored"])


async def test_hostile_link_over_the_pty_no_false_flips(lot: Lot):
    """Over the real pty, in real time: no false flip, and no injected fault goes uncounted.

    The exact counts are checked in virtual time below: here a CI machine that stalls the
    process for longer than the reply timeout adds timeouts nobody injected.
    """
    bus, sim = await _hostile_scenario(lot)
    assert bus["timeouts"] + bus["crc_errors"] >= _injected(sim)
    assert 0 < bus["crc_errors"] <= sim["responses_corrupted"]
    node_crc = sum(lot.sim.node(u).slave.crc_errors for u in UNITS)
    assert node_crc >= 1


def test_hostile_link_every_fault_counted_exactly():
    """The same scenario on a socket pair in the simulator's virtual time: counts match exactly.

    Virtual time does not move while the process is descheduled, so every timeout here is one
    the link caused.
    """
    from parking_sim import vtime

    async def main(clock: vtime.VirtualClock) -> None:
        sim = SensorBus(units=UNITS, seed=11, baudrate=BAUD, node_settings=FAST,
                        transport="socket")
        await sim.start()
        config = _config("simulated")
        lot = Lot(sim, ModbusBus(config, {u: f"bay-{u}" for u in UNITS}, clock,
                                 lambda r: None, link=RtuLink(config, opener=sim.opener)))
        lot.bus.listener = lot.readings.append
        lot.bus.link.open()
        try:
            bus, injected = await _hostile_scenario(lot)
        finally:
            lot.bus.link.close()
            await sim.close()
        # Every fault counted: each injected fault cost exactly one failed transaction.
        assert bus["requests"] == injected["requests"]
        assert bus["timeouts"] + bus["crc_errors"] == _injected(injected)
        # A damaged reply is a CRC error unless the damage hit its address byte (a timeout).
        assert 0 < bus["crc_errors"] <= injected["responses_corrupted"]
        assert bus["replies"] == (injected["responses"] - injected["responses_dropped"]
                                  - injected["responses_corrupted"])
        # The nodes counted the damaged requests as CRC errors (fewer when the damage hit the
        # address byte and sent the request to no node).
        node_crc = sum(sim.node(u).slave.crc_errors for u in UNITS)
        assert 0 < node_crc <= injected["requests_corrupted"]

    vtime.run(main)


async def test_noise_bytes_are_counted_as_garbage_and_ignored(lot: Lot):
    lot.sim.faults.noise = 0.5
    for _ in range(5):
        await lot.bus.poll_once()
    counters = lot.bus.health().counters
    assert lot.sim.stats.noise_bytes > 0
    assert counters["garbage_bytes"] == lot.sim.stats.noise_bytes
    assert counters["timeouts"] == counters["crc_errors"] == 0
    assert all(lot.of(u) == ["free"] for u in UNITS)


async def test_a_dropped_byte_is_a_timeout_never_a_misread(lot: Lot):
    lot.sim.park(1)
    await lot.poll_until(lambda: lot.state(1) == "occupied")
    mark = len(lot.readings)
    lot.sim.faults.drop_byte = 0.3
    for _ in range(6):
        await lot.bus.poll_once()
    counters = lot.bus.health().counters
    assert lot.sim.stats.bytes_dropped > 0
    assert counters["timeouts"] == lot.sim.stats.bytes_dropped
    assert counters["garbage_bytes"] > 0  # the incomplete replies' bytes
    assert lot.readings[mark:] == []


async def test_late_replies_time_out_and_are_never_taken_for_another_nodes(lot: Lot):
    # No retry: a retry would rightly take the late reply to its own identical request.
    lot.bus.config = lot.bus.config.model_copy(update={"retries": 0})
    await lot.bus.poll_once()
    mark = len(lot.readings)
    lot.sim.faults.delay_s = 0.150  # beyond the 100 ms timeout
    for _ in range(3):
        await lot.bus.poll_once()
    assert [r.state for r in lot.readings[mark:]] == ["unknown"] * len(UNITS)
    counters = lot.bus.health().counters
    assert counters["replies"] == len(UNITS)  # only the first, clean cycle
    assert counters["garbage_bytes"] > 0  # the late replies, on the bus's count
    lot.sim.faults.delay_s = 0.010  # slow but in time
    await lot.bus.poll_once()
    await lot.bus.poll_once()
    assert [lot.state(u) for u in UNITS] == ["free"] * len(UNITS)


async def test_an_exception_reply_is_counted_and_the_bay_goes_unknown(lot: Lot):
    await lot.bus.poll_once()
    lot.sim.node(6).registers.read_input = lambda addr, count: 0x02  # illegal data address
    for _ in range(3):
        await lot.bus.poll_once()
    assert lot.state(6) == "unknown"
    assert lot.bus.nodes[6].fault == "node not answering (exception)"
    assert lot.bus.nodes[6].counters.exceptions == 6  # 3 cycles, 2 attempts each
    assert lot.bus.nodes[6].counters.replies == 7  # the exception replies, and one good one


async def test_a_sensor_fault_or_calibration_makes_the_bay_unknown(lot: Lot):
    node = lot.sim.node(2)
    node.detector.settings["calibration_samples"] = 5
    await lot.bus.calibrate(2)
    await lot.bus.poll_once()
    assert (lot.state(2), lot.bus.nodes[2].fault) == ("unknown", "calibrating")
    await lot.poll_until(lambda: lot.state(2) == "free")
    assert node.saved_settings is not None  # the new baseline went to "flash"
    node.physics.mag_dropout = 1.0  # the magnetometer stops answering
    await lot.poll_until(lambda: lot.state(2) == "unknown")
    assert lot.bus.nodes[2].fault == "sensor fault"


async def test_calibrate_errors_reach_the_caller(lot: Lot):
    with pytest.raises(KeyError):
        await lot.bus.calibrate(99)
    lot.sim.faults.silent.add(3)
    with pytest.raises(ReplyTimeout):
        await lot.bus.calibrate(3)
    lot.sim.node(5).registers.write_holding = lambda addr, values: 0x03
    with pytest.raises(ExceptionReply) as raised:
        await lot.bus.calibrate(5)
    assert raised.value.code == 3


async def test_a_node_commissioned_to_a_new_unit_id_answers_there(lot: Lot):
    write_unit_id = bytes((0x06, 0x00, 101, 0x00, 42))  # holding register 101 := 42
    echo = await lot.bus.link.transact(6, write_unit_id, 8, Counters())
    assert echo == write_unit_id  # answered from the old address
    assert lot.sim.units == [1, 2, 3, 4, 5, 42]
    assert lot.sim.node(42).saved_settings is not None
    assert lot.sim.node(42).saved_settings["unit_id"] == 42
    await lot.bus.poll_once()
    assert lot.bus.nodes[6].counters.timeouts == 2  # nobody answers at 6 any more


async def test_a_failing_listener_does_not_stop_the_bus(lot: Lot):
    def broken(reading: BayReading) -> None:
        raise RuntimeError("consumer bug")

    lot.bus.listener = broken
    await lot.bus.poll_once()
    assert all(lot.state(u) == "free" for u in UNITS)


async def test_the_poll_loop_runs_in_the_background():
    sim = SensorBus(units=(7, 8), seed=2, baudrate=BAUD, node_settings=FAST)
    await sim.start()
    got: list[BayReading] = []
    bus = ModbusBus(_config(sim.port, poll_interval_s=0.01), {7: "a", 8: "b"}, FakeClock(),
                    got.append)
    try:
        await bus.start()
        sim.park(8)
        for _ in range(200):
            if any(r.bay_id == "b" and r.state == "occupied" for r in got):
                break
            await _pause()
        assert [r.state for r in got if r.bay_id == "b"] == ["free", "occupied"]
        assert bus.health().cycles > 1
    finally:
        await bus.close()
        await sim.close()
    assert not bus.health().open


async def test_a_missing_port_is_reported_not_raised():
    bus = ModbusBus(_config("/dev/nonexistent-rs485"), {1: "a"}, FakeClock(), lambda r: None)
    await bus.start()
    try:
        await _pause()
        health = bus.health()
        assert not health.open
        assert health.counters["io_errors"] >= 1
    finally:
        await bus.close()


async def test_the_example_config_has_a_bus():
    settings = load_settings(EXAMPLE, env={})
    assert settings.bus is not None
    assert settings.bus.baudrate == 19200
    assert bays_on_bus(settings)[1] == "A-03"


async def _pause() -> None:
    await asyncio.sleep(0.01)


def test_the_bus_runs_under_the_simulators_virtual_time_with_exact_counts():
    """Five virtual minutes of polling over a hostile socket-pair line: nothing spurious."""
    from parking_sim import vtime

    async def main(clock: vtime.VirtualClock) -> tuple[dict[str, int], LinkStats, list[str]]:
        faults = LinkFaults.hostile(drop=0.2, corrupt=0.05)
        faults.byte_at_a_time = False  # a timer per byte: slow in virtual time, tested above
        sim = SensorBus(units=(1, 2, 3), seed=5, transport="socket", faults=faults)
        await sim.start()
        config = BusConfig(port="simulated", retries=1, fault_after_failures=6,
                           poll_interval_s=2.0)
        got: list[BayReading] = []
        bus = ModbusBus(config, {1: "a", 2: "b", 3: "c"}, clock, got.append,
                        link=RtuLink(config, opener=sim.opener))
        await bus.start()
        await asyncio.sleep(30)
        sim.park(2)
        await asyncio.sleep(120)
        sim.leave(2)
        await asyncio.sleep(150)
        await bus.close()
        await sim.close()
        return bus.health().counters, sim.stats, [r.state for r in got if r.bay_id == "b"]

    counters, stats, bay_b = vtime.run(main)
    assert bay_b == ["free", "occupied", "free"]
    assert counters["requests"] == stats.requests > 3 * 150
    assert counters["timeouts"] + counters["crc_errors"] == (
        stats.requests_dropped + stats.requests_corrupted + stats.responses_dropped
        + stats.responses_corrupted)
