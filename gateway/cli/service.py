"""The technician's commands that talk to the running daemon over its control socket.

`status`, `gate open`, `lane mode`, `lot state`, `bay service`, `alarms`, `sessions open`,
`plates recent`, and `report` (which reads the journal, not the socket); `sensors watch` is in
gateway.cli.sensors.
Handlers stay thin, as in the rest of gateway.cli: ask the daemon, print.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from datetime import date, timedelta, tzinfo
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from gateway.cli.common import (
    EXIT_CODES,
    InvalidInput,
    OperationalError,
    Section,
    config_option,
    folder_for,
    json_option,
    number,
    optional_settings,
    plural,
    png_path,
    print_json,
    print_sections,
    run,
    shown_time,
    terminal,
    time_zone,
    utc_option,
)
from gateway.cli.journal import journal_option, journal_target
from gateway.cli.sign_view import sign_line
from gateway.config import DEFAULT_CONTROL_SOCKET
from gateway.core.clock import SystemClock
from gateway.core.verdict import Verdict, verdict
from gateway.runtime.control import ControlClient, ControlError, RemoteError

SOCKET_ENV = "PARKING_GATEWAY_SOCKET"
DAEMON_EXIT_CODES = """\b
Exit codes:
  0  success
  1  operational failure: the daemon is not running, cannot be reached, or refused
     the operation (an unknown lane or bay, a barrier fault)
  2  invalid input: bad usage, or a value the daemon does not accept
"""
LANE_MODES = {"auto": "auto", "open": "locked_open", "closed": "locked_closed"}

socket_option = click.option(
    "--socket", "socket_path", type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONTROL_SOCKET, envvar=SOCKET_ENV, show_default=True, show_envvar=True,
    help="The daemon's control socket (control.socket_path in its config).",
)


def call_daemon(socket_path: Path, method: str, params: Mapping[str, Any] | None = None) -> Any:
    """One request to the daemon; its errors become the CLI's exit codes."""
    try:
        return asyncio.run(ControlClient(socket_path).call(method, params))
    except RemoteError as e:
        if e.code == "invalid_params":
            raise InvalidInput(str(e)) from None
        raise OperationalError(str(e)) from None
    except ControlError as e:
        raise OperationalError(str(e)) from None


def _done(as_json: bool, message: str, **fields: Any) -> None:
    if as_json:
        print_json({"ok": True, **fields})
    else:
        click.echo(message)


# --- status ------------------------------------------------------------------------------


@click.command("status", epilog=DAEMON_EXIT_CODES)
@socket_option
@json_option
def status(socket_path: Path, as_json: bool) -> None:
    """The running lot: first a verdict (ok, degraded or failing) and the active alarms, then
    lot state, bays by floor, zone and type, lanes, hardware and sync.

    --json adds "verdict" (ok, degraded or failing) to the daemon's answer.
    """
    report = call_daemon(socket_path, "status")
    found = status_verdict(report)
    if as_json:
        print_json({**report, "verdict": found.level})
        return
    headline = f"{found.level.upper()}: " + (", ".join(found.reasons) or "lanes in order,"
                                              " no warning or critical alarm")
    if terminal(sys.stdout):
        style = {"ok": "bold green", "degraded": "bold yellow", "failing": "bold red"}
        Console(highlight=False).print(Text(headline, style=style[found.level]))
    else:
        click.echo(headline)
    print_sections(status_sections(report))


def status_verdict(report: Mapping[str, Any]) -> Verdict:
    """The verdict on the daemon's `status`: its alarms' severities and lanes out of order."""
    return verdict((str(a.get("severity", "")) for a in report.get("alarms") or []),
                   (str(lane.get("laneId", "?")) for lane in report.get("lanes") or []
                    if lane.get("outOfOrder")))


