"""One lane, entry or exit: the async shell around :class:`~gateway.core.lane_machine.LaneMachine`.

The machine decides (its docstring holds the lane's states and its safety rules); this shell does
the I/O. One task takes events from a queue (debounced loop changes, barrier positions, the
result of a plate read, timers, commands: manual vend, mode), gives each to the machine with the
time, and carries out the effects it returns, in order: barrier commands, plate reads, journal
writes, alarms, timers. An effect the machine wants an answer to (a lowering, a journal write, a
follower's plate, a stay's payments, a recheck) is awaited and answered before the next event,
as the lane did when it awaited them inline. A failing effect is answered as a failure, never
raised: the machine knows where the barrier is and keeps the record for a retry.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, get_args

import structlog

from gateway.config import LaneConfig
from gateway.controllers.sessions import SessionBook
from gateway.core import events
from gateway.core.access import Access
from gateway.core.clock import Clock
from gateway.core.events import Event
from gateway.core.lane_machine import (
    BarrierMoved,
    CancelRead,
    CancelTimer,
    ClearAlarm,
    DropFollower,
    Effect,
    EndSession,
    Entry,
    FetchPayments,
    FollowerRead,
    GateClosed,
    GateOpened,
    Hold,
    KeepFollowerFrames,
    LaneEvent,
    LaneMachine,
    LaneSetup,
    LaneState,
    Log,
    LoopChanged,
    LoopName,
    LostTicket,
    LotNow,
    LowerBarrier,
    Lowered,
    LowerRefused,
    ModeSet,
    NotePassage,
    PaymentsFetched,
    PlateRead,
    Position,
    PrinterChecked,
    PrinterProblem,
    PrintTicket,
    RaiseAlarm,
    RaiseBarrier,
    Read,
    ReadFollower,
    Recheck,
    Rechecked,
    Record,
    Recorded,
    RecordFailed,
    Remember,
    Started,
    StartFollowerRead,
    StartRead,
    StartSession,
    StartTimer,
    TicketNotPrinted,
    TicketPrinted,
    TicketRefused,
    TicketScanned,
    TimerFired,
    TimerName,
    Vend,
    Violation,
)
from gateway.core.operations import LaneMode, OperationRefused
from gateway.core.plates import distance as plate_distance
from gateway.core.reads import PlateResult, PlateSource
from gateway.core.records import Alarm
from gateway.core.tickets import TicketError
from gateway.drivers import Frame, FrameSource
from gateway.drivers.printer import PaperOut, PrinterError
from gateway.journal import Audit, Journal, JournalWriteError, PutSetting
from gateway.runtime.aio import TaskSet

log = structlog.get_logger("gateway.controllers.lane")

FOLLOWER_FRAMES = 15  # frames kept, 0.4 s apart, after a vehicle reaches the barrier
SCANNER_RETRY_S = 10.0  # a scanner whose port failed is opened again this often
PRINTER_POLL_S = 10.0  # a printer's status is asked this often, where its config says nothing
_LOOPS: dict[str, LoopName] = {name: name for name in get_args(LoopName)}

__all__ = ["BarrierDrive", "Lane", "LoopInput", "LotContext", "Position", "RecentPlate",
           "TicketPrinter", "TicketScanner"]


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


class TicketPrinter(Protocol):
    """An entry's ticket printer (gateway.drivers.printer.EscPosPrinter, or a test's fake).
    Both calls raise PaperOut or PrinterError (PrinterFault) when it cannot print."""

    async def check(self) -> object: ...

    async def print_ticket(self, lines: Sequence[str], qr: str) -> object: ...

    def close(self) -> None: ...


class TicketScanner(Protocol):
    """An exit's ticket scanner (gateway.drivers.scanner.BarcodeScanner, or a test's fake).
    `open` and `next_scan` raise OSError when its port fails."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    async def next_scan(self) -> str: ...


