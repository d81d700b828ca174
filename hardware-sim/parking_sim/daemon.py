"""The real gateway daemon on a simulated lot: what `parking-gateway demo`, the end-to-end test
and `bench lane` run.

The world (cars, loops, barriers, cameras, bays) drives the gateway through the same drivers as
real hardware: gpiozero pins (the world's mock pin factory), the sensor bus (the firmware's own
code on a pty), the cameras (:class:`~gateway.drivers.FrameSource`). The backend's part is played
here: it pushes the permits and deny list the traffic model knows, pushes each reservation
before its car arrives, and a pay station takes visitors' money on their way back to the car.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from gateway.app import Gateway, HardwareOverrides
from gateway.config import HttpAccount, ModbusSensor, Settings
from gateway.core.clock import Clock
from gateway.core.pay import PaymentRequest, PayOnFoot, PayRefused
from gateway.core.rights import DenyEntry, Permit, Reservation
from gateway.lpr.worker import PlateSource
from gateway.runtime.notify import Notifier
from gateway.web.accounts import hash_secret, new_token
from parking_sim.bus import SensorBus
from parking_sim.camera import GroundTruthReader
from parking_sim.paystation import HttpPayDesk
from parking_sim.physics import LaneSim, SimCar
from parking_sim.scenario import Scenario
from parking_sim.signs import SignLine
from parking_sim.state import SAVE_EVERY_S, Restart
from parking_sim.tickets import PrintedTicket, SimPrinter, SimScanner
from parking_sim.traffic import Arrival
from parking_sim.vtime import TimeWarpLoop
from parking_sim.world import World

log = structlog.get_logger("parking_sim.daemon")

NODES_SETTLED_S = 10.0  # after a restart, the detector nodes have been running this long


@dataclass
class PayStation:
    """Visitors pay on their way back to the car: what is due, by card, at a pay-on-foot
    station, under the station's own account and references. Where the lot serves its HTTP
    API (`[http] enabled`), the station calls it (`GET /api/v1/pay/fee`, `POST
    /api/v1/pay/payments`) with a `device` account the run makes for it; otherwise it calls
    the gateway's pay desk, which those routes serve, in the process."""

    payments: int = 0
    skipped: int = 0  # no session found (a tailgater, a misread) or nothing to pay
    refused: int = 0  # payments the desk refused (a fee that stepped up meanwhile)
    by_ticket: int = 0  # of `payments`, those looked up by a paper ticket
    # What each ticket's driver found due at the station, by session (0: nothing to pay yet).
    ticket_dues: dict[str, list[int]] = field(default_factory=dict)
    share: float = 1.0  # the share of visitors who pay (the rest test the offline policy)
    device: str = "sim-pay-1"  # the station's account
    rng: random.Random = field(default_factory=lambda: random.Random(5))
    api: HttpPayDesk | None = None  # the gateway's HTTP API, when the lot serves it

    async def pay(self, gateway: Gateway, plate: str, *, ticket: str | None = None,
                  refused: bool = False) -> None:
        """`refused`: the exit sent the driver back; whatever they owe (a visitor who skipped
        the pay station, a reservation that ran over), they pay it now. `ticket`: the driver
        took one at the entry (the plate was unreadable) and scans it here; they always pay."""
        desk: PayOnFoot | None = self.api or gateway.pay_desk
        assert desk is not None  # built with the lot
        try:
            # The driver scans the ticket, or types the plate.
            fee = await (desk.fee_by_plate(plate) if ticket is None
                         else desk.fee_by_ticket(ticket))
        except PayRefused:
            self.skipped += 1
            return
        if ticket is not None:
            self.ticket_dues.setdefault(fee.session_id, []).append(fee.due_minor)
        stay = gateway.access.inside.get(fee.session_id)
        if stay is None or (not refused and ticket is None and (
                stay.right_kind != "visitor" or self.rng.random() >= self.share)):
            self.skipped += 1
            return
        if fee.due_minor <= 0:
            self.skipped += 1
            return
        reference = f"{self.device}-{self.payments + self.refused + 1}"
        try:
            await desk.pay(self.device, PaymentRequest(
                fee.session_id, fee.due_minor, fee.currency, "card", reference))
        except PayRefused as e:
            self.refused += 1
            log.info("sim.pay_refused", plate=plate, code=e.code)
            return
        self.payments += 1
        self.by_ticket += ticket is not None


