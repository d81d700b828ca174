"""Levels counted at their ramps: loop edges in, a journaled count per level out.

Each ramp's two loops (`gateway.drivers.gpio.VehicleLoop`, debounced) feed the ramp's
direction logic (`gateway.core.ramp.RampDirection`) with the loop's time; a crossing moves one
vehicle from the ramp's `from` level into its `into` level (A then B) or back (B then A). A
level that is not counted (`outside`, a floor with bay sensors) is not kept.

Every count change is journaled in one transaction: the setting `count:<level>` (so that the
count survives a restart) and a `level.counted` event. A count is kept within
0..capacity: a crossing that would take it out (a vehicle missed going in, or two taken for
one) is clamped and raises `count.drift:<level>`, which stays until the count is set again:
by a technician's recount (`set_count`, audited) or, where the level has bay sensors and a
`correct_at` hour, by the daily correction from them (audited as `system:correction`, with the
error it corrected).

Crossings are queued by the loops' callbacks (which never block) and journaled by `run`, one
transaction each: a ramp sees a vehicle every few seconds at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from typing import Any, Protocol

import structlog

from gateway.config import OUTSIDE, LevelConfig, RampConfig
from gateway.core import events
from gateway.core.clock import Clock
from gateway.core.events import Event, LevelCountCause
from gateway.core.ramp import Crossing, LoopName, RampDirection
from gateway.journal import Alarm, Audit, Journal, PutSetting

log = structlog.get_logger("gateway.controllers.counting")

SETTING = "count:"  # the journal's setting `count:<level>`
ACTOR_CORRECTION = "system:correction"
CORRECTION_CHECK_S = 30.0  # how often the quiet hours are looked at


class Loop(Protocol):
    """A ramp loop as this controller uses it (`VehicleLoop` is one)."""

    @property
    def occupied(self) -> bool: ...

    def subscribe(self, listener: Callable[[bool], None]) -> Callable[[], None]: ...


SensedCount = Callable[[str], "int | None"]
"""The vehicles a level's bay sensors see; None while one of them reads unknown."""


@dataclass(slots=True)
class Level:
    """One counted level's live count."""

    config: LevelConfig
    by_ramps: bool = True  # False: its bay sensors show it; the count is kept beside them
    count: int = 0
    drifted: bool = False  # count.drift is raised

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def capacity(self) -> int:
        return self.config.capacity

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.count)

    def as_dict(self) -> dict[str, Any]:
        return {"levelId": self.id, "zone": self.config.zone_name, "count": self.count,
                "capacity": self.capacity, "free": self.free, "drift": self.drifted,
                "shownBy": "ramps" if self.by_ramps else "sensors",
                "correctAt": self.config.correct_at}


@dataclass(slots=True)
class _Ramp:
    config: RampConfig
    into: str
    logic: RampDirection
    timer: asyncio.TimerHandle | None = None
    crossings: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})


