"""The lot's GPIO: vehicle loops, barrier relays and limit switches, ultrasonic bays and lamps.

Everything goes through gpiozero, so one pin factory chooses the hardware: ``lgpio`` on a Pi 5,
``mock`` in tests and in the simulator (whose cars drive the mock pins). Only gpiozero's public
API is used (devices, ``Device.pin_factory``, the pins' ``state``, ``edges`` and
``when_changed``, the factory's ``ticks_diff``), so its upgrades need no version cap here.

gpiozero calls back from its own threads (and, for mock pins, from whoever drives the pin), so
every callback only hops onto the event loop with ``call_soon_threadsafe``; all state lives on
the loop. Debouncing, relay pulses and feedback timeouts are timed with the loop's clock
(``call_later``, ``asyncio.sleep``), never with gpiozero's ``bounce_time`` or ``blink`` (which
use real-time threads), so the same code runs under the simulator's virtual-time loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from gpiozero import (  # type: ignore[import-untyped]
    Device,
    DigitalInputDevice,
    DigitalOutputDevice,
    InputDevice,
)
from gpiozero.pins import Factory  # type: ignore[import-untyped]

from gateway.config import BarrierConfig, LaneGpio, LaneTiming, PinFactoryKind, UltrasonicSensor
from gateway.core.clock import Clock
from gateway.core.events import Severity
from gateway.core.lane_machine import Position
from gateway.core.records import Alarm
from gateway.drivers import AlarmLatch, AlarmSink, BayListener, BayReading, BayReadingState
from gateway.runtime.aio import TaskSet, cancel_and_wait

log = structlog.get_logger(__name__)


class BarrierRefusedError(Exception):
    """The barrier was not lowered: its guard says a vehicle is under it."""


# --- pin factory --------------------------------------------------------------------------


def make_pin_factory(
    kind: PinFactoryKind = "auto", env: Mapping[str, str] | None = None
) -> Factory:
    """The pin factory for ``kind``; ``auto`` honours ``$GPIOZERO_PIN_FACTORY`` like gpiozero.

    The factory is made here and handed to every device, rather than set globally, so a test
    or the simulator can hold several independent ones.
    """
    environ = os.environ if env is None else env
    if kind == "auto":
        chosen = environ.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
        if chosen in ("lgpio", "rpigpio", "mock"):
            kind = chosen  # type: ignore[assignment]
    if kind == "mock":
        from gpiozero.pins.mock import MockFactory  # type: ignore[import-untyped]

        return MockFactory()
    if kind == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory  # type: ignore[import-untyped]

        return LGPIOFactory()
    if kind == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory  # type: ignore[import-untyped]

        return RPiGPIOFactory()
    Device.ensure_pin_factory()  # gpiozero's own choice, as a device built without one gets
    return Device.pin_factory


def _hop(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> Callable[[], None]:
    """A gpiozero callback that runs ``callback`` on ``loop``, from whatever thread it fires in."""

    def fire() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            loop.call_soon_threadsafe(callback)

    return fire


# --- vehicle loops ------------------------------------------------------------------------

LoopListener = Callable[[bool], None]


class VehicleLoop:
    """A loop detector output (arming, safety, closing), debounced on the event loop.

    A change counts once the raw input has held its new level for ``debounce_ms``; shorter
    flickers (chatter from a detector at its sensitivity limit) are counted and dropped.
    Must be built on the loop's thread, while the loop runs or just before.
    """

    def __init__(
        self,
        name: str,
        pin: int,
        *,
        debounce_ms: float = 150.0,
        active_high: bool = True,
        factory: Factory | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if debounce_ms < 0:
            raise ValueError("debounce_ms must be >= 0")
        self.name = name
        self.pin = pin
        self._loop = loop or asyncio.get_event_loop()
        self._debounce_s = debounce_ms / 1000.0
        self._device = DigitalInputDevice(pin, pull_up=not active_high, pin_factory=factory)
        self._occupied: bool = bool(self._device.is_active)
        self._pending: asyncio.TimerHandle | None = None
        self._listeners: list[LoopListener] = []
        self._waiters: list[tuple[bool, asyncio.Future[None]]] = []
        self.changed_at: float = self._loop.time()
        self.changes = 0
        self.chatter = 0  # raw flickers shorter than the debounce time
        edge = _hop(self._loop, self._on_edge)
        self._device.when_activated = edge
        self._device.when_deactivated = edge

    @property
    def occupied(self) -> bool:
        """The debounced state: a vehicle is over the loop."""
        return self._occupied

    @property
    def present(self) -> bool:
        """Occupied, or the raw input says a vehicle may be arriving: the cautious reading."""
        return self._occupied or bool(self._device.is_active)

    def subscribe(self, listener: LoopListener) -> Callable[[], None]:
        """Call ``listener(occupied)`` on each debounced change; returns the unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def wait(self, occupied: bool, timeout_s: float | None = None) -> bool:
        """Wait until the loop's debounced state is ``occupied``; False on timeout."""
        if self._occupied == occupied:
            return True
        future: asyncio.Future[None] = self._loop.create_future()
        entry = (occupied, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)
        return True

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._device.close()

    def _on_edge(self) -> None:
        if self._device.closed:
            return
        raw = bool(self._device.is_active)
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
            if raw == self._occupied:
                self.chatter += 1  # it went back before the debounce time was up
        if raw != self._occupied:
            self._pending = self._loop.call_later(self._debounce_s, self._settle)

    def _settle(self) -> None:
        self._pending = None
        raw = bool(self._device.is_active)
        if raw == self._occupied:
            return
        self._occupied = raw
        self.changed_at = self._loop.time()
        self.changes += 1
        log.debug("loop.changed", loop=self.name, pin=self.pin, occupied=raw)
        for occupied, future in list(self._waiters):
            if occupied == raw and not future.done():
                future.set_result(None)
        for listener in list(self._listeners):
            try:
                listener(raw)
            except Exception:
                log.exception("loop.listener_failed", loop=self.name)