class _World(World):
    """The world with a pay station: a driver walks past it on the way back to the car, and
    goes to it when the exit refuses them (unpaid) before trying the exit again."""

    # (plate, the ticket the driver holds, refused at the exit)
    on_pay: Callable[[str, str | None, bool], None] | None = None

    def _leave_bay(self, visit: Any) -> None:
        if self.on_pay is not None:
            self.on_pay(visit.arrival.vehicle.plate, visit.ticket, False)
        super()._leave_bay(visit)

    def _reversed(self, lane: LaneSim, car: SimCar) -> None:
        if car.refused and self.directions[lane.lane_id] == "exit" and self.on_pay is not None:
            self.on_pay(car.arrival.vehicle.plate, car.ticket, True)
        super()._reversed(lane, car)


@dataclass
class LotRun:
    world: World
    gateway: Gateway
    bus: SensorBus | None
    pay_station: PayStation
    reservations: list[Reservation] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    signs: dict[str, SignLine] = field(default_factory=dict)  # by the port the config names
    printers: dict[str, SimPrinter] = field(default_factory=dict)  # by lane id
    scanners: dict[str, SimScanner] = field(default_factory=dict)  # by lane id

    def spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def sim_settings(settings: Settings, state_dir: Path, *, lpr: bool = False) -> Settings:
    """The lot's settings with its journal and socket in `state_dir`, and LPR on or off."""
    state_dir.mkdir(parents=True, exist_ok=True)
    update: dict[str, Any] = {
        "journal": settings.journal.model_copy(update={"path": state_dir / "journal.db"}),
        "control": settings.control.model_copy(update={"socket_path": state_dir / "control.sock"}),
        "lpr": settings.lpr.model_copy(update={"enabled": lpr}),
    }
    return settings.model_copy(update=update)


@contextlib.asynccontextmanager
async def lot_run(
    settings: Settings,
    scenario: Scenario,
    *,
    clock: Clock,
    seed: int | None = None,
    plates: PlateSource | None = None,
    sync: bool = False,
    control: bool = True,
    pay_share: float = 0.9,
    render_frames: bool = True,
    node_sample_period_s: float | None = None,
    restart: Restart | None = None,
) -> AsyncIterator[LotRun]:
    """Build the world and the daemon on it, started; stop both on the way out.

    A long run in virtual time can skip drawing camera frames (`render_frames=False`, with the
    ground-truth reader) and sample the detector nodes more slowly than their 10 Hz. With a
    `restart` the lot goes on from its saved state (``parking_sim.state``), reconciled with
    the journal, and saves itself as it runs and once the daemon has stopped.
    """
    saved = None if restart is None else restart.saved
    station = PayStation(share=pay_share)
    token = None
    if settings.http.enabled:
        # The pay station's own account on the HTTP API, as a technician would make one
        # (`parking-gateway user add sim-pay-1 --role device --token`).
        token = new_token(station.device)
        accounts = {**settings.http.accounts, station.device: HttpAccount(
            role="device", token_hash=hash_secret(token))}
        settings = settings.model_copy(update={
            "http": settings.http.model_copy(update={"accounts": accounts})})
    world = _World(settings, scenario, clock=clock, seed=seed if saved is None else saved.seed,
                   render_frames=render_frames)
    bus: SensorBus | None = None
    port: str | None = None
    units = {bay.id: bay.sensor.unit_id for bay in settings.bays
             if isinstance(bay.sensor, ModbusSensor)}
    if settings.bus is not None and units:
        bus = SensorBus(sorted(units.values()), seed=world.seed, baudrate=settings.bus.baudrate,
                        parity=settings.bus.parity, stopbits=settings.bus.stopbits)
        if node_sample_period_s is not None:
            for unit in bus.units:
                bus.node(unit).sample_period_s = node_sample_period_s

        def on_bay(bay_id: str, occupied: bool, plate: str | None) -> None:
            unit = units.get(bay_id)
            if unit is None:
                return
            if occupied:
                bus.park(unit)
            else:
                bus.leave(unit)

        world.bays.subscribe(on_bay)
    if restart is not None:
        restart.resume(world)  # before the nodes start: the cars parked over them are there
    if bus is not None:
        port = await bus.start(running_for_s=0.0 if saved is None else NODES_SETTLED_S)
    signs = await _sign_lines(settings)
    printers, scanners = await _ticket_devices(settings)
    gateway = Gateway(
        settings, clock=clock, sync=sync, control=control,
        # With [lpr] enabled and no reader given, the daemon starts its own plate worker.
        plates=plates if plates is not None or settings.lpr.enabled else GroundTruthReader(),
        notifier=Notifier(None),
        hardware=HardwareOverrides(pin_factory=world.factory, cameras=world.cameras,
                                   bus_port=port, sign_ports={
                                       sign.id: signs[sign.port].port for sign in settings.signs
                                       if sign.port in signs},
                                   printer_ports={k: v.port for k, v in printers.items()},
                                   scanner_ports={k: v.port for k, v in scanners.items()}))
    run = LotRun(world, gateway, bus, station, signs=signs,
                 printers=printers, scanners=scanners)
    if saved is not None:
        run.reservations = [Reservation.model_validate(r) for r in saved.reservations]
    daemon = asyncio.ensure_future(gateway.run())
    try:
        await _started(gateway, daemon)
        if token is not None and gateway.web is not None:
            await _started(gateway, daemon, gateway.web.listening)
            host = settings.http.host
            station.api = HttpPayDesk(
                f"http://{f'[{host}]' if ':' in host else host}:{gateway.web.port}", token)
        loop = asyncio.get_running_loop()
        if bus is not None and gateway.bus is not None and isinstance(loop, TimeWarpLoop):
            link = gateway.bus.link
            # Bytes written to one end of the pty and not yet read at the other are in the
            # kernel: virtual time waits for them.
            loop.hold_while(lambda: link.bytes_written > bus.bytes_received
                            or bus.bytes_sent > link.bytes_read)
        if signs and isinstance(loop, TimeWarpLoop):
            _hold_for_signs(loop, run)
        if (printers or scanners) and isinstance(loop, TimeWarpLoop):
            _hold_for_tickets(loop, run)
        _connect_tickets(run)
        _push_population(run)
        world.on_pay = lambda plate, ticket, refused: run.spawn(
            run.pay_station.pay(gateway, plate, ticket=ticket, refused=refused))
        _book_reservations(run)
        await world.start()
        if restart is not None:
            run.spawn(_save_every(run, restart))
        yield run
    finally:
        # The daemon stops first, as on a real lot: the barriers and loops are still there
        # while it lets the last movement finish.
        gateway.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await daemon
        if restart is not None and world.started:
            restart.save(run.world, clock, run.reservations)
        await world.close()
        for task in list(run.tasks):
            task.cancel()
        if bus is not None:
            await bus.close()
        for line in signs.values():
            await line.close()
        for device in _devices(printers, scanners):
            await device.close()
        if station.api is not None:
            await station.api.close()