class LotContext(Protocol):
    """What a lane asks of the lot around it."""

    def free_bays(self) -> int: ...

    def online(self) -> bool: ...

    def note_passage(self, direction: str) -> None: ...


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
        mode: LaneMode | None = None,
        printer: TicketPrinter | None = None,
        scanner: TicketScanner | None = None,
    ) -> None:
        """`mode` is the one a technician left the lane in (journaled), else the config's.

        `printer` (an entry) and `scanner` (an exit) put the lane's tickets to work; both need
        the lot's ticket key in `sessions.tickets`.
        """
        if (printer is not None or scanner is not None) and sessions.tickets is None:
            raise ValueError(f"lane {config.id}: a ticket printer or scanner needs the lot's "
                             "ticket key (SessionBook.tickets)")
        self.printer = printer if config.direction == "entry" else None
        self.scanner = scanner if config.direction == "exit" else None
        self._paper_low = False  # the printer's near-end sensor, as last read
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
        self.recent = recent if recent is not None else deque(maxlen=200)
        geometry = config.loops
        self.machine = LaneMachine(LaneSetup(
            lane_id=config.id, name=config.name, direction=config.direction,
            pass_timeout_s=config.timing.pass_timeout_s,
            arming_to_safety_end_m=geometry.arming_to_safety_end_m,
            safety_length_m=geometry.safety_length_m,
            safety_to_closing_m=geometry.safety_to_closing_m,
            max_vehicle_m=geometry.max_vehicle_m,
            closing_loop=closing is not None,
            barrier_feedback=bool(getattr(barrier, "has_feedback", False)),
            on_journal_full=journal.settings.on_full,
            max_held=journal.settings.max_held_records,
            tickets=config.ticket_mode if self.printer is not None else "off",
            scanner=self.scanner is not None,
        ), access=access, price=sessions.fee_at, mode=mode or config.mode)
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._identify: asyncio.Task[Read] | None = None
        self._followers: dict[int, asyncio.Task[Read]] = {}  # by the machine's cycle
        self._frames: tuple[int, list[Frame]] | None = None  # kept for the cycle named
        self._timers: dict[TimerName, asyncio.TimerHandle] = {}
        self._armed_at: float | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._barrier_tasks = TaskSet("lane.barrier", lane=config.id)  # raises under way
        self.last_tick = time.monotonic()  # real time: the watchdog's view of liveness
        self.open_latencies_ms: deque[float] = deque(maxlen=10_000)
        barrier.set_lower_guard(self.may_lower)

    @property
    def state(self) -> LaneState:
        return self.machine.state

    async def drained(self) -> None:
        """Returns once every event posted to the lane so far has been handled and its
        effects carried out, its journal writes and look-ups included. A plate read or a
        barrier's motion under way runs beside the lane, and may still post one."""
        await self._events.join()

    @property
    def mode(self) -> LaneMode:
        return self.machine.mode

    @property
    def passages(self) -> int:
        return self.machine.passages

    @property
    def tailgates(self) -> int:
        return self.machine.tailgates

    @property
    def refusals(self) -> int:
        return self.machine.refusals

    @property
    def lower_refusals(self) -> int:
        return self.machine.lower_refusals

    @property
    def gate_id(self) -> str:
        return f"{self.id}-barrier"

    @property
    def barrier_busy(self) -> bool:
        """A relay pulse is still under way (a shutdown lets it finish)."""
        return len(self._barrier_tasks) > 0

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
        devices = TaskSet("lane.tickets", lane=self.id)  # the printer's poll, the scanner
        if self.printer is not None:
            devices.spawn(self._watch_printer(self.printer))
        if self.scanner is not None:
            devices.spawn(self._scan(self.scanner))
        try:
            await self._feed(Started(
                self.arming.occupied, self.safety.occupied,
                self.closing is not None and self.closing.occupied, self.barrier.position))
            while True:
                kind, value = await self._events.get()
                self.last_tick = time.monotonic()
                try:
                    await self._handle(kind, value)
                except Exception:  # a bug in one event must not stop the lane
                    log.exception("lane.event_failed", lane=self.id, kind=kind,
                                  state=self.state)
                finally:
                    self._events.task_done()
        finally:
            ticker.cancel()
            await devices.cancel_and_wait()
            for unsubscribe in self._unsubscribe:
                unsubscribe()
            for task in (self._identify, *self._followers.values()):
                if task is not None:
                    task.cancel()
            for timer in self._timers.values():
                timer.cancel()

    def _tick(self) -> None:
        self._events.put_nowait(("tick", None))
        asyncio.get_running_loop().call_later(1.0, self._tick)

    def post(self, kind: str, value: Any = None) -> None:
        self._events.put_nowait((kind, value))

    # --- events in ---

    async def _handle(self, kind: str, value: Any) -> None:
        event = self._event(kind, value)
        if event is not None:
            await self._feed(event)

    def _event(self, kind: str, value: Any) -> LaneEvent | None:
        loop = _LOOPS.get(kind)
        if loop is not None:
            if loop == "arming" and value:
                self._armed_at = asyncio.get_running_loop().time()
            return LoopChanged(loop, value)
        if kind == "barrier":
            return BarrierMoved(value, self.barrier.faulted)
        if kind == "read":
            return PlateRead(value, self._lot_now())
        if kind == "timeout":
            return TimerFired(value)
        if kind == "vend":
            return Vend(*value)
        if kind == "mode":
            return ModeSet(*value)
        if kind == "ticket":
            return self._scanned(value)
        if kind == "printer":
            return PrinterChecked(*value)
        return None  # the tick: liveness only

    def _lot_now(self) -> LotNow:
        return LotNow(self.lot.free_bays(), self.lot.online())

    async def _feed(self, event: LaneEvent) -> None:
        """Give the machine an event, and carry out its effects; answers go in first."""
        pending = deque(self.machine.handle(event, self.clock.stamp()))
        while pending:
            answer = await self._execute(pending.popleft())
            if answer is not None:
                pending.extendleft(reversed(self.machine.handle(answer, self.clock.stamp())))

    # --- effects out ---

    async def _execute(self, effect: Effect) -> LaneEvent | None:
        """Carry out one effect; the answer the machine asked for, if it asked."""
        match effect:
            case RaiseBarrier():
                if effect.reason == "decision" and self._armed_at is not None:
                    waited = asyncio.get_running_loop().time() - self._armed_at
                    self.open_latencies_ms.append(waited * 1000.0)
                self._raise()
            case LowerBarrier():
                try:
                    await self.barrier.lower()
                except Exception as e:  # BarrierRefusedError: a car arrived this instant
                    return LowerRefused(effect.purpose, effect.reason, str(e))
                return Lowered(effect.purpose, effect.reason)
            case StartRead():
                self._identify = asyncio.create_task(self._read_plate())
                self._identify.add_done_callback(self._read_done)
            case CancelRead():
                if self._identify is not None:
                    self._identify.cancel()
                    self._identify = None
            case Recheck():
                return Rechecked(await self._read_now(), self._lot_now())
            case StartFollowerRead():
                for stale in [n for n in self._followers if n != effect.cycle]:
                    self._followers.pop(stale).cancel()  # an opening the machine has left
                self._followers[effect.cycle] = asyncio.create_task(self._read_plate())
            case KeepFollowerFrames():
                self._watch_followers(effect.cycle)
            case ReadFollower():
                return FollowerRead(effect.cycle, await self._follower_read(effect))
            case DropFollower():
                follower = self._followers.pop(effect.cycle, None)
                if follower is not None:
                    follower.cancel()
            case FetchPayments():
                return PaymentsFetched(effect.session_id, await self._payments(effect))
            case Record():
                return await self._record(effect)
            case RaiseAlarm():
                await self._alarm(self.journal.raise_alarm(effect.alarm))
            case ClearAlarm():
                await self._alarm(self.journal.clear_alarm(effect.alarm_id, effect.message))
            case StartTimer():
                self._cancel_timer(effect.timer)
                self._timers[effect.timer] = asyncio.get_running_loop().call_later(
                    effect.seconds, self._events.put_nowait, ("timeout", effect.timer))
            case CancelTimer():
                self._cancel_timer(effect.timer)
            case NotePassage():
                self.lot.note_passage(self.direction)
            case Hold():
                self._hold(effect.entry)
            case Remember():
                read = effect.read
                self.recent.append(RecentPlate(events.rfc3339(read.at.wall), self.id, read.plate,
                                               read.confidence, effect.decision, effect.allowed))
            case Log():
                getattr(log, effect.level)(effect.event, **effect.fields)
            case PrintTicket():
                return await self._print_ticket()
        return None

    def _raise(self) -> None:
        self._barrier_tasks.spawn(self.barrier.raise_())  # a pulse takes its time; don't wait

    def _cancel_timer(self, timer: TimerName) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()

    async def _alarm(self, change: Awaitable[None]) -> None:
        try:
            await change
        except Exception:  # the alarm stands in the log; the lane goes on
            log.exception("lane.alarm_failed", lane=self.id)

    async def _payments(self, effect: FetchPayments) -> tuple[Any, ...]:
        try:
            return tuple(await self.journal.payments(effect.session_id))
        except Exception:  # decided as unpaid: the intercom, not a crash
            log.exception("lane.payments_unreadable", lane=self.id, session=effect.session_id)
            return ()

    # --- the journal ---

    async def _record(self, record: Record) -> LaneEvent:
        try:
            await self._write(record.entry)
        except Exception as e:  # JournalWriteError (disk full, I/O error), or a bad record
            return RecordFailed(record, repr(e))
        return Recorded(record)

    def _hold(self, entry: StartSession | EndSession) -> None:
        if isinstance(entry, StartSession):
            self.sessions.hold(entry.decision, lane_id=self.id, at=entry.at,
                               flags=None if entry.flags is None else dict(entry.flags),
                               record=id(entry),  # the machine holds `entry` until written
                               session_id=entry.session_id)
        else:
            self.sessions.hold_exit(entry.stay)

    async def _write(self, entry: Entry) -> None:
        match entry:
            case GateOpened():
                await self.journal.commit([], [events.gate_opened(
                    at=entry.at, lane_id=self.id, gate_id=self.gate_id, reason=entry.reason,
                    command_id=entry.command_id)])
            case GateClosed():
                await self.journal.commit([], [events.gate_closed(
                    at=entry.at, lane_id=self.id, gate_id=self.gate_id, reason=entry.reason,
                    command_id=entry.command_id)])
            case Violation():
                await self.journal.commit([], [self._violation(entry, alone=True)])
            case StartSession():
                await self.sessions.open(
                    entry.decision, lane_id=self.id, at=entry.at, confidence=entry.confidence,
                    extra_events=[self._violation(v) for v in entry.violations],
                    flags=None if entry.flags is None else dict(entry.flags),
                    record=id(entry), session_id=entry.session_id)
            case EndSession():
                payments = (await self.journal.payments(entry.stay.session_id)
                            if entry.with_payments else [])
                await self.sessions.close(
                    entry.stay, lane_id=self.id, at=entry.at, exit_reason=entry.exit_reason,
                    payments=payments, collected=entry.collected,
                    extra_events=[self._violation(v) for v in entry.violations])
            case LostTicket():
                await self.sessions.lost_ticket(entry.plate, lane_id=self.id, at=entry.at,
                                                collected=entry.collected)
            case TicketRefused():
                await self.journal.commit([Audit(
                    events.rfc3339(entry.at), f"lane:{self.id}", "ticket.refused",
                    entry.session_id, "no open session: used before, or its car never came in",
                )], [])

    def _violation(self, violation: Violation, *, alone: bool = False) -> Event:
        """`alone`: recorded on its own. With no session either, its plate is one the lane did
        not let in (deny list, anti-passback) or matched to no session (a tailgater out with no
        entry), and is written as the journal keeps such plates (`Journal.refused_plate`)."""
        plate = violation.plate
        if alone and violation.session_id is None and plate is not None:
            plate = self.journal.refused_plate(plate)
        return events.violation_detected(
            at=violation.at, kind=violation.kind, lane_id=self.id, plate=plate,
            session_id=violation.session_id, details=violation.details)

    # --- plates ---

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

    async def _read_now(self) -> Read:
        try:
            return await self._read_plate()
        except Exception as e:
            log.error("lane.read_failed", lane=self.id, error=repr(e))
            return Read(None, 0.0, None, self.clock.stamp())

    def _watch_followers(self, cycle: int) -> None:
        """Keep a few frames from the next seconds, for the plate of a car too close behind."""
        if self.camera is None:
            return
        camera, loop = self.camera, asyncio.get_running_loop()

        def snap() -> None:
            frame = camera.latest()
            if frame is None or self.machine.cycle != cycle:
                return
            if self._frames is None or self._frames[0] != cycle:
                self._frames = (cycle, [])
            self._frames[1].append(frame)

        for step in range(1, FOLLOWER_FRAMES + 1):
            loop.call_later(0.4 * step, snap)

    async def _follower_read(self, effect: ReadFollower) -> Read | None:
        """The follower's own read; else the earliest kept frame with another plate.

        An own read of the leader's plate (the camera still showed the car ahead when the read
        began) is not the follower's: it gets no plate then (a session without one, as for a
        follower the camera missed). The kept frames are no better at that moment: in the e2e
        day they named the car behind the follower instead.

        A follower found by length (`hidden`: too close behind for the arming loop to clear)
        has no read of its own; a read under way is of the car queued behind it, kept for that
        car. The kept frames begin as the leader reached the barrier: the first plate other
        than the leader's is the follower's, right behind it; later frames show the car queued
        behind, which must not get the follower's session.
        """
        task = None if effect.hidden else self._followers.pop(effect.cycle, None)
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=self.timing.identify_timeout_s)
            if not done:
                task.cancel()
                return None
            if task.cancelled():
                return None
            if task.exception() is not None:
                log.error("lane.follower_read_failed", lane=self.id,
                          error=repr(task.exception()))
                return None
            read = task.result()
            if read.plate is not None and self._leaders(read.plate, effect.leader):
                log.info("lane.follower_read_leader", lane=self.id, plate=read.plate)
                return Read(None, 0.0, read.result, read.at)
            return read
        if self._frames is None or self._frames[0] != effect.cycle:
            return None
        frames, self._frames = self._frames[1], None
        for frame in frames:
            result = await self.plates.read_frames([frame], self.timing.identify_timeout_s)
            if result.plate is not None and not self._leaders(result.plate, effect.leader):
                return Read(result.plate, result.confidence, result, frame.at)
        return None

    def _leaders(self, plate: str, leader: str | None) -> bool:
        """Whether a read is of the leader's plate, or a misread of it the exit would match."""
        return leader is not None and plate_distance(
            plate, leader, limit=self.access.max_distance) <= self.access.max_distance

    # --- tickets ---

    async def _print_ticket(self) -> LaneEvent:
        """A new session's id, signed, on a ticket; its session opens when the car passes."""
        assert self.printer is not None
        assert self.sessions.tickets is not None
        session_id = events.uuid7()
        entered = self.clock.now().astimezone(self.sessions.tz)
        header = self.config.printer.header if self.config.printer else "Parking ticket"
        lines = [header, self.config.name, entered.strftime("%Y-%m-%d %H:%M"),
                 f"No. {session_id[-12:]}", "Pay before you return to your car"]
        problem, error = await self._printer_call(
            self.printer.print_ticket(lines, self.sessions.tickets.issue(session_id)))
        if problem is not None:
            return TicketNotPrinted(problem, error)
        return TicketPrinted(session_id)

    async def _printer_call(self, call: Awaitable[object]) -> tuple[PrinterProblem | None, str]:
        try:
            paper = await call
        except PaperOut as e:
            return "paper_out", str(e)
        except PrinterError as e:
            return "fault", str(e)
        except Exception as e:  # a bug or an I/O error in a driver: a fault, not a stuck lane
            log.exception("lane.printer_failed", lane=self.id)
            return "fault", repr(e)
        low = bool(getattr(paper, "near_end", False))
        if low and not self._paper_low:  # once a roll: a warning to order paper, not an alarm
            log.warning("lane.printer_paper_low", lane=self.id)
        self._paper_low = low
        return None, ""

    async def _watch_printer(self, printer: TicketPrinter) -> None:
        """Poll the printer, so an empty roll alarms before the next car and a new one clears."""
        every = self.config.printer.poll_s if self.config.printer else PRINTER_POLL_S
        try:
            while True:
                self.post("printer", await self._printer_call(printer.check()))
                await asyncio.sleep(every)
        finally:
            printer.close()

    def _scanned(self, text: str) -> TicketScanned:
        signer = self.sessions.tickets
        assert signer is not None
        try:
            return TicketScanned(signer.verify(text), self._lot_now())
        except TicketError as e:
            return TicketScanned(None, self._lot_now(), f"{e.problem}: {e}")

    async def _scan(self, scanner: TicketScanner) -> None:
        """Every scan to the lane; a port that fails is opened again, under an alarm."""
        alarm_id = f"scanner.down:{self.id}"
        down = False
        try:
            while True:
                try:
                    scanner.open()
                    if down:
                        down = False
                        await self._alarm(self.journal.clear_alarm(alarm_id, "scanner port open"))
                    while True:
                        self.post("ticket", await scanner.next_scan())
                except OSError as e:
                    scanner.close()
                    log.error("lane.scanner_down", lane=self.id, error=str(e))
                    if not down:
                        down = True
                        await self._alarm(self.journal.raise_alarm(Alarm(
                            alarm_id, "critical",
                            f"{self.config.name}: the ticket scanner's port failed; ticket cars"
                            " go to the intercom", {"laneId": self.id, "error": str(e)},
                            component="scanner")))
                    await asyncio.sleep(SCANNER_RETRY_S)
        finally:
            scanner.close()

    # --- commands ---

    async def vend(self, reason: str, actor: str) -> None:
        """A manual vend (technician, intercom, backend): audited, then the barrier opens."""
        if self.state == "out_of_order":
            raise OperationRefused(f"lane {self.id} is out of order (barrier fault)")
        audit = Audit(events.rfc3339(self.clock.now()), actor, "gate.open", self.id, reason)
        try:
            await self.journal.commit([audit], [])
        except JournalWriteError as e:
            # A full disk must not keep the intercom from letting a car in (the lanes may be
            # sending every car there): the vend goes ahead, audited in the log instead.
            log.error("lane.vend_unaudited", lane=self.id, actor=actor, reason=reason,
                      at=audit.at, error=repr(e))
        self.post("vend", (reason, actor))

    async def set_mode(self, mode: LaneMode, actor: str) -> None:
        """Journaled as the lane's setting too, so a restart brings the lane back in it.

        Setting a mode puts the lane back in order: its out-of-order alarm is cleared (one kept
        from before a restart too), the machine leaves out_of_order, and the barrier is tried
        again, faulting again (a new alarm) if it still does not answer.
        """
        at = events.rfc3339(self.clock.now())
        await self.journal.commit([
            Audit(at, actor, "lane.mode", self.id, None, events.dumps({"mode": mode})),
            PutSetting(f"lane.mode:{self.id}", mode, at, actor)], [])
        self.post("mode", (mode, actor))
        await self.journal.clear_alarm(f"lane.out_of_order:{self.id}", f"set to {mode} by {actor}")

    # --- status ---

    def status(self) -> dict[str, Any]:
        return {
            "laneId": self.id, "name": self.config.name, "direction": self.direction,
            "mode": self.mode, "state": self.state, "barrier": self.barrier.position,
            "outOfOrder": self.state == "out_of_order", "passages": self.passages,
            "tailgates": self.tailgates, "refusals": self.refusals,
            **self._ticket_status(),
        }

    def _ticket_status(self) -> dict[str, Any]:
        machine = self.machine
        if self.printer is not None:
            return {"tickets": {"issued": machine.tickets_issued,
                                "printer": machine.printer_problem or "ok"}}
        if self.scanner is not None:
            return {"tickets": {"invalid": machine.tickets_invalid,
                                "refused": machine.tickets_refused}}
        return {}
