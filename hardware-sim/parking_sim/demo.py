"""``parking-gateway demo``: the real daemon running a simulated lot, with a live view.

The lot is ``config/demo-lot.toml`` (two entry lanes, one exit lane, 301 bays on three floors)
and its day is ``hardware-sim/scenarios/demo.toml``. Its settings take ``PARKING_GATEWAY__...``
environment overrides exactly as ``run`` does (a broker, port, HMAC key, HTTP address); the
journal and the control socket stay in the state directory. Time is virtual, paced to at most
``--pace`` lot seconds per real second (60: a lot hour in a real minute). The gateway's sync
always runs: it journals offline, says so, and delivers once a broker answers, whenever that is.
With ``--duration`` it runs for that many real seconds, prints a summary and exits 0.

A demo started again on the same ``--state-dir`` goes on where it stopped: the same lot time,
the vehicles inside still inside, in their bays (``parking_sim.state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.cli.common import InvalidInput, config_problems
from gateway.config import ConfigError, Settings
from gateway.runtime.aio import cancel_and_wait

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository (an editable install)
DEMO_SCENARIO = ROOT / "hardware-sim" / "scenarios" / "demo.toml"


def demo_settings(scenario: Any, state_dir: Path, *, lpr: bool,
                  env: Mapping[str, str]) -> Settings:
    """The demo lot's settings with `env`'s overrides, as ``run`` loads them; an invalid
    override is the same input error (exit 2), naming the variable."""
    from parking_sim.daemon import sim_settings

    try:
        lot = scenario.settings(env)
    except ConfigError as e:
        raise config_problems(scenario.resolve(scenario.lot.config), e) from None
    return sim_settings(lot, state_dir, lpr=lpr)


def backend(gateway: Any) -> str:
    """Where events go, and whether they are getting there."""
    mqtt = gateway.settings.sync.mqtt
    sync = gateway.sync
    if sync is not None and sync.connected_event.is_set():
        return f"MQTT {mqtt.host}:{mqtt.port}, connected"
    return f"MQTT {mqtt.host}:{mqtt.port}: offline, buffering"


@dataclass
class Feed:
    """The newest journaled events, for the live view."""

    after: int = 0
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    counts: Counter[str] = field(default_factory=Counter)

    async def poll(self, gateway: Any) -> None:
        import json
        from datetime import datetime

        tz = gateway.settings.gateway.tzinfo
        # Acked or not: the newest events, from the journal's read side.
        records = await gateway.journal.read_events(self.after, 1000)
        for record in records:
            self.after = record.seq
            self.counts[record.type] += 1
            if record.type in ("bay.changed", "gate.opened", "gate.closed"):
                continue
            data = json.loads(record.data_json)
            local = datetime.fromisoformat(record.time).astimezone(tz)
            self.recent.append(_describe(f"{local:%H:%M:%S}", record.type, data))


def _describe(at: str, kind: str, data: dict[str, Any]) -> str:
    plate = data.get("identifiedVehicle", {}).get("plate") or data.get("plate") or ""
    if kind == "session.started":
        return f"{at}  in    {plate:<10} {data['right']['kind']} at {data['laneId']}"
    if kind == "session.ended":
        fee, currency = data["fee"]["amountMinor"] / 100, data["fee"]["currency"]
        return f"{at}  out   {plate:<10} {fee:6.2f} {currency} ({data['exitReason']})"
    if kind == "violation.detected":
        return f"{at}  !     {plate:<10} {data['kind']} {data.get('laneId', '')}"
    if kind == "payment.recorded":
        return f"{at}  paid  {data['amount']['amountMinor'] / 100:.2f} {data['amount']['currency']}"
    if kind in ("alarm.raised", "alarm.cleared"):
        return f"{at}  {kind.split('.')[1]:<5} {data['alarmId']}"
    return f"{at}  {kind}"


def _view(run: Any, feed: Feed, started: float) -> Group:
    gateway, world = run.gateway, run.world
    now = gateway.clock.now().astimezone(gateway.settings.gateway.tzinfo)
    head = Text.assemble(
        ("parking-gateway demo  ", "bold"), f"lot time {now:%a %H:%M:%S}  ",
        f"real {time.monotonic() - started:5.0f} s  ", ("lot " + gateway.lot_state(), "bold"),
        f"  backend: {backend(gateway)}")
    floors = Table(title="bays with sensors, by floor", expand=False)
    for column in ("floor", "free", "occupied", "unknown"):
        floors.add_column(column, justify="right")
    for name, counts in gateway.occupancy.counts_by(lambda b: b.config.floor).items():
        floors.add_row(name, str(counts.free), str(counts.occupied), str(counts.unknown))
    total = gateway.occupancy.counts()
    floors.add_row("all*", str(total.free), str(total.occupied), str(total.unknown),
                   style="bold")
    lanes = Table(title="lanes")
    for column in ("lane", "state", "barrier", "passed", "refused", "tailgates"):
        lanes.add_column(column)
    for lane in gateway.lanes.values():
        s = lane.status()
        lanes.add_row(s["laneId"], s["state"], s["barrier"], str(s["passages"]),
                      str(s["refusals"]), str(s["tailgates"]))
    truth = world.truth.counts()
    facts = Text(
        f"inside {len(gateway.access.inside)} (truth {world.inside})   "
        f"arrived {truth.get('arrived', 0)}  entered {truth.get('entered', 0)}  "
        f"exited {truth.get('exited', 0)}  refused {truth.get('refused', 0)}   "
        f"journal seq {gateway.journal.last_seq}, unsynced "
        f"{gateway.journal.last_seq - gateway.journal.acked_through}\n"
        "* with the bays no sensor watches, counted from the vehicles inside")
    events = Text("\n".join(feed.recent) or "(no events yet)")
    return Group(head, floors, lanes, facts, Text("recent events", style="bold"), events)


async def run_demo(duration_s: float | None, pace: float, seed: int | None, lpr: bool,
                   state_dir: Path, console: Console,
                   env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`env`: the environment the settings' overrides come from (default: the process's)."""
    from gateway.runtime.log import configure_logging
    from parking_sim.daemon import lot_run, outbox
    from parking_sim.scenario import load_scenario
    from parking_sim.state import restart
    from parking_sim.vtime import TimeWarpLoop, VirtualClock

    loop = asyncio.get_running_loop()
    assert isinstance(loop, TimeWarpLoop)
    scenario = load_scenario(DEMO_SCENARIO)
    settings = demo_settings(scenario, state_dir, lpr=lpr,
                             env=os.environ if env is None else env)
    configure_logging("error", "console", sys.stderr)  # the live view is the output
    mqtt = settings.sync.mqtt
    console.print(f"[bold]demo[/]: events to MQTT {mqtt.host}:{mqtt.port} (buffered offline "
                  f"until it answers); journal {settings.journal.path}")
    again = await restart(state_dir, scenario, settings.journal.path)
    if again.saved is not None:
        tz = settings.gateway.tzinfo
        console.print(f"resuming the lot at {again.at.astimezone(tz):%a %H:%M:%S} with "
                      f"{sum(p.inside for p in again.saved.world.vehicles)} vehicles inside "
                      f"(start {again.starts}, seed {again.saved.seed})")
    loop.set_pace(pace)
    clock = VirtualClock(loop, start=again.at, boot_id=again.boot_id)
    plates = None
    if lpr:
        console.print("starting the plate reader (EasyOCR warms up for a few seconds) ...")
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    feed = Feed()
    async with lot_run(settings, scenario, clock=clock, seed=seed, plates=plates, sync=True,
                       render_frames=lpr, node_sample_period_s=0.5, restart=again) as run:
        traffic = asyncio.ensure_future(run.world.run(scenario.scenario.hours * 3600))
        live = console.is_terminal
        with Live(console=console, refresh_per_second=4, transient=False) if live \
                else contextlib.nullcontext() as view:
            last_line = 0.0
            while not stop.is_set() and not traffic.done():
                if duration_s is not None and time.monotonic() - started >= duration_s:
                    break
                await feed.poll(run.gateway)
                if view is not None:
                    view.update(_view(run, feed, started))
                elif time.monotonic() - last_line >= 10:
                    last_line = time.monotonic()
                    console.print(run.gateway.status_line())
                await _real_sleep(stop, 0.25)
        await cancel_and_wait(traffic)
        summary = await _summary(run, outbox, time.monotonic() - started)
    return {**summary, "start": again.starts}


