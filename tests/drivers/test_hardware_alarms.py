"""Dead hardware raises alarms: the sensor bus, the cameras and the lanes' vehicle loops.

The bus and the loops run on the simulator's virtual-time loop (a missing port, nodes that
stop answering, a car that stays on a loop for ten minutes cost no real time); the cameras run
their real reader thread and poller against fakes, with short thresholds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from parking_sim import vtime
from parking_sim.bus import LinkFaults, SensorBus
from parking_sim.gpio import SimPins

from gateway.app import Gateway, HardwareOverrides
from gateway.config import BarrierConfig, BusConfig, LaneTiming, load_settings
from gateway.core.clock import FakeClock
from gateway.core.records import Alarm
from gateway.drivers import AlarmLatch
from gateway.drivers.camera import HttpSnapshotSource, VideoCaptureSource
from gateway.drivers.gpio import LaneIo
from gateway.drivers.modbus import ModbusBus, RtuLink, bus_name
from gateway.runtime.aio import Backoff
from gateway.runtime.notify import Notifier
from tests.conftest import EXAMPLE
from tests.drivers.conftest import LANE
from tests.drivers.test_camera import jpeg, until, write_video

FAST = Backoff(initial_s=0.01, max_s=0.05)
UNITS = tuple(range(1, 25))  # the lot: 24 detector nodes on one bus


class Sink:
    """An alarm sink that keeps the active alarms, as the journal does, and the history."""

    def __init__(self) -> None:
        self.active: dict[str, Alarm] = {}
        self.history: list[tuple[str, str, str]] = []  # (raised or cleared, id, severity)

    async def raise_alarm(self, alarm: Alarm) -> None:
        if alarm.alarm_id not in self.active:
            self.active[alarm.alarm_id] = alarm
            self.history.append(("raised", alarm.alarm_id, alarm.severity))

    async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None:
        if self.active.pop(alarm_id, None) is not None:
            self.history.append(("cleared", alarm_id, "info"))


# --- the latch ------------------------------------------------------------------------------


async def test_the_latch_passes_on_changes_only_and_the_first_word_on_each_alarm() -> None:
    told: list[tuple[str, str]] = []

    class Recorder:
        async def raise_alarm(self, alarm: Alarm) -> None:
            told.append(("raise", f"{alarm.alarm_id}/{alarm.severity}"))

        async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None:
            told.append(("clear", alarm_id))

    latch = AlarmLatch(Recorder(), "test")
    latch.clear("a", "fine")  # the first word: an alarm from before a restart is cleared
    latch.clear("a", "fine")
    for _ in range(3):
        latch.set(Alarm("b", "warning", "some"))
    latch.set(Alarm("b", "critical", "all"))  # escalated: raised anew
    latch.set(Alarm("b", "warning", "some again"))  # never stepped down
    latch.clear("b", "gone")
    await asyncio.sleep(0)
    assert told == [("clear", "a"), ("raise", "b/warning"), ("clear", "b"),
                    ("raise", "b/critical"), ("clear", "b")]


# --- the bus --------------------------------------------------------------------------------


def test_a_missing_port_raises_one_critical_alarm_not_one_per_node() -> None:
    async def main(clock: vtime.VirtualClock) -> tuple[Sink, dict[str, object]]:
        sink = Sink()
        config = BusConfig(port="/dev/serial/by-id/usb-FTDI_RS485-if00", alarm_after_s=30)
        bus = ModbusBus(config, {u: f"B-{u:02}" for u in UNITS}, clock, lambda r: None,
                        alarms=sink)
        await bus.start()
        await asyncio.sleep(20)
        assert sink.active == {}  # a USB adapter still enumerating: no alarm yet
        await asyncio.sleep(20)
        summary = bus.summary()
        await bus.close()
        return sink, summary

    sink, summary = vtime.run(main)
    [alarm] = sink.active.values()
    assert alarm.alarm_id == "bus.port:usb-FTDI_RS485-if00"
    assert alarm.severity == "critical"
    assert "24 bays" in alarm.message
    assert alarm.details["state"] == "missing"
    assert summary["portState"] == "missing"
    assert summary["nodesAnswering"] == 0
    assert "cannot open" in str(summary["portError"])


def test_bus_names_fit_an_alarm_id() -> None:
    assert bus_name("/dev/ttyUSB0") == "ttyUSB0"
    assert bus_name("/dev/serial/by-id/usb-1a86:7523 port0") == "usb-1a86_7523_port0"
    assert bus_name("/") == "bus"


def test_silent_nodes_raise_one_alarm_per_bus_and_it_clears_when_they_answer() -> None:
    async def main(clock: vtime.VirtualClock) -> tuple[Sink, list[dict[str, object]], str]:
        sink = Sink()
        sim = SensorBus(units=UNITS, seed=3, transport="socket", faults=LinkFaults())
        await sim.start()
        config = BusConfig(port="/dev/ttyAMA0", retries=0, fault_after_failures=2,
                           poll_interval_s=2.0, alarm_after_s=30)
        bus = ModbusBus(config, {u: f"B-{u:02}" for u in UNITS}, clock, lambda r: None,
                        link=RtuLink(config, opener=sim.opener), alarms=sink)
        await bus.start()
        await asyncio.sleep(10)
        sim.faults.silent.update({3, 4, 5, 9})
        await asyncio.sleep(20)
        assert sink.active == {}  # silent for less than alarm_after_s
        await asyncio.sleep(20)
        warned = dict(sink.active)
        sim.faults.silent.update(UNITS)  # then the whole bus: a cut cable
        await asyncio.sleep(45)
        summaries = [bus.summary()]
        all_silent = sink.active["bus.nodes_silent:ttyAMA0"].message
        sim.faults.silent.clear()
        await asyncio.sleep(10)
        summaries.append(bus.summary())
        await bus.close()
        await sim.close()
        [alarm] = warned.values()
        assert alarm.details["units"] == [3, 4, 5, 9]
        assert "units 3-5, 9" in alarm.message
        return sink, summaries, all_silent

    sink, (silent, answering), all_silent = vtime.run(main)
    assert sink.history == [
        ("raised", "bus.nodes_silent:ttyAMA0", "warning"),
        ("cleared", "bus.nodes_silent:ttyAMA0", "info"),
        ("raised", "bus.nodes_silent:ttyAMA0", "critical"),
        ("cleared", "bus.nodes_silent:ttyAMA0", "info"),
    ]
    assert "24 of 24 nodes" in all_silent
    assert sink.active == {}
    assert silent["portState"] == "ok"
    assert len(silent["nodesSilent"]) == 24  # type: ignore[arg-type]
    assert answering["nodesAnswering"] == 24
    assert answering["nodesSilent"] == []


# --- cameras --------------------------------------------------------------------------------


async def test_an_unreachable_camera_raises_its_alarm_after_the_threshold(tmp_path) -> None:
    sink = Sink()
    source = VideoCaptureSource("exit-1", str(tmp_path / "gone.avi"), clock=FakeClock(),
                                backoff=FAST, alarms=sink, unreachable_alarm_s=0.3)
    await source.start()
    try:
        await until(lambda: source.health.errors >= 1)
        assert source.summary()["state"] == "unreachable"
        assert sink.active == {}
        await until(lambda: "camera.unreachable:exit-1" in sink.active)
        alarm = sink.active["camera.unreachable:exit-1"]
        assert alarm.severity == "warning"
        assert "cannot open" in alarm.message
        assert "camera.stale:exit-1" not in sink.active  # one fault, one alarm
        assert source.summary()["lastFrameAgeS"] is None
    finally:
        await source.close()


async def test_a_frozen_camera_raises_stale_and_not_unreachable(tmp_path) -> None:
    sink = Sink()
    video = write_video(tmp_path / "frozen.avi", 200, same=True, fps=25.0)
    source = VideoCaptureSource("entry-1", str(video), clock=FakeClock(), stale_after_s=0.2,
                                backoff=FAST, alarms=sink, stale_alarm_s=0.4)
    await source.start()
    try:
        await until(lambda: "camera.stale:entry-1" in sink.active)
        summary = source.summary()
        assert summary["state"] == "stale"
        assert isinstance(summary["lastFrameAgeS"], float)
        assert summary["lastFrameAgeS"] >= 0.4
        assert list(sink.active) == ["camera.stale:entry-1"]
    finally:
        await source.close()


async def test_a_camera_back_online_clears_its_alarm() -> None:
    sink = Sink()
    up = False
    frame = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal frame
        if not up:
            raise httpx.ConnectError("connection refused", request=request)
        frame += 1
        return httpx.Response(200, content=jpeg(frame))

    source = HttpSnapshotSource("exit-1", "http://cam/snap.jpg", clock=FakeClock(),
                                interval_s=0.02, backoff=FAST, alarms=sink,
                                unreachable_alarm_s=0.2,
                                transport=httpx.MockTransport(handler))
    await source.start()
    try:
        await until(lambda: "camera.unreachable:exit-1" in sink.active)
        assert "ConnectError" in sink.active["camera.unreachable:exit-1"].message
        up = True
        await until(lambda: sink.active == {})
        assert source.summary()["state"] == "connected"
        assert sink.history[-1] == ("cleared", "camera.unreachable:exit-1", "info")
    finally:
        await source.close()


# --- vehicle loops --------------------------------------------------------------------------

Drive = Callable[[int, bool], None]


def lane_run(pins: SimPins, sink: Sink, script: Callable[[Drive], Awaitable[None]]) -> None:
    """Run ``script(drive)`` against lane-1's loops, watched into ``sink``, in virtual time."""

    inputs = {pin: pins.input(pin) for pin in (LANE.arming_loop, LANE.safety_loop, 13)}

    async def main(clock: vtime.VirtualClock) -> None:
        io = LaneIo.build("lane-1", LANE, BarrierConfig(), factory=pins.factory, alarms=sink,
                          debounce_ms=50, timing=LaneTiming())

        def drive(pin: int, occupied: bool) -> None:
            inputs[pin].set_level(occupied)

        await script(drive)
        await io.close()

    vtime.run(main)


