"""`parking-gateway config check`: load a config as the daemon would and summarise it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import (
    EXIT_CODES,
    Section,
    config_problems,
    json_option,
    print_json,
    print_sections,
)
from gateway.config import ConfigError, describe, load_settings
from gateway.core.events import source_uri


@click.group()
def config() -> None:
    """Check a configuration file."""


@config.command("check", epilog=EXIT_CODES)
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@json_option
def config_check(path: Path, as_json: bool) -> None:
    """Load PATH as the daemon would (with PARKING_GATEWAY__ variables) and summarise it.

    Every problem is printed on stderr as `dotted.path: message`. Secrets are shown only
    as set or unset.
    """
    try:
        settings = load_settings(path)
    except ConfigError as e:
        if as_json:
            problems = [{"path": p.path, "message": p.message} for p in e.problems]
            print_json({"valid": False, "config": str(path), "problems": problems})
        raise config_problems(path, e) from None
    summary = describe(settings)
    if as_json:
        print_json({"valid": True, "config": str(path), "summary": summary})
        return
    click.echo(f"{path}: valid")
    click.echo()
    print_sections(_summary_sections(summary))


def _summary_sections(summary: Mapping[str, Any]) -> list[Section]:
    lanes, bays, tariffs = summary["lanes"], summary["bays"], summary["tariffs"]
    journal, sync, logging = summary["journal"], summary["sync"], summary["logging"]
    mqtt, http = sync["mqtt"], sync["http"]
    return [
        Section("identity", [
            ("lot", summary["lot_id"]),
            ("gateway", summary["gateway_id"]),
            ("time zone", summary["timezone"]),
            ("event source", source_uri(summary["lot_id"], summary["gateway_id"])),
        ]),
        Section("lanes", [
            ("total", str(lanes["total"])),
            ("by direction", _counts(lanes["by_direction"])),
            ("cameras", _counts(lanes["cameras"])),
        ]),
        Section("bays", [
            ("total", str(bays["total"])),
            ("by floor", _counts(bays["by_floor"])),
            ("by zone", _counts(bays["by_zone"])),
            ("by type", _counts(bays["by_type"])),
            ("by sensor", _counts(bays["by_sensor"])),
        ]),
        Section("tariffs", [
            ("default", tariffs["default"]),
            ("defined", ", ".join(tariffs["names"])),
        ]),
        Section("journal", [
            ("path", journal["path"]),
            ("size cap", f"{journal['max_size_mb']} MiB"),
            ("retention", f"{journal['retention_days']} days"),
            ("startup check", journal["startup_check"]),
        ]),
        Section("sync", [
            ("mqtt broker", mqtt["broker"]),
            ("mqtt tls", "yes" if mqtt["tls"] else "no"),
            ("mqtt username", mqtt["username"] or "(none)"),
            ("mqtt password", _set(mqtt["password_set"])),
            ("http base url", http["base_url"] or "(none)"),
            ("http token", _set(http["token_set"])),
            ("command hmac key", _set(sync["command_hmac_key_set"])),
        ]),
        Section("logging", [("level", logging["level"]), ("format", logging["format"])]),
        Section("daemon", _daemon_rows(summary)),
    ]


def _daemon_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Where the technician's CLI finds the daemon, and the daemon its hardware."""
    control, lpr, bus, http = summary["control"], summary["lpr"], summary["bus"], summary["http"]
    scheme = "https" if http["tls"] else "http"
    return [
        ("control socket", f"{control['socket_path']} (group {control['group']})"),
        ("http api", f"{scheme}://{http['listen']}, accounts: {_counts(http['accounts'])}"
         + (", anonymous viewers" if http["anonymous_viewer"] else "")
         if http["enabled"] else f"off ([http] enabled = true serves {http['listen']})"),
        ("plate reading", "on, formats " + ", ".join(lpr["formats"]) if lpr["enabled"]
         else "off (every car goes to the intercom)"),
        ("sensor bus", "none" if bus is None else
         f"{bus['port']} at {bus['baudrate']} baud, {bus['nodes']} nodes"),
    ]


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counts.items()) or "none"


def _set(flag: bool) -> str:
    return "set" if flag else "unset"
