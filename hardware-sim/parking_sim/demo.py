"""``parking-gateway demo``: the real daemon running a simulated lot, with a live view.

The lot is ``config/demo-lot.toml`` (two entry lanes, one exit lane, 301 bays on three floors)
and its day is ``hardware-sim/scenarios/demo.toml``. Its settings take ``PARKING_GATEWAY__...``
environment overrides exactly as ``run`` does (a broker, port, HMAC key, HTTP address); the
journal and the control socket stay in the state directory. Time is virtual, paced to at most
``--pace`` lot seconds per real second (60: a lot hour in a real minute). The gateway's sync
always runs: it journals offline, says so, and delivers once a broker answers, whenever that is.
With ``--duration`` it runs for that many real seconds, prints a summary and exits 0.

The daemon serves its web console (``[http]``, docs/http.md) and the demo prints its address:
on a free port of 127.0.0.1 unless ``http.listen`` is set (``PARKING_GATEWAY__HTTP__LISTEN``),
to anonymous viewers unless ``http.anonymous_viewer`` says otherwise, and with a technician
``demo`` whose password is made at each start and printed, unless accounts are configured.

A demo started again on the same ``--state-dir`` goes on where it stopped: the same lot time,
the vehicles inside still inside, in their bays (``parking_sim.state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.cli.common import InvalidInput, Section, config_problems, plural, print_sections
from gateway.config import ConfigError, Settings
from gateway.core.tariff import money
from gateway.runtime.aio import cancel_and_wait

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository (an editable install)
DEMO_SCENARIO = ROOT / "hardware-sim" / "scenarios" / "demo.toml"
DEMO_ACCOUNT = "demo"  # the console's technician, when no account is configured
CONSOLE_WAIT_S = 10.0  # real seconds for the console's port to open


def demo_settings(scenario: Any, state_dir: Path, *, lpr: bool,
                  env: Mapping[str, str], password: str | None = None) -> Settings:
    """The demo lot's settings with `env`'s overrides, as ``run`` loads them; an invalid
    override is the same input error (exit 2), naming the variable. The console is served
    (`with_console`); `password` is the technician `demo`'s, if the config has no account."""
    from parking_sim.daemon import sim_settings

    try:
        lot = scenario.settings(env)
    except ConfigError as e:
        raise config_problems(scenario.resolve(scenario.lot.config), e) from None
    return with_console(sim_settings(lot, state_dir, lpr=lpr), password)


def with_console(settings: Settings, password: str | None) -> Settings:
    """`[http]` on, on a free port of 127.0.0.1, to anonymous viewers, with the technician
    `demo` (of `password`): each unless the config or the environment says otherwise."""
    from gateway.config import HttpAccount
    from gateway.web.accounts import hash_secret

    http = settings.http
    given = http.model_fields_set
    update: dict[str, Any] = {key: value for key, value in (
        ("enabled", True), ("listen", "127.0.0.1:0"), ("anonymous_viewer", True))
        if key not in given}
    if password is not None and not http.accounts:
        update["accounts"] = {DEMO_ACCOUNT: HttpAccount(role="technician",
                                                        password_hash=hash_secret(password))}
    return settings.model_copy(update={"http": http.model_copy(update=update)})


async def console_line(gateway: Any, password: str) -> str | None:
    """Where the console is, once its port is open, and how a technician logs in (`password`,
    if the account `demo` is the demo's own); None with `[http]` off. Real time is waited (the
    loop's is the lot's). A port that does not open (in use, say) is said, and the lot runs
    on, the daemon trying it again, as `run` does."""
    from gateway.web.accounts import verify_secret

    web = gateway.web
    if web is None:
        return None
    end = time.monotonic() + CONSOLE_WAIT_S
    while not web.listening.is_set() and time.monotonic() < end:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if not web.listening.is_set():
        part = gateway.parts.get("http")
        why = part.last_error if part is not None and part.last_error else "no answer"
        return f"web console: not listening on {web.config.listen} ({why}); the lot runs on"
    host = web.config.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if web.config.tls is not None else "http"
    account = web.config.accounts.get(DEMO_ACCOUNT)
    ours = account is not None and account.password_hash is not None and verify_secret(
        password, account.password_hash)
    login = f" (technician: log in as {DEMO_ACCOUNT}, password {password})" if ours else ""
    return f"web console: {scheme}://{host}:{web.port}/{login}"


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
        fee = money(data["fee"]["amountMinor"], data["fee"]["currency"])
        return f"{at}  out   {plate:<10} {fee:>10} ({data['exitReason']})"
    if kind == "violation.detected":
        return f"{at}  !     {plate:<10} {data['kind']} {data.get('laneId', '')}"
    if kind == "payment.recorded":
        return f"{at}  paid  {money(data['amount']['amountMinor'], data['amount']['currency'])}"
    if kind in ("alarm.raised", "alarm.cleared"):
        return f"{at}  {kind.split('.')[1]:<5} {data['alarmId']}"
    return f"{at}  {kind}"


