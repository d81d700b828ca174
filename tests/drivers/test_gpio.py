"""GPIO drivers against the simulator's mock pins: loops, barrier, ultrasonic bays, lamps.

Loop and barrier tests run on the simulator's virtual-time loop, so debounce windows and
feedback timeouts are exact and cost no real time. The ultrasonic tests run the driver's real
HC-SR04 pinging thread against simulated echoes, so they run in real time.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable

import pytest
from gpiozero import Device, DigitalOutputDevice
from gpiozero.pins.mock import MockFactory
from parking_sim import vtime
from parking_sim.gpio import SimPins
from parking_sim.physics import BarrierPhysics, LanePins, LaneSim, UltrasonicPhysics

from gateway.config import BarrierConfig, LaneGpio, UltrasonicSensor, load_settings
from gateway.core.clock import FakeClock
from gateway.drivers import BayReading
from gateway.drivers.gpio import (
    Barrier,
    BarrierRefusedError,
    Lamp,
    LaneIo,
    UltrasonicBay,
    VehicleLoop,
    make_pin_factory,
)
from gateway.journal import Alarm, Journal
from tests.conftest import EXAMPLE
from tests.drivers.conftest import LANE


def virtual(main: Callable[[vtime.VirtualClock], object], *, grace: float = 0.0) -> object:
    return vtime.run(main, io_grace_s=grace)  # type: ignore[arg-type]


class Alarms:
    """An alarm sink that remembers what it was told."""

    def __init__(self) -> None:
        self.raised: list[Alarm] = []
        self.cleared: list[str] = []
        self.changed = asyncio.Event()

    async def raise_alarm(self, alarm: Alarm) -> None:
        self.raised.append(alarm)
        self.changed.set()

    async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None:
        self.cleared.append(alarm_id)
        self.changed.set()


def relay_log(pins: SimPins, pin: int) -> list[tuple[float, bool]]:
    """Every change of a relay output, with the loop time it happened at."""
    changes: list[tuple[float, bool]] = []
    pins.relay(pin).listeners.append(
        lambda on: changes.append((asyncio.get_running_loop().time(), on)))
    return changes


# --- pin factory ----------------------------------------------------------------------------


def test_pin_factory_from_config_or_environment() -> None:
    assert isinstance(make_pin_factory("mock"), MockFactory)
    assert isinstance(make_pin_factory("auto", env={"GPIOZERO_PIN_FACTORY": "mock"}), MockFactory)


def test_auto_without_a_choice_is_gpiozeros_default_factory() -> None:
    chosen = MockFactory()
    before, Device.pin_factory = Device.pin_factory, chosen
    try:
        assert make_pin_factory("auto", env={}) is chosen
    finally:
        Device.pin_factory = before


# --- vehicle loops ----------------------------------------------------------------------------


def test_loop_ignores_a_flicker_shorter_than_the_debounce(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        pin = pins.input(5)
        loop = VehicleLoop("arming", 5, debounce_ms=100, factory=pins.factory)
        seen: list[bool] = []
        loop.subscribe(seen.append)
        pin.set_level(True)
        await asyncio.sleep(0.05)
        pin.set_level(False)
        await asyncio.sleep(0.5)
        assert (seen, loop.occupied, loop.chatter) == ([], False, 1)
        pin.set_level(True)
        await asyncio.sleep(0.099)
        assert not loop.occupied
        assert loop.present  # the raw input already says a vehicle may be there
        await asyncio.sleep(0.002)
        assert loop.occupied
        assert seen == [True]
        loop.close()

    virtual(main)


def test_loop_wait_returns_on_the_change_or_false_on_timeout(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        pin = pins.input(6)
        loop = VehicleLoop("safety", 6, debounce_ms=80, factory=pins.factory)
        assert await loop.wait(False, 1.0)  # already so
        assert not await loop.wait(True, 1.0)
        asyncio.get_running_loop().call_later(2.0, pin.set_level, True)
        t0 = clock.elapsed()
        assert await loop.wait(True, 5.0)
        assert clock.elapsed() - t0 == pytest.approx(2.08)
        loop.close()

    virtual(main)


def test_loop_hears_a_pin_changed_from_another_thread(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        pin = pins.input(13)
        loop = VehicleLoop("closing", 13, debounce_ms=50, factory=pins.factory)
        thread = threading.Thread(target=pin.set_level, args=(True,))
        thread.start()
        assert await loop.wait(True, 5.0)
        thread.join()
        loop.close()

    virtual(main, grace=0.5)


def test_active_low_loop(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        pin = pins.input(19)
        pin.set_level(True)  # idle high: an open-collector output with the Pi's pull-up
        loop = VehicleLoop("arming", 19, debounce_ms=10, active_high=False, factory=pins.factory)
        assert not loop.occupied
        pin.set_level(False)
        assert await loop.wait(True, 1.0)
        loop.close()

    virtual(main)


# --- barrier ------------------------------------------------------------------------------


def test_pulse_drive_pulses_each_relay_for_pulse_ms(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        opened, closed = relay_log(pins, 17), relay_log(pins, 27)
        pins.input(22), pins.input(23)
        barrier = Barrier("lane-1", LANE, BarrierConfig(drive="pulse", pulse_ms=400),
                          factory=pins.factory)
        t0 = asyncio.get_running_loop().time()
        await barrier.raise_()
        await barrier.lower()
        assert [(round(t - t0, 3), on) for t, on in opened] == [(0.0, True), (0.4, False)]
        assert [(round(t - t0, 3), on) for t, on in closed] == [(0.4, True), (0.8, False)]
        assert [(c.action, c.outcome, c.relay) for c in barrier.commands] == [
            ("raise", "sent", "open"), ("lower", "sent", "close")]
        await barrier.close()

    virtual(main)


def test_level_drive_holds_the_open_relay(pins: SimPins) -> None:
    lane = LaneGpio(arming_loop=5, safety_loop=6, open_relay=17)
    async def main(clock: vtime.VirtualClock) -> None:
        opened = relay_log(pins, 17)
        barrier = Barrier("lane-1", lane, BarrierConfig(drive="level"), factory=pins.factory)
        await barrier.raise_()
        await asyncio.sleep(30)
        assert [on for _, on in opened] == [True]
        assert barrier.position == "up"  # no feedback: the commanded position
        await barrier.lower()
        assert [on for _, on in opened] == [True, False]
        assert barrier.position == "down"
        await barrier.close()

    virtual(main)


def test_barrier_refuses_to_lower_onto_the_safety_loop(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        closed = relay_log(pins, 27)
        safety = pins.input(6)
        io = LaneIo.build("lane-1", LANE, BarrierConfig(), factory=pins.factory)
        await io.barrier.raise_()
        safety.set_level(True)  # a car rolls under the barrier, not yet debounced
        with pytest.raises(BarrierRefusedError):
            await io.barrier.lower()
        assert closed == []
        assert io.barrier.commands[-1].outcome == "refused"
        assert io.barrier.commands[-1].guard_clear is False
        safety.set_level(False)
        await io.safety.wait(False, 1.0)
        await io.barrier.lower()
        assert [on for _, on in closed] == [True, False]
        await io.close()

    virtual(main)


def test_opening_cuts_a_closing_pulse_short(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        opened, closed = relay_log(pins, 17), relay_log(pins, 27)
        barrier = Barrier("lane-1", LANE, BarrierConfig(pulse_ms=1000), factory=pins.factory)
        lowering = asyncio.ensure_future(barrier.lower())
        await asyncio.sleep(0.2)
        await barrier.raise_()
        await lowering
        t_close_off = closed[-1][0]
        assert [on for _, on in closed] == [True, False]
        assert t_close_off <= opened[0][0]  # released before the open relay is energised
        assert barrier.commanded == "up"
        await barrier.close()

    virtual(main)


def sim_lane(pins: SimPins, physics: BarrierPhysics | None = None) -> LaneSim:
    lane_pins = LanePins(
        arming=pins.input(5), safety=pins.input(6), closing=pins.input(13),
        open_relay=pins.relay(17), close_relay=pins.relay(27), up_limit=pins.input(22),
        down_limit=pins.input(23))
    return LaneSim("lane-1", lane_pins, rng=random.Random(1), barrier=physics)


def test_barrier_follows_its_limit_switches(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        lane = sim_lane(pins)
        lane.start()
        barrier = Barrier("lane-1", LANE, BarrierConfig(), factory=pins.factory)
        assert barrier.position == "down"
        await barrier.raise_()
        assert barrier.position == "moving"
        assert await barrier.wait_position("up", 4.0)
        await barrier.lower()
        assert await barrier.wait_position("down", 4.0)
        assert not barrier.faulted
        await barrier.close()
        await lane.close()

    virtual(main)


def test_no_feedback_raises_an_alarm_and_recovers(pins: SimPins) -> None:
    async def main(clock: vtime.VirtualClock) -> None:
        lane = sim_lane(pins)
        lane.arm.stuck = True  # the motor does not move
        lane.start()
        alarms = Alarms()
        barrier = Barrier("lane-1", LANE, BarrierConfig(feedback_timeout_s=4.0),
                          factory=pins.factory, alarms=alarms)
        t0 = clock.elapsed()
        await barrier.raise_()
        assert await barrier.wait_position("fault", 10.0)
        assert clock.elapsed() - t0 == pytest.approx(4.0, abs=0.01)
        await alarms.changed.wait()
        assert [a.alarm_id for a in alarms.raised] == ["barrier.no_feedback:lane-1"]
        assert alarms.raised[0].severity == "critical"
        assert barrier.feedback_timeouts == 1
        alarms.changed.clear()
        lane.arm.stuck = False  # repaired; the technician opens again
        await barrier.raise_()
        assert await barrier.wait_position("up", 4.0)
        await alarms.changed.wait()
        assert alarms.cleared == ["barrier.no_feedback:lane-1"]
        await barrier.close()
        await lane.close()

    virtual(main)


class _Forward:
    """Forwards alarms to the journal and says when one was written."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.written = asyncio.Event()

    async def raise_alarm(self, alarm: Alarm) -> None:
        await self.journal.raise_alarm(alarm)
        self.written.set()

    async def clear_alarm(self, alarm_id: str, message: str = "cleared") -> None:
        await self.journal.clear_alarm(alarm_id, message)


