"""One lane, entry or exit: loops and a camera in, a barrier out, sessions into the journal.

The lane is a state machine driven by one task that takes events from a queue: debounced loop
changes, the result of a plate read, timers, and commands (manual vend, mode). Its states:

    idle -> identifying -> decided (refused: waits for the car to back off, or a vend)
                        -> opening -> open -> passing -> closing -> idle

Safety: the barrier is never commanded down while the safety loop is occupied. The lane checks
it before every lowering, and the barrier driver checks it again at the relay (its lower guard).
A vehicle that reaches the safety loop while the barrier is closing makes it open again.

Closing follows the trailing edge of the closing loop (the safety loop where there is none): a
timer alone never closes on a car. The pass timeout only closes a barrier whose safety loop is
clear, after the vehicle that was let through has backed away.

Tailgating: every vehicle that passes is counted; a second one under one opening is a
``violation.detected`` (tailgating) and an alarm, and gets its own session (plate read if the
camera caught it), so its exit still finds it. Anti-passback is decided by
:mod:`gateway.core.access`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from gateway.config import LaneConfig
from gateway.controllers.sessions import SessionBook
from gateway.core import events
from gateway.core.access import Access, EntryDecision, ExitDecision, OpenStay
from gateway.core.clock import Clock, Stamp
from gateway.core.events import Event, ExitReason
from gateway.core.operations import LaneMode, OperationRefused
from gateway.drivers import Frame, FrameSource
from gateway.journal import Alarm, Audit, Journal
from gateway.lpr.worker import PlateResult, PlateSource

log = structlog.get_logger("gateway.controllers.lane")

RECHECK_S = 3.0  # how often a refused lane looks again at what stands on its arming loop
FOLLOWER_FRAMES = 15  # frames kept, 0.4 s apart, after a vehicle reaches the barrier

LaneState = Literal[
    "idle", "identifying", "refused", "opening", "open", "passing", "closing", "locked_open",
    "locked_closed", "out_of_order",
]
Position = Literal["up", "down", "moving", "unknown", "fault"]


class LoopInput(Protocol):
    """A debounced vehicle loop (gateway.drivers.gpio.VehicleLoop, or a test's fake)."""

    name: str

    @property
    def occupied(self) -> bool: ...

    def subscribe(self, listener: Callable[[bool], None]) -> Callable[[], None]: ...


class BarrierDrive(Protocol):
    """A barrier (gateway.drivers.gpio.Barrier, or a test's fake)."""

    @property
    def position(self) -> Position: ...

    @property
    def faulted(self) -> bool: ...

    def set_lower_guard(self, guard: Callable[[], bool] | None) -> None: ...

    def subscribe(self, listener: Callable[[Position], None]) -> Callable[[], None]: ...

    async def raise_(self) -> None: ...

    async def lower(self) -> None: ...


class LotContext(Protocol):
    """What a lane asks of the lot around it."""

    def free_bays(self) -> int: ...

    def online(self) -> bool: ...

    def note_passage(self, direction: str) -> None: ...


@dataclass(slots=True)
class Read:
    """A plate read for one vehicle at this lane."""

    plate: str | None
    confidence: float
    result: PlateResult | None
    at: Stamp


@dataclass(slots=True)
class Cycle:
    """One opening of the barrier: who it was opened for and who went through."""

    reason: events.GateOpenReason
    opened_at: float  # loop time
    entry: EntryDecision | None = None
    exit: ExitDecision | None = None
    read: Read | None = None
    vend_reason: str | None = None
    passed: int = 0
    hidden_followers: int = 0  # vehicles found by length, too close behind to be seen apart
    cleared_at: list[float] = field(default_factory=list)  # closing loop trailing edges
    # A vehicle that arrived at the arming loop while the barrier was up: its own read.
    follower_read: asyncio.Task[Read] | None = None
    # The camera's view in the seconds after the first vehicle reached the barrier: whoever
    # follows close behind comes into it. Read only if a tailgate is found.
    follower_frames: list[Frame] = field(default_factory=list)
    safety_on_at: float | None = None  # loop time the safety loop last became occupied
    arming_off_at: float | None = None  # loop time the arming loop last cleared


@dataclass(frozen=True, slots=True)
class RecentPlate:
    at: str
    lane_id: str
    plate: str | None
    confidence: float
    decision: str
    allowed: bool

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "laneId": self.lane_id, "plate": self.plate,
                "confidence": round(self.confidence, 3), "decision": self.decision,
                "allowed": self.allowed}