def header(now: datetime, real_s: float, lot_state: str, backend_line: str,
           socket: Path) -> Text:
    """The live view's first lines, each well within 100 columns (a path aside): the lot's
    clock and state, where events go, and the socket the technician's commands take."""
    return Text.assemble(
        ("parking-gateway demo", "bold"), f"   lot time {now:%a %H:%M:%S}",
        f"   real {real_s:.0f} s   ", (f"lot {lot_state}", "bold"),
        f"\nbackend: {backend_line}",
        f"\ntry: parking-gateway status --socket {socket}")


def facts(inside: int, inside_truth: int, truth: Mapping[str, int], last_seq: int,
          unsynced: int) -> Text:
    """Vehicles and the journal, in two lines within 100 columns."""
    return Text(
        f"inside {inside} (simulator: {inside_truth})   "
        + "  ".join(f"{k} {truth.get(k, 0)}" for k in ("arrived", "entered", "exited",
                                                       "refused"))
        + f"\njournal: {last_seq} events, {unsynced} not yet sent\n"
        "* with the bays no sensor watches, counted from the vehicles inside")


def _view(run: Any, feed: Feed, started: float) -> Group:
    gateway, world = run.gateway, run.world
    now = gateway.clock.now().astimezone(gateway.settings.gateway.tzinfo)
    head = header(now, time.monotonic() - started, gateway.lot_state(), backend(gateway),
                  gateway.settings.control.socket_path)
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
    journal = gateway.journal
    lot = facts(len(gateway.access.inside), world.inside, world.truth.counts(),
                journal.last_seq, journal.last_seq - journal.acked_through)
    events = Text("\n".join(feed.recent) or "(no events yet)")
    return Group(head, floors, lanes, signs_shown(run), lot,
                 Text("recent events", style="bold"), events)


def signs_shown(run: Any) -> Text:
    """What each simulated sign shows now (its own display, not the gateway's idea of it)."""
    board = run.gateway.sign_board
    if board is None:
        return Text("")
    shown = []
    for sign_id, state in board.states.items():
        config = state.config
        line = next((sim for sim in run.signs.values() if sim.port == config.port), None)
        text = None if line is None else line.text(config.station)
        shown.append(f"{sign_id} ({config.shows}) [{'?' if text is None else text:^6}]")
    return Text("signs: " + "   ".join(shown))