async def test_feedback_alarm_is_journaled(journal: Journal, pins: SimPins) -> None:
    for pin in (22, 23):
        pins.input(pin)  # switches fitted, but the barrier never gets there
    sink = _Forward(journal)
    barrier = Barrier("exit-1", LANE, BarrierConfig(feedback_timeout_s=0.05),
                      factory=pins.factory, alarms=sink)
    await barrier.raise_()
    await asyncio.wait_for(sink.written.wait(), 5.0)
    assert [a.alarm_id for a in journal.active_alarms()] == ["barrier.no_feedback:exit-1"]
    assert barrier.position == "fault"
    await barrier.close()


def test_lane_io_from_the_example_config(pins: SimPins) -> None:
    settings = load_settings(EXAMPLE, env={})

    async def main(clock: vtime.VirtualClock) -> None:
        lanes = [LaneIo.build(lane.id, lane.gpio, lane.barrier, factory=pins.factory)
                 for lane in settings.lanes]
        first = lanes[0]
        assert first.closing is not None
        assert first.lamp is not None
        first.lamp.set(True)
        assert first.lamp.lit
        for io in lanes:
            await io.close()

    virtual(main)


# --- ultrasonic bays ------------------------------------------------------------------------


class Probe:
    """What the simulated HC-SR04 sees, settable by the test."""

    def __init__(self, cm: float | None) -> None:
        self.cm = cm

    def __call__(self) -> float | None:
        return self.cm