class Lane:
    def __init__(
        self,
        config: LaneConfig,
        *,
        arming: LoopInput,
        safety: LoopInput,
        closing: LoopInput | None,
        barrier: BarrierDrive,
        camera: FrameSource | None,
        plates: PlateSource,
        access: Access,
        sessions: SessionBook,
        journal: Journal,
        clock: Clock,
        lot: LotContext,
        recent: deque[RecentPlate] | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self.direction = config.direction
        self.arming, self.safety, self.closing = arming, safety, closing
        self.barrier = barrier
        self.camera = camera
        self.plates = plates
        self.access = access
        self.sessions = sessions
        self.journal = journal
        self.clock = clock
        self.lot = lot
        self.timing = config.timing
        self.mode: LaneMode = config.mode
        self.state: LaneState = "idle"
        self.recent = recent if recent is not None else deque(maxlen=200)
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._cycle: Cycle | None = None
        self._identify: asyncio.Task[Read] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._refused_read: Read | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._barrier_tasks: set[asyncio.Task[None]] = set()
        self.last_tick = time.monotonic()  # real time: the watchdog's view of liveness
        self.open_latencies_ms: deque[float] = deque(maxlen=10_000)
        self.passages = 0
        self.tailgates = 0
        self.refusals = 0
        self.lower_refusals = 0
        self._closing_reason: events.GateCloseReason = "vehicle_passed"
        self._lower_pending: events.GateCloseReason | None = None
        barrier.set_lower_guard(self.may_lower)

    # --- wiring ---

    def _subscribe(self) -> None:
        self._unsubscribe = [
            self.arming.subscribe(lambda occ: self._events.put_nowait(("arming", occ))),
            self.safety.subscribe(lambda occ: self._events.put_nowait(("safety", occ))),
            self.barrier.subscribe(lambda pos: self._events.put_nowait(("barrier", pos))),
        ]
        if self.closing is not None:
            self._unsubscribe.append(
                self.closing.subscribe(lambda occ: self._events.put_nowait(("closing", occ))))

    def may_lower(self) -> bool:
        """The barrier's guard: nothing is under it (the raw input counts too, where known)."""
        return not getattr(self.safety, "present", self.safety.occupied)

    async def run(self) -> None:
        """The lane's one task: events in order, and a tick a second for the watchdog."""
        self._subscribe()
        ticker = asyncio.get_running_loop().call_later(1.0, self._tick)
        try:
            await self._enter_mode(self.mode, actor=None)
            if self.state == "idle" and self.arming.occupied:
                await self._on_arming(True)
            while True:
                kind, value = await self._events.get()
                self.last_tick = time.monotonic()
                try:
                    await self._handle(kind, value)
                except OperationRefused:
                    raise
                except Exception:  # one bad event must not stop the lane
                    log.exception("lane.event_failed", lane=self.id, kind=kind,
                                  state=self.state)
                    self.state = "idle" if not self.barrier.faulted else "out_of_order"
        finally:
            ticker.cancel()
            for unsubscribe in self._unsubscribe:
                unsubscribe()
            for task in (self._identify, self._cycle.follower_read if self._cycle else None):
                if task is not None:
                    task.cancel()
            if self._timer is not None:
                self._timer.cancel()

    def _tick(self) -> None:
        self._events.put_nowait(("tick", None))
        asyncio.get_running_loop().call_later(1.0, self._tick)

    def post(self, kind: str, value: Any = None) -> None:
        self._events.put_nowait((kind, value))

    # --- dispatch ---

    async def _handle(self, kind: str, value: Any) -> None:
        if kind == "tick":
            return
        if kind == "arming":
            await self._on_arming(value)
        elif kind == "safety":
            await self._on_safety(value)
        elif kind == "closing":
            await self._on_closing(value)
        elif kind == "read":
            await self._on_read(value)
        elif kind == "timeout":
            await self._on_timeout(value)
        elif kind == "barrier":
            await self._on_barrier(value)
        elif kind == "vend":
            await self._on_vend(*value)
        elif kind == "mode":
            await self._enter_mode(*value)

    # --- loops ---

    async def _on_arming(self, occupied: bool) -> None:
        now = asyncio.get_running_loop().time()
        if occupied:
            self._armed_at = now
        elif self._cycle is not None and self.state in ("open", "passing", "closing"):
            self._cycle.arming_off_at = now
        if self.state in ("locked_closed", "out_of_order"):
            return
        if occupied and self.state == "idle":
            self.state = "identifying"
            self._identify = asyncio.create_task(self._read_plate())
            self._identify.add_done_callback(self._read_done)
        elif occupied and self.state in ("open", "passing", "closing", "locked_open"):
            # A second vehicle while the barrier is up: read it too, in case it slips through.
            cycle = self._cycle
            if cycle is None and self.state == "locked_open":
                cycle = self._cycle = Cycle("locked_open", asyncio.get_running_loop().time())
            if cycle is not None and cycle.follower_read is None:
                cycle.follower_read = asyncio.create_task(self._read_plate())
        elif not occupied and self.state == "identifying" and not self.safety.occupied:
            # Backed off before a decision: forget it.
            if self._identify is not None:
                self._identify.cancel()
            self.state = "idle"
        elif not occupied and self.state == "refused":
            self._refused_read = None
            self.state = "idle"

    async def _on_safety(self, occupied: bool) -> None:
        if self._cycle is not None:
            if occupied:
                self._cycle.safety_on_at = asyncio.get_running_loop().time()
                self._watch_followers(self._cycle)
            else:
                self._count_long_vehicle(self._cycle)
        if occupied:
            if self.state == "closing":
                await self._reopen()
            elif self.state == "open":
                self.state = "passing"
            return
        if self.state == "locked_closed" and self._lower_pending is not None:
            await self._lower_when_clear(self._lower_pending)
            return
        if self.closing is None:
            await self._vehicle_cleared()  # the safety loop's trailing edge: it passed
        elif self.state == "open" and self._cycle is not None and self._cycle.passed:
            await self._close_if_clear("vehicle_passed")

    def _watch_followers(self, cycle: Cycle) -> None:
        """Keep a few frames from the next seconds, for the plate of a car too close behind."""
        if self.camera is None:
            return
        camera, loop = self.camera, asyncio.get_running_loop()

        def snap() -> None:
            frame = camera.latest()
            if frame is not None and self._cycle is cycle:
                cycle.follower_frames.append(frame)

        for step in range(1, FOLLOWER_FRAMES + 1):
            loop.call_later(0.4 * step, snap)

    def _count_long_vehicle(self, cycle: Cycle) -> None:
        """The safety loop cleared: was what crossed it one vehicle, or two close together?"""
        now = asyncio.get_running_loop().time()
        geo = self.config.loops
        on, off = cycle.safety_on_at, cycle.arming_off_at
        cycle.safety_on_at = None
        if on is None or off is None or not on <= off < now:
            return  # the tail left the arming loop before the safety loop saw the front
        speed = geo.arming_to_safety_end_m / (now - off)
        length = speed * (now - on) - geo.safety_length_m
        # Vehicles the closing loop told apart while this one crossed are already counted.
        seen_apart = sum(1 for t in cycle.cleared_at if on <= t <= now)
        if length > geo.max_vehicle_m and not seen_apart:
            cycle.hidden_followers += 1
            log.info("lane.long_vehicle", lane=self.id, length_m=round(length, 1),
                     speed_mps=round(speed, 2))

    async def _on_closing(self, occupied: bool) -> None:
        if not occupied and self._cycle is not None:
            self._cycle.cleared_at.append(asyncio.get_running_loop().time())
        if not occupied:
            await self._vehicle_cleared()

    async def _vehicle_cleared(self) -> None:
        """A vehicle's tail left the closing loop (or the safety loop): it has gone through."""
        if self.state not in ("open", "passing", "closing", "locked_open"):
            return
        cycle = self._cycle
        if cycle is None:
            if self.state == "locked_open":
                cycle = self._cycle = Cycle("locked_open", asyncio.get_running_loop().time())
            else:
                return
        for _ in range(1 + cycle.hidden_followers):
            cycle.passed += 1
            self.passages += 1
            self.lot.note_passage(self.direction)
            if cycle.passed == 1 and cycle.reason != "locked_open":
                await self._first_passed(cycle)
            else:
                await self._extra_passed(cycle)
        cycle.hidden_followers = 0
        if self.state == "locked_open":
            self._cycle = None
            return
        if self.state == "closing":
            return  # already coming down behind it
        self.state = "open"
        await self._close_if_clear("vehicle_passed")

    # --- identifying and deciding ---

    async def _read_plate(self) -> Read:
        """Frames from the camera, to the plate reader, until a plate or the timeout."""
        started = self.clock.stamp()
        frames: list[Frame] = []
        deadline = asyncio.get_running_loop().time() + self.timing.identify_timeout_s
        result: PlateResult | None = None
        if self.camera is None:
            return Read(None, 0.0, None, started)
        first = self.camera.latest()
        if first is not None:
            frames.append(first)
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            if not frames:
                frame = await self.camera.next_frame(left)
                if frame is None:
                    break
                frames.append(frame)
                continue
            result = await self.plates.read_frames(frames, left)
            if result.plate is not None or len(frames) >= self.timing.identify_frames:
                break
            frame = await self.camera.next_frame(max(0.0, deadline
                                                     - asyncio.get_running_loop().time()))
            if frame is None:
                break
            frames.append(frame)
        if result is None or result.plate is None:
            return Read(None, 0.0 if result is None else result.confidence, result, started)
        return Read(result.plate, result.confidence, result, started)

    def _read_done(self, task: asyncio.Task[Read]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("lane.read_failed", lane=self.id, error=repr(task.exception()))
            self.post("read", Read(None, 0.0, None, self.clock.stamp()))
            return
        self.post("read", task.result())

    async def _on_read(self, read: Read) -> None:
        if self.state != "identifying":
            return
        self._identify = None
        now = self.clock.stamp()
        if self.direction == "entry":
            decision = self.access.entry(read.plate, at=now.wall, free_bays=self.lot.free_bays())
            self._remember(read, decision.reason, decision.allow)
            if decision.allow:
                await self._open_for(Cycle("decision", 0.0, entry=decision, read=read))
            else:
                await self._refuse(read, decision.reason, decision.plate, decision.deny_reason)
        else:
            decision_x = await self._exit_decision(read, now)
            self._remember(read, decision_x.reason, decision_x.allow)
            if decision_x.allow:
                await self._open_for(Cycle("decision", 0.0, exit=decision_x, read=read))
            else:
                await self._refuse(read, decision_x.reason, decision_x.plate, None)

    async def _exit_decision(self, read: Read, now: Stamp) -> ExitDecision:
        payments: Sequence[Any] = ()
        if read.plate:
            found = self.access.find_stay(read.plate)
            stay = self.access.stay_of(found.plate) if found.accepted and found.plate else None
            if stay is not None:
                payments = await self.journal.payments(stay.session_id)
        return self.access.exit(read.plate, at=now.wall, payments=payments,
                                price=self.sessions.fee_at, online=self.lot.online())

    def _remember(self, read: Read, decision: str, allowed: bool) -> None:
        self.recent.append(RecentPlate(events.rfc3339(read.at.wall), self.id, read.plate,
                                       read.confidence, decision, allowed))

    async def _refuse(self, read: Read, reason: str, plate: str | None,
                      deny_reason: str | None) -> None:
        self.refusals += 1
        self.state = "refused"
        self._refused_read = read
        log.info("lane.refused", lane=self.id, plate=plate, reason=reason)
        self._arm_timer("recheck", RECHECK_S)
        if reason == "deny_listed":
            await self.journal.commit([], [events.violation_detected(
                at=self.clock.now(), kind="deny_listed", lane_id=self.id, plate=plate,
                details={"reason": deny_reason or "deny list"})])
        elif reason == "anti_passback":
            await self.journal.commit([], [events.violation_detected(
                at=self.clock.now(), kind="anti_passback", lane_id=self.id, plate=plate,
                details={"mode": self.access.lot.anti_passback, "refused": True})])

    # --- opening ---

    async def _open_for(self, cycle: Cycle) -> None:
        loop = asyncio.get_running_loop()
        cycle.opened_at = loop.time()
        self._cycle = cycle
        self.state = "opening"
        if self._armed_at is not None and cycle.reason == "decision":
            self.open_latencies_ms.append((loop.time() - self._armed_at) * 1000.0)
        await self._raise()
        await self.journal.commit([], [events.gate_opened(
            at=self.clock.now(), lane_id=self.id, gate_id=self.gate_id, reason=cycle.reason)])
        self.state = "open" if not self.safety.occupied else "passing"
        self._arm_timer("pass", self.timing.pass_timeout_s)

    @property
    def gate_id(self) -> str:
        return f"{self.id}-barrier"

    async def _raise(self) -> None:
        task = asyncio.create_task(self.barrier.raise_())  # a pulse takes its time; don't wait
        self._barrier_tasks.add(task)
        task.add_done_callback(self._barrier_task_done)

    @property
    def barrier_busy(self) -> bool:
        """A relay pulse is still under way (a shutdown lets it finish)."""
        return bool(self._barrier_tasks)

    def _barrier_task_done(self, task: asyncio.Task[None]) -> None:
        self._barrier_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("lane.barrier_command_failed", lane=self.id, error=repr(task.exception()))

    async def _reopen(self) -> None:
        self.state = "passing"
        log.warning("lane.safety_reopen", lane=self.id)
        await self._raise()
        await self.journal.commit([], [events.gate_opened(
            at=self.clock.now(), lane_id=self.id, gate_id=self.gate_id, reason="safety_reopen")])
        self._arm_timer("pass", self.timing.pass_timeout_s)

    # --- passages ---

    async def _first_passed(self, cycle: Cycle) -> None:
        at = self.clock.stamp()
        if self.direction == "entry":
            await self._entered(cycle, at)
        else:
            await self._exited(cycle, at)

    async def _entered(self, cycle: Cycle, at: Stamp) -> None:
        decision = cycle.entry
        read = cycle.read
        if decision is None:  # a manual vend: the plate, if one was read, still gets a session
            decision = self._vend_entry(read)
        extra: list[Event] = []
        if decision.passback == "flagged" and decision.existing is not None:
            extra.append(events.violation_detected(
                at=self.clock.now(), kind="anti_passback", lane_id=self.id,
                plate=decision.plate, session_id=decision.existing.session_id,
                details={"mode": "soft", "refused": False}))
            # The earlier session is the one still running; its car came in again.
            await self._journal(extra)
            return
        if decision.passback == "replaced" and decision.existing is not None:
            await self.sessions.close(decision.existing, lane_id=self.id, at=at,
                                      exit_reason="lost_ticket", collected=False)
        await self.sessions.open(decision, lane_id=self.id, at=at,
                                 confidence=read.confidence if read else None,
                                 extra_events=extra,
                                 flags={"manualVend": cycle.vend_reason} if cycle.vend_reason
                                 else None)

    def _vend_entry(self, read: Read | None) -> EntryDecision:
        """A vehicle let in by hand, or while locked open, keeps whatever right its plate has."""
        return self.access.right_of(read.plate if read else None, self.clock.now())

    async def _exited(self, cycle: Cycle, at: Stamp) -> None:
        decision = cycle.exit
        if decision is None:  # a manual vend at an exit: close the session the read found
            stay = self._stay_for(cycle.read)
            if stay is not None:
                await self.sessions.close(stay, lane_id=self.id, at=at,
                                          exit_reason="manual_vend", collected=False)
            return
        if decision.stay is None:  # no entry record
            await self.sessions.lost_ticket(decision.plate, lane_id=self.id, at=at,
                                            collected=False)
            return
        reason: ExitReason = "normal"
        collected = True
        if decision.reason == "unable_to_collect":
            reason, collected = "unable_to_collect", False
        payments = await self.journal.payments(decision.stay.session_id)
        await self.sessions.close(decision.stay, lane_id=self.id, at=at, exit_reason=reason,
                                  payments=payments, collected=collected)

    def _stay_for(self, read: Read | None) -> OpenStay | None:
        if read is None or not read.plate:
            return None
        found = self.access.find_stay(read.plate)
        return self.access.stay_of(found.plate) if found.accepted and found.plate else None

    async def _extra_passed(self, cycle: Cycle) -> None:
        """A vehicle beyond the one the barrier opened for (or any, when locked open)."""
        at = self.clock.stamp()
        read = await self._follower_read(cycle)
        if cycle.reason == "locked_open":
            await self._locked_passage(read, at)
            return
        self.tailgates += 1
        log.warning("lane.tailgating", lane=self.id, plate=read.plate if read else None)
        violation = events.violation_detected(
            at=self.clock.now(), kind="tailgating", lane_id=self.id,
            plate=read.plate if read else None, details={"vehiclesUnderOneOpening": cycle.passed})
        await self.journal.raise_alarm(Alarm(
            f"lane.tailgating:{self.id}", "warning",
            f"{cycle.passed} vehicles passed under one opening at {self.config.name}",
            {"plate": read.plate if read else None}, component="lane"))
        if self.direction == "entry":
            decision = EntryDecision(True, "visitor", read.plate if read else None)
            await self.sessions.open(decision, lane_id=self.id, at=at,
                                     confidence=read.confidence if read else None,
                                     extra_events=[violation], flags={"tailgated": True})
        else:
            stay = self._stay_for(read)
            if stay is not None:
                await self.sessions.close(stay, lane_id=self.id, at=at,
                                          exit_reason="unable_to_collect", collected=False,
                                          extra_events=[violation])
            else:
                await self._journal([violation])

    async def _follower_read(self, cycle: Cycle) -> Read | None:
        task, cycle.follower_read = cycle.follower_read, None
        if task is None and cycle.follower_frames:
            return await self._read_follower(cycle)
        if task is None:
            return None
        try:
            return await asyncio.wait_for(task, self.timing.identify_timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            return None
        except Exception:
            log.exception("lane.follower_read_failed", lane=self.id)
            return None

    async def _read_follower(self, cycle: Cycle) -> Read | None:
        """The newest kept frame that shows a plate other than the first vehicle's."""
        leader = cycle.read.plate if cycle.read else None
        frames, cycle.follower_frames = cycle.follower_frames, []
        for frame in reversed(frames):
            result = await self.plates.read_frames([frame], self.timing.identify_timeout_s)
            if result.plate is not None and result.plate != leader:
                return Read(result.plate, result.confidence, result, frame.at)
        return None

    async def _locked_passage(self, read: Read | None, at: Stamp) -> None:
        """Locked open: no decisions, but sessions are still kept for plates that were read."""
        if self.direction == "entry":
            if read is not None and read.plate and self.access.stay_of(read.plate) is None:
                await self.sessions.open(self._vend_entry(read), lane_id=self.id, at=at,
                                         confidence=read.confidence,
                                         flags={"lockedOpen": True})
        else:
            stay = self._stay_for(read)
            if stay is not None:
                await self.sessions.close(stay, lane_id=self.id, at=at,
                                          exit_reason="unable_to_collect", collected=False)

    async def _journal(self, evs: Sequence[Event]) -> None:
        if evs:
            await self.journal.commit([], evs)

    # --- closing ---

    async def _close_if_clear(self, reason: events.GateCloseReason) -> None:
        """Lower the barrier unless a vehicle is under it or about to pass."""
        if self.mode != "auto" or self.state in ("closing", "idle"):
            return
        if self.safety.occupied or (self.closing is not None and self.closing.occupied):
            return  # the next trailing edge brings us back here
        self.state = "closing"
        self._cancel_timer()
        try:
            await self.barrier.lower()
        except Exception as e:  # BarrierRefusedError: a car arrived this instant
            self.lower_refusals += 1
            log.warning("lane.lower_refused", lane=self.id, error=str(e))
            self.state = "passing"
            self._arm_timer("pass", self.timing.pass_timeout_s)
            return
        self._closing_reason = reason
        if not self._has_feedback():
            await self._closed()

    def _has_feedback(self) -> bool:
        return bool(getattr(self.barrier, "has_feedback", False))

    async def _on_barrier(self, position: Position) -> None:
        if position == "fault":
            await self._fault()
            return
        if self.state == "out_of_order" and not self.barrier.faulted:
            await self.journal.clear_alarm(f"lane.out_of_order:{self.id}", "barrier answers again")
            self.state = "idle"
        if position == "down" and self.state == "closing":
            await self._closed()

    async def _closed(self) -> None:
        cycle, self._cycle = self._cycle, None
        reason = self._closing_reason
        await self.journal.commit([], [events.gate_closed(
            at=self.clock.now(), lane_id=self.id, gate_id=self.gate_id, reason=reason)])
        if cycle is not None and cycle.passed == 1 and cycle.reason == "decision":
            with contextlib.suppress(Exception):
                await self.journal.clear_alarm(f"lane.tailgating:{self.id}", "normal passage")
        self.state = "idle"
        if cycle is not None and cycle.follower_read is not None:
            cycle.follower_read.cancel()
        if self.arming.occupied:  # the next car is already waiting
            await self._on_arming(True)

    async def _fault(self) -> None:
        if self.state == "out_of_order":
            return
        self.state = "out_of_order"
        log.error("lane.out_of_order", lane=self.id)
        await self.journal.raise_alarm(Alarm(
            f"lane.out_of_order:{self.id}", "critical",
            f"{self.config.name}: the barrier does not answer; the lane is out of order",
            {"laneId": self.id}, component="lane"))

    # --- timers ---

    def _arm_timer(self, name: str, seconds: float) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(
            seconds, self._events.put_nowait, ("timeout", name))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _on_timeout(self, name: str) -> None:
        if name == "recheck":
            await self._recheck()
            return
        if name != "pass" or self.state not in ("open", "passing"):
            return
        waiting = self.arming.occupied and self._cycle is not None and not self._cycle.passed
        if self.safety.occupied or waiting:
            self._arm_timer("pass", self.timing.pass_timeout_s)  # still there: wait on
            return
        if self._cycle is not None and not self._cycle.passed:
            log.info("lane.vehicle_backed_off", lane=self.id)
        self.state = "open"
        await self._close_if_clear("timeout")

    async def _recheck(self) -> None:
        """Refused, and the arming loop never cleared: is it still the same vehicle?

        The refused car may have backed away while the next one in the queue pulled up so close
        that the loop never saw a gap. A different plate in view is a new arrival.
        """
        if self.state != "refused" or not self.arming.occupied:
            return
        if self._identify is None:
            self._identify = asyncio.create_task(self._read_plate())
        read = await self._identify
        self._identify = None
        if self.state != "refused":
            return
        before = self._refused_read.plate if self._refused_read else None
        if read.plate is not None and read.plate != before:
            log.info("lane.next_vehicle", lane=self.id, plate=read.plate, refused=before)
            self.state = "identifying"
            await self._on_read(read)
            return
        self._arm_timer("recheck", RECHECK_S)

    # --- commands ---

    async def vend(self, reason: str, actor: str) -> None:
        """A manual vend (technician, intercom, backend): audited, then the barrier opens."""
        if self.state == "out_of_order":
            raise OperationRefused(f"lane {self.id} is out of order (barrier fault)")
        await self.journal.commit([Audit(events.rfc3339(self.clock.now()), actor, "gate.open",
                                         self.id, reason)], [])
        self.post("vend", (reason, actor))

    async def _on_vend(self, reason: str, actor: str) -> None:
        if self.state in ("open", "passing", "locked_open", "opening"):
            return  # already up
        if self._identify is not None:
            self._identify.cancel()
            self._identify = None
        open_reason: events.GateOpenReason = (
            "command" if actor.startswith("backend") else "manual")
        cycle = Cycle(open_reason, 0.0, read=self._refused_read, vend_reason=reason)
        self._refused_read = None
        await self._open_for(cycle)

    async def set_mode(self, mode: LaneMode, actor: str) -> None:
        await self.journal.commit([Audit(events.rfc3339(self.clock.now()), actor, "lane.mode",
                                         self.id, None, events.dumps({"mode": mode}))], [])
        self.post("mode", (mode, actor))

    async def _enter_mode(self, mode: LaneMode, actor: str | None) -> None:
        previous, self.mode = self.mode, mode
        if mode == "locked_open":
            self.state = "locked_open"
            self._cancel_timer()
            await self._raise()
            await self.journal.commit([], [events.gate_opened(
                at=self.clock.now(), lane_id=self.id, gate_id=self.gate_id,
                reason="locked_open")])
        elif mode == "locked_closed":
            if self._identify is not None:
                self._identify.cancel()
            self.state = "locked_closed"
            await self._lower_when_clear("lock_released" if previous == "locked_open"
                                         else "command")
        else:
            self.state = "idle" if self.barrier.position != "up" else "open"
            if previous == "locked_open":
                self._cycle = Cycle("decision", asyncio.get_running_loop().time(), passed=1)
                await self._close_if_clear("lock_released")
        if actor is not None:
            log.info("lane.mode", lane=self.id, mode=mode, actor=actor)

    async def _lower_when_clear(self, reason: events.GateCloseReason) -> None:
        """Lower for a lock; over a vehicle, wait for the safety loop to clear first."""
        if self.barrier.position == "down":
            return
        if self.safety.occupied:
            self._lower_pending = reason  # the safety loop's trailing edge comes back here
            return
        self._lower_pending = None
        try:
            await self.barrier.lower()
        except Exception as e:
            self.lower_refusals += 1
            log.warning("lane.lower_refused", lane=self.id, error=str(e))
            self._lower_pending = reason
            return
        await self.journal.commit([], [events.gate_closed(
            at=self.clock.now(), lane_id=self.id, gate_id=self.gate_id, reason=reason)])

    # --- status ---

    def status(self) -> dict[str, Any]:
        return {
            "laneId": self.id, "name": self.config.name, "direction": self.direction,
            "mode": self.mode, "state": self.state, "barrier": self.barrier.position,
            "outOfOrder": self.state == "out_of_order", "passages": self.passages,
            "tailgates": self.tailgates, "refusals": self.refusals,
        }