async def run_demo(duration_s: float | None, pace: float, seed: int | None, lpr: bool,
                   state_dir: Path, console: Console,
                   env: Mapping[str, str] | None = None,
                   stop: asyncio.Event | None = None) -> dict[str, Any]:
    """`env`: the environment the settings' overrides come from (default: the process's);
    `stop`: set it to end the demo as Ctrl-C does (SIGINT and SIGTERM set it too)."""
    from gateway.runtime.log import configure_logging
    from gateway.runtime.memory import return_big_blocks
    from parking_sim.daemon import lot_run, outbox
    from parking_sim.scenario import load_scenario
    from parking_sim.state import restart
    from parking_sim.vtime import TimeWarpLoop, VirtualClock

    loop = asyncio.get_running_loop()
    assert isinstance(loop, TimeWarpLoop)
    scenario = load_scenario(DEMO_SCENARIO)
    password = secrets.token_urlsafe(9)
    settings = demo_settings(scenario, state_dir, lpr=lpr,
                             env=os.environ if env is None else env, password=password)
    configure_logging("error", "console", sys.stderr)  # the live view is the output
    return_big_blocks()  # as the daemon's process does (gateway.app.run_until_signalled)
    mqtt = settings.sync.mqtt
    console.print(f"[bold]demo[/]: journal {settings.journal.path}; events go to MQTT "
                  f"{mqtt.host}:{mqtt.port}, kept until it answers", highlight=False)
    socket = settings.control.socket_path
    console.print(f"control socket {socket}: in another terminal, try\n"
                  f"    parking-gateway status --socket {socket}", highlight=False)
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
    stop = asyncio.Event() if stop is None else stop
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    feed = Feed()
    async with lot_run(settings, scenario, clock=clock, seed=seed, plates=plates, sync=True,
                       render_frames=lpr, node_sample_period_s=0.5, restart=again) as run:
        traffic = asyncio.ensure_future(run.world.run(scenario.scenario.hours * 3600))
        line = await console_line(run.gateway, password)
        if line is not None:
            console.print(line, highlight=False, soft_wrap=True)
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
    paid = [data["amount"] for kind, data in events if kind == "payment.recorded"]
    settings = gateway.settings
    currency = settings.tariffs[settings.gateway.default_tariff].currency  # the demo's one
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
        "currency": currency,
        "fees_minor": sum(d["fee"]["amountMinor"] for d in ended),
        "payments": kinds["payment.recorded"],
        "payments_minor": sum(amount["amountMinor"] for amount in paid),
        "violations": dict(violations),
        "bays": counts.as_dict(),
        "events_journaled": gateway.journal.last_seq,
        "events_unsynced": gateway.journal.last_seq - gateway.journal.acked_through,
        "barrier_safety_events": len(world.safety_events()),
        "journal": str(settings.journal.path),
        "control_socket": str(settings.control.socket_path),
    }


def summary_text(summary: Mapping[str, Any]) -> str:
    """The closing summary's prose: how long, what the lot did, where its record is."""
    vehicles, sessions = summary["vehicles"], summary["sessions"]
    currency = summary["currency"]
    safety = summary["barrier_safety_events"]
    paid = (f"{plural(summary['payments'], 'payment')} took"
            f" {money(summary['payments_minor'], currency)} at the pay station"
            if summary["payments"] else "nobody paid at the pay station")
    return "\n".join([
        f"The demo ran {summary['real_seconds']:g} real seconds (start {summary['start']} of its"
        f" state folder); the lot's clock stopped at {_shown(summary['lot_time'])}.",
        f"{vehicles['arrived']} vehicles arrived: {vehicles['entered']} entered,"
        f" {vehicles['exited']} left, {vehicles['refused']} were refused and"
        f" {vehicles['reversed']} turned back; {vehicles['tailgates']} tailgated.",
        f"{plural(sessions['ended'], 'stay')} ended at the exit, with fees of"
        f" {money(summary['fees_minor'], currency)}; {paid}.",
        "No barrier came down on a vehicle." if not safety else
        f"A barrier came down on a vehicle {plural(safety, 'time')}: see the journal.",
        f"The journal ({summary['journal']}) holds {plural(summary['events_journaled'], 'event')},"
        f" {summary['events_unsynced']:,} not yet sent; backend: {summary['backend']}.",
    ])


def summary_sections(summary: Mapping[str, Any]) -> list[Section]:
    """The closing summary's tables: sessions, bays and violations."""
    sessions, bays = summary["sessions"], summary["bays"]
    sections = [
        Section("sessions", [
            ("started", str(sessions["started"])), ("ended", str(sessions["ended"])),
            ("open now", str(sessions["open"])),
            ("vehicles inside (the simulator's count)", str(sessions["inside_truth"]))],
            right_last=True),
        Section("bays with sensors now", [
            (name, str(bays[key])) for key, name in (
                ("free", "free"), ("occupied", "occupied"), ("unknown", "unknown"),
                ("outOfService", "out of service"))], right_last=True),
    ]
    violations = summary["violations"]
    sections.append(Section("violations", [
        (kind.replace("_", " "), str(n)) for kind, n in sorted(violations.items())
    ] or [("none", "")], right_last=True))
    return sections


def _shown(iso: str) -> str:
    """`2026-03-02 09:00:23+01:00`, as the CLI shows a time."""
    return datetime.fromisoformat(iso).isoformat(sep=" ", timespec="seconds")


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
    console.print()
    console.print(summary_text(summary), highlight=False)
    console.print()
    print_sections(summary_sections(summary))
