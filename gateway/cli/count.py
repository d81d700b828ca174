"""`parking-gateway count show` and `count set LEVEL N`: the levels counted at their ramps.

A technician walks a counted level, counts the cars, and sets the count; the daemon audits it
with the error it corrected (gateway.controllers.counting). `count show` lists each level's
count and its ramps' crossings, the first place to look when a count drifts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gateway.cli.common import InvalidInput, Section, json_option, print_json, print_sections
from gateway.cli.service import DAEMON_EXIT_CODES, call_daemon, levels_section, socket_option


@click.group()
def count() -> None:
    """Levels counted at their ramps: show the counts, set one after a recount."""


@count.command("show", epilog=DAEMON_EXIT_CODES)
@socket_option
@json_option
def count_show(socket_path: Path, as_json: bool) -> None:
    """Each counted level's count, capacity and free bays; each ramp's crossings in and out,
    vehicles that backed out, glitches dropped and its loops' states now."""
    report = call_daemon(socket_path, "count.show")
    if as_json:
        print_json(report)
        return
    print_sections(count_sections(report))


def count_sections(report: dict[str, Any]) -> list[Section]:
    """The daemon's `count.show` as tables for a person."""
    levels = report.get("levels") or []
    if not levels:
        return [Section("no level is counted at its ramps ([[levels]] in the config)", [])]
    ramps = [(str(r.get("rampId", "?")), f"{r.get('from', '?')} -> {r.get('into', '?')}",
              str(r.get("in", 0)), str(r.get("out", 0)), str(r.get("backouts", 0)),
              str(r.get("glitches", 0)), _loops(r.get("loops") or {}))
             for r in {r.get("rampId"): r for lv in levels for r in lv.get("ramps") or []}
             .values()]
    return [levels_section(levels),
            Section("ramps", ramps, header=("ramp", "A -> B", "in", "out", "backed out",
                                            "glitches", "loops A B"))]


def _loops(loops: dict[str, Any]) -> str:
    return " ".join("occupied" if loops.get(name) else "clear" for name in ("a", "b"))


@count.command("set", epilog=DAEMON_EXIT_CODES)
@click.argument("level", metavar="LEVEL")
@click.argument("vehicles", metavar="N", type=int)
@socket_option
@json_option
def count_set(level: str, vehicles: int, socket_path: Path, as_json: bool) -> None:
    """Set LEVEL's count to N vehicles after a recount (audited with your user name and the
    error corrected); clears its count.drift alarm."""
    if vehicles < 0:
        raise InvalidInput("N is a number of vehicles, 0 or more")
    result = call_daemon(socket_path, "count.set", {"level": level, "count": vehicles})
    if as_json:
        print_json({"ok": True, **result})
        return
    click.echo(f"level {level}: {result['count']} vehicles (was {result['previous']},"
               f" corrected by {-result['error']:+d})")
