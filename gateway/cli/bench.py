"""`parking-gateway bench ...`: benchmarks, figures for this machine rather than pass/fail tests.

`bench journal` is here; `bench sync` lives beside the sync side (gateway.cli.sync), and the
simulator's `bench lane` and `bench bus` come in as plugins (entry point group
`parking_gateway.cli.bench`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.bench import journal as benchmarks
from gateway.bench import retention
from gateway.cli.common import (
    EXIT_CODES,
    InvalidInput,
    OperationalError,
    Section,
    json_option,
    number,
    print_json,
    print_sections,
    run,
)
from gateway.cli.lazy import SIMULATOR, LazyGroup

PLUGINS = "parking_gateway.cli.bench"  # entry point group: benchmarks of other distributions
# The two figures `bench journal` is for: group commit's rate over the alternatives'.
BENCH_RATIOS = {
    "grouped_vs_ungrouped": "vs one commit per event",
    "grouped_vs_raw": "vs raw sqlite3, same batches",
}


T = TypeVar("T")


def _measured(measure: Callable[[], T]) -> T:
    """A benchmark's result; what stops it (no broker, a daemon that would not start) is an
    operational failure, said in one line."""
    try:
        return measure()
    except (RuntimeError, OSError) as e:
        raise OperationalError(f"benchmark failed: {e}") from None


def _figures(title: str, result: Mapping[str, Any]) -> Section:
    """A section of a result's figures, one row each, the key's underscores as spaces."""
    return Section(title, [(key.replace("_", " "), number(value))
                           for key, value in result.items()], right_last=True)


@click.group(cls=LazyGroup, lazy={"sync": "gateway.cli.sync:bench_sync"}, plugins=PLUGINS,
             expected={"lane": SIMULATOR, "bus": SIMULATOR})
def bench() -> None:
    """Benchmarks: figures for this machine, not pass/fail tests."""


@bench.command("availability", epilog=EXIT_CODES)
@click.option("--changes", type=click.IntRange(min=1, max=10_000), default=100,
              show_default=True, help="Bay changes made, one at a time, a quarter second apart.")
@click.option("--clients", type=click.IntRange(min=1, max=1000), default=50, show_default=True,
              help="Concurrent clients of GET /api/v1/availability.")
@click.option("--seconds", type=click.FloatRange(min=1, max=600), default=10.0,
              show_default=True, help="How long the clients ask.")
@json_option
def bench_availability(changes: int, clients: int, seconds: float, as_json: bool) -> None:
    """How soon a bay change reaches a client of the live stream and an MQTT subscriber, and
    GET /api/v1/availability under concurrent clients: the daemon on the demo lot, with a
    local mosquitto. See docs/http.md, "How fast"."""
    from gateway.bench.availability import availability_bench

    result = _measured(lambda: availability_bench(changes=changes, clients=clients,
                                                  seconds=seconds))
    if as_json:
        print_json(result)
        return
    print_sections([_figures("availability", result)])


@bench.command("footprint", epilog=EXIT_CODES)
@click.option("--seconds", type=click.FloatRange(min=1), default=20.0, show_default=True,
              help="The idle daemon's quiet window; the demo's traffic is watched twice as "
                   "long. The whole run takes about four times this, and a minute more.")
@click.option("--venv", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Measure this venv's installed size (one built on a Pi, say) instead of "
                   "the running one's.")
@json_option
def bench_footprint(seconds: float, venv: Path | None, as_json: bool) -> None:
    """What the daemon costs a Pi, on the demo lot: memory, wake-ups, CPU, start to READY,
    disk writes per event, the venv's size. See docs/operations.md, "Footprint"."""
    from gateway.bench.footprint import footprint

    result = _measured(lambda: footprint(seconds=seconds, venv=venv))
    if as_json:
        print_json(result)
        return
    sizes = result.pop("venv")
    causes = result.pop("disk_causes_per_1000_events")
    print_sections([
        _figures("footprint", result),
        _figures("disk writes per 1,000 events, by cause", causes),
        _figures(f"venv {sizes.pop('path')}", sizes),
    ])


@bench.command("signs", epilog=EXIT_CODES)
@click.option("--changes", type=click.IntRange(min=1, max=10_000), default=100,
              show_default=True, help="Bay changes made, one at a time, a quarter second apart.")
@json_option
def bench_signs(changes: int, as_json: bool) -> None:
    """How soon a bay change reaches the free-space signs: the daemon on the demo lot, its
    sign line on a pty played by the bench (frames decoded, ACKed). See docs/operations.md,
    "Free-space signs"."""
    from gateway.bench.signs import signs_bench

    result = _measured(lambda: signs_bench(changes=changes))
    if as_json:
        print_json(result)
        return
    print_sections([_figures("signs", result)])


