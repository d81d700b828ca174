"""Which bays are free: sensor readings in, bay states, counts and violations out.

Drivers report debounced :class:`~gateway.drivers.BayReading` values from their own threads or
tasks through :meth:`Occupancy.on_reading`, which never blocks; one task journals them, a batch
per transaction, each state change together with its ``bay.changed`` event.

A bay is ``free``, ``occupied`` or ``unknown``. A faulty or silent sensor makes its bay
``unknown``, never ``free``: the lot would rather turn a visitor away than send them to a bay
that is taken. Counts are kept by floor, zone and bay type; a bay out of service counts in none
of them. The lot is full when at most ``lot.full_when_free_at_most`` bays are free.

Violations: a bay occupied beyond its type's limit (``overstay``), and an out-of-service bay in
use (``out_of_service_bay``), each reported once per occupancy. The hourly utilisation goes to
the journal as ``occupancy.hourly`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import structlog

from gateway.config import BayConfig, LotConfig
from gateway.core import events
from gateway.core.clock import Clock
from gateway.core.events import BaySource, BayState, BayType, Event, OccupancyGroup
from gateway.drivers import BayReading
from gateway.journal import Audit, Journal, PutSetting, SetBayState

log = structlog.get_logger("gateway.controllers.occupancy")

GroupKey = tuple[str, str, str]  # floor, zone, bay type
MAX_BATCH = 256


@dataclass(slots=True)
class Bay:
    """One bay's live state."""

    config: BayConfig
    state: BayState = "unknown"
    healthy: bool = False
    source: BaySource = "magnetic"
    since_mono: float = 0.0  # when the state began, on the monotonic clock
    in_service: bool = True
    reported_violation: bool = False  # this occupancy was already reported

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def group(self) -> GroupKey:
        return self.config.floor, self.config.zone, self.config.type

    def as_dict(self) -> dict[str, Any]:
        return {"bayId": self.id, "floor": self.config.floor, "zone": self.config.zone,
                "type": self.config.type, "state": self.state, "healthy": self.healthy,
                "inService": self.in_service, "source": self.source}


@dataclass(frozen=True, slots=True)
class Counts:
    free: int
    occupied: int
    unknown: int
    out_of_service: int

    @property
    def in_service(self) -> int:
        return self.free + self.occupied + self.unknown

    def as_dict(self) -> dict[str, int]:
        return {"free": self.free, "occupied": self.occupied, "unknown": self.unknown,
                "outOfService": self.out_of_service}


@dataclass(slots=True)
class _Hour:
    """Time-weighted occupancy of each group over the current clock hour."""

    start: datetime
    first_mono: float  # when this gateway began watching the hour
    last_mono: float
    area: dict[GroupKey, float] = field(default_factory=lambda: defaultdict(float))
    peak: dict[GroupKey, int] = field(default_factory=lambda: defaultdict(int))
    peak_unknown: dict[GroupKey, int] = field(default_factory=lambda: defaultdict(int))
    entries: int = 0
    exits: int = 0


def bay_source(reading_source: str) -> BaySource:
    """`modbus:<unit>` readings come from magnetic detector nodes."""
    kind = reading_source.partition(":")[0]
    if kind == "ultrasonic":
        return "ultrasonic"
    if kind == "manual":
        return "manual"
    return "magnetic"


