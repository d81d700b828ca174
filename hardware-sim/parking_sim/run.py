"""Run a scenario: the world, a gate keeper per lane on the gateway's drivers, statistics, a plot.

:func:`simulate` runs on whatever loop it is given: a virtual-time loop runs a day in about a
minute (:func:`parking_sim.vtime.run`), a scaled one at a chosen speed. While it runs it hands
a :class:`Snapshot` to ``report`` every ``report_every_s`` simulated seconds; at the end it
returns a :class:`SimResult` that :func:`plot` draws as a PNG.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from gateway.config import Settings, UltrasonicSensor
from gateway.core.clock import Clock
from gateway.drivers import BayReading
from gateway.drivers.gpio import LaneIo, UltrasonicBay
from parking_sim.gatekeeper import GateKeeper, KeeperStats
from parking_sim.scenario import Scenario
from parking_sim.traffic import KINDS
from parking_sim.world import Sample, World

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The lot at one moment, for the live view."""

    sim_s: float
    local_time: str
    occupied: int
    capacity: int
    inside: int
    queued: int
    arrivals: int
    entered: int
    exited: int
    refused: int
    reversed: int
    tailgates: int
    safety_violations: int
    speed: float  # simulated seconds per real second


@dataclass
class SimResult:
    scenario: str
    seed: int
    hours: float
    capacity: int
    start_local: datetime
    samples: list[Sample]
    arrivals: list[tuple[float, str]]  # (sim seconds, population kind)
    refusals: list[float]  # sim seconds of each refused or turned-away car
    truth: dict[str, int]
    keepers: dict[str, KeeperStats]
    safety: dict[str, int]  # safety event kind -> count
    ultrasonic: dict[str, dict[str, float]] = field(default_factory=dict)
    wall_s: float = 0.0
    png: Path | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary (no time series)."""
        return {
            "scenario": self.scenario, "seed": self.seed, "hours": self.hours,
            "capacity": self.capacity, "wall_s": round(self.wall_s, 2),
            "peak_occupied": max((s.occupied for s in self.samples), default=0),
            "truth": self.truth,
            "keepers": {lane: asdict(stats) for lane, stats in self.keepers.items()},
            "safety_events": self.safety,
            "ultrasonic": self.ultrasonic,
            "png": None if self.png is None else str(self.png),
        }


class _SensorCheck:
    """How often an ultrasonic driver's reading agrees with the bay's truth."""

    def __init__(self, world: World, bay_id: str, driver: UltrasonicBay) -> None:
        self.world, self.bay_id, self.driver = world, bay_id, driver
        self.checks = 0
        self.agree = 0
        self.unknown = 0
        self.changes = 0
        driver.subscribe(self._changed)

    def _changed(self, reading: BayReading) -> None:
        self.changes += 1

    def check(self) -> None:
        reading = self.driver.reading
        if reading is None:
            return
        self.checks += 1
        if reading.state == "unknown":
            self.unknown += 1
        elif (reading.state == "occupied") == self.world.bays.occupied(self.bay_id):
            self.agree += 1

    def figures(self) -> dict[str, float]:
        share = self.agree / self.checks if self.checks else 0.0
        return {"checks": self.checks, "agree": round(share, 4), "unknown": self.unknown,
                "changes": self.changes}


def _policy(world: World) -> Callable[[str, str | None], bool]:
    denied = {v.plate for v in world.traffic.denied}
    capacity = len(world.bays.ids)

    def admit(direction: str, plate: str | None) -> bool:
        if direction == "exit":
            return True
        if plate is not None and plate in denied:
            return False
        return world.inside < capacity

    return admit


async def simulate(
    scenario: Scenario,
    *,
    clock: Clock,
    seed: int | None = None,
    hours: float | None = None,
    settings: Settings | None = None,
    report: Callable[[Snapshot], None] | None = None,
    report_every_s: float = 900.0,
    ultrasonic: bool = True,
) -> SimResult:
    """Run the scenario's lot for ``hours`` with a gate keeper on each lane."""
    loop = asyncio.get_running_loop()
    real0 = time.monotonic()
    settings = settings or scenario.settings()
    hours = scenario.scenario.hours if hours is None else hours
    world = World(settings, scenario, clock=clock, seed=seed)
    lanes: list[LaneIo] = []
    keepers: dict[str, GateKeeper] = {}
    checks: list[_SensorCheck] = []
    drivers: list[UltrasonicBay] = []
    policy = _policy(world)
    for lane in settings.lanes:
        io = LaneIo.build(lane.id, lane.gpio, lane.barrier, factory=world.factory,
                          debounce_ms=lane.timing.debounce_ms)
        lanes.append(io)
        keepers[lane.id] = GateKeeper(lane, io, world.cameras[lane.id], policy,
                                      pass_timeout_s=lane.timing.pass_timeout_s)
    if ultrasonic:
        for bay in settings.bays:
            if isinstance(bay.sensor, UltrasonicSensor):
                # Polled every 2 s: a bay changes over minutes, and each idle poll costs a
                # select on the virtual-time loop.
                driver = UltrasonicBay(bay.id, bay.sensor, clock=clock, factory=world.factory,
                                       poll_s=2.0)
                drivers.append(driver)
                checks.append(_SensorCheck(world, bay.id, driver))
    start_local = scenario.scenario.start.astimezone(settings.gateway.tzinfo)

    def snapshot() -> Snapshot:
        counts = world.truth.counts()
        elapsed = time.monotonic() - real0
        return Snapshot(
            sim_s=world.now_s,
            local_time=(start_local + timedelta(seconds=world.now_s)).strftime("%a %H:%M"),
            occupied=world.bays.occupied_count(), capacity=len(world.bays.ids),
            inside=world.inside, queued=world.queued(),
            arrivals=counts.get("arrived", 0), entered=counts.get("entered", 0),
            exited=counts.get("exited", 0), refused=counts.get("refused", 0),
            reversed=counts.get("reversed", 0), tailgates=counts.get("tailgates", 0),
            safety_violations=sum(1 for e in world.safety_events()
                                  if e.kind == "commanded_down_onto_vehicle"),
            speed=world.now_s / elapsed if elapsed > 0 else 0.0,
        )

    async def reporter() -> None:
        while True:
            await asyncio.sleep(report_every_s)
            for check in checks:
                check.check()
            if report is not None:
                report(snapshot())

    await world.start()
    for driver in drivers:
        await driver.start()
    for keeper in keepers.values():
        keeper.start()
    reporting = loop.create_task(reporter())
    try:
        await world.run(hours * 3600.0)
        if report is not None:
            report(snapshot())
        refusals = [e.t for e in world.truth.events if e.kind == "refused"
                    and e.lane in world.lanes_of("entry")]
        return SimResult(
            scenario=scenario.scenario.name, seed=world.seed, hours=hours,
            capacity=len(world.bays.ids), start_local=start_local, samples=list(world.samples),
            arrivals=[(t, str(kind)) for t, kind in world.arrivals_by_kind], refusals=refusals,
            truth=world.truth.counts(), keepers={k: v.stats for k, v in keepers.items()},
            safety=dict(Counter(e.kind for e in world.safety_events())),
            ultrasonic={c.bay_id: c.figures() for c in checks},
            wall_s=time.monotonic() - real0,
        )
    finally:
        reporting.cancel()
        for keeper in keepers.values():
            await keeper.close()
        for io in lanes:
            await io.close()
        for driver in drivers:
            await driver.close()
        await world.close()