async def until(bay: UltrasonicBay, check: Callable[[BayReading], bool],
                timeout_s: float = 10.0) -> BayReading:
    """Wait for a reading that passes ``check``."""
    reached = asyncio.Event()
    unsubscribe = bay.subscribe(lambda r: reached.set() if check(r) else None)
    try:
        if bay.reading is None or not check(bay.reading):
            await asyncio.wait_for(reached.wait(), timeout_s)
    finally:
        unsubscribe()
    assert bay.reading is not None
    return bay.reading


def ultrasonic(pins: SimPins, probe: Callable[[], float | None], **kwargs: float
               ) -> UltrasonicBay:
    pins.ultrasonic(4, 18, probe)
    sensor = UltrasonicSensor(kind="ultrasonic", trigger_pin=4, echo_pin=18, threshold_cm=150,
                              hysteresis_cm=10, min_dwell_s=kwargs.pop("min_dwell_s", 0.2))
    return UltrasonicBay("A-01", sensor, clock=FakeClock(), factory=pins.factory, poll_s=0.05,
                         fault_after=3, **kwargs)  # type: ignore[arg-type]


@pytest.mark.slow  # real seconds of echo pings
async def test_ultrasonic_threshold_hysteresis_and_dwell(pins: SimPins) -> None:
    probe = Probe(250.0)
    bay = ultrasonic(pins, probe)
    await bay.start()
    try:
        free = await until(bay, lambda r: r.state == "free")
        assert free.source == "ultrasonic:4"
        assert free.raw == pytest.approx(250, abs=3)
        probe.cm = 100.0
        occupied = await until(bay, lambda r: r.state == "occupied")
        assert occupied.raw == pytest.approx(100, abs=3)
        probe.cm = 155.0  # above the threshold, inside the hysteresis band: still taken
        await asyncio.sleep(0.6)
        assert bay.reading is not None
        assert bay.reading.state == "occupied"
        probe.cm = 170.0
        await until(bay, lambda r: r.state == "free")
    finally:
        await bay.close()


