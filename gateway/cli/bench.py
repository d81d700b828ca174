"""`parking-gateway bench ...`: benchmarks, figures for this machine rather than pass/fail tests.

`bench journal` is here; `bench sync` lives beside the sync side (gateway.cli.sync), and the
simulator's `bench lane` and `bench bus` come in as plugins (entry point group
`parking_gateway.cli.bench`).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import click

from gateway.bench import journal as benchmarks
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


@click.group(cls=LazyGroup, lazy={"sync": "gateway.cli.sync:bench_sync"}, plugins=PLUGINS,
             expected={"lane": SIMULATOR, "bus": SIMULATOR})
def bench() -> None:
    """Benchmarks: figures for this machine, not pass/fail tests."""


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