_KIND_COLOURS = {"permit": "#2b83ba", "reservation": "#abdda4", "visitor": "#fdae61",
                 "denied": "#d7191c"}


def plot(result: SimResult, path: Path) -> Path:
    """Occupancy over time (top) and arrivals per hour by population (bottom), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    start = result.start_local.replace(tzinfo=None)  # lot-local clock time on the axis
    times = [start + timedelta(seconds=s.t) for s in result.samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 7.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    occupied = [s.occupied for s in result.samples]
    top.fill_between(times, occupied, step="post", alpha=0.35, color="#2b83ba",
                     label="bays occupied")
    top.step(times, [s.inside for s in result.samples], where="post", color="#1a1a1a",
             linewidth=1.0, label="cars inside (incl. driving to/from a bay)")
    top.step(times, [s.queued for s in result.samples], where="post", color="#d7191c",
             linewidth=1.0, label="cars queued in the lanes")
    top.axhline(result.capacity, color="#555555", linestyle="--", linewidth=1.0,
                label=f"capacity ({result.capacity} bays)")
    if result.ultrasonic:
        agree = min(figures["agree"] for figures in result.ultrasonic.values())
        share = "every check" if agree >= 1.0 else f"at least {agree:.0%} of checks"
        top.plot([], [], " ", label=f"ultrasonic bay drivers matched the truth\nin {share}")
    top.set_ylabel("vehicles")
    top.set_ylim(0, result.capacity * 1.12 + 1)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    top.set_title(f"Simulated lot '{result.scenario}': occupancy and arrivals "
                  f"(seed {result.seed}, {result.hours:g} h)")

    hours = max(1, int(result.hours + 0.999))
    base = start.replace(minute=0, second=0, microsecond=0)
    offset_s = (start - base).total_seconds()
    counts: dict[str, list[int]] = {kind: [0] * (hours + 1) for kind in KINDS}
    for t, kind in result.arrivals:
        counts[kind][int((t + offset_s) // 3600)] += 1
    refused = [0] * (hours + 1)
    for t in result.refusals:
        refused[int((t + offset_s) // 3600)] += 1
    edges = [base + timedelta(hours=h) for h in range(hours + 1)]
    width = timedelta(minutes=50)
    bottom_stack = [0] * (hours + 1)
    for kind in KINDS:
        centres = [e + timedelta(minutes=30) for e in edges]
        bottom.bar(centres, counts[kind], width=width, bottom=bottom_stack,
                   color=_KIND_COLOURS[kind], label=kind, edgecolor="white", linewidth=0.5)
        bottom_stack = [a + b for a, b in zip(bottom_stack, counts[kind], strict=True)]
    bottom.plot([e + timedelta(minutes=30) for e in edges], refused, "kx-", linewidth=1.0,
                markersize=5, label="turned away at entry")
    bottom.set_ylim(0, max(max(bottom_stack), max(refused), 1) * 1.15)
    bottom.set_ylabel("arrivals per hour")
    bottom.grid(alpha=0.3, axis="y")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False,
                  title="arrivals by population", title_fontsize=9, alignment="left")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_locator(
        mdates.HourLocator(interval=max(1, hours // 12)))  # type: ignore[no-untyped-call]
    bottom.set_xlim(start, start + timedelta(hours=result.hours))
    bottom.set_xlabel(f"lot-local time from {result.start_local:%Y-%m-%d %H:%M %Z}")
    truth = result.truth
    violations = result.safety.get("commanded_down_onto_vehicle", 0)
    fig.text(0.01, 0.005,
             f"arrived {truth.get('arrived', 0)}  entered {truth.get('entered', 0)}  "
             f"exited {truth.get('exited', 0)}  refused {truth.get('refused', 0)}  "
             f"reversed {truth.get('reversed', 0)}  tailgates {truth.get('tailgates', 0)}  "
             f"barrier lowered onto a vehicle: {violations}",
             fontsize=9, color="#333333")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    result.png = path
    return path