class LoopWatch:
    """Alarms for a lane's loops that are stuck occupied or dead.

    *Stuck*: occupied for longer than any vehicle takes (``loop_stuck_after_s``). The safety
    loop gets its own, longer bound (``safety_stuck_after_s``): with the barrier held open, a
    slow queue can cover it for a long time. *Dead*: reading free with no change for
    ``loop_dead_after_s`` while every other loop of the lane saw at least
    ``DEAD_AFTER_VEHICLES`` vehicles: traffic went through, so this loop should have seen it.
    Every other loop, not any: cars refused at an entry cross only the arming loop, and must
    not make the safety loop look dead. A loop that fails occupied (as fail-safe detectors do)
    is stuck, not dead, so one fault raises one alarm.
    """

    DEAD_AFTER_VEHICLES = 3

    def __init__(self, loops: Mapping[str, VehicleLoop], timing: LaneTiming, alarms: AlarmSink,
                 *, lane_id: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loops = dict(loops)
        self._timing = timing
        self._loop = loop or asyncio.get_event_loop()
        self._latch = AlarmLatch(alarms, "loops", lane=lane_id)
        self._stuck_timers: dict[str, asyncio.TimerHandle] = {}
        self._arrivals = dict.fromkeys(self._loops, 0)
        # Each loop's last change (loop time) and the other loops' arrival counts then.
        self._since = {role: (self._loop.time(), dict(self._arrivals)) for role in self._loops}
        self._unsubscribe = [vloop.subscribe(functools.partial(self._changed, role))
                             for role, vloop in self._loops.items()]
        for role, vloop in self._loops.items():
            self._changed(role, vloop.occupied)

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for timer in self._stuck_timers.values():
            timer.cancel()
        self._stuck_timers.clear()
        self._latch.close()

    def _changed(self, role: str, occupied: bool) -> None:
        name = self._loops[role].name
        timer = self._stuck_timers.pop(role, None)
        if timer is not None:
            timer.cancel()
        if occupied:
            self._arrivals[role] += 1
            self._stuck_timers[role] = self._loop.call_later(
                self._stuck_after_s(role), self._stuck, role)
        else:
            self._latch.clear(f"loop.stuck:{name}", f"loop {name} is free again")
        self._latch.clear(f"loop.dead:{name}", f"loop {name} detects again")
        self._since[role] = (self._loop.time(), dict(self._arrivals))
        for other in self._loops:
            if other != role and self._dead(other):
                self._latch.set(self._dead_alarm(other))

    def _stuck_after_s(self, role: str) -> float:
        if role == "safety":
            return self._timing.safety_stuck_after_s
        return self._timing.loop_stuck_after_s

    def _stuck(self, role: str) -> None:
        self._stuck_timers.pop(role, None)
        name, after_s = self._loops[role].name, self._stuck_after_s(role)
        log.error("loop.stuck", loop=name, after_s=after_s)
        self._latch.set(Alarm(
            f"loop.stuck:{name}", "critical",
            f"loop {name} has been occupied for over {after_s:g} s, longer than any vehicle "
            "takes: a stalled vehicle, or a loop or detector fault",
            {"loop": name, "afterS": after_s}, component="gpio"))

    def _dead(self, role: str) -> bool:
        if self._loops[role].occupied:
            return False
        changed_at, arrivals_then = self._since[role]
        return (self._loop.time() - changed_at >= self._timing.loop_dead_after_s
                and all(self._arrivals[other] - arrivals_then[other] >= self.DEAD_AFTER_VEHICLES
                        for other in self._loops if other != role))

    def _dead_alarm(self, role: str) -> Alarm:
        name = self._loops[role].name
        changed_at, arrivals_then = self._since[role]
        quiet_s = round(self._loop.time() - changed_at)
        seen = {other: self._arrivals[other] - arrivals_then[other]
                for other in self._loops if other != role}
        log.error("loop.dead", loop=name, quiet_s=quiet_s, others=seen)
        # A dead closing loop only delays a closing (the pass timeout closes); the others
        # miss vehicles at the gate or under the barrier.
        severity: Severity = "warning" if role == "closing" else "critical"
        return Alarm(
            f"loop.dead:{name}", severity,
            f"loop {name} has not changed for {quiet_s} s while the lane's other loops saw "
            f"vehicles ({', '.join(f'{k} {v}' for k, v in seen.items())}): a cut loop or a "
            "dead detector",
            {"loop": name, "quietS": quiet_s, "otherLoopVehicles": seen}, component="gpio")


# --- barrier ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BarrierCommand:
    """One command given to the barrier, kept for the safety checks and for diagnostics."""

    at: float  # loop time
    action: Literal["raise", "lower"]
    outcome: Literal["sent", "refused"]
    relay: Literal["open", "close"] | None  # the relay energised or released; None: none
    guard_clear: bool | None  # what the lowering guard said; None for a raise


LowerGuard = Callable[[], bool]
"""Returns True when the barrier may come down (nothing under it)."""

PositionListener = Callable[[Position], None]


class Barrier:
    """A barrier controller driven through relays, with optional limit-switch feedback.

    ``pulse`` drive gives each command as a pulse on the open or close relay; ``level`` drive
    holds the open relay for as long as the barrier is to stay up. With limit switches, a
    command that does not reach its switch within ``feedback_timeout_s`` raises
    ``barrier.no_feedback:<lane>`` and the position reads ``fault`` until a switch answers.

    Whether to lower is the lane's decision; the barrier still asks its ``lower_guard`` right
    before energising anything, and refuses (:class:`BarrierRefusedError`) when it says no.
    """

    def __init__(
        self,
        lane_id: str,
        pins: LaneGpio,
        config: BarrierConfig,
        *,
        factory: Factory | None = None,
        alarms: AlarmSink | None = None,
        lower_guard: LowerGuard | None = None,
        limits_active_high: bool = True,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.lane_id = lane_id
        self.config = config
        self._loop = loop or asyncio.get_event_loop()
        self._alarms = alarms
        self._guard = lower_guard
        self._open = DigitalOutputDevice(pins.open_relay, pin_factory=factory)
        self._close: Any = None
        if pins.close_relay is not None:
            self._close = DigitalOutputDevice(pins.close_relay, pin_factory=factory)
        self._up = self._limit(pins.up_limit, factory, limits_active_high)
        self._down = self._limit(pins.down_limit, factory, limits_active_high)
        self._target: Literal["up", "down"] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._faulted = False
        self._position: Position = "unknown"
        self._lock = asyncio.Lock()
        self._closing_pulse: asyncio.Task[None] | None = None
        self._tasks = TaskSet("barrier", lane=lane_id)  # alarm writes off the callback path
        self._listeners: list[PositionListener] = []
        self.commands: deque[BarrierCommand] = deque(maxlen=1000)
        self.feedback_timeouts = 0
        self._update_position()

    @property
    def alarm_id(self) -> str:
        return f"barrier.no_feedback:{self.lane_id}"

    @property
    def has_feedback(self) -> bool:
        return self._up is not None or self._down is not None

    @property
    def position(self) -> Position:
        """up, down, moving, unknown (no feedback and no command yet) or fault."""
        return self._position

    @property
    def faulted(self) -> bool:
        return self._faulted

    @property
    def commanded(self) -> Literal["up", "down"] | None:
        """Where the barrier was last told to go."""
        return self._target

    def set_lower_guard(self, guard: LowerGuard | None) -> None:
        self._guard = guard

    def subscribe(self, listener: PositionListener) -> Callable[[], None]:
        """Call ``listener(position)`` on each change of position; returns the unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def wait_position(self, position: Position, timeout_s: float | None = None) -> bool:
        """Wait until the barrier reads ``position``; False on timeout."""
        if self._position == position:
            return True
        reached = asyncio.Event()

        def check(now: Position) -> None:
            if now == position:
                reached.set()

        unsubscribe = self.subscribe(check)
        try:
            await asyncio.wait_for(reached.wait(), timeout_s)
        except TimeoutError:
            return False
        finally:
            unsubscribe()
        return True

    async def raise_(self) -> None:
        """Open: pulse the open relay, or hold it (level drive). Cuts a closing pulse short."""
        if self._closing_pulse is not None and not self._closing_pulse.done():
            # An opening always wins over a closing in progress.
            self._closing_pulse.cancel()
            self._release_close()
        self._command("raise", "sent", "open", None)
        self._expect("up")
        if self.config.drive == "level":
            self._open.on()
            return
        async with self._lock:
            await self._pulse(self._open)

    async def lower(self) -> None:
        """Close, if the guard allows it at the moment the relay would be switched.

        Raises :class:`BarrierRefusedError` (and switches nothing) when the guard says a
        vehicle is under the barrier. With pulse drive and no close relay the controller
        closes by itself; the command is recorded and feedback is still supervised.
        """
        async with self._lock:
            clear = self._guard is None or self._guard()
            if not clear:
                self._command("lower", "refused", None, False)
                log.warning("barrier.lower_refused", lane=self.lane_id, reason="safety loop")
                raise BarrierRefusedError(f"{self.lane_id}: a vehicle is under the barrier")
            if self.config.drive == "level":
                self._command("lower", "sent", "open", self._guard is not None)
                self._expect("down")
                self._open.off()
                return
            relay: Literal["close"] | None = "close" if self._close is not None else None
            self._command("lower", "sent", relay, self._guard is not None)
            self._expect("down")
            if self._close is None:
                return
            self._closing_pulse = asyncio.ensure_future(self._pulse(self._close))
            try:
                await self._closing_pulse
            except asyncio.CancelledError:
                self._release_close()
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our caller was cancelled, not just the pulse (by raise_)

    async def close(self) -> None:
        """Release every relay and input (a level-driven barrier then closes by itself)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._tasks.cancel()
        if self._closing_pulse is not None:
            self._closing_pulse.cancel()
        for device in (self._open, self._close, self._up, self._down):
            if device is not None:
                device.close()

    # -- internals -------------------------------------------------------------------------

    def _limit(self, pin: int | None, factory: Factory | None, active_high: bool) -> Any:
        if pin is None:
            return None
        device = DigitalInputDevice(pin, pull_up=not active_high, pin_factory=factory)
        edge = _hop(self._loop, self._on_limit)
        device.when_activated = edge
        device.when_deactivated = edge
        return device

    async def _pulse(self, relay: Any) -> None:
        relay.on()
        try:
            await asyncio.sleep(self.config.pulse_ms / 1000.0)
        finally:
            relay.off()

    def _release_close(self) -> None:
        if self._close is not None:
            self._close.off()

    def _command(
        self,
        action: Literal["raise", "lower"],
        outcome: Literal["sent", "refused"],
        relay: Literal["open", "close"] | None,
        guard_clear: bool | None,
    ) -> None:
        self.commands.append(BarrierCommand(self._loop.time(), action, outcome, relay, guard_clear))
        log.info("barrier.command", lane=self.lane_id, action=action, outcome=outcome)

    def _expect(self, target: Literal["up", "down"]) -> None:
        self._target = target
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self.has_feedback and not self._reached(target):
            self._watchdog = self._loop.call_later(
                self.config.feedback_timeout_s, self._no_feedback, target
            )
        self._update_position()

    def _reached(self, target: Literal["up", "down"]) -> bool:
        """Whether the switches say the barrier is at ``target``, with the switches fitted."""
        mine, other = (self._up, self._down) if target == "up" else (self._down, self._up)
        if mine is not None:
            return bool(mine.is_active)
        return other is not None and not other.is_active

    def _on_limit(self) -> None:
        if self._target is not None and self._watchdog is not None and self._reached(self._target):
            self._watchdog.cancel()
            self._watchdog = None
        if self._faulted and not self._conflict() and self._at_limit():
            self._faulted = False
            log.info("barrier.feedback_restored", lane=self.lane_id)
            self._tasks.spawn(self._clear_alarm())
        self._update_position()

    def _conflict(self) -> bool:
        return (
            self._up is not None
            and self._down is not None
            and bool(self._up.is_active)
            and bool(self._down.is_active)
        )

    def _at_limit(self) -> bool:
        return any(d is not None and d.is_active for d in (self._up, self._down))

    def _no_feedback(self, target: Literal["up", "down"]) -> None:
        self._watchdog = None
        self._faulted = True
        self.feedback_timeouts += 1
        log.error("barrier.no_feedback", lane=self.lane_id, target=target,
                  timeout_s=self.config.feedback_timeout_s)
        self._update_position()
        if self._alarms is not None:
            alarm = Alarm(
                self.alarm_id,
                "critical",
                f"barrier of lane {self.lane_id} did not report {target} within "
                f"{self.config.feedback_timeout_s:g} s of the command",
                {"lane": self.lane_id, "target": target,
                 "timeoutS": self.config.feedback_timeout_s},
                component="gpio",
            )
            self._tasks.spawn(self._alarms.raise_alarm(alarm))

    async def _clear_alarm(self) -> None:
        if self._alarms is not None:
            await self._alarms.clear_alarm(self.alarm_id, "barrier feedback restored")

    def _update_position(self) -> None:
        position = self._derive_position()
        if position == self._position:
            return
        self._position = position
        log.debug("barrier.position", lane=self.lane_id, position=position)
        for listener in list(self._listeners):
            try:
                listener(position)
            except Exception:
                log.exception("barrier.listener_failed", lane=self.lane_id)

    def _derive_position(self) -> Position:
        if self._conflict() or self._faulted:
            return "fault"
        if not self.has_feedback:
            return self._target or "unknown"
        if self._up is not None and self._up.is_active:
            return "up"
        if self._down is not None and self._down.is_active:
            return "down"
        # With one switch, its release means the barrier is at the other end (or on its way).
        one_switch = self._up is None or self._down is None
        if one_switch and self._target is not None and self._reached(self._target):
            return self._target
        return "moving"


# --- ultrasonic bays ----------------------------------------------------------------------


_ECHO_LOCK = threading.Lock()  # one ping at a time, so that no sensor hears another's echo


class _Ranger:
    """An HC-SR04 read through gpiozero's public pin API, counting what a median would hide.

    gpiozero's ``DistanceSensor`` drops a missed echo without a trace and keeps its last
    median, so a dead sensor would go on reading its last distance; a bay must see the misses
    to read ``unknown``. So this pings the sensor itself, the way ``DistanceSensor`` does: a
    10 us trigger pulse, the echo's length from the echo pin's edge ticks, on its own thread,
    and the median of the last ``queue_len`` answers. Unlike ``DistanceSensor`` it pings only
    when a reading is asked for (`want`), never sooner than 60 ms (the HC-SR04's cycle) after
    the ping before: pinging without pause woke the thread tens of times a second for
    readings nobody read, most of an idle daemon's wake-ups.
    """

    SPEED_OF_SOUND_MPS = 343.26
    CYCLE_S = 0.06
    ECHO_TIMEOUT_S = 0.1  # the longest echo is 38 ms; the wait before it is unspecified
    STUCK_TIMEOUT_S = 0.05  # for an echo still high from the previous ping

    def __init__(self, trigger: int, echo: int, *, max_distance_m: float, queue_len: int,
                 factory: Factory | None, name: str) -> None:
        self.max_distance_m = max_distance_m
        self.attempts = 0
        self.misses = 0  # consecutive pings with no (complete) echo
        self.far = 0  # consecutive readings at or beyond max_distance_m
        self.last_ok: float | None = None  # the newest good reading, in metres
        self._recent: deque[float] = deque(maxlen=queue_len)
        self._rise: float | None = None
        self._fall: float | None = None
        self._answered = threading.Event()
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._pinged = -self.CYCLE_S  # time.monotonic() of the last ping
        self._trigger = DigitalOutputDevice(trigger, pin_factory=factory)
        try:
            self._echo = InputDevice(echo, pull_up=False, pin_factory=factory)
        except BaseException:
            self._trigger.close()
            raise
        pin = self._echo.pin
        pin.edges = "both"
        pin.bounce = None
        pin.when_changed = self._edge
        self._thread = threading.Thread(target=self._run, name=f"hc-sr04-{name}", daemon=True)
        self._thread.start()

    @property
    def distance(self) -> float:
        """The median of the recent readings, in metres (0 before the first)."""
        return statistics.median(self._recent) if self._recent else 0.0

    def want(self) -> None:
        """Ask for one more ping: the reader asks each time it takes the figures."""
        self._wanted.set()

    def close(self) -> None:
        """Stop pinging (joins the thread, so call it off the loop) and release the pins."""
        self._stop.set()
        self._wanted.set()
        self._thread.join()
        self._trigger.close()
        self._echo.close()

    def _edge(self, ticks: float, level: bool) -> None:
        if level:
            self._rise = ticks
        else:
            self._fall = ticks
            self._answered.set()

    def _run(self) -> None:
        while self._wanted.wait() and not self._stop.is_set():
            self._wanted.clear()
            rest = self._pinged + self.CYCLE_S - time.monotonic()
            if rest > 0 and self._stop.wait(rest):
                return
            self._pinged = time.monotonic()
            self._record(self._ping())

    def _ping(self) -> float | None:
        if self._echo.pin.state and not self._answered.wait(self.STUCK_TIMEOUT_S):
            return None
        self._answered.clear()
        self._rise = self._fall = None
        with _ECHO_LOCK:
            self._trigger.on()
            time.sleep(0.00001)
            self._trigger.off()
            if not self._answered.wait(self.ECHO_TIMEOUT_S):
                return None
        rise, fall = self._rise, self._fall
        if rise is None or fall is None:
            return None  # only the fall was seen: the echo was too short to catch
        seconds = self._echo.pin_factory.ticks_diff(fall, rise)
        return float(seconds) * self.SPEED_OF_SOUND_MPS / 2.0

    def _record(self, metres: float | None) -> None:
        self.attempts += 1
        if metres is None:
            self.misses += 1
            return
        self.misses = 0
        if metres >= self.max_distance_m:
            self.far += 1
        else:
            self.far = 0
            self.last_ok = metres
        self._recent.append(min(metres, self.max_distance_m))


class UltrasonicBay:
    """One bay watched by an HC-SR04 from above: threshold, hysteresis, dwell and faults.

    Occupied when the distance falls below ``threshold_cm``; free again only above
    ``threshold_cm + hysteresis_cm``; a new state counts once it has held ``min_dwell_s``.
    ``fault_after`` missed echoes (or out-of-range readings) in a row make the bay ``unknown``
    at once, with a fault: a dead sensor never reads ``free``.
    """

    MAX_DISTANCE_M = 4.0  # the HC-SR04's range

    def __init__(
        self,
        bay_id: str,
        sensor: UltrasonicSensor,
        *,
        clock: Clock,
        factory: Factory | None = None,
        poll_s: float = 0.5,
        fault_after: int = 5,
        queue_len: int = 3,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.bay_id = bay_id
        self.config = sensor
        self._clock = clock
        self._poll_s = poll_s
        self._fault_after = fault_after
        self._loop = loop or asyncio.get_event_loop()
        self.source = f"ultrasonic:{sensor.trigger_pin}"
        self._sensor = _Ranger(sensor.trigger_pin, sensor.echo_pin,
                               max_distance_m=self.MAX_DISTANCE_M, queue_len=queue_len,
                               factory=factory, name=bay_id)
        self._listeners: list[BayListener] = []
        self._reading: BayReading | None = None
        self._candidate: tuple[BayReadingState, float] | None = None  # (state, since loop time)
        self._task: asyncio.Task[None] | None = None
        self.faults = 0

    @property
    def reading(self) -> BayReading | None:
        """The bay's current debounced reading; None until the first one counts."""
        return self._reading

    def subscribe(self, listener: BayListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await asyncio.to_thread(self._sensor.close)  # joins the pinging thread

    async def _run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self._poll_s)

    def poll(self) -> None:
        """Take the sensor's newest figures and update the bay (the poller calls this); the
        sensor pings again for the next poll, so that it pings only as often as it is read."""
        sensor = self._sensor
        sensor.want()
        misses, far, attempts = sensor.misses, sensor.far, sensor.attempts
        if misses >= self._fault_after or far >= self._fault_after:
            fault = "no_echo" if misses >= self._fault_after else "out_of_range"
            self._emit("unknown", fault, None)
            self._candidate = None
            return
        if attempts == 0 or sensor.last_ok is None:
            return  # nothing measured yet
        distance_cm = float(sensor.distance) * 100.0
        state = self._classify(distance_cm)
        now = self._loop.time()
        if self._reading is not None and self._reading.state == state:
            self._candidate = None
            return
        if self._candidate is None or self._candidate[0] != state:
            self._candidate = (state, now)
        if now - self._candidate[1] >= self.config.min_dwell_s:
            self._candidate = None
            self._emit(state, None, distance_cm)

    def _classify(self, distance_cm: float) -> BayReadingState:
        threshold = self.config.threshold_cm
        current = self._reading.state if self._reading is not None else None
        if current == "occupied":
            return "free" if distance_cm > threshold + self.config.hysteresis_cm else "occupied"
        if current == "free":
            return "occupied" if distance_cm < threshold else "free"
        return "occupied" if distance_cm < threshold else "free"

    def _emit(self, state: BayReadingState, fault: str | None, raw: float | None) -> None:
        previous = self._reading
        if previous is not None and previous.state == state and previous.fault == fault:
            return
        if fault is not None:
            self.faults += 1
            log.warning("ultrasonic.fault", bay=self.bay_id, fault=fault, source=self.source)
        reading = BayReading(self.bay_id, state, self.source, self._clock.stamp(), fault, raw)
        self._reading = reading
        for listener in list(self._listeners):
            try:
                listener(reading)
            except Exception:
                log.exception("ultrasonic.listener_failed", bay=self.bay_id)


# --- lamps --------------------------------------------------------------------------------


class Lamp:
    """A lamp on a relay or an LED: the lot-full sign, a lane's signal."""

    def __init__(self, name: str, pin: int, *, factory: Factory | None = None,
                 active_high: bool = True) -> None:
        self.name = name
        self._device = DigitalOutputDevice(pin, active_high=active_high, pin_factory=factory)

    @property
    def lit(self) -> bool:
        return bool(self._device.is_active)

    def set(self, lit: bool) -> None:
        if lit != self.lit:
            log.info("lamp.changed", lamp=self.name, lit=lit)
        self._device.value = lit

    def close(self) -> None:
        self._device.close()


# --- a lane's set ---------------------------------------------------------------------------


@dataclass
class LaneIo:
    """All of one lane's GPIO, built from its config."""

    arming: VehicleLoop
    safety: VehicleLoop
    closing: VehicleLoop | None
    barrier: Barrier
    lamp: Lamp | None
    watch: LoopWatch | None = None

    @classmethod
    def build(
        cls,
        lane_id: str,
        pins: LaneGpio,
        barrier: BarrierConfig,
        *,
        factory: Factory | None = None,
        alarms: AlarmSink | None = None,
        debounce_ms: float = 150.0,
        timing: LaneTiming | None = None,
    ) -> LaneIo:
        """The lane's loops, barrier and lamp; the barrier refuses to lower onto the safety loop.

        With an alarm sink, the loops are watched for being stuck or dead (bounds from
        ``timing``, else the defaults).
        """
        arming = VehicleLoop(f"{lane_id}.arming", pins.arming_loop, debounce_ms=debounce_ms,
                             factory=factory)
        safety = VehicleLoop(f"{lane_id}.safety", pins.safety_loop, debounce_ms=debounce_ms,
                             factory=factory)
        closing = None if pins.closing_loop is None else VehicleLoop(
            f"{lane_id}.closing", pins.closing_loop, debounce_ms=debounce_ms, factory=factory)
        loops = {"arming": arming, "safety": safety}
        if closing is not None:
            loops["closing"] = closing
        return cls(
            arming=arming,
            safety=safety,
            closing=closing,
            # Defence in depth: the safety loop, raw input included, checked at the last moment.
            barrier=Barrier(lane_id, pins, barrier, factory=factory, alarms=alarms,
                            lower_guard=lambda: not safety.present),
            lamp=None if pins.lamp is None else Lamp(f"{lane_id}.lamp", pins.lamp,
                                                     factory=factory),
            watch=None if alarms is None else LoopWatch(loops, timing or LaneTiming(), alarms,
                                                        lane_id=lane_id),
        )

    async def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        await self.barrier.close()
        for loop in (self.arming, self.safety, self.closing):
            if loop is not None:
                loop.close()
        if self.lamp is not None:
            self.lamp.close()