def status_sections(report: Mapping[str, Any]) -> list[Section]:
    """The daemon's `status` (gateway.app.Gateway.status) as tables for a person: the active
    alarms first (what is wrong now), then the rest."""
    occupancy = report.get("occupancy") or {}
    total = occupancy.get("total") or {}
    sync = report.get("sync") or {}
    alarms = report.get("alarms") or []
    lot_state = _lot_state_line(report)
    counted = occupancy.get("counted") or {}
    rows = [("state", lot_state), ("bays", _bay_line(total))]
    if counted.get("capacity"):
        # Bays with no sensor: counted from the vehicles inside, not in the tables below.
        rows.append(("bays with no sensor",
                     f"{counted['capacity']}, {counted.get('occupied', 0)} taken by the count"))
    sections = []
    if alarms:
        sections.append(Section(plural(len(alarms), "active alarm"), [
            (str(a.get("severity", "")), str(a.get("alarmId", "")), str(a.get("message", "")))
            for a in alarms
        ], header=("severity", "alarm", "message"), wrap=2))
    sections.append(Section("lot", [
        *rows,
        ("open sessions", number(report.get("openSessions", 0))),
        ("sync", _sync_line(sync)),
    ]))
    lanes = report.get("lanes") or []
    if lanes:
        sections.append(Section("lanes", [
            (str(lane.get("laneId", "?")), str(lane.get("direction", "")),
             str(lane.get("mode", "")), str(lane.get("state", "")),
             str(lane.get("barrier", "")),
             "OUT OF ORDER" if lane.get("outOfOrder") else "ok")
            for lane in lanes
        ], header=("lane", "direction", "mode", "state", "barrier", "health")))
    hardware = _hardware_rows(report)
    if hardware:
        sections.append(Section("hardware", hardware, header=("device", "state"), wrap=1))
    for key, title in (("byFloor", "floor"), ("byZone", "zone"), ("byType", "type")):
        groups: Mapping[str, Mapping[str, int]] = occupancy.get(key) or {}
        if groups:
            sections.append(Section(f"bays with sensors, by {title}", [
                (name, *(str(counts.get(c, 0)) for c in COUNT_KEYS))
                for name, counts in groups.items()
            ], header=(title, "free", "occupied", "unknown", "out of service")))
    if report.get("levels"):
        sections.append(levels_section(report["levels"]))
    return sections


def levels_section(levels: Sequence[Mapping[str, Any]]) -> Section:
    """The levels counted at their ramps (`status`, `count show`): a count that drifted from
    the bay sensors' says so."""
    return Section("counted levels", [
        (str(lv.get("levelId", "?")), str(lv.get("zone", "")), str(lv.get("count", "?")),
         str(lv.get("capacity", "?")), str(lv.get("free", "?")),
         "DRIFT: recount" if lv.get("drift") else "ok")
        for lv in levels
    ], header=("level", "zone", "count", "capacity", "free", "state"))


COUNT_KEYS = ("free", "occupied", "unknown", "outOfService")


def _hardware_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The sensor bus and each lane's camera, one line each, what is wrong first in the line."""
    rows = []
    bus = report.get("bus")
    if bus:
        rows.append(("sensor bus", _bus_line(bus)))
    for camera in report.get("cameras") or []:
        rows.append((f"camera {camera.get('cameraId', '?')}", _camera_line(camera)))
    for sign in report.get("signs") or []:
        rows.append((f"sign {sign.get('signId', '?')}", sign_line(sign)))
    return rows


def _bus_line(bus: Mapping[str, Any]) -> str:
    """`port ok, 22 of 24 nodes answering; silent: unit 3 (A-03) 41 s, ...`."""
    port = str(bus.get("portState", "?"))
    line = f"{bus.get('port', '?')}: port {port}"
    if port != "ok":
        return line + (f" ({bus['portError']})" if bus.get("portError") else "")
    line += f", {bus.get('nodesAnswering', 0)} of {bus.get('nodes', 0)} nodes answering"
    silent = bus.get("nodesSilent") or []
    if silent:
        line += "; silent: " + ", ".join(
            f"unit {n.get('unitId')} ({n.get('bayId')}) {_age(float(n.get('silentS', 0)))}"
            for n in silent)
    return line