@bench.command("journal", epilog=EXIT_CODES)
@click.option("--producers", type=click.IntRange(min=1), default=64, show_default=True,
              help="Concurrent writers, as lanes and sensors are.")
@click.option("--events", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Events written in all.")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write (kept afterwards); default: a temporary directory, removed"
                   " afterwards. /tmp may be in RAM: on a gateway, give a directory on the"
                   " journal's disk to measure its fsync.")
@json_option
def bench_journal(producers: int, events: int, directory: Path | None, as_json: bool) -> None:
    """Journal throughput with group commit, against ungrouped commits and raw sqlite3."""
    where = (contextlib.nullcontext(str(directory)) if directory is not None
             else tempfile.TemporaryDirectory(prefix="parking-gateway-bench-"))
    try:
        with where as path:
            result = run(benchmarks.journal_bench(Path(path), producers=producers, events=events))
    except ValueError as e:  # e.g. fewer events than producers
        raise InvalidInput(str(e)) from None
    except OSError as e:
        raise OperationalError(f"benchmark failed: {e}") from None
    if as_json:
        print_json(result)
        return
    figures = [(key.replace("_", " "), number(value)) for key, value in result.items()
               if key not in BENCH_RATIOS]
    ratios = [(label, f"{result[key]:.3g}x") for key, label in BENCH_RATIOS.items()]
    print_sections([
        Section("journal bench", figures, right_last=True),
        Section("group commit throughput", ratios, right_last=True),
    ])


@bench.command("mqtt-day", epilog=EXIT_CODES)
@click.option("--seconds", type=click.FloatRange(min=5), default=60.0, show_default=True,
              help="Real seconds of the demo's day to run; what it covers is projected to 24"
                   " lot hours (about 1,000 for the whole day on a 2-core machine).")
@json_option
def bench_mqtt_day(seconds: float, as_json: bool) -> None:
    """Bytes the gateway sends its broker in the demo lot's day, by topic (a local
    mosquitto, the demo flat out in virtual time, a subscriber counting PUBLISH packets)."""
    from gateway.bench.mqtt_day import mqtt_day

    result = _measured(lambda: mqtt_day(seconds))
    if as_json:
        print_json(result)
        return
    topics = result.pop("topics")
    print_sections([
        _figures("mqtt day", result),
        Section("by topic", [[name, number(t["messages"]), number(t["bytes"]),
                              number(t["mb_per_day"])] for name, t in topics.items()],
                header=["topic", "messages", "bytes", "MB per day"], right_last=True),
    ])


@bench.command("retention", epilog=EXIT_CODES)
@click.option("--days", type=click.IntRange(min=1, max=3660), default=365, show_default=True,
              help="Days of traffic written.")
@click.option("--every", type=click.IntRange(min=1), default=30, show_default=True,
              help="Sizes every this many days, and at the end.")
@click.option("--day", "day_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The day to repeat: `journal export --format jsonl` of a recorded day (the"
                   " simulated end-to-end day, say); default: a day made like it.")
@click.option("--traffic", type=click.FloatRange(min=0.01, max=100), default=1.0,
              show_default=True,
              help="For the day made here: its arrivals times this (the e2e lot has ~2,000).")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write the journals (kept afterwards); default: a temporary"
                   " directory, removed afterwards.")
@json_option
def bench_retention(days: int, every: int, day_file: Path | None, traffic: float,
                    directory: Path | None, as_json: bool) -> None:
    """The journal's size over DAYS days of the end-to-end lot's traffic, with no retention,
    synced events only (as before per-kind retention), and the default retentions."""
    where = (contextlib.nullcontext(str(directory)) if directory is not None
             else tempfile.TemporaryDirectory(prefix="parking-gateway-bench-"))
    try:
        day = None if day_file is None else retention.read_day(day_file)
        with where as path:
            result = run(retention.retention_bench(Path(path), days=days, every=every, day=day,
                                                   traffic=traffic))
    except ValueError as e:  # a file that is not an export
        raise InvalidInput(str(e)) from None
    except OSError as e:
        raise OperationalError(f"benchmark failed: {e}") from None
    if as_json:
        print_json(result)
        return
    modes = list(result["modes"])
    print_sections([
        Section(f"journal size, MiB ({result['day']} day of {number(result['events_per_day'])}"
                " events; on disk, the WAL adds up to a few MiB)",
                [[str(row["day"]), *(f"{row['bytes'][m] / 2**20:,.1f}" for m in modes)]
                 for row in result["sizes"]], header=["day", *modes], right_last=True),
        Section("retention", [[m, text] for m, text in result["modes"].items()]),
        Section("run", [["seconds", number(result["seconds"])],
                        ["of which pruning", number(result["pruning_seconds"])]],
                right_last=True),
    ])