async def _real_sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds` of real time (the loop's clock is the lot's): poll the stop flag."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop.is_set():  # noqa: ASYNC110 (real time, not loop)
        await asyncio.sleep(0.01)


async def _summary(run: Any, outbox: Any, real_s: float) -> dict[str, Any]:
    gateway, world = run.gateway, run.world
    events = await outbox(gateway)
    kinds = Counter(kind for kind, _ in events)
    ended = [data for kind, data in events if kind == "session.ended"]
    fees = sum(d["fee"]["amountMinor"] for d in ended)
    violations = Counter(d["kind"] for kind, d in events if kind == "violation.detected")
    truth = world.truth.counts()
    counts = gateway.occupancy.counts()
    return {
        "real_seconds": round(real_s, 1),
        "lot_time": gateway.clock.now().astimezone(gateway.settings.gateway.tzinfo).isoformat(
            timespec="seconds"),
        "backend": backend(gateway),
        "vehicles": {k: truth.get(k, 0) for k in ("arrived", "entered", "exited", "refused",
                                                   "reversed", "tailgates")},
        "sessions": {"started": kinds["session.started"], "ended": kinds["session.ended"],
                     "open": len(gateway.access.inside), "inside_truth": world.inside},
        "fees_minor": fees,
        "payments": kinds["payment.recorded"],
        "violations": dict(violations),
        "bays": counts.as_dict(),
        "events_journaled": gateway.journal.last_seq,
        "events_unsynced": gateway.journal.last_seq - gateway.journal.acked_through,
        "barrier_safety_events": len(world.safety_events()),
        "journal": str(gateway.settings.journal.path),
    }


@click.command("demo")
@click.option("--duration", "duration_s", type=click.FloatRange(min=1),
              help="Run this many real seconds, print a summary and exit (default: until Ctrl-C).")
@click.option("--pace", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Lot seconds per real second at most (60: a lot hour in a real minute).")
@click.option("--seed", type=int,
              help="The traffic's random seed (default: the scenario's; a resumed lot keeps "
                   "its own).")
@click.option("--lpr", is_flag=True,
              help="Read plates with the real reader (EasyOCR) on rendered frames.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the demo's journal and saved lot go; a demo started again on it "
                   "resumes the lot (default: a new temporary folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(duration_s: float | None, pace: float, seed: int | None, lpr: bool,
         state_dir: Path | None, as_json: bool) -> None:
    """Run the gateway daemon on a simulated lot, with a live view of bays, lanes and events."""
    from parking_sim.state import StateError
    from parking_sim.vtime import TimeWarpLoop

    console = Console(stderr=as_json)
    state = state_dir or Path(tempfile.mkdtemp(prefix="parking-gateway-demo-"))
    with asyncio.Runner(loop_factory=lambda: TimeWarpLoop(None, io_grace_s=0.0)) as runner:
        try:
            summary = runner.run(run_demo(duration_s, pace, seed, lpr, state, console))
        except StateError as e:
            raise InvalidInput(str(e)) from None
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2))
        return
    table = Table(title="demo summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