class Occupancy:
    def __init__(
        self,
        bays: Sequence[BayConfig],
        lot: LotConfig,
        journal: Journal,
        clock: Clock,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.bays: dict[str, Bay] = {b.id: Bay(b, since_mono=clock.monotonic())
                                     for b in bays if b.sensor.kind != "none"}
        # Bays with no sensor are counted, not watched: the vehicles inside that no sensed bay
        # accounts for are taken to fill them (the lanes tell how many are inside).
        self.counted = [b for b in bays if b.sensor.kind == "none"]
        self.vehicles_inside: Callable[[], int] = lambda: 0
        # Levels counted at their ramps (gateway.controllers.counting): (capacity, count)
        # together; their bays count in the lot's totals, and so in its being full.
        self.ramp_levels: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.lot = lot
        self.journal = journal
        self.clock = clock
        self._on_change = on_change
        self._pending: asyncio.Queue[tuple[BayReading, float]] = asyncio.Queue()
        self._watchers: set[asyncio.Queue[dict[str, Any]]] = set()
        mono = clock.monotonic()
        self._hour = _Hour(_hour_start(clock.now()), mono, mono)
        self.readings_applied = 0
        self.readings_ignored = 0
        # Reading received -> its change committed, for `bench lane` and the metrics.
        self.journal_latencies_ms: deque[float] = deque(maxlen=10_000)

    # --- start-up ---

    async def restore(self, settings: Mapping[str, Any]) -> None:
        """Begin from the journaled states, so a restart does not re-announce every bay.

        A bay restored as free or occupied stays so until its sensor says otherwise; one whose
        sensor never reports again is caught by the sensor's own silence detection. A bay a
        technician took out of service stays out (`settings`: the journal's `lot_settings`).
        """
        for key, in_service in settings.items():
            kind, _, bay_id = key.partition(":")
            bay = self.bays.get(bay_id)
            if kind == "bay.service" and bay is not None and isinstance(in_service, bool):
                bay.in_service = in_service
        mono = self.clock.monotonic()
        for record in (await self.journal.bay_states()).values():
            bay = self.bays.get(record.bay_id)
            if bay is None:
                continue  # a bay removed from the config
            bay.state = cast(BayState, record.state)
            bay.healthy = record.healthy
            bay.source = bay_source(record.source)
            bay.since_mono = mono

    # --- readings in ---

    def on_reading(self, reading: BayReading) -> None:
        """The drivers' listener: never blocks, never raises."""
        self._pending.put_nowait((reading, time.perf_counter()))

    async def run(self) -> None:
        """Journal readings as they come, a batch per transaction."""
        while True:
            batch = [await self._pending.get()]
            while len(batch) < MAX_BATCH and not self._pending.empty():
                batch.append(self._pending.get_nowait())
            if await self.apply(reading for reading, _ in batch):
                done = time.perf_counter()
                self.journal_latencies_ms.extend((done - t) * 1000.0 for _, t in batch)

    async def apply(self, readings: Iterable[BayReading]) -> int:
        """Apply readings; journal the changes in one transaction. Returns the number changed."""
        changes: list[SetBayState] = []
        evs: list[Event] = []
        now = self.clock.stamp()
        self._accumulate(now.mono)
        for reading in readings:
            bay = self.bays.get(reading.bay_id)
            if bay is None:
                self.readings_ignored += 1
                log.warning("occupancy.unknown_bay", bay=reading.bay_id, source=reading.source)
                continue
            self.readings_applied += 1
            state: BayState = reading.state
            healthy = reading.state != "unknown" and reading.fault is None
            if state == "free" and not healthy:
                state = "unknown"  # a faulty sensor never frees a bay
            if state == bay.state and healthy == bay.healthy:
                continue
            previous = bay.state
            bay.state, bay.healthy = state, healthy
            bay.source = bay_source(reading.source)
            if state != previous:
                bay.since_mono = now.mono
                bay.reported_violation = False
            at = events.rfc3339(now.wall)
            changes.append(SetBayState(bay.id, state, at, reading.source, healthy))
            evs.append(events.bay_changed(
                at=now.wall, bay_id=bay.id, floor=bay.config.floor, zone=bay.config.zone,
                bay_type=bay.config.type, state=state, previous_state=previous,
                source=bay.source, sensor_healthy=healthy))
            if state == "occupied" and not bay.in_service:
                evs.append(self._violation(bay, "out_of_service_bay", now.wall, {}))
                bay.reported_violation = True
            self._notify({"bayId": bay.id, "state": state, "previous": previous,
                          "healthy": healthy, "fault": reading.fault, "raw": reading.raw,
                          "source": reading.source, "at": at})
        if changes:
            await self.journal.commit(changes, evs)
            if self._on_change is not None:
                self._on_change()
        return len(changes)

    # --- service ---

    async def set_service(self, bay_id: str, in_service: bool, *, actor: str) -> None:
        bay = self.bays.get(bay_id)
        if bay is None:
            raise KeyError(bay_id)
        if bay.in_service == in_service:
            return
        self._accumulate(self.clock.monotonic())
        bay.in_service = in_service
        at = events.rfc3339(self.clock.now())
        await self.journal.commit([
            Audit(at, actor, "bay.service", bay_id,
                  details=events.dumps({"inService": in_service})),
            PutSetting(f"bay.service:{bay_id}", in_service, at, actor)], [])
        log.info("occupancy.bay_service", bay=bay_id, in_service=in_service, actor=actor)
        if self._on_change is not None:
            self._on_change()

    # --- counts ---

    def counts(self, bays: Iterable[Bay] | None = None) -> Counts:
        """Counts over `bays`, or over the whole lot (counted bays included)."""
        tally: Counter[str] = Counter()
        for bay in self.bays.values() if bays is None else bays:
            tally["out_of_service" if not bay.in_service else bay.state] += 1
        if bays is None and self.counted:
            filled = self.counted_occupied(tally["occupied"])
            tally["occupied"] += filled
            tally["free"] += len(self.counted) - filled
        if bays is None:
            capacity, taken = self.ramp_levels()
            tally["occupied"] += taken
            tally["free"] += capacity - taken
        return Counts(tally["free"], tally["occupied"], tally["unknown"], tally["out_of_service"])

    def counted_occupied(self, sensed_occupied: int | None = None) -> int:
        """Of the bays with no sensor, how many are taken: inside, less the sensed ones."""
        if sensed_occupied is None:
            sensed_occupied = sum(1 for b in self.bays.values() if b.state == "occupied")
        return max(0, min(len(self.counted), self.vehicles_inside() - sensed_occupied))

    def counts_by(self, key: Callable[[Bay], str]) -> dict[str, Counts]:
        groups: dict[str, list[Bay]] = defaultdict(list)
        for bay in self.bays.values():
            groups[key(bay)].append(bay)
        return {name: self.counts(members) for name, members in sorted(groups.items())}

    def summary(self) -> dict[str, Any]:
        """Counts for the whole lot and by floor, zone and bay type (retained MQTT state)."""
        def by(key: Callable[[Bay], str]) -> dict[str, dict[str, int]]:
            return {name: c.as_dict() for name, c in self.counts_by(key).items()}

        counted = {"capacity": len(self.counted), "occupied": self.counted_occupied()}
        return {
            "total": self.counts().as_dict(),
            "counted": counted,
            "full": self.full,
            "byFloor": by(lambda b: b.config.floor),
            "byZone": by(lambda b: b.config.zone),
            "byType": by(lambda b: b.config.type),
        }

    @property
    def free(self) -> int:
        return self.counts().free

    @property
    def full(self) -> bool:
        """At most the configured number of bays are free (unknown ones are not free)."""
        return self.free <= self.lot.full_when_free_at_most

    # --- violations ---

    def stay_limit_s(self, bay: Bay) -> float | None:
        minutes = bay.config.max_stay_minutes or self.lot.max_stay_minutes.get(bay.config.type)
        return None if minutes is None else minutes * 60.0

    async def check_overstays(self) -> int:
        """Report each bay occupied beyond its type's limit, once per occupancy."""
        now = self.clock.stamp()
        evs = []
        for bay in self.bays.values():
            limit = self.stay_limit_s(bay)
            if (limit is None or bay.state != "occupied" or bay.reported_violation
                    or now.mono - bay.since_mono <= limit):
                continue
            bay.reported_violation = True
            evs.append(self._violation(bay, "overstay", now.wall, {
                "occupiedSeconds": round(now.mono - bay.since_mono), "limitSeconds": limit}))
        if evs:
            await self.journal.commit([], evs)
        return len(evs)

    def _violation(self, bay: Bay, kind: events.ViolationKind, at: datetime,
                   details: dict[str, Any]) -> Event:
        log.warning("occupancy.violation", kind=kind, bay=bay.id, **details)
        return events.violation_detected(at=at, kind=kind, bay_id=bay.id, details={
            "floor": bay.config.floor, "zone": bay.config.zone, "bayType": bay.config.type,
            **details})

    # --- hourly utilisation ---

    def note_passage(self, direction: str) -> None:
        """A vehicle passed a lane (counted in the hour's entries or exits)."""
        if direction == "entry":
            self._hour.entries += 1
        else:
            self._hour.exits += 1

    def _accumulate(self, mono: float) -> None:
        hour = self._hour
        span = max(0.0, mono - hour.last_mono)
        occupied: Counter[GroupKey] = Counter()
        unknown: Counter[GroupKey] = Counter()
        for bay in self.bays.values():
            if bay.in_service and bay.state == "occupied":
                occupied[bay.group] += 1
            elif bay.in_service and bay.state == "unknown":
                unknown[bay.group] += 1
        for key, n in occupied.items():
            hour.area[key] += n * span
            hour.peak[key] = max(hour.peak[key], n)
        for key, n in unknown.items():
            hour.peak_unknown[key] = max(hour.peak_unknown[key], n)
        hour.last_mono = mono

    async def roll_hour(self) -> bool:
        """Journal the hour that ended, if one did. Call it now and then (once a minute)."""
        now = self.clock.stamp()
        current = _hour_start(now.wall)
        if current <= self._hour.start:
            return False
        self._accumulate(now.mono)
        hour, self._hour = self._hour, _Hour(current, now.mono, now.mono)
        # The mean is over the time this gateway watched: after a restart, the rest of the hour.
        seconds = max(1.0, now.mono - hour.first_mono)
        capacity: Counter[GroupKey] = Counter(b.group for b in self.bays.values() if b.in_service)
        groups: list[OccupancyGroup] = [
            {"floor": key[0], "zone": key[1], "bayType": cast(BayType, key[2]),
             "capacity": capacity[key], "occupiedAvg": round(hour.area[key] / seconds, 3),
             "occupiedMax": hour.peak[key], "unknownMax": hour.peak_unknown[key]}
            for key in sorted(set(capacity) | set(hour.peak))
        ]
        await self.journal.commit([], [events.occupancy_hourly(
            at=now.wall, hour_start=hour.start, hour_end=hour.start + timedelta(hours=1),
            entries=hour.entries, exits=hour.exits, groups=groups)])
        return True

    # --- live view ---

    def _notify(self, change: dict[str, Any]) -> None:
        for queue in self._watchers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(change)

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        """Changes as they happen; a slow watcher loses changes rather than slowing the lot."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._watchers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._watchers.discard(queue)


def _hour_start(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
