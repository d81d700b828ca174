"""The composition root: builds the lot from its settings and runs it until told to stop.

Everything runs in one asyncio TaskGroup. Each long-running part (a lane, the sensor bus, the
occupancy writer, the backend link, the maintenance loop) runs under a supervisor that logs a
failure and restarts the part with backoff; one failing input never takes the other lanes down.

systemd: READY once the lanes run, STATUS lines with the lot's state, WATCHDOG only while every
lane's loop is really turning, STOPPING on the way out. On SIGTERM the gateway lets barrier
movements finish (never leaving an arm half way over a car), flushes the journal and stops.

The hardware comes from the settings (gpiozero pins, the RS-485 bus, the lane cameras); the
simulator hands in its own pin factory, cameras and bus port instead, through
:class:`HardwareOverrides`, and the rest of the daemon cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import structlog
from pydantic import BaseModel

from gateway.config import Settings
from gateway.controllers.lane import Lane, RecentPlate
from gateway.controllers.occupancy import Occupancy
from gateway.controllers.paydesk import PayDesk
from gateway.controllers.sessions import SessionBook
from gateway.core import events
from gateway.core.access import Access
from gateway.core.availability import Availability, Place, tally
from gateway.core.clock import Clock, SystemClock
from gateway.core.operations import LaneMode, LotState, OperationRefused
from gateway.core.plates import normalize
from gateway.core.reads import PlateResult, PlateSource
from gateway.core.signs import SignMode
from gateway.drivers import FrameSource, MonitoredSource
from gateway.journal import Alarm, Audit, Journal, JournalWriteError, PutSetting
from gateway.runtime.notify import Notifier
from gateway.runtime.supervise import Part, StopDeadline, supervise
from gateway.web.live import AvailabilityFeed

if TYPE_CHECKING:
    from gateway.controllers.counting import Counting
    from gateway.controllers.signs import SignBoard
    from gateway.drivers.modbus import ModbusBus
    from gateway.lpr.worker import PlateWorker
    from gateway.sync.service import Sync
    from gateway.web.server import WebServer

log = structlog.get_logger("gateway.app")

MAINTENANCE_S = 1.0
LIVENESS_S = 10.0  # a lane loop silent for longer than this stops the watchdog
STOP_GRACE_S = 10.0  # the longest a barrier movement may hold up a shutdown
PASSBACK_RESETS = "passback.resets"  # the setting: open sessions whose plate was cleared


@dataclass
class HardwareOverrides:
    """What the simulator (or a test) puts in place of the real hardware."""

    pin_factory: Any | None = None  # a gpiozero pin factory
    cameras: Mapping[str, FrameSource] = field(default_factory=dict)
    bus_port: str | None = None  # the serial port of the RS-485 bus
    sign_ports: Mapping[str, str] = field(default_factory=dict)  # sign id -> its serial port
    printer_ports: Mapping[str, str] = field(default_factory=dict)  # lane id -> its printer's
    scanner_ports: Mapping[str, str] = field(default_factory=dict)  # lane id -> its scanner's


class NoReader:
    """Plate reading switched off: every passage goes to the intercom fallback."""

    async def read_frames(self, frames: Any, deadline_s: float | None = None) -> PlateResult:
        return PlateResult(None, 0.0, reason="worker_unavailable", frames_total=len(frames))


class Gateway:
    """The running lot; implements :class:`gateway.core.operations.LotControl`."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        hardware: HardwareOverrides | None = None,
        plates: PlateSource | None = None,
        notifier: Notifier | None = None,
        sync: bool = True,
        control: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.hardware = hardware or HardwareOverrides()
        self.notifier = notifier or Notifier.from_env()
        self._plates = plates
        self._want_sync = sync
        self._want_control = control
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self.parts: dict[str, Part] = {}
        self.recent: deque[RecentPlate] = deque(maxlen=200)
        self.lanes: dict[str, Lane] = {}
        self._journal: Journal | None = None
        self._occupancy: Occupancy | None = None
        self._access: Access | None = None
        self._sessions: SessionBook | None = None
        self.sync: Sync | None = None
        self.web: WebServer | None = None  # the local HTTP API, when [http] enables it
        self.pay_desk: PayDesk | None = None  # pay on foot, once built
        self._availability: AvailabilityFeed | None = None
        self.worker: PlateWorker | None = None
        self.bus: ModbusBus | None = None
        self.counting: Counting | None = None  # the levels counted at their ramps
        self.sign_board: SignBoard | None = None  # the free-space signs, when [[signs]] has any
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._last_sync_ok = time.monotonic()
        self._maintenance_tick = time.monotonic()
        self.ready_after_s: float | None = None
        self.full_lamp: Any = None
        self.lane_lamps: dict[str, Any] = {}
        self._sensor_watchers: set[asyncio.Queue[dict[str, Any]]] = set()  # `sensors watch`

    # --- the parts, once built ---

    @property
    def journal(self) -> Journal:
        return _built(self._journal)

    @property
    def occupancy(self) -> Occupancy:
        return _built(self._occupancy)

    @property
    def access(self) -> Access:
        return _built(self._access)

    @property
    def sessions(self) -> SessionBook:
        return _built(self._sessions)

    @property
    def availability(self) -> AvailabilityFeed:
        return _built(self._availability)

    # --- running ---

    def stop(self) -> None:
        """Begin a graceful shutdown (the SIGTERM handler calls this)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether a stop has begun."""
        return self._stop.is_set()

    async def run(self) -> None:
        began = time.monotonic()
        try:
            await self._build()
            async with asyncio.TaskGroup() as group:
                for name, work in self._parts():
                    self._tasks.append(group.create_task(self._supervise(name, work), name=name))
                if self.notifier.enabled:
                    self._tasks.append(group.create_task(
                        self.notifier.run_watchdog(self.alive), name="watchdog"))
                await asyncio.sleep(0)  # let the lanes subscribe to their loops
                self.ready_after_s = time.monotonic() - began
                self.notifier.ready(self.status_line())
                log.info("gateway.ready", seconds=round(self.ready_after_s, 3),
                         lanes=len(self.lanes), bays=len(self.settings.bays))
                self.started.set()
                await self._stop.wait()
                self.notifier.stopping("stopping: finishing barrier movements")
                await self._finish_movements()
                for task in self._tasks:
                    task.cancel()
        finally:
            await self._close()
            log.info("gateway.stopped")

    async def _build(self) -> None:
        s = self.settings
        self._journal = journal = await Journal.open(s.journal, clock=self.clock)
        self._closers.append(journal.close)
        self._access = Access(s.lot, max_distance=s.lpr.max_match_distance,
                              tz=s.gateway.tzinfo)
        self._sessions = SessionBook(s, journal, self.access, self.clock)
        await self._load_ticket_key()
        # Pay on foot (the HTTP API's device role, and the simulator's pay station). Ticket
        # lookups need the ticket verifier: `tickets=` takes text -> session id.
        tickets = self.sessions.tickets
        self.pay_desk = PayDesk(self.sessions, journal,
                                tickets=None if tickets is None else tickets.verify)
        settings = await journal.lot_settings()
        if (state := _setting(settings, "lot.state", LotState)) is not None:
            self.access.operator_state = state  # a closed lot stays closed
            log.info("gateway.lot_state_restored", state=state)
        await self._load_pushed_config()
        restored = await self.sessions.restore()
        self._restore_passback_resets(settings)
        # Rebuilt on each journal commit (a session changes the counted bays) and each change
        # of a bay, its service or the lot's state.
        self._availability = AvailabilityFeed(self.availability_now, commits=journal.changes)
        self._occupancy = Occupancy(s.bays, s.lot, journal, self.clock,
                                    on_change=self.availability.changed)
        self.occupancy.vehicles_inside = self.vehicles_uncounted
        self.occupancy.ramp_levels = self._ramp_levels
        await self.occupancy.restore(settings)
        log.info("gateway.restored", open_sessions=restored)
        plates = self._plates or await self._start_reader()
        from gateway.drivers.gpio import Lamp, LaneIo, make_pin_factory

        factory = self.hardware.pin_factory or make_pin_factory(s.gpio.pin_factory)
        if s.gpio.lot_full_lamp is not None:
            self.full_lamp = Lamp("lot_full", s.gpio.lot_full_lamp, factory=factory)
            self._closers.append(_async(self.full_lamp.close))
        for config in s.lanes:
            io = LaneIo.build(config.id, config.gpio, config.barrier, factory=factory,
                              alarms=journal, debounce_ms=config.timing.debounce_ms,
                              timing=config.timing)
            self._closers.append(io.close)
            camera = self.hardware.cameras.get(config.id) or self._open_camera(config)
            if camera is not None:
                await camera.start()
                self._closers.append(camera.close)
            self.lanes[config.id] = Lane(
                config, arming=io.arming, safety=io.safety, closing=io.closing,
                barrier=io.barrier, camera=camera, plates=plates, access=self.access,
                sessions=self.sessions, journal=journal, clock=self.clock, lot=self,
                recent=self.recent, mode=_setting(settings, f"lane.mode:{config.id}", LaneMode),
                **self._ticket_devices(config))
            if io.lamp is not None:
                self.lane_lamps[config.id] = io.lamp
        await self._start_bay_sensors(factory)
        if s.levels:
            await self._start_counting(factory, settings)
        if s.signs:
            self._start_signs(settings)
        if self._want_sync:
            from gateway.sync.service import Sync

            self.sync = Sync(s, journal, self.clock, self)
            self.sync.inbox.subscribe(self._config_applied)
            sync = self.sync  # the retained `occupancy` state is the availability document
            self.availability.listen(lambda now: sync.publish_state("occupancy", now.document()))
        if s.http.enabled:  # aiohttp and prometheus-client are loaded only then
            from gateway.web.server import WebServer

            self.web = WebServer(self, s.http, self.availability, pay=self.pay_desk)
            for lane_id, lane in self.lanes.items():
                lane.open_latencies_ms = self.web.metrics.gate_open(lane_id,
                                                                    lane.open_latencies_ms)
            self.occupancy.journal_latencies_ms = self.web.metrics.bay_commit(
                self.occupancy.journal_latencies_ms)
        if self._want_control:
            from gateway.runtime.control import ControlServer

            server = ControlServer(self, s.control)
            try:
                await server.start()
                self._closers.append(server.close)
            except Exception as e:  # the lot runs on without its technician socket
                log.error("gateway.control_unavailable", error=str(e))

    # --- tickets (issue 19): the key, and each lane's printer or scanner ---

    async def _load_ticket_key(self) -> None:
        """The lot's ticket key, where a lane prints or scans tickets (made on first use)."""
        s = self.settings
        if not any(c.printer is not None or c.scanner is not None for c in s.lanes):
            return
        from gateway.core.tickets import TicketSigner
        from gateway.journal.pseudonyms import load_key

        key = await asyncio.to_thread(load_key, s.journal.ticket_key_path, "ticket key")
        self.sessions.tickets = TicketSigner(key)

    def _ticket_devices(self, config: Any) -> dict[str, Any]:
        """The lane's ticket printer or scanner; opened by the lane, on first use."""
        if config.printer is not None and config.direction == "entry":
            from gateway.drivers.printer import EscPosPrinter

            return {"printer": EscPosPrinter(
                _on_port(config.printer, self.hardware.printer_ports.get(config.id)))}
        if config.scanner is not None and config.direction == "exit":
            from gateway.drivers.scanner import BarcodeScanner

            return {"scanner": BarcodeScanner(
                _on_port(config.scanner, self.hardware.scanner_ports.get(config.id)))}
        return {}

    async def _start_counting(self, factory: Any, settings: Mapping[str, Any]) -> None:
        """The levels counted at their ramps: each ramp's two loops, the journaled counts."""
        from gateway.config import LaneTiming
        from gateway.controllers.counting import Counting
        from gateway.drivers.gpio import LoopWatch, VehicleLoop

        s = self.settings
        counting = Counting(s.levels, self.journal, self.clock, tz=s.gateway.tzinfo,
                            sensed_floors={bay.config.floor
                                           for bay in self.occupancy.bays.values()},
                            sensed=self._sensed_on, on_change=self.availability.changed)
        await counting.restore(settings)
        for level in s.levels:
            for ramp in level.ramps:
                # No debounce here: the ramp's own logic drops chatter (glitch_ms), and its
                # direction needs the edges' order as they came.
                loop_a, loop_b = (VehicleLoop(f"ramp.{ramp.id}.{name}", pin, debounce_ms=0,
                                              factory=factory)
                                  for name, pin in (("a", ramp.loop_a), ("b", ramp.loop_b)))
                # Stuck and dead loops raise alarms, as a lane's do.
                watch = LoopWatch({"a": loop_a, "b": loop_b}, LaneTiming(
                    loop_stuck_after_s=ramp.loop_stuck_after_s,
                    loop_dead_after_s=ramp.loop_dead_after_s), self.journal,
                    lane_id=f"ramp.{ramp.id}")
                self._closers += [_async(watch.close), _async(loop_a.close),
                                  _async(loop_b.close)]
                counting.attach(ramp.id, loop_a, loop_b)
        self._closers.append(_async(counting.close))
        self.counting = counting

    def vehicles_uncounted(self) -> int:
        """The vehicles inside less those on the levels shown by their ramp counts: these
        are the vehicles the sensed bays and the bays with no sensor hold."""
        on_levels = self.counting.vehicles() if self.counting is not None else 0
        return max(0, len(self.access.inside) - on_levels)

    def _ramp_levels(self) -> tuple[int, int]:
        """(capacity, count) of the levels shown by their ramp counts together."""
        cells = self.counting.cells().values() if self.counting is not None else ()
        return (sum(capacity for capacity, _ in cells),
                sum(min(capacity, count) for capacity, count in cells))

    def _sensed_on(self, floor: str) -> int | None:
        """The occupied bays of a floor by its sensors (in service); None while one of them
        reads unknown: then they cannot correct a count."""
        bays = [b for b in self.occupancy.bays.values()
                if b.config.floor == floor and b.in_service]
        if any(b.state == "unknown" for b in bays):
            return None
        return sum(1 for b in bays if b.state == "occupied")

    def _open_camera(self, config: Any) -> FrameSource | None:
        if not self.settings.lpr.enabled:
            # Nothing would read its frames: every car goes to the intercom. Not opening it
            # keeps OpenCV out of the daemon, and the `lpr` extra (which brings it) optional.
            log.info("gateway.camera_unused", lane=config.id, reason="plate reading is off")
            return None
        from gateway.drivers.camera import open_camera

        try:
            return open_camera(config.id, config.camera, clock=self.clock, alarms=self.journal)
        except Exception as e:
            log.error("gateway.camera_unavailable", lane=config.id, error=str(e))
            return None

    async def _start_reader(self) -> PlateSource:
        lpr = self.settings.lpr
        if not lpr.enabled:
            return NoReader()
        try:
            from gateway.lpr.worker import PlateWorker

            async def alarm(code: str, detail: str) -> None:
                await self.journal.raise_alarm(Alarm(
                    f"lpr.{code}", "warning", f"plate reader: {detail}", component="lpr"))

            worker = PlateWorker.from_settings(lpr, clock=self.clock, on_alarm=alarm)
            await worker.start()
            self.worker = worker
            self._closers.append(worker.close)
            return worker
        except Exception as e:  # no reader: the lanes fall back to the intercom
            log.error("gateway.lpr_unavailable", error=str(e))
            return NoReader()

    async def _start_bay_sensors(self, factory: Any) -> None:
        from gateway.drivers.gpio import UltrasonicBay
        from gateway.drivers.modbus import ModbusBus, bays_on_bus

        listener = self.occupancy.on_reading
        for bay in self.settings.bays:
            if bay.sensor.kind == "ultrasonic":
                sensor = UltrasonicBay(bay.id, bay.sensor, clock=self.clock, factory=factory)
                sensor.subscribe(listener)
                await sensor.start()
                self._closers.append(sensor.close)
        bus = self.settings.bus
        if bus is not None:
            self.bus = ModbusBus(_on_port(bus, self.hardware.bus_port), bays_on_bus(self.settings),
                                 self.clock, listener, alarms=self.journal)
            await self.bus.start()
            self._closers.append(self.bus.close)

    def _start_signs(self, saved: Mapping[str, Any]) -> None:
        """The signs follow the availability feed; a technician's modes come from `saved`."""
        from gateway.controllers.signs import SignBoard

        configs = [_on_port(c, self.hardware.sign_ports.get(c.id)) for c in self.settings.signs]
        self.sign_board = SignBoard.from_settings(configs, alarms=self.journal, saved=saved)
        self.availability.listen(self.sign_board.show_availability)
        self._closers.append(self.sign_board.close)

    async def _load_pushed_config(self) -> None:
        """The pushed config in force: the journal's newest version of each kind, validated
        as sync validated it on arrival."""
        from pydantic import ValidationError

        from gateway.sync.inbound import KINDS, validate

        for kind in KINDS:
            current = await self.journal.config_current(kind)
            if current is None:
                continue
            try:
                model = validate(kind, json.loads(current.payload))
            except (ValueError, ValidationError) as e:  # stored by a version that checked less
                log.error("gateway.config_unreadable", kind=kind, version=current.version,
                          error=str(e))
                continue
            self._config_applied(kind, current.version, model)

    def _config_applied(self, kind: str, version: int, model: Any) -> None:
        """A pushed config is in force (validated and journaled): use it now. Pushed tariffs
        join, and override, the config file's from the next price on."""
        if kind == "tariffs":
            self.sessions.tariffs = {**self.settings.tariffs,
                                     **{name.lower(): table for name, table in model.root.items()}}
        else:
            self.access.load(kind, model, version)

    def _parts(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        parts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (f"lane:{lane_id}", lane.run) for lane_id, lane in self.lanes.items()]
        # Before the occupancy: it subscribes before the first reading is applied.
        parts.append(("sensor-watch", self._relay_sensor_changes))
        parts.append(("occupancy", self.occupancy.run))
        parts.append(("availability", self.availability.run))
        parts.append(("maintenance", self._maintain))
        if self.counting is not None:
            parts.append(("counting", self.counting.run))
        if self.web is not None:
            parts.append(("http", self.web.run))
        if self.sync is not None:
            parts.append(("sync", self.sync.run))
        if self.sign_board is not None:
            parts.append(("signs", self.sign_board.run))
        return parts

    async def _supervise(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        await supervise(self.parts.setdefault(name, Part(name)), work,
                        on_failed=self._part_failed, on_recovered=self._part_recovered)

    async def _part_failed(self, part: Part) -> None:
        await self.journal.raise_alarm(Alarm(
            _part_alarm(part), "critical",
            f"{part.name} stopped ({part.last_error}) and is being restarted",
            {"part": part.name, "error": part.last_error or "", "restarts": part.restarts},
            component="gateway"))

    async def _part_recovered(self, part: Part) -> None:
        await self.journal.clear_alarm(_part_alarm(part), f"{part.name} runs again")

    async def _maintain(self) -> None:
        """Once a second: violations, the hourly roll-up, retained state (the availability
        goes on change, from its feed), the STATUS line."""
        loop = asyncio.get_running_loop()
        last_overstay = loop.time()
        while True:
            self._maintenance_tick = time.monotonic()  # the watchdog's, in real time
            now = loop.time()  # the lot's time (virtual under the simulator)
            if now - last_overstay >= 30:
                await self.occupancy.check_overstays()
                await self.sessions.check_overstays()
                await self.occupancy.roll_hour()
                await self._expire_captures()
                last_overstay = now
            self._expire_recent()
            if self.sync is not None:
                self.sync.publish_state("lanes", {k: v.status() for k, v in self.lanes.items()})
                self.sync.publish_state("settings", self.settings_view())
                self.sync.publish_state("health", self._health_state())
            self._set_lamps()
            if self.started.is_set():  # READY comes first
                self.notifier.status(self.status_line())
            await asyncio.sleep(MAINTENANCE_S)

    def _set_lamps(self) -> None:
        """The lot-full sign, and each lane's lamp: lit while the lane takes traffic."""
        if self.full_lamp is not None:
            self.full_lamp.set(self.lot_state() != "open")
        for lane_id, lamp in self.lane_lamps.items():
            lane = self.lanes[lane_id]
            lamp.set(lane.mode != "locked_closed" and lane.state != "out_of_order")

    async def _finish_movements(self) -> None:
        """Let a barrier that is opening or closing finish, so no arm stops over a car."""
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(  # noqa: ASYNC110 (polling a few lanes)
                lane.state in ("opening", "closing") or lane.barrier_busy
                for lane in self.lanes.values()):
            await asyncio.sleep(0.05)

    async def _close(self) -> None:
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:
                log.exception("gateway.close_failed")
        self._closers.clear()

    # --- health ---

    def alive(self) -> bool:
        """For the systemd watchdog: every lane's loop and the maintenance loop are turning."""
        now = time.monotonic()
        return (all(now - lane.last_tick < LIVENESS_S for lane in self.lanes.values())
                and now - self._maintenance_tick < LIVENESS_S)

    def free_bays(self) -> int:
        return self.occupancy.free

    def online(self) -> bool:
        """Whether the backend counts as reachable, for the offline exit policy."""
        if self.sync is None:
            return False
        if self.sync.connected_event.is_set():
            self._last_sync_ok = time.monotonic()
            return True
        return time.monotonic() - self._last_sync_ok < self.settings.lot.offline_after_s

    def note_passage(self, direction: str) -> None:
        self.occupancy.note_passage(direction)

    def lot_state(self) -> LotState:
        return self.access.lot_state(self.occupancy.full)

    def status_line(self) -> str:
        if self._occupancy is None:
            return "starting"
        counts = self.occupancy.counts()
        lanes = ", ".join(f"{k} {v.state}" for k, v in self.lanes.items())
        return (f"{self.lot_state()}: {counts.free} free, {counts.occupied} occupied, "
                f"{counts.unknown} unknown; {lanes}")

    def _health_state(self) -> dict[str, Any]:
        """The retained `health` document: states only, so that it changes, and goes over the
        (often metered) link, only when one does: a part up or down and its last error, the
        active alarms and their severity, the bus's port and how many nodes stopped answering,
        each camera's link. Counters, rates and readings stay in `status` (`_health`) and the
        metrics; the bays and the lot's state are in the availability document."""
        bus = None
        if self.bus is not None:
            summary = self.bus.summary()
            bus = {"port": summary["port"], "portState": summary["portState"],
                   "portError": summary["portError"], "nodes": summary["nodes"],
                   "nodesFaulty": sum(n.faulty for n in self.bus.nodes.values())}
        return {
            "parts": {name: {"running": p.running, "lastError": p.last_error}
                      for name, p in self.parts.items()},
            "alarms": {a.alarm_id: a.severity for a in self.journal.active_alarms()},
            "bus": bus,
            "cameras": {camera["cameraId"]: camera["state"] for camera in self._cameras()},
        }

    def _cameras(self) -> list[dict[str, Any]]:
        """Each lane's camera: its state, and for a monitored one its frames and last error."""
        # The simulator's and the tests' cameras report nothing of their own.
        return [lane.camera.summary() if isinstance(lane.camera, MonitoredSource)
                else {"cameraId": lane_id,
                      "state": "none" if lane.camera is None else "unmonitored"}
                for lane_id, lane in self.lanes.items()]

    def _health(self) -> dict[str, Any]:
        """The whole picture for `status` and the metrics, counters and readings included."""
        return {
            "parts": {name: {"running": p.running, "restarts": p.restarts,
                             "lastError": p.last_error} for name, p in self.parts.items()},
            "alarms": [a.alarm_id for a in self.journal.active_alarms()],
            "bus": self.bus.health().as_dict() if self.bus is not None else None,
            "cameras": self._cameras(),
        }

    # --- what the HTTP API reads besides LotControl (gateway.web.lot.LotView) ---

    def availability_now(self) -> Availability:
        """The lot's availability at this moment; the feed rebuilds it on each change."""
        places = [Place(b.config.floor, b.config.zone, b.config.type, b.state, b.in_service)
                  for b in self.occupancy.bays.values()]
        places += [Place(b.floor, b.zone, b.type, None) for b in self.occupancy.counted]
        gw = self.settings.gateway
        levels = self.counting.cells() if self.counting is not None else None
        return Availability(gw.lot_id, gw.gateway_id, self.clock.now(), self.lot_state(),
                            tally(places, inside=self.vehicles_uncounted(), levels=levels))

    def readiness(self) -> dict[str, bool]:
        """For /readyz: running, the journal open, every lane's loop turning."""
        running = self.started.is_set() and not self.stopping
        return {"started": running, "journal": running and self._journal is not None,
                "lanes": running and self.alive()}

    async def events_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        gw = self.settings.gateway
        source = events.source_uri(gw.lot_id, gw.gateway_id)
        return [json.loads(r.to_json(source))
                for r in await self.journal.read_events(after, limit)]

    def reader_stats(self) -> dict[str, Any] | None:
        return None if self.worker is None else self.worker.stats().to_json()

    # --- LotControl ---

    async def status(self) -> dict[str, Any]:
        sync: dict[str, Any] | None = None
        if self.sync is not None:
            sync = dataclasses.asdict(await self.sync.stats())
        health = self._health()
        return {
            "lotState": self.lot_state(),
            "operatorState": self.access.operator_state,
            "occupancy": self.occupancy.summary(),
            "lanes": [lane.status() for lane in self.lanes.values()],
            "sync": sync or {"backlog": self.journal.last_seq - self.journal.acked_through,
                             "connected": False},
            "alarms": [_alarm_view(a) for a in self.journal.active_alarms()],
            "settings": self.settings_view(),
            "openSessions": len(self.access.inside),
            "levels": self.counting.summary()["levels"] if self.counting is not None else [],
            "bus": self.bus.summary() if self.bus is not None else None,
            "cameras": health["cameras"],
            "signs": self.sign_board.summary() if self.sign_board is not None else None,
            "pay": self.pay_desk.summary() if self.pay_desk is not None else None,
            "health": health,
        }

    def _lane(self, lane_id: str) -> Lane:
        lane = self.lanes.get(lane_id)
        if lane is None:
            raise OperationRefused(
                f"no lane {lane_id!r} (lanes: {', '.join(sorted(self.lanes)) or 'none'})")
        return lane

    async def open_gate(self, lane_id: str, *, reason: str, actor: str) -> None:
        if not reason.strip():
            raise OperationRefused("a manual vend needs a reason")
        await self._lane(lane_id).vend(reason, actor)

    async def set_lane_mode(self, lane_id: str, mode: LaneMode, *, actor: str) -> None:
        await self._lane(lane_id).set_mode(mode, actor)

    async def set_lot_state(self, state: LotState, *, actor: str) -> None:
        self.access.operator_state = state
        at = events.rfc3339(self.clock.now())
        await self.journal.commit([
            Audit(at, actor, "lot.state", None, None, events.dumps({"state": state})),
            PutSetting("lot.state", state, at, actor)], [])
        log.info("gateway.lot_state", state=state, actor=actor)
        self.availability.changed()

    async def set_level_count(self, level: str, count: int, *, actor: str) -> dict[str, Any]:
        if self.counting is None or level not in self.counting.levels:
            known = ", ".join(self.counting.levels) if self.counting is not None else "none"
            raise OperationRefused(f"no level {level!r} counted at its ramps (levels: {known})")
        try:
            previous = await self.counting.set_count(level, count, actor=actor)
        except ValueError as e:
            raise OperationRefused(str(e)) from None
        except JournalWriteError as e:
            raise OperationRefused(f"the count could not be journaled: {e}") from None
        return {"level": level, "count": count, "previous": previous,
                "error": previous - count}

    async def level_counts(self) -> dict[str, Any]:
        return self.counting.summary() if self.counting is not None else {"levels": []}

    async def set_bay_service(self, bay_id: str, in_service: bool, *, actor: str) -> None:
        try:
            await self.occupancy.set_service(bay_id, in_service, actor=actor)
        except KeyError:
            raise OperationRefused(f"no bay {bay_id!r}") from None
        self._tell_sensor_watchers({"kind": "service", "bayId": bay_id, "inService": in_service,
                                    "actor": actor, "at": events.rfc3339(self.clock.now())})

    async def alarms(self) -> list[dict[str, Any]]:
        return [_alarm_view(a) for a in self.journal.active_alarms()]

    async def acknowledge_alarm(self, alarm_id: str, *, actor: str) -> dict[str, Any]:
        try:
            alarm = await self.journal.acknowledge_alarm(alarm_id, actor=actor)
        except KeyError:
            active = ", ".join(a.alarm_id for a in self.journal.active_alarms()) or "none"
            raise OperationRefused(f"no active alarm {alarm_id!r} (active: {active})") from None
        except JournalWriteError as e:
            raise OperationRefused(f"the acknowledgement could not be journaled: {e}") from None
        return _alarm_view(alarm)

    async def signs(self) -> list[dict[str, Any]]:
        return [] if self.sign_board is None else self.sign_board.summary()

    async def set_sign_mode(self, sign_id: str, mode: SignMode, *, offset: int | None,
                            actor: str) -> dict[str, Any]:
        board = self.sign_board
        if board is None or sign_id not in board.states:
            known = ", ".join(board.states) if board is not None else "none configured"
            raise OperationRefused(f"no sign {sign_id!r} (signs: {known})")
        from gateway.controllers.signs import setting_key

        offset = board.state(sign_id).offset if offset is None else offset
        at = events.rfc3339(self.clock.now())
        setting = {"mode": mode, "offset": offset}
        await self.journal.commit([
            Audit(at, actor, "sign.mode", sign_id, None, events.dumps(setting)),
            PutSetting(setting_key(sign_id), setting, at, actor)], [])
        board.set_mode(sign_id, mode, offset)
        return next(row for row in board.summary() if row["signId"] == sign_id)

    def settings_view(self) -> dict[str, Any]:
        """The technician's settings in force: in `status` and the retained `settings` state."""
        return {
            "lotState": self.access.operator_state,
            "laneModes": {lane_id: lane.mode for lane_id, lane in self.lanes.items()},
            "baysOutOfService": sorted(b.id for b in self.occupancy.bays.values()
                                       if not b.in_service),
        }

    async def open_sessions(self) -> list[dict[str, Any]]:
        return [{"sessionId": s.session_id, "plate": s.plate, "right": s.right_kind,
                 "reference": s.right_ref, "entryLane": s.entry_lane,
                 "entryAt": events.rfc3339(s.entry.wall)}
                for s in sorted(self.access.inside.values(), key=lambda s: s.entry.wall)]

    async def recent_plates(self, limit: int = 50) -> list[dict[str, Any]]:
        return [r.as_dict() for r in list(self.recent)[-limit:]][::-1]

    async def purge_plate(self, plate: str, *, actor: str) -> dict[str, Any]:
        """Reads in memory and crops first, then the journal, whose audit entry counts them."""
        wanted = _plate_of(plate)
        kept = [r for r in self.recent if r.plate != wanted]
        removed = {"recent_reads": len(self.recent) - len(kept), "crops": 0}
        self.recent.clear()
        self.recent.extend(kept)
        capture_dir = self.settings.lpr.capture_dir
        if capture_dir is not None:
            from gateway.lpr.capture import purge_captures

            removed["crops"] = await asyncio.to_thread(purge_captures, capture_dir, wanted)
        try:
            return await self.journal.purge_plate(wanted, actor=actor, removed_elsewhere=removed)
        except JournalWriteError as e:
            raise OperationRefused(f"the purge could not be journaled: {e}") from None

    async def export_plate(self, plate: str) -> dict[str, Any]:
        wanted = _plate_of(plate)
        held = await self.journal.plate_records(wanted)
        held["recent_reads"] = [r.as_dict() for r in self.recent if r.plate == wanted]
        return held

    # --- anti-passback reset ---

    async def reset_passback(self, plate: str, *, actor: str) -> dict[str, Any]:
        """The plate's open session stops keeping it out. Kept as the setting
        `passback.resets` (the open sessions cleared, by id: no plate in the settings), which
        holds only sessions still open; audited with the session, not the plate."""
        stay = self.access.stay_of(_plate_of(plate))
        if stay is None:
            raise OperationRefused(f"{plate!r} is not inside: no anti-passback to clear")
        cleared = sorted((self.access.passback_resets & set(self.access.inside))
                         | {stay.session_id})
        at = events.rfc3339(self.clock.now())
        await self.journal.commit([
            Audit(at, actor, "passback.reset", stay.session_id, None,
                  events.dumps({"sessionId": stay.session_id})),
            PutSetting(PASSBACK_RESETS, cleared, at, actor)], [])
        self.access.reset_passback(stay.plate or plate)
        log.info("gateway.passback_reset", session_id=stay.session_id, actor=actor)
        return {"sessionId": stay.session_id, "enteredAt": events.rfc3339(stay.entry.wall),
                "entryLane": stay.entry_lane}

    def _restore_passback_resets(self, settings: Mapping[str, Any]) -> None:
        saved = settings.get(PASSBACK_RESETS)
        if isinstance(saved, list):
            self.access.passback_resets = {str(s) for s in saved} & set(self.access.inside)

    def _expire_recent(self) -> None:
        """Reads shown by `plates recent` are forgotten after `[lpr] recent_max_age_min`."""
        before = events.rfc3339(
            self.clock.now() - timedelta(minutes=self.settings.lpr.recent_max_age_min))
        while self.recent and self.recent[0].at < before:
            self.recent.popleft()

    async def _expire_captures(self) -> None:
        lpr = self.settings.lpr
        if lpr.capture_dir is not None:
            from gateway.lpr.capture import expire_captures

            before = self.clock.now() - timedelta(hours=lpr.capture_max_age_h)
            await asyncio.to_thread(expire_captures, lpr.capture_dir, before)

    async def watch_sensors(self) -> AsyncIterator[dict[str, Any]]:
        """Every bay sensor's state now (`sensor_states`), then each change as it comes: a
        reading (kind "reading") or a bay taken out of service or back ("service"). The queue
        is in place before the snapshot is taken, so no change falls between the two."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self._sensor_watchers.add(queue)
        try:
            yield self.sensor_states()
            while True:
                yield await queue.get()
        finally:
            self._sensor_watchers.discard(queue)

    def sensor_states(self) -> dict[str, Any]:
        """What `sensors watch` opens with: each bay sensor's state, and for a bay on the bus
        its node's (unit, fault, seconds silent), with the bus's summary."""
        now = self.clock.stamp()
        bus = self.bus.summary() if self.bus is not None else None
        nodes = {n.bay_id: n for n in self.bus.nodes.values()} if self.bus is not None else {}
        silent = {n["bayId"]: n["silentS"] for n in (bus or {}).get("nodesSilent", [])}
        bays = []
        for bay in self.occupancy.bays.values():
            since = now.wall - timedelta(seconds=max(0.0, now.mono - bay.since_mono))
            row = {**bay.as_dict(), "since": events.rfc3339(since), "fault": None}
            if (node := nodes.get(bay.id)) is not None:
                # Before its first poll a node's fault says so: no fault of the node.
                fault = node.fault if node.faulty or node.last_reply is not None else None
                row.update(unitId=node.unit_id, fault=fault, silentS=silent.get(bay.id))
            bays.append(row)
        return {"kind": "snapshot", "at": events.rfc3339(now.wall), "bus": bus, "bays": bays}

    async def _relay_sensor_changes(self) -> None:
        """The occupancy's readings, as it applies them, to every `sensors watch`."""
        async for change in self.occupancy.watch():
            self._tell_sensor_watchers({"kind": "reading", **change})

    def _tell_sensor_watchers(self, change: dict[str, Any]) -> None:
        """A slow watcher loses changes rather than slowing the lot."""
        for queue in self._sensor_watchers:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(change)


T = TypeVar("T")
Ported = TypeVar("Ported", bound=BaseModel)


def _on_port(config: Ported, port: str | None) -> Ported:
    """A serial device's config on `port` instead of its own (HardwareOverrides: the
    simulator's ptys), or as it is."""
    return config if port is None else config.model_copy(update={"port": port})


def _built(part: T | None) -> T:
    if part is None:
        raise OperationRefused("the gateway is still starting")
    return part


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        close()

    return run


async def run_until_signalled(gateway: Gateway, deadline: StopDeadline | None = None) -> None:
    """Run the gateway; SIGTERM or SIGINT begins a graceful stop, under a hard deadline.

    The deadline's thread is a daemon: a stop that ends in time ends the process with it; one
    that overruns (a stuck thread or part) is cut short by it, logged, with exit code 70.
    """
    import signal

    from gateway.runtime.memory import return_big_blocks

    return_big_blocks()  # the daemon's process: scrypt's 16 MiB blocks must not stay resident
    deadline = deadline or StopDeadline()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if not gateway.stopping:
            deadline.start()
        gateway.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
    await gateway.run()


def _alarm_view(alarm: Alarm) -> dict[str, Any]:
    return {"alarmId": alarm.alarm_id, "severity": alarm.severity, "message": alarm.message,
            "component": alarm.component, "raisedAt": alarm.raised_at or None,
            "details": alarm.details}


def _setting(settings: Mapping[str, Any], key: str, kind: Any) -> Any:
    """A technician's setting restored at start, if set and still one of `kind`'s values (a
    Literal); one this version does not know is logged and left at its default."""
    value = settings.get(key)
    if value is None or value in get_args(kind):
        return value
    log.error("gateway.setting_unreadable", key=key, value=repr(value)[:100])
    return None


def _plate_of(plate: str) -> str:
    """The plate a person's request names, normalised as the lanes store it."""
    wanted = normalize(plate)
    if not wanted:
        raise OperationRefused(f"{plate!r} is not a plate (letters and digits)")
    return wanted


def _part_alarm(part: Part) -> str:
    """`gateway.part_failed:<part>`; a part's name such as `lane:entry-a` as `lane.entry-a`."""
    return f"gateway.part_failed:{part.name.replace(':', '.')}"