def test_a_loop_occupied_longer_than_any_car_is_stuck(pins: SimPins) -> None:
    async def script(drive: Drive) -> None:
        drive(5, True)  # something stays on the arming loop
        await asyncio.sleep(590)
        assert sink.active == {}
        await asyncio.sleep(20)
        stuck.update(sink.active)
        drive(5, False)
        await asyncio.sleep(1)

    sink, stuck = Sink(), dict[str, Alarm]()
    lane_run(pins, sink, script)
    assert list(stuck) == ["loop.stuck:lane-1.arming"]
    assert stuck["loop.stuck:lane-1.arming"].severity == "critical"
    assert sink.active == {}  # freed: cleared


def test_a_queue_on_the_safety_loop_is_not_stuck_as_soon(pins: SimPins) -> None:
    async def script(drive: Drive) -> None:
        drive(6, True)  # a slow queue through a barrier held open
        await asyncio.sleep(1200)
        drive(6, False)
        await asyncio.sleep(1)

    sink = Sink()
    lane_run(pins, sink, script)
    assert sink.history == []


async def _vehicle(drive: Drive, loops: tuple[int, ...]) -> None:
    for pin in loops:
        drive(pin, True)
        await asyncio.sleep(2)
        drive(pin, False)
        await asyncio.sleep(1)
    await asyncio.sleep(600)