def _camera_line(camera: Mapping[str, Any]) -> str:
    """`connected, last frame 0.2 s ago` or `unreachable (cannot open ...), no frame yet`."""
    state = str(camera.get("state", "?"))
    if state in ("none", "unmonitored"):
        return {"none": "none (the lane runs on the intercom)",
                "unmonitored": "not monitored (a simulated camera)"}[state]
    line = state
    if state == "unreachable" and camera.get("lastError"):
        line += f" ({camera['lastError']})"
    age = camera.get("lastFrameAgeS")
    if isinstance(age, int | float):
        line += f", last frame {age:.1f} s ago" if age < 120 else f", last frame {_age(age)} ago"
    else:
        line += ", no frame yet"
    return line


def _lot_state_line(report: Mapping[str, Any]) -> str:
    """The state, and why: a technician's (or the backend's) setting, or the free-bay count."""
    state = str(report.get("lotState", "?"))
    operator = report.get("operatorState")
    if operator and operator != "open":
        return f"{state} (set to {operator} by a technician or the backend)"
    if state == "full":
        return f"{state} (automatic: free bays at or below lot.full_when_free_at_most)"
    return state


def _bay_line(total: Mapping[str, int]) -> str:
    if not total:
        return "unknown"
    return (f"{total.get('free', 0)} free, {total.get('occupied', 0)} occupied,"
            f" {total.get('unknown', 0)} unknown, {total.get('outOfService', 0)} out of service")


def _sync_line(sync: Mapping[str, Any]) -> str:
    """`connected (mqtt), 12 events to send, oldest 4 min`: the sync stats, in one line."""
    link = "connected" if sync.get("connected") else "offline"
    if sync.get("transport"):
        link += f" ({sync['transport']})"
    parts = [link]
    if sync.get("backlog") is not None:
        parts.append(f"{number(sync['backlog'])} events to send")
    lag = sync.get("lag_s")
    if isinstance(lag, int | float) and lag >= 1:
        parts.append(f"oldest {_age(lag)}")
    if sync.get("last_error") and not sync.get("connected"):
        parts.append(f"last error: {sync['last_error']}")
    return ", ".join(parts)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- changes -----------------------------------------------------------------------------


@click.group()
def gate() -> None:
    """Barriers: open one by hand (a manual vend)."""


@gate.command("open", epilog=DAEMON_EXIT_CODES)
@click.argument("lane")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why (audited with your user name), e.g. 'ticket machine jammed'.")
@socket_option
@json_option
def gate_open(lane: str, reason: str, socket_path: Path, as_json: bool) -> None:
    """A manual vend: raise LANE's barrier for one vehicle."""
    if len(reason.strip()) < 3:
        raise InvalidInput("--reason must say why, in a few words (it is audited)")
    call_daemon(socket_path, "gate.open", {"lane": lane, "reason": reason})
    _done(as_json, f"{lane}: barrier opening for one vehicle", lane=lane, reason=reason)


@click.group()
def lane() -> None:
    """Lanes: automatic, or held open or closed."""


@lane.command("mode", epilog=DAEMON_EXIT_CODES)
@click.argument("lane_id", metavar="LANE")
@click.argument("mode", type=click.Choice(list(LANE_MODES)))
@socket_option
@json_option
def lane_mode(lane_id: str, mode: str, socket_path: Path, as_json: bool) -> None:
    """Run LANE automatically, or hold its barrier open or closed until set back to auto."""
    wire = LANE_MODES[mode]
    call_daemon(socket_path, "lane.mode", {"lane": lane_id, "mode": wire})
    _done(as_json, f"{lane_id}: mode {wire}", lane=lane_id, mode=wire)


@click.group()
def lot() -> None:
    """The lot as a whole: open, full or closed."""


@lot.command("state", epilog=DAEMON_EXIT_CODES)
@click.argument("state", type=click.Choice(["open", "full", "closed"]))
@socket_option
@json_option
def lot_state(state: str, socket_path: Path, as_json: bool) -> None:
    """Open the lot, mark it full (visitors refused), or close it."""
    call_daemon(socket_path, "lot.state", {"state": state})
    _done(as_json, f"lot: {state}", state=state)


