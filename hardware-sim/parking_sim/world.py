"""The simulated lot: lanes, bays, sensors, cameras and traffic, built from the gateway's settings.

A :class:`World` owns the physical side. The gateway side (the real daemon, or the built-in
:class:`~parking_sim.gatekeeper.GateKeeper`) connects to it exactly as it would to hardware:

* GPIO: build every gpiozero device with ``pin_factory=world.factory``; the world has already
  put its own pins there (loops, limit switches and relays per lane, HC-SR04 per ultrasonic bay);
* cameras: ``world.cameras[lane_id]`` are :class:`~gateway.drivers.FrameSource` objects;
* magnetic bay nodes: ``world.bays.subscribe(...)`` tells a sensor bus (``parking_sim.bus``)
  when a car parks or leaves; ``world.modbus_units`` maps bay ids to unit ids;
* truth: ``world.truth`` logs what really happened (entries, exits, refusals, reversals,
  tailgates, bay changes) and ``world.safety_events()`` every moment an arm moved down over a
  vehicle;
* restarts: :meth:`World.saved` is the lot as it stands (every vehicle, where it is and when it
  moves on, the traffic's position), and :meth:`World.resume` puts it back before the start
  (``parking_sim.state`` keeps it in a file).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from gateway.config import ModbusSensor, Settings, UltrasonicSensor
from gateway.core.clock import Clock
from gateway.runtime.aio import cancel_and_wait
from parking_sim.camera import PhotoLibrary, PlateScene, SceneOptions, Shown, SimCamera
from parking_sim.gpio import SimPins
from parking_sim.physics import (
    BarrierPhysics,
    LaneGeometry,
    LanePins,
    LaneSim,
    SafetyEvent,
    SimCar,
    UltrasonicPhysics,
)
from parking_sim.ramps import RampSim
from parking_sim.scenario import Scenario
from parking_sim.traffic import Arrival, Kind, Traffic

log = structlog.get_logger(__name__)

RESCAN_S = 10.0  # a driver whose ticket did not open the barrier holds it up again this late


class Attachment(Protocol):
    """Something that runs beside the world (a sensor bus, a daemon), started and closed with it."""

    async def start(self) -> Any: ...

    async def close(self) -> None: ...


BayListener = Callable[[str, bool, "str | None"], None]
"""``(bay_id, occupied, plate)`` on every real change of a bay."""


class BayWorld:
    """Which car really stands in which bay."""

    def __init__(self, bay_ids: list[str], rng: random.Random) -> None:
        self._occupant: dict[str, str | None] = dict.fromkeys(bay_ids)
        self._listeners: list[BayListener] = []
        self._rng = rng

    @property
    def ids(self) -> list[str]:
        return list(self._occupant)

    def occupied(self, bay_id: str) -> bool:
        return self._occupant[bay_id] is not None

    def occupant(self, bay_id: str) -> str | None:
        return self._occupant[bay_id]

    def occupied_count(self) -> int:
        return sum(1 for plate in self._occupant.values() if plate is not None)

    def free(self) -> list[str]:
        return [bay for bay, plate in self._occupant.items() if plate is None]

    def subscribe(self, listener: BayListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def park(self, plate: str) -> str | None:
        """Put a car into a random free bay; the bay, or None when the lot is full."""
        free = self.free()
        if not free:
            return None
        bay = self._rng.choice(free)
        self._set(bay, plate)
        return bay

    def put(self, bay_id: str, plate: str) -> str | None:
        """Put a car back into `bay_id` (a restart); a random free bay if that one is not free
        or no longer exists; None when the lot is full."""
        if self._occupant.get(bay_id, plate) is not None:
            return self.park(plate)
        self._set(bay_id, plate)
        return bay_id

    def leave(self, bay_id: str) -> None:
        self._set(bay_id, None)

    def _set(self, bay_id: str, plate: str | None) -> None:
        self._occupant[bay_id] = plate
        for listener in list(self._listeners):
            listener(bay_id, plate is not None, plate)


TruthKind = Literal["arrived", "entered", "refused", "reversed", "parked", "left_bay", "exited",
                    "circled", "ticket"]


@dataclass(frozen=True, slots=True)
class TruthEvent:
    t: float  # seconds since the start of the run
    kind: TruthKind
    plate: str
    lane: str | None = None
    bay: str | None = None
    tailgate: bool = False
    population: Kind | None = None
    ticket: str | None = None  # the ticket its driver holds ("ticket": just took it)


@dataclass
class TruthLog:
    """What really happened, for checking what the gateway recorded."""

    events: list[TruthEvent] = field(default_factory=list)
    carried: Counter[str] = field(default_factory=Counter)  # counts from before a restart

    def add(self, event: TruthEvent) -> None:
        self.events.append(event)

    def of(self, kind: TruthKind) -> list[TruthEvent]:
        return [e for e in self.events if e.kind == kind]

    def counts(self) -> dict[str, int]:
        counted = Counter(str(e.kind) for e in self.events)
        counted["tailgates"] = sum(1 for e in self.events if e.kind == "entered" and e.tailgate)
        return dict(counted + self.carried) if self.carried else dict(counted)


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    occupied: int
    inside: int  # cars in the lot: parked, or driving to or from a bay
    queued: int  # cars in the lanes


Phase = Literal["arriving", "to_bay", "parked", "to_exit"]
"""Where a vehicle is: queued at an entry (not inside yet), driving to a bay, parked, or on its
way out (driving to the exit, or queued there)."""


@dataclass(frozen=True, slots=True)
class Placed:
    """One vehicle as a restart saves and resumes it."""

    arrival: Arrival
    phase: Phase
    bay: str | None = None
    due_in_s: float = 0.0  # until its next step: reaching its bay, leaving it, the exit
    ticket: str | None = None  # the ticket its driver took at the entry

    @property
    def inside(self) -> bool:
        return self.phase != "arriving"


@dataclass(frozen=True, slots=True)
class SavedWorld:
    """The lot at one moment: enough to go on from there after a restart."""

    elapsed_s: float  # since the run's start (the scenario's start time)
    vehicles: tuple[Placed, ...]
    traffic: dict[str, Any]  # Traffic.position()
    truth: dict[str, int]


@dataclass(eq=False)
class _Visit:
    """A vehicle inside, out of the lanes; ``due`` is the loop time of its next step."""

    arrival: Arrival
    bay: str | None = None
    phase: Phase = "to_bay"
    due: float = 0.0
    ticket: str | None = None  # the ticket its driver took at the entry


class World:
    """One simulated lot, built from the gateway's settings and a scenario."""

    def __init__(
        self,
        settings: Settings,
        scenario: Scenario,
        *,
        clock: Clock,
        seed: int | None = None,
        pins: SimPins | None = None,
        render_frames: bool = True,
    ) -> None:
        self.settings = settings
        self.render_frames = render_frames
        self.scenario = scenario
        self.clock = clock
        self.seed = scenario.scenario.seed if seed is None else seed
        self._rng = random.Random(self.seed)
        self.pins = pins or SimPins()
        self.factory = self.pins.factory
        self.truth = TruthLog()
        # A level counted at its ramps has no bays in the config: its places are slots.
        self.level_slots = {f"{level.id}#{n:03d}": level.id for level in settings.levels
                            for n in range(level.capacity)}
        self.bays = BayWorld([bay.id for bay in settings.bays] + list(self.level_slots),
                             random.Random(self._rng.random()))
        self.modbus_units = {bay.id: bay.sensor.unit_id for bay in settings.bays
                             if isinstance(bay.sensor, ModbusSensor)}
        photos = None
        if scenario.camera.mode == "photos" and scenario.camera.photos is not None:
            photos = PhotoLibrary(scenario.resolve(scenario.camera.photos))
        self.photos = photos
        start_hour = _local_hour(scenario, settings)
        self.traffic = Traffic(scenario.traffic_model(), seed=self.seed, start_hour=start_hour,
                               plate_pool=photos.plates() if photos else None)
        self.lanes: dict[str, LaneSim] = {}
        self.cameras: dict[str, SimCamera] = {}
        self.directions: dict[str, str] = {}
        # Tickets: the entries that print one for an unreadable plate, the exits that scan them
        # (the daemon plays their printers and scanners, parking_sim.tickets). A stream of its
        # own, so that a lot without tickets has the same day as before.
        self.ticket_entries = {lane.id for lane in settings.lanes if lane.ticket_mode != "off"}
        self.scanner_exits = {lane.id for lane in settings.lanes if lane.scanner is not None}
        self.on_scan: Callable[[str, str], None] | None = None  # (lane id, the ticket's text)
        self.tickets_unclaimed = 0  # printed with no car waiting for one (should stay 0)
        self._ticket_rng = random.Random(f"{self.seed}:tickets")
        self._build_lanes()
        self.ultrasonic: dict[str, UltrasonicPhysics] = {}
        self._build_ultrasonic()
        self.ramps: dict[str, RampSim] = {}  # by level: the ramp its vehicles take
        self._build_ramps()
        self.samples: list[Sample] = []
        self.arrivals_by_kind: list[tuple[float, Kind]] = []
        self._attachments: list[Attachment] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._inside = 0
        self._present: Counter[str] = Counter()  # plates arrived and not yet gone
        self.traffic.present = lambda plate: self._present[plate] > 0
        self._last_entry: str | None = None
        self._t0: float | None = None
        self._elapsed0 = 0.0  # a resumed run's time since the start, at its start
        self._visits: set[_Visit] = set()  # vehicles inside, out of the lanes
        self._resumed: list[tuple[_Visit, float]] = []  # their next steps, due at the start

    # -- building --------------------------------------------------------------------------

    def _build_lanes(self) -> None:
        sc = self.scenario
        physics = BarrierPhysics(sc.barrier.up_s, sc.barrier.down_s,
                                 sc.barrier.controller_safety, sc.barrier.auto_close_s)
        scene_options = SceneOptions()
        for i, lane in enumerate(self.settings.lanes):
            g = lane.gpio
            pins = LanePins(
                arming=self.pins.input(g.arming_loop),
                safety=self.pins.input(g.safety_loop),
                closing=None if g.closing_loop is None else self.pins.input(g.closing_loop),
                open_relay=self.pins.relay(g.open_relay),
                close_relay=None if g.close_relay is None else self.pins.relay(g.close_relay),
                up_limit=None if g.up_limit is None else self.pins.input(g.up_limit),
                down_limit=None if g.down_limit is None else self.pins.input(g.down_limit),
                drive=lane.barrier.drive,
            )
            sim = LaneSim(lane.id, pins, rng=random.Random(self._rng.random()),
                          geometry=LaneGeometry(), barrier=physics, dt=sc.scenario.dt_s,
                          chatter_prob=sc.sensors.loop_chatter,
                          on_passed=self._passed, on_reversed=self._reversed,
                          on_at_line=self._at_line)
            camera = SimCamera(lane.id, clock=self.clock, fps=sc.camera.fps,
                               scene=PlateScene(scene_options, seed=self.seed * 100 + i),
                               photos=self.photos, seed=self.seed * 100 + i,
                               render=self.render_frames)
            sim.on_view(_viewer(camera))
            self.lanes[lane.id] = sim
            self.cameras[lane.id] = camera
            self.directions[lane.id] = lane.direction

    def _build_ultrasonic(self) -> None:
        s = self.scenario.sensors
        for bay in self.settings.bays:
            sensor = bay.sensor
            if not isinstance(sensor, UltrasonicSensor):
                continue
            physics = UltrasonicPhysics(
                occupied=_occupied_probe(self.bays, bay.id),
                rng=random.Random(self._rng.random()),
                noise_cm=s.ultrasonic_noise_cm, dropout=s.ultrasonic_dropout,
                spurious=s.ultrasonic_spurious,
            )
            self.pins.ultrasonic(sensor.trigger_pin, sensor.echo_pin, physics.measure)
            self.ultrasonic[bay.id] = physics

    def _build_ramps(self) -> None:
        for level in self.settings.levels:
            ramp = level.ramps[0]
            # Its own random stream, so that adding a level leaves the rest of the day alike.
            self.ramps[level.id] = RampSim(ramp.id, self.pins.input(ramp.loop_a),
                                           self.pins.input(ramp.loop_b),
                                           rng=random.Random(f"{self.seed}:{ramp.id}"))

    def level_truth(self, level_id: str) -> int:
        """The vehicles really parked on a level counted at its ramps."""
        return sum(1 for slot, level in self.level_slots.items()
                   if level == level_id and self.bays.occupied(slot))

    def _ramp(self, bay: str, up: bool) -> None:
        """A vehicle going to or from a slot of a counted level crosses its ramp."""
        level = self.level_slots.get(bay)
        if level is not None:
            self.ramps[level].cross(up)

    # -- running ---------------------------------------------------------------------------

    def attach(self, part: Attachment) -> None:
        """Run ``part`` with the world: started in :meth:`start`, closed in :meth:`close`."""
        self._attachments.append(part)

    def lanes_of(self, direction: str) -> list[str]:
        return [lane for lane, d in self.directions.items() if d == direction]

    @property
    def now_s(self) -> float:
        """Seconds since the world started."""
        return 0.0 if self._t0 is None else asyncio.get_running_loop().time() - self._t0

    @property
    def inside(self) -> int:
        return self._inside

    @property
    def started(self) -> bool:
        return self._t0 is not None

    async def start(self) -> None:
        self._t0 = asyncio.get_running_loop().time() - self._elapsed0
        for part in self._attachments:
            await part.start()
        for lane in self.lanes.values():
            lane.start()
        for visit, due_in_s in self._resumed:
            step = {"to_bay": self._to_bay, "parked": self._leave_bay,
                    "to_exit": self._queue_exit}[visit.phase]
            self._schedule(visit, visit.phase, due_in_s, step)
        self._resumed.clear()
        self._tasks.append(asyncio.ensure_future(self._sample_forever()))

    async def run(self, duration_s: float) -> None:
        """Let the traffic of ``duration_s`` seconds arrive, then return (the world runs on)."""
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            await self.start()
        assert self._t0 is not None
        end = self._t0 + duration_s
        for arrival in self.traffic.arrivals(duration_s):
            delay = self._t0 + arrival.at_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self._arrive(arrival)
        await asyncio.sleep(max(0.0, end - loop.time()))
        self._sample()

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            await cancel_and_wait(task)
        for lane in self.lanes.values():
            await lane.close()
        for camera in self.cameras.values():
            await camera.close()
        for ramp in self.ramps.values():
            await ramp.close()
        for part in reversed(self._attachments):
            await part.close()

    def safety_events(self) -> list[SafetyEvent]:
        return [e for lane in self.lanes.values() for e in lane.safety_events]

    def queued(self) -> int:
        return sum(len(lane.cars) for lane in self.lanes.values())

    # -- the cars' journeys ----------------------------------------------------------------

    def _later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            callback(*args)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _log(self, kind: TruthKind, arrival: Arrival, **extra: Any) -> None:
        self.truth.add(TruthEvent(self.now_s, kind, arrival.vehicle.plate,
                                  population=arrival.vehicle.kind, **extra))
        plate = arrival.vehicle.plate
        if kind == "arrived":
            self._present[plate] += 1
        elif kind == "exited" or (kind in ("refused", "reversed")
                                  and self.directions.get(extra.get("lane", "")) == "entry"):
            self._present[plate] -= 1

    def _patience(self) -> float:
        return self._rng.uniform(*self.scenario.driving.patience_s)

    def _drive_time(self) -> float:
        return self._rng.uniform(*self.scenario.driving.to_bay_s)

    def _arrive(self, arrival: Arrival) -> None:
        self.arrivals_by_kind.append((self.now_s, arrival.vehicle.kind))
        self._log("arrived", arrival)
        entries = self.lanes_of("entry")
        if not entries:
            self._inside += 1
            self._to_bay(_Visit(arrival))
            return
        # A tailgater follows its car into the same lane, whatever the queues.
        follow = arrival.tailgates and self._last_entry in entries
        lane_id = self._last_entry if follow and self._last_entry else self._pick(entries)
        self._last_entry = lane_id
        self._entering(lane_id, self.lanes[lane_id].add_car(arrival, patience_s=self._patience()))

    def _pick(self, lanes: list[str]) -> str:
        """The lane with the shortest queue (drivers pick the shorter line)."""
        return min(lanes, key=lambda lane: (len(self.lanes[lane].cars), self._rng.random()))

    def _passed(self, lane: LaneSim, car: SimCar) -> None:
        arrival = car.arrival
        if self.directions[lane.lane_id] == "entry":
            self._inside += 1
            self._log("entered", arrival, lane=lane.lane_id, tailgate=car.tailgating,
                      ticket=car.ticket)
            self._schedule(_Visit(arrival, ticket=car.ticket), "to_bay", self._drive_time(),
                           self._to_bay)
        else:
            self._inside -= 1
            self._log("exited", arrival, lane=lane.lane_id, tailgate=car.tailgating,
                      ticket=car.ticket)

    def _reversed(self, lane: LaneSim, car: SimCar) -> None:
        arrival = car.arrival
        kind: TruthKind = "refused" if car.refused else "reversed"
        self._log(kind, arrival, lane=lane.lane_id, ticket=car.ticket)
        if self.directions[lane.lane_id] == "exit":
            # Still inside: it tries again a little later, without changing its mind.
            retry = Arrival(arrival.at_s, arrival.vehicle, arrival.stay_s, False, False,
                            arrival.length_m, arrival.speed_mps)
            self._schedule(_Visit(retry, ticket=car.ticket), "to_exit",
                           self._rng.uniform(30.0, 120.0), self._queue_exit)

    def _schedule(self, visit: _Visit, phase: Phase, delay: float,
                  step: Callable[[_Visit], None]) -> None:
        """The vehicle's next step, `delay` seconds from now (kept, so a restart resumes it)."""
        visit.phase, visit.due = phase, asyncio.get_running_loop().time() + delay
        self._visits.add(visit)
        self._later(delay, step, visit)

    def _to_bay(self, visit: _Visit) -> None:
        bay = self.bays.park(visit.arrival.vehicle.plate)
        if bay is None:
            # No free bay after all: it drives round and leaves.
            self._log("circled", visit.arrival)
            self._schedule(visit, "to_exit", self._drive_time(), self._queue_exit)
            return
        visit.bay = bay
        self._ramp(bay, up=True)
        self._log("parked", visit.arrival, bay=bay)
        self._schedule(visit, "parked", visit.arrival.stay_s, self._leave_bay)

    def _leave_bay(self, visit: _Visit) -> None:
        assert visit.bay is not None
        self.bays.leave(visit.bay)
        self._ramp(visit.bay, up=False)
        self._log("left_bay", visit.arrival, bay=visit.bay)
        self._schedule(visit, "to_exit", self._drive_time(), self._queue_exit)

    def _queue_exit(self, visit: _Visit) -> None:
        self._visits.discard(visit)
        exits = self.lanes_of("exit")
        if not exits:
            self._inside -= 1
            self._log("exited", visit.arrival)
            return
        car = self.lanes[self._pick(exits)].add_car(visit.arrival, patience_s=self._patience())
        if visit.ticket is not None:
            # The plate that needed a ticket at the entry is no better at the exit: the ticket
            # decides there (a plate read would find no session and charge a lost ticket).
            car.ticket, car.plate_readable = visit.ticket, False

    # -- tickets ---------------------------------------------------------------------------

    def _entering(self, lane_id: str, car: SimCar) -> None:
        """A car queues at an entry: at one that prints tickets, its plate may be unreadable
        (the scenario's ``camera.unreadable``); a tailgater slips in behind its car, ticket or
        not, as the lanes' own checks expect."""
        share = self.scenario.camera.unreadable
        if lane_id in self.ticket_entries and share > 0 and not car.arrival.tailgates:
            car.plate_readable = self._ticket_rng.random() >= share

    def take_ticket(self, lane_id: str, text: str | None) -> bool:
        """The printer at `lane_id` cut a ticket: the driver waiting there for one takes it.
        False (and counted) if no car there was waiting for one."""
        lane = self.lanes.get(lane_id)
        car = None if lane is None or text is None else next(
            (c for c in lane.cars if c.state == "driving" and not c.plate_readable
             and c.ticket is None), None)
        if car is None:
            self.tickets_unclaimed += 1
            log.warning("sim.ticket_unclaimed", lane=lane_id)
            return False
        car.ticket = text
        self._log("ticket", car.arrival, lane=lane_id, ticket=text)
        return True

    def _at_line(self, lane: LaneSim, car: SimCar) -> None:
        """A ticket holder stopped at an exit with a scanner holds the ticket up to it."""
        if car.ticket is not None and lane.lane_id in self.scanner_exits:
            self._later(self._ticket_rng.uniform(1.0, 4.0), self._scan, lane, car)

    def _scan(self, lane: LaneSim, car: SimCar) -> None:
        """Scan, and again a while later while the barrier stays closed (a scan the lane was
        not ready for, a lane still busy with the car ahead): as a driver would."""
        waiting = (car.state == "driving" and car in lane.cars
                   and car.front <= lane.geometry.stop_x + 1e-6)
        if not waiting or car.ticket is None or self.on_scan is None:
            return
        self.on_scan(lane.lane_id, car.ticket)
        self._later(RESCAN_S, self._scan, lane, car)

    # -- restarts --------------------------------------------------------------------------

    def saved(self) -> SavedWorld:
        """Every vehicle where it is now: in a lane's queue, driving, or parked."""
        now = asyncio.get_running_loop().time()
        placed = [Placed(v.arrival, v.phase, v.bay, max(0.0, v.due - now), v.ticket)
                  for v in sorted(self._visits, key=lambda v: v.due)]
        for lane_id, lane in self.lanes.items():
            phase: Phase = "arriving" if self.directions[lane_id] == "entry" else "to_exit"
            kept = phase == "to_exit"  # a ticket taken at an entry is printed again there
            placed += [Placed(car.arrival, phase, ticket=car.ticket if kept else None)
                       for car in lane.cars if car.state != "gone"]
        return SavedWorld(self.now_s, tuple(placed), self.traffic.position(),
                          self.truth.counts())

    def resume(self, saved: SavedWorld) -> None:
        """Put the lot back as it was saved, before :meth:`start`: parked vehicles in their bays
        (another free one if theirs is gone or taken), the rest back on their way from the
        start on, and the traffic where it was."""
        self._elapsed0 = saved.elapsed_s
        self.traffic.resume(saved.traffic)
        self.truth.carried = Counter(saved.truth)
        for placed in saved.vehicles:
            self._present[placed.arrival.vehicle.plate] += 1
            if placed.phase == "arriving":
                self._arrive_again(placed.arrival)
                continue
            self._inside += 1
            visit = _Visit(placed.arrival, phase=placed.phase, ticket=placed.ticket)
            if placed.phase == "parked" and placed.bay is not None:
                visit.bay = self.bays.put(placed.bay, placed.arrival.vehicle.plate)
            if placed.phase == "parked" and visit.bay is None:
                visit.phase = "to_bay"  # its bay is gone, or the lot is full: it looks again
            self._resumed.append((visit, placed.due_in_s))

    def _arrive_again(self, arrival: Arrival) -> None:
        """A vehicle that waited at an entry when the lot stopped queues there again."""
        entries = self.lanes_of("entry")
        if entries:
            lane_id = self._pick(entries)
            self._entering(lane_id, self.lanes[lane_id].add_car(arrival,
                                                                 patience_s=self._patience()))

    # -- statistics ------------------------------------------------------------------------

    def _sample(self) -> None:
        self.samples.append(Sample(self.now_s, self.bays.occupied_count(), self._inside,
                                   self.queued()))

    async def _sample_forever(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(self.scenario.scenario.sample_s)


def _viewer(camera: SimCamera) -> Callable[[SimCar | None], None]:
    def view(car: SimCar | None) -> None:
        if car is None:
            camera.show(None)
            return
        vehicle = car.arrival.vehicle
        camera.show(Shown(vehicle.plate, vehicle.printed, vehicle.fmt, car.plate_readable))

    return view


def _occupied_probe(bays: BayWorld, bay_id: str) -> Callable[[], bool]:
    return lambda: bays.occupied(bay_id)


def _local_hour(scenario: Scenario, settings: Settings) -> float:
    """The lot-local hour of day the run starts at (arrival rates are by local hour)."""
    local = scenario.scenario.start.astimezone(settings.gateway.tzinfo)
    return local.hour + local.minute / 60.0