class Counting:
    """The counted levels of a lot, their ramps and counts."""

    def __init__(self, levels: Sequence[LevelConfig], journal: Journal, clock: Clock, *,
                 tz: tzinfo, sensed_floors: Collection[str] = (),
                 sensed: SensedCount | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        """`sensed_floors`: the floors with bay sensors; a level among them is shown by its
        sensors, and `sensed` gives their count for its quiet-hour correction."""
        self.levels: dict[str, Level] = {lv.id: Level(lv, lv.id not in sensed_floors)
                                         for lv in levels}
        self.journal = journal
        self.clock = clock
        self._tz = tz
        self._sensed = sensed
        self._on_change = on_change
        self._ramps = {ramp.id: _Ramp(ramp, ramp.into or lv.id,
                                      RampDirection(ramp.glitch_ms / 1000, ramp.settle_ms / 1000))
                       for lv in levels for ramp in lv.ramps}
        self._crossings: asyncio.Queue[tuple[str, Crossing]] = asyncio.Queue()
        self._unsubscribe: list[Callable[[], None]] = []
        self._checked_at: datetime | None = None  # the quiet hours were last looked at then

    # --- start-up ---

    async def restore(self, settings: Mapping[str, Any]) -> None:
        """The counts as journaled (the journal's `lot_settings`); a new level starts at 0."""
        for level in self.levels.values():
            value = settings.get(SETTING + level.id)
            if isinstance(value, int) and not isinstance(value, bool):
                level.count = max(0, min(level.capacity, value))
        log.info("counting.restored", counts=self.counts())

    def attach(self, ramp_id: str, loop_a: Loop, loop_b: Loop) -> None:
        """Feed the ramp's direction logic from its loops' debounced changes (call on the
        event loop's thread)."""
        ramp = self._ramps[ramp_id]
        loops: tuple[tuple[LoopName, Loop], ...] = (("a", loop_a), ("b", loop_b))
        for name, device in loops:
            self._unsubscribe.append(device.subscribe(
                functools.partial(self._edge, ramp, name)))
            if device.occupied:  # a vehicle over the loop at start: its episode begins now
                self._edge(ramp, name, True)

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for ramp in self._ramps.values():
            if ramp.timer is not None:
                ramp.timer.cancel()
                ramp.timer = None

    # --- edges in ---

    def _edge(self, ramp: _Ramp, loop: LoopName, occupied: bool) -> None:
        now = asyncio.get_running_loop().time()
        self._crossed(ramp, ramp.logic.edge(loop, occupied, now))
        self._arm(ramp)

    def _tick(self, ramp: _Ramp) -> None:
        ramp.timer = None
        self._crossed(ramp, ramp.logic.tick(asyncio.get_running_loop().time()))
        self._arm(ramp)

    def _arm(self, ramp: _Ramp) -> None:
        """A timer for the ramp's pending episode, at the time its logic asks for."""
        if ramp.timer is not None:
            ramp.timer.cancel()
            ramp.timer = None
        deadline = ramp.logic.deadline
        if deadline is not None:
            ramp.timer = asyncio.get_running_loop().call_at(deadline, self._tick, ramp)

    def _crossed(self, ramp: _Ramp, crossing: Crossing | None) -> None:
        if crossing is None:
            return
        ramp.crossings[crossing] += 1
        log.info("counting.crossed", ramp=ramp.config.id, crossing=crossing)
        self._crossings.put_nowait((ramp.config.id, crossing))

    # --- the counts ---

    def counts(self) -> dict[str, int]:
        return {level_id: level.count for level_id, level in self.levels.items()}

    def vehicles(self) -> int:
        """The vehicles on the levels shown by their ramp counts (not in any sensed bay)."""
        return sum(level.count for level in self.levels.values() if level.by_ramps)

    def cells(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """The levels shown by their ramp counts, as availability cells: (floor, zone, bay
        type) -> (capacity, count)."""
        return {(level.id, level.config.zone_name, "regular"): (level.capacity, level.count)
                for level in self.levels.values() if level.by_ramps}

    async def run(self) -> None:
        """Journal each crossing as it comes; look at the quiet hours now and then."""
        while True:
            with contextlib.suppress(TimeoutError):
                ramp_id, crossing = await asyncio.wait_for(self._crossings.get(),
                                                           CORRECTION_CHECK_S)
                await self.apply(ramp_id, crossing)
            await self.check_corrections()

    async def apply(self, ramp_id: str, crossing: Crossing) -> None:
        """One vehicle crossed `ramp_id`: one off the level it left, one on the one it entered."""
        ramp = self._ramps[ramp_id]
        into, left = ramp.into, ramp.config.from_
        if crossing == "out":
            into, left = left, into
        now = self.clock.now()
        at = events.rfc3339(now)
        changes: list[PutSetting] = []
        evs: list[Event] = []
        alarms: list[Alarm] = []
        for level_id, delta in ((left, -1), (into, +1)):
            level = self.levels.get(level_id)
            if level is None or level_id == OUTSIDE:
                continue  # not counted
            previous, wanted = level.count, level.count + delta
            level.count = max(0, min(level.capacity, wanted))
            clamped = wanted != level.count
            if clamped:
                alarms.append(self._drift(level, wanted))
            if level.count != previous:
                changes.append(PutSetting(SETTING + level.id, level.count, at,
                                          f"ramp:{ramp_id}"))
            evs.append(events.level_counted(
                at=now, level_id=level.id, zone=level.config.zone_name, count=level.count,
                previous_count=previous, capacity=level.capacity, cause="ramp",
                ramp_id=ramp_id, clamped=clamped))
        if evs:
            await self.journal.commit(changes, evs)
            self._changed()
        for alarm in alarms:
            await self.journal.raise_alarm(alarm)

    def _drift(self, level: Level, wanted: int) -> Alarm:
        level.drifted = True
        bound = "below 0" if wanted < 0 else f"above its capacity {level.capacity}"
        log.warning("counting.drift", level=level.id, wanted=wanted, capacity=level.capacity)
        return Alarm(
            f"count.drift:{level.id}", "warning",
            f"the count of level {level.id} would have gone {bound}: a vehicle missed at a"
            f" ramp, or two taken for one; recount it (parking-gateway count set {level.id} N)",
            {"level": level.id, "wanted": wanted, "capacity": level.capacity},
            component="counting")

    async def set_count(self, level_id: str, count: int, *, actor: str,
                        cause: LevelCountCause = "recount") -> int:
        """Set a level's count (a recount, or the correction); audited with the error it
        corrected. Returns the previous count. KeyError: no such level; ValueError: out of
        0..capacity."""
        level = self.levels[level_id]
        if not 0 <= count <= level.capacity:
            raise ValueError(f"level {level_id} holds 0 to {level.capacity} vehicles, not {count}")
        previous = level.count
        now = self.clock.now()
        at = events.rfc3339(now)
        details = {"count": count, "previous": previous, "error": previous - count}
        level.count = count
        await self.journal.commit([
            Audit(at, actor, "count.set", level_id, cause, events.dumps(details)),
            PutSetting(SETTING + level_id, count, at, actor)],
            [events.level_counted(at=now, level_id=level_id, zone=level.config.zone_name,
                                  count=count, previous_count=previous,
                                  capacity=level.capacity, cause=cause)])
        log.info("counting.set", level=level_id, actor=actor, **details)
        self._changed()
        if level.drifted:
            level.drifted = False
            await self.journal.clear_alarm(f"count.drift:{level_id}",
                                           f"level {level_id} counted again ({cause})")
        return previous

    # --- the quiet-hour correction ---

    async def check_corrections(self) -> list[str]:
        """Correct each level whose quiet hour came since the last look, from its bay
        sensors; skipped (logged) while one of them reads unknown. Returns the levels set."""
        now = self.clock.now().astimezone(self._tz)
        since, self._checked_at = self._checked_at, now
        if since is None or self._sensed is None or now <= since:
            return []
        corrected = []
        for level in self.levels.values():
            at = level.config.correct_at
            if at is None or not _passed(_time_of(at), since, now):
                continue
            sensed = self._sensed(level.id)
            if sensed is None:
                log.warning("counting.correction_skipped", level=level.id,
                            reason="a bay sensor reads unknown")
                continue
            sensed = max(0, min(level.capacity, sensed))
            previous = await self.set_count(level.id, sensed, actor=ACTOR_CORRECTION,
                                            cause="correction")
            log.info("counting.corrected", level=level.id, count=sensed,
                     error=previous - sensed)
            corrected.append(level.id)
        return corrected

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def summary(self) -> dict[str, Any]:
        """Each level's count, for `status` and `count show`, with its ramps' crossings."""
        ramps: dict[str, list[dict[str, Any]]] = {lv: [] for lv in self.levels}
        for ramp_id, ramp in self._ramps.items():
            logic = ramp.logic
            row = {"rampId": ramp_id, "into": ramp.into, "from": ramp.config.from_,
                   "in": ramp.crossings["in"], "out": ramp.crossings["out"],
                   "backouts": logic.backouts, "glitches": logic.glitches,
                   "loops": {"a": logic.occupied[0], "b": logic.occupied[1]}}
            for level_id in (ramp.into, ramp.config.from_):
                if level_id in ramps:
                    ramps[level_id].append(row)
        return {"levels": [{**level.as_dict(), "ramps": ramps[level.id]}
                           for level in self.levels.values()]}


def _time_of(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _passed(at: time, since: datetime, now: datetime) -> bool:
    """Whether the local time of day `at` fell in (since, now] (both lot-local)."""
    day = since.date()
    while day <= now.date():
        moment = datetime.combine(day, at, since.tzinfo)
        if since < moment <= now:
            return True
        day += timedelta(days=1)
    return False