@click.group()
def bay() -> None:
    """Bays: take one out of service or back."""


@bay.command("service", epilog=DAEMON_EXIT_CODES)
@click.argument("bay_id", metavar="BAY")
@click.argument("setting", type=click.Choice(["on", "off"]))
@socket_option
@json_option
def bay_service(bay_id: str, setting: str, socket_path: Path, as_json: bool) -> None:
    """Take BAY out of service (off: not counted, a car in it is a violation) or back (on)."""
    in_service = setting == "on"
    call_daemon(socket_path, "bay.service", {"bay": bay_id, "in_service": in_service})
    _done(as_json, f"{bay_id}: {'in service' if in_service else 'out of service'}",
          bay=bay_id, in_service=in_service)


@click.group()
def alarms() -> None:
    """Alarms: raised, they stay (across restarts) until their cause clears or are acknowledged."""


@alarms.command("list", epilog=DAEMON_EXIT_CODES)
@socket_option
@config_option
@utc_option
@json_option
def alarms_list(socket_path: Path, config_path: Path, utc: bool, as_json: bool) -> None:
    """The active alarms, oldest first, raised when in the lot's time (the config's zone)."""
    zone = time_zone(optional_settings(config_path), utc)
    rows = call_daemon(socket_path, "alarms.list")
    if as_json:
        print_json(rows)
        return
    print_sections([_records(f"{len(rows)} active alarms", rows, ("raisedAt", "raised"), (
        ("severity", "severity"), ("alarmId", "alarm"), ("message", "message")), zone)])


@alarms.command("ack", epilog=DAEMON_EXIT_CODES)
@click.argument("alarm_id", metavar="ALARM")
@socket_option
@json_option
def alarms_ack(alarm_id: str, socket_path: Path, as_json: bool) -> None:
    """Acknowledge ALARM (its id, as `alarms list` shows it): it is cleared, and audited with
    your user name. A condition that is still there raises it again."""
    call_daemon(socket_path, "alarms.ack", {"alarm_id": alarm_id})
    _done(as_json, f"{alarm_id}: acknowledged", alarm=alarm_id)


# --- reads -------------------------------------------------------------------------------


@click.group()
def sessions() -> None:
    """Parking sessions: the vehicles inside."""


@sessions.command("open", epilog=DAEMON_EXIT_CODES)
@socket_option
@config_option
@utc_option
@json_option
def sessions_open(socket_path: Path, config_path: Path, utc: bool, as_json: bool) -> None:
    """Vehicles inside now, oldest entry first, entry times in the lot's time."""
    zone = time_zone(optional_settings(config_path), utc)
    rows = call_daemon(socket_path, "sessions.open")
    if as_json:
        print_json(rows)
        return
    print_sections([_records(plural(len(rows), "open session"), rows, ("entryAt", "entry"), (
        ("plate", "plate"), ("right", "right"), ("reference", "reference"),
        ("entryLane", "lane"), ("sessionId", "session")), zone)])


@click.group()
def plates() -> None:
    """Plate reads at the lanes, and what the lanes decided."""


@plates.command("recent", epilog=DAEMON_EXIT_CODES)
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many of the newest reads.")
@socket_option
@config_option
@utc_option
@json_option
def plates_recent(limit: int, socket_path: Path, config_path: Path, utc: bool,
                  as_json: bool) -> None:
    """The newest plate reads and what the lane decided, newest first, in the lot's time."""
    zone = time_zone(optional_settings(config_path), utc)
    rows = call_daemon(socket_path, "plates.recent", {"limit": limit})
    if as_json:
        print_json(rows)
        return
    print_sections([_records(f"last {plural(len(rows), 'plate read')}", rows, ("at", "time"), (
        ("laneId", "lane"), ("plate", "plate"), ("confidence", "confidence"),
        ("decision", "decision"), ("allowed", "allowed")), zone)])


