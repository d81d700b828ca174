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
from gateway.config import ModbusSensor, Settings
from gateway.core.clock import Clock
from gateway.core.rights import DenyEntry, Permit, Reservation
from gateway.lpr.worker import PlateSource
from gateway.runtime.notify import Notifier
from parking_sim.bus import SensorBus
from parking_sim.camera import GroundTruthReader
from parking_sim.scenario import Scenario
from parking_sim.traffic import Arrival
from parking_sim.vtime import TimeWarpLoop
from parking_sim.world import World

log = structlog.get_logger("parking_sim.daemon")


@dataclass
class PayStation:
    """Visitors pay on their way back to the car: the stay's fee so far, by card."""

    payments: int = 0
    skipped: int = 0  # no session found (a tailgater, a misread) or nothing to pay
    share: float = 1.0  # the share of visitors who pay (the rest test the offline policy)
    rng: random.Random = field(default_factory=lambda: random.Random(5))

    async def pay(self, gateway: Gateway, plate: str) -> None:
        stay = gateway.access.stay_of(plate)
        if stay is None or stay.right_kind != "visitor" or self.rng.random() >= self.share:
            self.skipped += 1
            return
        fee = gateway.sessions.fee_at(stay, gateway.clock.now())
        if fee <= 0:
            self.skipped += 1
            return
        self.payments += 1
        await gateway.sessions.record_payment(
            payment_id=f"pay-{stay.session_id}", session_id=stay.session_id,
            amount_minor=fee, currency="EUR", method="card", source="pay_station",
            valid_until=gateway.clock.now() + timedelta(minutes=30))


class _World(World):
    """The world with a hook where a car leaves its bay (the driver walks past a pay station)."""

    on_leave_bay: Callable[[str], None] | None = None

    def _leave_bay(self, visit: Any) -> None:
        if self.on_leave_bay is not None:
            self.on_leave_bay(visit.arrival.vehicle.plate)
        super()._leave_bay(visit)


@dataclass
class LotRun:
    world: World
    gateway: Gateway
    bus: SensorBus | None
    pay_station: PayStation
    reservations: list[Reservation] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

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
) -> AsyncIterator[LotRun]:
    """Build the world and the daemon on it, started; stop both on the way out.

    A long run in virtual time can skip drawing camera frames (`render_frames=False`, with the
    ground-truth reader) and sample the detector nodes more slowly than their 10 Hz.
    """
    world = _World(settings, scenario, clock=clock, seed=seed, render_frames=render_frames)
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
        port = await bus.start()

        def on_bay(bay_id: str, occupied: bool, plate: str | None) -> None:
            unit = units.get(bay_id)
            if unit is None:
                return
            if occupied:
                bus.park(unit)
            else:
                bus.leave(unit)

        world.bays.subscribe(on_bay)
    gateway = Gateway(
        settings, clock=clock, sync=sync, control=control,
        # With [lpr] enabled and no reader given, the daemon starts its own plate worker.
        plates=plates if plates is not None or settings.lpr.enabled else GroundTruthReader(),
        notifier=Notifier(None),
        hardware=HardwareOverrides(pin_factory=world.factory, cameras=world.cameras,
                                   bus_port=port))
    run = LotRun(world, gateway, bus, PayStation(share=pay_share))
    daemon = asyncio.ensure_future(gateway.run())
    try:
        await _started(gateway, daemon)
        loop = asyncio.get_running_loop()
        if bus is not None and gateway.bus is not None and isinstance(loop, TimeWarpLoop):
            link = gateway.bus.link
            # Bytes written to one end of the pty and not yet read at the other are in the
            # kernel: virtual time waits for them.
            loop.hold_while(lambda: link.bytes_written > bus.bytes_received
                            or bus.bytes_sent > link.bytes_read)
        _push_population(run)
        world.on_leave_bay = lambda plate: run.spawn(run.pay_station.pay(gateway, plate))
        _book_reservations(run)
        await world.start()
        yield run
    finally:
        # The daemon stops first, as on a real lot: the barriers and loops are still there
        # while it lets the last movement finish.
        gateway.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await daemon
        await world.close()
        for task in list(run.tasks):
            task.cancel()
        if bus is not None:
            await bus.close()


async def _started(gateway: Gateway, daemon: asyncio.Future[None]) -> None:
    """Wait for READY, or for the daemon to fail starting (no virtual-time timeout here: thread
    work such as opening the journal takes real time that a virtual clock would skip over)."""
    ready: asyncio.Future[Any] = asyncio.ensure_future(gateway.started.wait())
    await asyncio.wait([ready, daemon], return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        daemon.result()  # raises what stopped it
        raise RuntimeError("the gateway stopped before it was ready")


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
            if arrival.vehicle.kind == "reservation":
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