def test_a_loop_that_misses_the_traffic_the_others_see_is_dead(pins: SimPins) -> None:
    async def script(drive: Drive) -> None:
        for _ in range(4):  # four cars cross arming and safety; the closing loop sees none
            await _vehicle(drive, (5, 6))
        dead.update(sink.active)
        await _vehicle(drive, (5, 6, 13))  # it detects again

    sink, dead = Sink(), dict[str, Alarm]()
    lane_run(pins, sink, script)
    assert list(dead) == ["loop.dead:lane-1.closing"]
    assert dead["loop.dead:lane-1.closing"].severity == "warning"
    assert sink.active == {}


def test_cars_refused_at_the_arming_loop_do_not_make_the_safety_loop_dead(
        pins: SimPins) -> None:
    async def script(drive: Drive) -> None:
        for _ in range(6):  # the lot is full: each car backs off the arming loop
            await _vehicle(drive, (5,))

    sink = Sink()
    lane_run(pins, sink, script)
    assert sink.history == []


# --- ramp loops ---------------------------------------------------------------------------


def test_a_ramp_loop_held_occupied_raises_its_stuck_alarm(pins: SimPins, tmp_path: Path) -> None:
    """A counted level's ramp loops are watched as a lane's: the daemon raises loop.stuck for
    one occupied past the ramp's loop_stuck_after_s, and clears it when the loop frees."""
    settings = load_settings(EXAMPLE, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock")})
    settings = settings.model_copy(update={"lanes": (), "bus": None, "bays": (), "signs": ()})
    ramp = settings.levels[0].ramps[0]
    alarm = f"loop.stuck:ramp.{ramp.id}.a"
    loop_a = pins.input(ramp.loop_a)

    async def main(clock: vtime.VirtualClock) -> tuple[set[str], set[str], set[str]]:
        gateway = Gateway(settings, clock=clock, sync=False, control=False,
                          notifier=Notifier(None),
                          hardware=HardwareOverrides(pin_factory=pins.factory))
        task = asyncio.create_task(gateway.run())

        def active() -> set[str]:
            return {a.alarm_id for a in gateway.journal.active_alarms()}

        try:
            await gateway.started.wait()
            loop_a.set_level(True)  # a car stalls on loop A, or its detector fails occupied
            await asyncio.sleep(ramp.loop_stuck_after_s - 10)
            early = active()
            await asyncio.sleep(20)
            stuck = active()
            loop_a.set_level(False)
            await asyncio.sleep(5)
            return early, stuck, active()
        finally:
            gateway.stop()
            await task

    early, stuck, freed = vtime.run(main)
    assert alarm not in early
    assert alarm in stuck
    assert alarm not in freed
