"""The simulator's benchmarks as `parking-gateway bench` commands: `bench lane` and `bench bus`.

A plugin: the simulator's distribution declares these under the entry point group
`parking_gateway.cli.bench`, and the gateway's CLI loads this module only when one of them runs.
Only click and the gateway's CLI helpers load with it; the simulator itself loads on use.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.bench.bus import DEFAULT_TURNAROUND_S, bus_bench
from gateway.cli.common import (
    EXIT_CODES,
    InvalidInput,
    OperationalError,
    Section,
    json_option,
    print_json,
    print_sections,
    terminal,
)
from gateway.runtime.log import configure_logging

PROGRESS_EVERY = 20  # passages between progress lines when stderr is not a terminal
BAUDRATES = ("9600", "19200", "38400", "57600", "115200")


@click.command("lane", epilog=EXIT_CODES)
@click.option("--trials", type=click.IntRange(min=3), default=40, show_default=True,
              help="Permit holders driven through the lane, a rendered plate (without --photos).")
@click.option("--photos", "photos_dir", type=click.Path(path_type=Path, file_okay=False,
                                                        exists=True),
              help="Labelled photos (openalpr layout: NAME.jpg + NAME.txt), one passage each: "
                   "the photo is the passage's first frame; its later frames are the photo "
                   "shifted by up to 2 px, with sensor noise.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N photos (by name).")
@click.option("--formats", "formats_text", default="",
              help="The lot's plate formats, as lpr.formats takes them, comma separated "
                   "(e.g. 'us'); default: the demo lot's (eu,uk,us,br).")
@click.option("--reader", type=click.Choice(["auto", "lpr", "ground-truth"]), default="auto",
              show_default=True,
              help="lpr: the [lpr] section's reader, in its worker; auto: that reader when its "
                   "engine is installed, else the ground truth.")
@json_option
def bench_lane(trials: int, photos_dir: Path | None, limit: int | None, formats_text: str,
               reader: str, as_json: bool) -> None:
    """How the lane decides and how fast it opens for permit holders; bay-to-journal latency.

    Cars drive through a lane of the real daemon (the demo lot's entry-b), each with its plate
    on a permit of its own. With --json: {"reader", "frames", "passages",
    "decided_without_intercom", "opened_right", "wrong_decisions", "opened_as_visitor",
    "intercom", "refused", "skipped", "p50_open_ms", "p95_open_ms", "p99_open_ms",
    "bay_to_journal_p50_ms", "bay_to_journal_p99_ms", "wrong"}. decided_without_intercom is
    the share of passages the lane opened on its own for the right plate; wrong_decisions
    counts those it opened for another permit's plate (listed in wrong: photo, plate,
    opened_for); opened_as_visitor, those whose read matched no permit; intercom, those refused
    for want of a sure plate; refused, those refused otherwise; skipped, photos that could not
    be decoded. Open latency runs from the arming loop to the barrier's open command, over the
    passages the lane opened. Progress goes to stderr.
    """
    from gateway.config import ConfigError
    from gateway.lpr.evaluate import LabelError, load_samples
    from parking_sim.lane_bench import lane_bench

    if limit is not None and photos_dir is None:
        raise click.UsageError("--limit needs --photos")
    samples = None
    if photos_dir is not None:
        try:
            samples = load_samples(photos_dir)[:limit]
        except LabelError as e:
            raise InvalidInput(str(e)) from None
    formats = tuple(f.strip() for f in formats_text.split(",") if f.strip())
    configure_logging("error", "console", sys.stderr)
    try:
        result = asyncio.run(lane_bench(trials=trials, reader=reader.replace("-", "_"),
                                        photos=samples, formats=formats,
                                        progress=_progress_on_stderr()))
    except ConfigError as e:
        raise InvalidInput(f"--formats: {e}") from None
    except RuntimeError as e:
        raise OperationalError(str(e)) from None
    if as_json:
        print_json(result)
        return
    print_sections([Section("bench lane", [(key.replace("_", " "), _figure(value))
                                            for key, value in result.items()])])


def _progress_on_stderr() -> Callable[[int, int], None]:
    """Passages done: a count kept up to date on a terminal, a line every PROGRESS_EVERY else."""
    on_terminal = terminal(sys.stderr)

    def step(done: int, total: int) -> None:
        if on_terminal:
            click.echo(f"\r{done}/{total} passages", err=True, nl=done == total)
        elif done % PROGRESS_EVERY == 0 or done == total:
            click.echo(f"{done}/{total} passages", err=True)

    return step


def _figure(value: Any) -> str:
    """A figure for the table; the wrong decisions as "photo PLATE>OPENED_FOR, ..."."""
    if isinstance(value, list):
        return ", ".join(f"{w['photo']} {w['plate']}>{w['opened_for']}" for w in value) or "-"
    return "-" if value is None else str(value)


@click.command("bus", epilog=EXIT_CODES)
@click.option("--nodes", type=click.IntRange(1, 247), default=32, show_default=True,
              help="Detector nodes on the bus (unit ids 1..N).")
@click.option("--baud", type=click.Choice(BAUDRATES), default="19200", show_default=True,
              help="Line speed.")
@click.option("--parity", type=click.Choice(["E", "O", "N"]), default="E", show_default=True)
@click.option("--cycles", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Poll cycles measured (the median is reported).")
@click.option("--link", type=click.Choice(["pty", "socket"]), default="pty", show_default=True,
              help="The simulated line: a pty (as a serial port), or a socket pair (no kernel "
                   "tty worker in the way).")
@click.option("--turnaround-ms", type=click.FloatRange(0, 100), default=DEFAULT_TURNAROUND_S * 1000,
              show_default=True, help="Each simulated node's time to start its reply.")
@json_option
def bench_bus(nodes: int, baud: str, parity: str, cycles: int, link: str,
              turnaround_ms: float, as_json: bool) -> None:
    """Poll simulated detector nodes over a pty; compare the cycle with the wire's limit."""
    from parking_sim.bus import SensorBus

    try:
        result = bus_bench(SensorBus, nodes=nodes, baudrate=int(baud), parity=parity,
                           cycles=cycles, turnaround_s=turnaround_ms / 1000,
                           link="socket" if link == "socket" else "pty")
    except OSError as e:
        raise OperationalError(f"benchmark failed: {e}") from None
    if as_json:
        print_json(result)
        return
    rows = [
        ("nodes", str(result["nodes"])),
        ("line", f"{result['baud']} baud, 8{result['parity']}1 over a {result['link']}"),
        ("poll cycle (median)", f"{result['cycle_ms']:.2f} ms"),
        ("poll cycle (min - max)",
         f"{result['cycle_ms_min']:.2f} - {result['cycle_ms_max']:.2f} ms"),
        ("physical bus limit", f"{result['bus_limit_ms']:.2f} ms"),
        ("ratio", f"{result['ratio']:.3f}x"),
        ("failed transactions", str(result["failed_transactions"])),
    ]
    print_sections([Section("sensor bus bench", rows, right_last=True)])
