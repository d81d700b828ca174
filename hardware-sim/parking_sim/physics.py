"""Physics of one lane (cars over loops, a barrier arm) and of the bays' distance sensors.

A lane is one axis in metres: ``x`` is where a car's front bumper is, the barrier's arm is at
``x = 0``. The arming loop lies before it, the safety loop under it, the closing loop after it
(:class:`LaneGeometry`). A loop detects a car whose body overlaps it by ``detect_overlap_m``.

Cars roll at walking pace, keep a gap to the car ahead and stop at the stop line unless the
barrier was opened for them (a tailgater squeezes through behind the car ahead while the arm
is still up or coming down). Some back out. The barrier controller moves its arm when its
relays tell it to, reports its limit switches, and (like real ones, unless told otherwise)
will not bring the arm down on a vehicle in its safety loop.

Every moment the arm moves down while a vehicle is in the safety zone is recorded as a
:class:`SafetyEvent`; ``commanded_down_onto_vehicle`` is the gateway's fault (it lowered the
barrier onto a car), the other kinds come from drivers and the controller's own safety.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gateway.runtime.aio import cancel_and_wait
from parking_sim.gpio import SimInputPin, SimRelayPin
from parking_sim.traffic import Arrival

ACCEL_MPS2 = 1.5
REVERSE_MPS = 1.0
NORMAL_GAP_M = 2.0
TAILGATE_GAP_M = (0.4, 0.9)  # closer than 1 m: the loops see one long vehicle


@dataclass(frozen=True, slots=True)
class LaneGeometry:
    arming: tuple[float, float] = (-4.0, -1.5)
    safety: tuple[float, float] = (-1.0, 1.0)
    closing: tuple[float, float] = (1.5, 4.0)
    stop_x: float = -1.1  # where a waiting car's front stops: short of the safety loop
    spawn_x: float = -20.0
    detect_overlap_m: float = 0.3
    arm_zone: tuple[float, float] = (-0.4, 0.4)  # where the arm would strike a vehicle
    camera_view: tuple[float, float] = (-9.0, -0.5)  # the plate is in view for these fronts


SafetyKind = Literal[
    "commanded_down_onto_vehicle",  # the gateway lowered the barrier onto an occupied loop
    "vehicle_entered_during_descent",  # a car drove under a descending arm
    "arm_hit_vehicle",  # the arm came down on a car (no controller safety)
]


@dataclass(frozen=True, slots=True)
class SafetyEvent:
    at: float  # loop time
    lane: str
    kind: SafetyKind
    plate: str | None


CarState = Literal["driving", "reversing", "gone"]


@dataclass(eq=False)
class SimCar:
    """One car in one lane."""

    arrival: Arrival
    front: float
    follow_gap: float
    patience_s: float
    reverse_after_s: float | None  # backs out this long after stopping, whatever happens
    tailgating: bool = False
    v: float = 0.0
    state: CarState = "driving"
    armed_at: float | None = None  # when its front reached the arming loop
    waiting_since: float | None = None  # first stopped in the queue
    at_line_since: float | None = None  # stopped first in line, at the barrier
    refused: bool = False
    # Tickets (parking_sim.tickets): a plate the cameras cannot read (dirt, a bike rack over
    # it), and the ticket text its driver took at the entry, kept for the pay station and the
    # exit's scanner.
    plate_readable: bool = True
    ticket: str | None = None

    @property
    def plate(self) -> str:
        return self.arrival.vehicle.plate

    @property
    def length(self) -> float:
        return self.arrival.length_m

    @property
    def rear(self) -> float:
        return self.front - self.length

    def overlap(self, span: tuple[float, float]) -> float:
        return max(0.0, min(self.front, span[1]) - max(self.rear, span[0]))


@dataclass(frozen=True, slots=True)
class BarrierPhysics:
    up_s: float = 2.5
    down_s: float = 3.0
    controller_safety: bool = True  # the controller itself stops and reverses over a vehicle
    auto_close_s: float = 60.0  # pulse drive with no close relay: close after this if idle


@dataclass
class BarrierArm:
    """The barrier controller and its arm; ``angle`` 0 is down, 1 is up."""

    physics: BarrierPhysics
    angle: float = 0.0
    direction: int = 0  # +1 rising, -1 falling
    stuck: bool = False  # a fault: the motor does not move
    open_started_at: float = float("-inf")
    up_since: float | None = None
    descent_flagged: bool = False

    @property
    def position(self) -> Literal["up", "down", "moving"]:
        if self.angle >= 1.0:
            return "up"
        if self.angle <= 0.0:
            return "down"
        return "moving"

    def open(self, now: float) -> None:
        if self.stuck:
            return
        if self.direction != 1 and self.angle < 1.0:
            self.open_started_at = now
        self.direction = 1 if self.angle < 1.0 else 0

    def close(self) -> None:
        if self.stuck:
            return
        self.direction = -1 if self.angle > 0.0 else 0
        self.descent_flagged = False

    def step(self, dt: float, now: float) -> None:
        if self.stuck or self.direction == 0:
            return
        travel = self.physics.up_s if self.direction > 0 else self.physics.down_s
        self.angle = min(1.0, max(0.0, self.angle + self.direction * dt / travel))
        if self.angle >= 1.0 and self.direction > 0:
            self.direction = 0
            self.up_since = now
        elif self.angle <= 0.0 and self.direction < 0:
            self.direction = 0
        if self.angle < 1.0:
            self.up_since = None


@dataclass
class LanePins:
    """The lane's wiring as the world sees it (None: not fitted)."""

    arming: SimInputPin
    safety: SimInputPin
    closing: SimInputPin | None
    open_relay: SimRelayPin
    close_relay: SimRelayPin | None
    up_limit: SimInputPin | None
    down_limit: SimInputPin | None
    drive: Literal["pulse", "level"] = "pulse"