@pytest.mark.slow  # real seconds of echo pings
async def test_ultrasonic_brief_reading_does_not_count(pins: SimPins) -> None:
    probe = Probe(250.0)
    bay = ultrasonic(pins, probe, min_dwell_s=1.0)
    changes: list[str] = []
    bay.subscribe(lambda r: changes.append(r.state))
    await bay.start()
    try:
        await until(bay, lambda r: r.state == "free")
        probe.cm = 60.0  # someone walks under the sensor
        await asyncio.sleep(0.4)
        probe.cm = 250.0
        await asyncio.sleep(1.5)
        assert changes == ["free"]
    finally:
        await bay.close()


@pytest.mark.slow  # real seconds of echo pings
async def test_ultrasonic_without_echo_is_unknown_never_free(pins: SimPins) -> None:
    probe = Probe(250.0)
    bay = ultrasonic(pins, probe)
    await bay.start()
    try:
        await until(bay, lambda r: r.state == "free")
        probe.cm = None  # the sensor died
        dead = await until(bay, lambda r: r.state == "unknown")
        assert dead.fault == "no_echo"
        assert bay.faults == 1
        probe.cm = 100.0  # replaced
        await until(bay, lambda r: r.state == "occupied")
    finally:
        await bay.close()


async def test_ultrasonic_out_of_range_is_a_fault(pins: SimPins) -> None:
    bay = ultrasonic(pins, Probe(450.0))  # beyond the HC-SR04's 4 m
    await bay.start()
    try:
        reading = await until(bay, lambda r: r.state == "unknown")
        assert reading.fault == "out_of_range"
    finally:
        await bay.close()


async def test_ultrasonic_close_stops_pinging_and_frees_its_pins(pins: SimPins) -> None:
    bay = ultrasonic(pins, Probe(250.0))
    await bay.start()
    await until(bay, lambda r: r.state == "free")
    trigger = pins.factory.pin(4)
    await bay.close()
    assert not [t for t in threading.enumerate() if t.name == "hc-sr04-A-01"]
    pings = trigger.pings
    await asyncio.sleep(0.2)
    assert trigger.pings == pings
    # Both pins can be claimed again (the mock factory keeps them, but not their owners).
    DigitalOutputDevice(4, pin_factory=pins.factory).close()
    DigitalOutputDevice(18, pin_factory=pins.factory).close()


@pytest.mark.slow  # real seconds of echo pings
async def test_ultrasonic_rides_out_noise_and_dropouts(pins: SimPins) -> None:
    taken = True
    physics = UltrasonicPhysics(occupied=lambda: taken, rng=random.Random(3), noise_cm=4.0,
                                dropout=0.25, spurious=0.05)
    bay = ultrasonic(pins, physics.measure, min_dwell_s=0.3)
    changes: list[str] = []
    bay.subscribe(lambda r: changes.append(r.state))
    await bay.start()
    try:
        await until(bay, lambda r: r.state == "occupied")
        await asyncio.sleep(2.0)
        assert changes == ["occupied"]  # no flips from noise, dropouts or a passer-by
        taken = False
        await until(bay, lambda r: r.state == "free")
    finally:
        await bay.close()


def test_lamp(pins: SimPins) -> None:
    lamp = Lamp("lot-full", 7, factory=pins.factory)
    assert not lamp.lit
    lamp.set(True)
    assert lamp.lit
    assert pins.factory.pin(7).state
    lamp.set(False)
    assert not lamp.lit
    lamp.close()
