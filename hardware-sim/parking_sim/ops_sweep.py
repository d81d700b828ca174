"""Technician commands at random lot times, over many seeds: does the lot keep deciding?

Each run closes the lot, locks a lane open or closed and takes a bay out of service at a random
lot time, puts everything back a random while later (``Gateway.set_lot_state``,
``set_lane_mode``, ``set_bay_service``, as the control socket does), and then checks that the
lanes went on: every vehicle that entered has a session (but a tailgater the camera missed,
whose session has no plate), every one that left closed one, and after everything reopened
sessions kept being journaled and cars kept leaving (no lane held open for a car that would
not come). The demo lot
with the backend online (unpaid stays are refused at the exit, as with a broker) is the
default::

    python -m parking_sim.ops_sweep --seeds 20 --hours 2.5
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import click

from gateway.app import Gateway
from gateway.core.operations import LaneMode
from parking_sim.scenario import Scenario


@dataclass(frozen=True, slots=True)
class SweepRun:
    seed: int
    commands: list[str]
    entered: int
    sessions_started: int
    entered_without_session: int  # vehicles whose plate no session has
    sessions_without_plate: int  # a tailgater the camera missed, or two cars seen as one
    exited: int
    sessions_ended: int
    leaving: int  # left their bay and not out yet (driving to the exit, queued, refused)
    inside: int
    open_sessions: int
    longest_silence_s: float  # between session events, after everything was put back


async def technician_day(scenario: Scenario, seed: int, hours: float, state_dir: Path
                         ) -> SweepRun:
    """One run of `scenario` with technician commands at times drawn from `seed`."""
    from parking_sim.daemon import lot_run, sim_settings
    from parking_sim.vtime import VirtualClock

    rng = random.Random(seed)
    settings = sim_settings(scenario.settings(), state_dir)
    loop = asyncio.get_running_loop()
    clock = VirtualClock(loop, start=scenario.scenario.start)
    span = hours * 3600.0
    close_at = rng.uniform(0.1, 0.4) * span
    open_at = close_at + rng.uniform(60.0, 0.3 * span)
    lane = rng.choice([lane.id for lane in settings.lanes])
    lock: LaneMode = "locked_open" if rng.random() < 0.5 else "locked_closed"
    done: list[str] = []

    async def operate(gateway: Gateway) -> None:
        bay = rng.choice(sorted(gateway.occupancy.bays))  # a sensed bay
        await asyncio.sleep(close_at)
        await gateway.set_lot_state("closed", actor="sweep")
        await gateway.set_lane_mode(lane, lock, actor="sweep")
        await gateway.set_bay_service(bay, False, actor="sweep")
        done.append(f"{close_at:.0f}s: lot closed, {lane} {lock}, {bay} out of service")
        await asyncio.sleep(open_at - close_at)
        await gateway.set_lot_state("open", actor="sweep")
        await gateway.set_lane_mode(lane, "auto", actor="sweep")
        await gateway.set_bay_service(bay, True, actor="sweep")
        done.append(f"{open_at:.0f}s: all back")

    async with lot_run(settings, scenario, clock=clock, seed=seed, control=False,
                       render_frames=False, node_sample_period_s=0.5) as run:
        gateway = run.gateway
        gateway.online = lambda: True  # type: ignore[method-assign]  # a broker, as the demo
        run.spawn(operate(gateway))
        await run.world.run(span)
        records = await gateway.journal.read_events(0, 1_000_000)
        start = scenario.scenario.start
        times = sorted((datetime.fromisoformat(r.time) - start).total_seconds()
                       for r in records if r.type in ("session.started", "session.ended"))
        after = [open_at, *(t for t in times if t > open_at), span]
        truth = run.world.truth.counts()
        types = [r.type for r in records]
        plates = Counter(json.loads(r.data_json).get("identifiedVehicle", {}).get("plate")
                         for r in records if r.type == "session.started")
        entered = Counter(e.plate for e in run.world.truth.of("entered"))
        return SweepRun(
            seed, done, truth.get("entered", 0), types.count("session.started"),
            (entered - plates).total(), plates[None],
            truth.get("exited", 0), types.count("session.ended"),
            truth.get("left_bay", 0) - truth.get("exited", 0), run.world.inside,
            len(gateway.access.inside),
            max(b - a for a, b in pairwise(after)))


@click.command()
@click.option("--seeds", type=int, default=10, show_default=True)
@click.option("--first-seed", type=int, default=1, show_default=True)
@click.option("--hours", type=float, default=2.5, show_default=True)
@click.option("--scenario", "scenario_path", type=click.Path(exists=True, path_type=Path),
              help="A scenario file (default: the demo's).")
def main(seeds: int, first_seed: int, hours: float, scenario_path: Path | None) -> None:
    """Print one JSON line per seed."""
    from gateway.runtime.log import configure_logging
    from parking_sim.demo import DEMO_SCENARIO
    from parking_sim.scenario import load_scenario
    from parking_sim.vtime import TimeWarpLoop

    configure_logging("error", "console", sys.stderr)
    scenario = load_scenario(scenario_path or DEMO_SCENARIO)
    for seed in range(first_seed, first_seed + seeds):
        with asyncio.Runner(loop_factory=lambda: TimeWarpLoop(None, io_grace_s=0.0)) as runner:
            result = runner.run(technician_day(scenario, seed, hours,
                                               Path(tempfile.mkdtemp(prefix="ops-sweep-"))))
        click.echo(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