def _records(title: str, rows: Sequence[Mapping[str, Any]], time: tuple[str, str],
             columns: Sequence[tuple[str, str]], zone: tzinfo) -> Section:
    """A listing whose first column is a time, shown in `zone` and named in its header."""
    time_key, time_label = time
    return Section(title, [
        (_time_cell(row.get(time_key), zone), *(_cell(row.get(key)) for key, _ in columns))
        for row in rows
    ], header=(f"{time_label} ({zone})", *(label for _, label in columns)))


def _time_cell(value: Any, zone: tzinfo) -> str:
    return shown_time(value, zone) if isinstance(value, str) and value else "-"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and len(value) > 19 and value[10:11] == "T":
        return value[:19].replace("T", " ")  # an RFC 3339 time, to the second
    return number(value)


# --- report ------------------------------------------------------------------------------


def _parse_day(_ctx: click.Context, _param: click.Parameter, value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date such as 2026-03-02") from None
    # A day's hours run from its local midnight to the next: both must be on the calendar.
    first, last = date.min + timedelta(days=1), date.max - timedelta(days=1)
    if not first <= day <= last:
        raise InvalidInput(f"--day {value}: give a day from {first} to {last}")
    return day


@click.command("report", epilog=EXIT_CODES)
@click.option("--day", required=True, metavar="DATE", callback=_parse_day,
              help="The lot-local day, e.g. 2026-03-02.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              callback=png_path,
              help="The PNG to write (NAME.png); default: report-<lot>-<DATE>.png here.")
@click.option("--no-png", is_flag=True, help="Only the table (no matplotlib needed).")
@config_option
@journal_option
@json_option
def report(day: date, output: Path | None, no_png: bool, config_path: Path,
           journal_path: Path | None, as_json: bool) -> None:
    """Occupancy and revenue hour by hour over one day: a PNG chart and a table.

    Read from the journal (read-only, safe while the daemon runs): the hourly occupancy
    roll-ups, fees of the sessions that ended, and payments. Hours are lot-local
    (gateway.timezone); without a config, UTC. Needs matplotlib (the `sim` extra) for the PNG.
    """
    from gateway.journal import report as reports

    target = journal_target(config_path, journal_path)
    settings = target.settings
    tz = reports.zone(settings.gateway.timezone if settings else "UTC")
    lot_id = settings.gateway.lot_id if settings else "lot"
    result = run(reports.read_day(target.path, day, tz, now=SystemClock().now(),
                                   lot_id=lot_id))
    if result.currency is None and settings is not None:
        # A day with no money in the journal: amounts in the lot's currency all the same.
        result.currency = settings.tariffs[settings.gateway.default_tariff].currency
    png: Path | None = None
    if not no_png:
        png = output or Path(f"report-{lot_id}-{day.isoformat()}.png")
        folder_for(png)
        try:
            reports.render_png(result, png)
        except reports.MissingExtra as e:
            raise OperationalError(str(e)) from None
        except OSError as e:
            raise OperationalError(f"cannot write {png}: {e.strerror or e}") from None
    if as_json:
        print_json({**result.as_dict(), "png": None if png is None else str(png)})
        return
    print_sections(report_sections(result))
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if png is not None:
        click.echo(f"\nchart written to {png}", err=True)


def report_sections(result: Any) -> list[Section]:
    """The day's table: one row per hour, then the day's totals."""
    money = result.money
    rows = [
        (h.label, _pct(h.occupancy), number(round(h.occupied_avg, 1)) if h.has_occupancy
         else "-", str(h.occupied_max) if h.has_occupancy else "-", str(h.entries),
         str(h.exits), str(h.sessions_ended), money(h.fees_minor), money(h.payments_minor))
        for h in result.hours
    ]
    totals = result.totals()
    rows.append(("day", _pct(totals["occupancy"]), "", str(totals["occupied_max"]),
                 str(totals["entries"]), str(totals["exits"]), str(totals["sessions_ended"]),
                 money(totals["fees_minor"]), money(totals["payments_minor"])))
    title = f"{result.lot_id} on {result.day.isoformat()} ({result.timezone})"
    return [Section(title, rows, header=(
        "hour", "occupancy", "mean occupied", "peak", "entries", "exits", "exited",
        "fees", "payments"), right_last=True)]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"
