"""`parking-gateway sensors watch`: every bay sensor now, what is wrong first, then its changes.

The daemon's watch opens with the state of every bay sensor, with its bus node's for a bay on
the RS-485 bus (gateway.app.Gateway.sensor_states), then streams each reading and each bay
taken out of service or back. A technician reads the problems first, in this order: faulty
sensors, silent nodes, unknown bays, bays out of service; then the rest, the latest change
first.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gateway.cli.common import (
    OperationalError,
    Section,
    config_option,
    json_option,
    optional_settings,
    plural,
    print_sections,
    shown_time,
    terminal,
    time_zone,
    utc_option,
)
from gateway.cli.service import DAEMON_EXIT_CODES, socket_option
from gateway.runtime.control import ControlClient, ControlError

PROBLEMS = ("faulty", "silent", "unknown", "out of service")  # the order they are listed in
CHROME_LINES = 6  # the live view's counts, the table's blank, header and rule lines, the last
STATE_STYLE = {"free": "green", "occupied": "red", "unknown": "yellow"}


@dataclass(slots=True)
class Sensor:
    """One bay's sensor as the watch knows it: from the opening snapshot, then the changes."""

    bay_id: str
    state: str
    healthy: bool
    in_service: bool
    since: str | None  # RFC 3339: when the state began (or the daemon started watching it)
    fault: str | None = None
    unit: int | None = None  # its node on the RS-485 bus
    silent_s: float | None = None  # the node had not answered for this long at the snapshot
    source: str = ""
    raw: Any = None

    @property
    def problem(self) -> str | None:
        """What is wrong with it, the worst first (one of PROBLEMS), or None."""
        if not self.healthy and self.fault:
            return "faulty"
        if self.silent_s is not None:
            return "silent"
        if self.state == "unknown":
            return "unknown"
        if not self.in_service:
            return "out of service"
        return None

    @property
    def sensor_text(self) -> str:
        if not self.healthy and self.fault:
            return self.fault
        if self.silent_s is not None:
            return f"silent for {self.silent_s:.0f} s"
        return "ok" if self.healthy else "no reading yet"

    @property
    def node_text(self) -> str:
        return f"unit {self.unit}" if self.unit is not None else self.source or "-"


class Board:
    """The sensors of the watch, kept up to date by its events (`apply`)."""

    def __init__(self) -> None:
        self.sensors: dict[str, Sensor] = {}
        self.at: str | None = None  # the snapshot's time

    def apply(self, event: Mapping[str, Any]) -> Sensor | None:
        """Take one event of the daemon's watch; the sensor a change was about, if any."""
        kind = event.get("kind")
        if kind == "snapshot":
            self.at = str(event.get("at") or "") or None
            self.sensors = {str(row.get("bayId", "?")): _sensor(row)
                            for row in event.get("bays") or []}
            return None
        bay_id = str(event.get("bayId", "?"))
        sensor = self.sensors.get(bay_id)
        if sensor is None:  # not in a snapshot: a daemon that sends none, a bay added since
            sensor = self.sensors[bay_id] = Sensor(bay_id, "unknown", False, True, None)
        if kind == "service":
            sensor.in_service = bool(event.get("inService"))
            return sensor
        state = str(event.get("state", sensor.state))
        if state != sensor.state:
            sensor.since = str(event.get("at") or "") or sensor.since
        sensor.state, sensor.healthy = state, bool(event.get("healthy"))
        sensor.fault = event.get("fault")
        sensor.raw = event.get("raw")
        if sensor.healthy:
            sensor.silent_s = None  # its node answered
        return sensor

    def ordered(self) -> list[Sensor]:
        """What is wrong first (in the order of PROBLEMS), then the rest; within each, the
        latest change first."""
        found = sorted(self.sensors.values(), key=lambda s: s.bay_id)
        found.sort(key=lambda s: s.since or "", reverse=True)  # RFC 3339 UTC sorts as text
        found.sort(key=lambda s: PROBLEMS.index(s.problem) if s.problem else len(PROBLEMS))
        return found

    def counts(self) -> str:
        """`24 bays with sensors: 1 faulty, 2 unknown; 21 fine`."""
        found: dict[str, int] = {}
        for sensor in self.sensors.values():
            problem = sensor.problem or "fine"
            found[problem] = found.get(problem, 0) + 1
        total = plural(len(self.sensors), "bay") + " with sensors"
        wrong = ", ".join(f"{found[p]} {p}" for p in PROBLEMS if found.get(p))
        if not wrong:
            return f"{total}, all fine"
        return f"{total}: {wrong}; {found.get('fine', 0)} fine"


def _sensor(row: Mapping[str, Any]) -> Sensor:
    silent = row.get("silentS")
    return Sensor(
        bay_id=str(row.get("bayId", "?")), state=str(row.get("state", "unknown")),
        healthy=bool(row.get("healthy")), in_service=bool(row.get("inService", True)),
        since=row.get("since"), fault=row.get("fault"), unit=row.get("unitId"),
        silent_s=float(silent) if isinstance(silent, int | float) else None,
        source=str(row.get("source", "")))


# --- the command ---------------------------------------------------------------------------


@click.group()
def sensors() -> None:
    """Bay sensors: what is wrong now, and their readings live."""