async def _sign_lines(settings: Settings) -> dict[str, SignLine]:
    """A simulated line for each port of the lot's ASCII signs, started, with its signs."""
    lines: dict[str, SignLine] = {}
    for sign in settings.signs:
        if sign.kind == "ascii":  # a Modbus sign is not simulated: it stays silent
            line = lines.setdefault(sign.port, SignLine(addresses=(), baudrate=sign.baudrate))
            line.addresses.add(sign.station)
    for line in lines.values():
        await line.start()
    return lines


def _hold_for_signs(loop: TimeWarpLoop, run: LotRun) -> None:
    """Virtual time waits while a frame or an answer is in the kernel, as for the bus."""
    from gateway.drivers.signs import AsciiSign

    board = run.gateway.sign_board
    ours = {} if board is None else {
        state.config.port: state.sign.line for state in board.states.values()
        if isinstance(state.sign, AsciiSign)}  # by the sim's pty, as the daemon opened it
    pairs = [(line, ours[line.port]) for line in run.signs.values() if line.port in ours]
    loop.hold_while(lambda: any(
        theirs.bytes_written > line.bytes_received or line.bytes_sent > theirs.bytes_read
        for line, theirs in pairs))


async def _ticket_devices(settings: Settings
                          ) -> tuple[dict[str, SimPrinter], dict[str, SimScanner]]:
    """A printer on a pty for each entry lane with one, a scanner for each exit with one."""
    printers = {lane.id: SimPrinter() for lane in settings.lanes
                if lane.direction == "entry" and lane.printer is not None}
    scanners = {lane.id: SimScanner() for lane in settings.lanes
                if lane.direction == "exit" and lane.scanner is not None}
    for device in _devices(printers, scanners):
        await device.start()
    return printers, scanners


def _devices(printers: dict[str, SimPrinter], scanners: dict[str, SimScanner]
             ) -> list[SimPrinter | SimScanner]:
    return [*printers.values(), *scanners.values()]