PassedListener = Callable[["LaneSim", SimCar], None]


@dataclass
class LaneStats:
    passed: int = 0
    reversed: int = 0
    refused: int = 0  # backed out after waiting in vain
    tailgates: int = 0
    queue_max: int = 0


class LaneSim:
    """One lane's cars, loops and barrier, stepped on the event loop while anything moves."""

    def __init__(
        self,
        lane_id: str,
        pins: LanePins,
        *,
        rng: random.Random,
        geometry: LaneGeometry | None = None,
        barrier: BarrierPhysics | None = None,
        dt: float = 0.1,
        chatter_prob: float = 0.0,
        on_passed: PassedListener | None = None,
        on_reversed: PassedListener | None = None,
        on_at_line: PassedListener | None = None,
    ) -> None:
        """`on_at_line`: a car has stopped first in line at the closed barrier (on the arming
        loop): where a driver reaches out to the ticket machine."""
        self.lane_id = lane_id
        self.pins = pins
        self.geometry = geometry or LaneGeometry()
        self.arm = BarrierArm(barrier or BarrierPhysics())
        self.cars: list[SimCar] = []  # leader first
        self.safety_events: list[SafetyEvent] = []
        self.stats = LaneStats()
        self._rng = rng
        self._dt = dt
        self._chatter = chatter_prob
        self._on_passed = on_passed
        self._on_reversed = on_reversed
        self._on_at_line = on_at_line
        self._wake = asyncio.Event()
        self._loop_truth: dict[str, bool] = {}
        self._closing_seen = False
        self._task: asyncio.Task[None] | None = None
        self._view_listeners: list[Callable[[SimCar | None], None]] = []
        self._in_view: SimCar | None = None
        self._opened_for: SimCar | None = None  # the car in view when the arm began to rise
        pins.open_relay.listeners.append(self._on_open_relay)
        if pins.close_relay is not None:
            pins.close_relay.listeners.append(self._on_close_relay)
        self._update_limits()

    # -- the world's side ------------------------------------------------------------------

    def add_car(self, arrival: Arrival, *, patience_s: float) -> SimCar:
        """A car arrives at the back of the queue (right behind its leader if it tailgates)."""
        last = next((c for c in reversed(self.cars) if c.state == "driving"), None)
        tailgating = (arrival.tailgates and last is not None
                      and last.front <= self.geometry.stop_x + 0.5)
        gap = self._rng.uniform(*TAILGATE_GAP_M) if tailgating else NORMAL_GAP_M
        front = self.geometry.spawn_x
        if last is not None:
            front = min(front, last.rear - gap) if not tailgating else last.rear - gap
        car = SimCar(
            arrival, front, gap, patience_s,
            reverse_after_s=self._rng.uniform(3.0, 12.0) if arrival.reverses else None,
            tailgating=tailgating,
            v=arrival.speed_mps if tailgating and last is not None else 0.0,
        )
        self.cars.append(car)
        self.stats.queue_max = max(self.stats.queue_max, len(self.cars))
        self._wake.set()
        return car

    def on_view(self, listener: Callable[[SimCar | None], None]) -> None:
        """Be told which car's plate the lane camera sees (None: none)."""
        self._view_listeners.append(listener)

    def safety_occupied(self) -> bool:
        """The truth, not the loop's output: a vehicle over the safety loop or under the arm.

        Over the loop means as a perfect detector sees it (``detect_overlap_m``); a bumper a
        few centimetres over the loop's far edge is neither detectable nor in the arm's way.
        """
        geo = self.geometry
        return any(c.overlap(geo.safety) >= geo.detect_overlap_m or c.overlap(geo.arm_zone) > 0
                   for c in self.cars if c.state != "gone")

    def idle(self) -> bool:
        return not self.cars and self.arm.direction == 0

    async def run(self) -> None:
        """Step while anything moves; sleep until a car comes or a relay clicks otherwise."""
        loop = asyncio.get_running_loop()
        self._update_loops()
        while True:
            if self.idle() and not self._auto_close_due():
                self._wake.clear()
                timeout = self._auto_close_wait()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            self.step(self._dt, loop.time())
            await asyncio.sleep(self._dt)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    # -- physics ---------------------------------------------------------------------------

    def step(self, dt: float, now: float) -> None:
        self.arm.step(dt, now)
        self._controller_safety(now)
        self._move_cars(dt, now)
        self._update_loops()
        self._update_limits()
        self._update_view()
        self._self_close(now)

    def _move_cars(self, dt: float, now: float) -> None:
        geo = self.geometry
        leader: SimCar | None = None
        for car in list(self.cars):
            if car.state == "reversing":
                car.front -= REVERSE_MPS * dt
                if car.front < geo.arming[0] - 0.5:
                    self._remove(car, reversed_out=True)
                continue
            limit = float("inf")
            if leader is not None:
                limit = leader.rear - car.follow_gap
            if car.front <= geo.stop_x + 1e-6 and not self._may_pass(car, leader):
                limit = min(limit, geo.stop_x)
            car.v = min(car.arrival.speed_mps, car.v + ACCEL_MPS2 * dt)
            target = min(car.front + car.v * dt, limit)
            if target <= car.front + 1e-9:
                car.v = 0.0
            else:
                car.front = target
            if car.armed_at is None and car.front >= geo.arming[0]:
                car.armed_at = now
            if self._backs_out(car, now):
                continue
            if car.rear > geo.closing[1] + 1.0:
                self._remove(car, reversed_out=False)
                continue
            leader = car

    def _may_pass(self, car: SimCar, leader: SimCar | None) -> bool:
        """Whether a car short of the stop line may drive on under the barrier."""
        arm = self.arm
        if car.reverse_after_s is not None:
            return False  # it hesitates at the line and backs out, open barrier or not
        before_line = [c for c in self.cars
                       if c.state == "driving" and c.front <= self.geometry.stop_x + 1e-6]
        if car.tailgating and leader is not None and leader.front > self.geometry.stop_x:
            # Squeezing through behind the car ahead while the arm is not (yet) down.
            return arm.angle > 0.3
        first = bool(before_line) and before_line[0] is car
        # Opened after it reached the loop, or for its plate while it pulled up behind a car
        # that backed away (the loop never saw a gap, the camera saw this car): it drives on.
        opened_for_me = car is self._opened_for or (
            car.armed_at is not None and arm.open_started_at >= car.armed_at - 1e-9)
        return first and arm.angle >= 1.0 and opened_for_me

    def _backs_out(self, car: SimCar, now: float) -> bool:
        """Whether the car starts backing out now: it changed its mind, or waited too long."""
        geo = self.geometry
        if car.front > geo.stop_x + 1e-6 or car.v > 0.0:
            return False  # past the line (committed), or rolling
        if car.waiting_since is None:
            car.waiting_since = now
        at_line = car.front >= geo.stop_x - 0.05
        if at_line and car.at_line_since is None:
            car.at_line_since = now
            if self._on_at_line is not None:
                self._on_at_line(self, car)
        if car.reverse_after_s is not None and now - car.waiting_since >= car.reverse_after_s:
            car.state = "reversing"
            return True
        if car.at_line_since is not None and now - car.at_line_since >= car.patience_s:
            car.state = "reversing"
            car.refused = True
            return True
        return False

    def _remove(self, car: SimCar, *, reversed_out: bool) -> None:
        car.state = "gone"
        self.cars.remove(car)
        if reversed_out:
            self.stats.reversed += 1
            if car.refused:
                self.stats.refused += 1
            if self._on_reversed is not None:
                self._on_reversed(self, car)
            return
        self.stats.passed += 1
        if car.tailgating:
            self.stats.tailgates += 1
        if self._on_passed is not None:
            self._on_passed(self, car)

    def _loop_occupied(self, span: tuple[float, float]) -> bool:
        need = self.geometry.detect_overlap_m
        return any(c.overlap(span) >= need for c in self.cars)

    def _update_loops(self) -> None:
        geo, pins = self.geometry, self.pins
        for name, pin, span in (("arming", pins.arming, geo.arming),
                                ("safety", pins.safety, geo.safety),
                                ("closing", pins.closing, geo.closing)):
            occupied = self._loop_occupied(span)
            if name == "closing" and occupied:
                self._closing_seen = True
            if self._loop_truth.get(name) == occupied:
                continue
            self._loop_truth[name] = occupied
            if pin is not None:
                self._drive(pin, occupied)

    def _drive(self, pin: SimInputPin, level: bool) -> None:
        """Set a loop output, bouncing first now and then (a detector at its limit)."""
        if self._chatter and self._rng.random() < self._chatter:
            loop = asyncio.get_running_loop()
            pin.set_level(level)
            bounces = self._rng.randint(1, 3)
            for i in range(bounces):
                loop.call_later(0.01 + 0.02 * i, pin.set_level, not level)
                loop.call_later(0.02 + 0.02 * i, pin.set_level, level)
            return
        pin.set_level(level)

    def loop_truth(self, name: str) -> bool:
        return self._loop_truth.get(name, False)

    def _update_limits(self) -> None:
        if self.pins.up_limit is not None:
            self.pins.up_limit.set_level(self.arm.angle >= 1.0)
        if self.pins.down_limit is not None:
            self.pins.down_limit.set_level(self.arm.angle <= 0.0)

    def _update_view(self) -> None:
        lo, hi = self.geometry.camera_view
        seen = next((c for c in self.cars if c.state == "driving" and lo <= c.front <= hi), None)
        if seen is self._in_view:
            return
        self._in_view = seen
        for listener in list(self._view_listeners):
            listener(seen)

    # -- the barrier controller ------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _first_in_zone(self) -> str | None:
        geo = self.geometry
        return next((c.plate for c in self.cars
                     if c.overlap(geo.safety) >= geo.detect_overlap_m
                     or c.overlap(geo.arm_zone) > 0), None)

    def _on_open_relay(self, on: bool) -> None:
        now = self._now()
        if self.pins.drive == "level" and not on:
            self._command_close(now)
        elif on:
            # Raised from down, it is raised for the car the camera shows (a reopen over a
            # closing arm is for whatever reached its loops, not for the car in view).
            from_down = self.arm.angle <= 0.0
            self.arm.open(now)
            self._opened_for = self._in_view if from_down else self._opened_for
        self._wake.set()

    def _on_close_relay(self, on: bool) -> None:
        if on:
            self._command_close(self._now())
            self._wake.set()

    def _command_close(self, now: float) -> None:
        if self.safety_occupied():
            self._record(now, "commanded_down_onto_vehicle")
            if self.arm.physics.controller_safety:
                return  # the controller will not close onto a vehicle
        self.arm.close()

    def _controller_safety(self, now: float) -> None:
        arm = self.arm
        if arm.direction >= 0 or not self.safety_occupied():
            return
        if not arm.descent_flagged:
            arm.descent_flagged = True
            self._record(now, "vehicle_entered_during_descent")
        if arm.physics.controller_safety:
            arm.open(now)
        elif arm.angle < 0.35:
            self._record(now, "arm_hit_vehicle")
            arm.direction = 0

    def _record(self, now: float, kind: SafetyKind) -> None:
        self.safety_events.append(SafetyEvent(now, self.lane_id, kind, self._first_in_zone()))

    def _auto_close_due(self) -> bool:
        return (self.pins.close_relay is None and self.pins.drive == "pulse"
                and self.arm.position == "up")

    def _auto_close_wait(self) -> float | None:
        return self.arm.physics.auto_close_s if self._auto_close_due() else None

    def _self_close(self, now: float) -> None:
        """A pulse-driven controller with no close relay closes by itself after a passage."""
        if not self._auto_close_due() or self.safety_occupied():
            return
        passed = self._closing_seen and not self.loop_truth("closing")
        up_since = self.arm.up_since if self.arm.up_since is not None else now
        if passed or now - up_since >= self.arm.physics.auto_close_s:
            self._closing_seen = False
            self.arm.close()


@dataclass
class UltrasonicPhysics:
    """What an HC-SR04 above a bay reads: the floor or a car's roof, with noise and dropouts."""

    occupied: Callable[[], bool]
    rng: random.Random
    mount_cm: float = 250.0
    noise_cm: float = 2.0
    dropout: float = 0.02  # a ping that never comes back
    spurious: float = 0.005  # a near reading (a person walking under the sensor)
    car_height_cm: float = field(default=150.0)
    dead: bool = False  # a fault: no echo at all

    def measure(self) -> float | None:
        if self.dead or self.rng.random() < self.dropout:
            return None
        if self.rng.random() < self.spurious:
            return self.rng.uniform(40.0, 90.0)
        surface = self.mount_cm - (self.car_height_cm if self.occupied() else 0.0)
        return max(3.0, self.rng.gauss(surface, self.noise_cm))