@sensors.command("watch", epilog=DAEMON_EXIT_CODES)
@socket_option
@config_option
@utc_option
@json_option
def sensors_watch(socket_path: Path, config_path: Path, utc: bool, as_json: bool) -> None:
    """Every bay sensor now, what is wrong first (faulty, silent, unknown, out of service),
    then each reading and service change as it comes, until Ctrl-C. Times in the lot's time.

    A live table on a terminal; otherwise the sensors, then one line per change. --json
    prints the daemon's events, one JSON object per line: first the snapshot
    ({"kind": "snapshot", "bays": [...]}), then each "reading" or "service" change.
    """
    zone = time_zone(None if as_json else optional_settings(config_path), utc)
    live = not as_json and terminal(sys.stdout)
    try:
        asyncio.run(_watch(ControlClient(socket_path).stream("sensors.watch"), zone,
                           as_json=as_json, live=live))
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends
    except ControlError as e:
        raise OperationalError(str(e)) from None


async def _watch(events: AsyncIterator[Mapping[str, Any]], zone: tzinfo, *, as_json: bool,
                 live: bool) -> None:
    board = Board()
    if as_json:
        async for event in events:
            click.echo(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
    elif live:
        with Live(console=Console(highlight=False), auto_refresh=False) as view:
            async for event in events:
                board.apply(event)
                view.update(live_view(board, zone, *view.console.size), refresh=True)
    else:
        async for event in events:
            if event.get("kind") == "snapshot":
                board.apply(event)
                print_sections([snapshot_section(board, zone)])
                click.echo("\nchanges:")
            elif (sensor := board.apply(event)) is not None:
                click.echo(change_line(event, sensor, zone))
    raise ControlError("the daemon ended the watch (it is stopping)")


# --- what a person sees --------------------------------------------------------------------

HEADER = ("bay", "state", "sensor", "node", "service", "since")


def _row(sensor: Sensor, zone: tzinfo, day: str | None = None) -> tuple[str, ...]:
    return (sensor.bay_id, sensor.state, sensor.sensor_text, sensor.node_text,
            "in" if sensor.in_service else "OUT", _since(sensor.since, zone, day))


def _since(at: str | None, zone: tzinfo, day: str | None = None) -> str:
    """The time with its offset; on `day` (the snapshot's, lot-local) without the date, so
    that a live view fits 80 columns."""
    if not at:
        return "-"
    shown = shown_time(at, zone)
    return shown[11:] if day is not None and shown.startswith(day) else shown


def snapshot_section(board: Board, zone: tzinfo) -> Section:
    """The opening state as plain rows, what is wrong first."""
    title = f"bay sensors at {_since(board.at, zone)}: {board.counts()}"
    return Section(title, [_row(s, zone) for s in board.ordered()],
                   header=(*HEADER[:-1], f"since ({zone})"), wrap=2)


def change_line(event: Mapping[str, Any], sensor: Sensor, zone: tzinfo) -> str:
    """`2026-03-02 09:03:05+01:00  A-01  free -> occupied  healthy  raw=541.0`, or a service
    change: `... B-12  out of service (by cli:ana)`."""
    at = _since(event.get("at"), zone)
    if event.get("kind") == "service":
        service = "in service" if sensor.in_service else "out of service"
        return f"{at}  {sensor.bay_id}  {service} (by {event.get('actor', '?')})"
    parts = [at, sensor.bay_id, f"{event.get('previous', '?')} -> {sensor.state}",
             "healthy" if sensor.healthy else f"FAULT {sensor.fault or ''}".strip()]
    if sensor.raw is not None:
        parts.append(f"raw={sensor.raw}")
    return "  ".join(parts)


def live_view(board: Board, zone: tzinfo, width: int, height: int) -> Group:
    """The live table, one line a sensor and cut to the terminal's height: what is wrong
    first, then the latest changes; the last line says how many more there are."""
    title = Text(board.counts() if board.sensors else "waiting for the daemon ...",
                 style="bold", no_wrap=True, overflow="ellipsis")
    ordered = board.ordered()
    shown = ordered[:max(1, height - CHROME_LINES)]
    day = _since(board.at, zone)[:10] if board.at else None
    rows = [list(_styled(sensor, zone, day)) for sensor in shown]
    table = Table(box=box.SIMPLE_HEAD, expand=False, pad_edge=False, collapse_padding=True)
    widths = [max([len(name), *(row[i].cell_len for row in rows)])
              for i, name in enumerate(HEADER)]
    sensor = HEADER.index("sensor")
    # Every column keeps its width but the sensor's, which is cut on a narrow terminal: the
    # box's edges and two spaces between columns take the rest.
    room = width - 2 - 2 * (len(HEADER) - 1) - sum(widths) + widths[sensor]
    for i, name in enumerate(HEADER):
        table.add_column(name, no_wrap=True, overflow="ellipsis",
                         max_width=max(room, len(name)) if i == sensor else None)
    for row in rows:
        table.add_row(*row)
    footer = f"times in {zone}; Ctrl-C to stop"
    if hidden := ordered[len(shown):]:
        wrong = sum(1 for s in hidden if s.problem is not None)
        more = f"{len(hidden)} more bays below"
        footer = (f"{more}, {wrong} of them with a problem" if wrong else f"{more}, fine"
                  ) + f"; {footer}"
    return Group(title, table, Text(footer, style="dim", no_wrap=True, overflow="ellipsis"))


def _styled(sensor: Sensor, zone: tzinfo, day: str | None) -> Iterable[Text]:
    bay, state, text, node, service, since = _row(sensor, zone, day)
    problem = sensor.problem
    yield Text(bay, style="bold" if problem else "")
    yield Text(state, style=STATE_STYLE.get(state, ""))
    yield Text(text, style="bold yellow" if problem in ("faulty", "silent") else "")
    yield Text(node)
    yield Text(service, style="" if sensor.in_service else "bold magenta")
    yield Text(since)