def _connect_tickets(run: LotRun) -> None:
    """A ticket that comes out goes to the driver waiting for it; a driver at an exit holds
    their ticket up to its scanner."""
    for lane_id, printer in run.printers.items():
        printer.on_ticket = _taker(run.world, lane_id)
    scanners = run.scanners

    def scan(lane_id: str, text: str) -> None:
        if lane_id in scanners:
            scanners[lane_id].scan(text)

    run.world.on_scan = scan


def _taker(world: World, lane_id: str) -> Callable[[PrintedTicket], None]:
    def take(ticket: PrintedTicket) -> None:
        world.take_ticket(lane_id, ticket.qr)

    return take


def _hold_for_tickets(loop: TimeWarpLoop, run: LotRun) -> None:
    """Virtual time waits while a ticket, a status request or its answer, or a scan is in the
    kernel, as for the bus: a printer's status answer must not time out in skipped time."""
    from gateway.drivers.printer import EscPosPrinter
    from gateway.drivers.scanner import BarcodeScanner

    pairs: list[tuple[SimPrinter | SimScanner, Any]] = []
    for lane_id, lane in run.gateway.lanes.items():
        if isinstance(lane.printer, EscPosPrinter) and lane_id in run.printers:
            pairs.append((run.printers[lane_id], lane.printer.line))
        if isinstance(lane.scanner, BarcodeScanner) and lane_id in run.scanners:
            pairs.append((run.scanners[lane_id], lane.scanner.line))
    # Only while the gateway's side is open: bytes sent to a closed port wait in the kernel
    # until it opens again, and virtual time must not stand still for them.
    loop.hold_while(lambda: any(
        theirs.is_open and (theirs.bytes_written > ours.bytes_received
                            or ours.bytes_sent > theirs.bytes_read)
        for ours, theirs in pairs))


async def _started(gateway: Gateway, daemon: asyncio.Future[None],
                   event: asyncio.Event | None = None) -> None:
    """Wait for READY (or `event`), or for the daemon to fail starting (no virtual-time timeout
    here: thread work such as opening the journal takes real time that a virtual clock would
    skip over)."""
    ready: asyncio.Future[Any] = asyncio.ensure_future((event or gateway.started).wait())
    await asyncio.wait([ready, daemon], return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        daemon.result()  # raises what stopped it
        raise RuntimeError("the gateway stopped before it was ready")


async def _save_every(run: LotRun, restart: Restart) -> None:
    """Save the lot now and then: what a hard kill (no save at the stop) resumes from."""
    while True:
        await asyncio.sleep(SAVE_EVERY_S)
        restart.save(run.world, run.gateway.clock, run.reservations)


def _push_population(run: LotRun) -> None:
    """What the backend would have pushed: the permits and the deny list."""
    traffic = run.world.traffic
    run.gateway.access.load("permits", [Permit(permitId=f"permit-{i}", plates=(v.plate,))
                                        for i, v in enumerate(traffic.permits)])
    run.gateway.access.load("deny_list", [DenyEntry(plate=v.plate, reason="stolen vehicle")
                                          for v in traffic.denied])


def _book_reservations(run: LotRun) -> None:
    """Each reservation reaches the gateway (as the backend pushes it) before its car does."""
    traffic = run.world.traffic
    arrivals = traffic.arrivals
    gateway, clock = run.gateway, run.gateway.clock

    def booked(duration_s: float) -> Iterator[Arrival]:
        for arrival in arrivals(duration_s):
            plate = arrival.vehicle.plate
            # A restart draws the arrival that was coming again: booked already.
            if arrival.vehicle.kind == "reservation" and not any(
                    r.plate == plate and r.end > clock.now() for r in run.reservations):
                start = clock.now() + timedelta(seconds=max(0.0, arrival.at_s
                                                            - run.world.now_s))
                run.reservations.append(Reservation(
                    reservationId=f"res-{len(run.reservations) + 1}",
                    plate=arrival.vehicle.plate, start=start - timedelta(minutes=5),
                    end=start + timedelta(seconds=arrival.stay_s) + timedelta(hours=1)))
                gateway.access.load("reservations", run.reservations[-200:])
            yield arrival

    traffic.arrivals = booked  # type: ignore[method-assign]


# --- checking a run against the truth -----------------------------------------------------


async def outbox(gateway: Gateway) -> list[tuple[str, dict[str, Any]]]:
    """Every event the gateway journaled, synced or not, as (type, data)."""
    from gateway.journal import JournalReader

    reader = await JournalReader.open(gateway.settings.journal.path)
    try:
        return [(r.type, json.loads(r.data_json)) async for r in reader.iter_events()]
    finally:
        await reader.close()
