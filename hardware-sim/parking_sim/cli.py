"""``parking-gateway sim ...``: run a simulated lot from a scenario file.

A plugin of the gateway's CLI (entry point group `parking_gateway.cli`). Only click loads with
this module, which `parking-gateway --help` imports too; the simulator's own imports (OpenCV,
matplotlib) wait until a sim command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.cli.common import InvalidInput, config_problems, folder_for, png_path

if TYPE_CHECKING:
    from gateway.config import Settings
    from parking_sim.run import Snapshot
    from parking_sim.scenario import Scenario


def _time_scale(value: str) -> float | None:
    if value.strip().lower() == "virtual":
        return None
    try:
        scale = float(value)
    except ValueError:
        raise click.BadParameter("'virtual' or a positive number (60: an hour a minute)") from None
    if scale <= 0:
        raise click.BadParameter("a time scale must be > 0")
    return scale


@click.group()
def sim() -> None:
    """The hardware simulator: a whole lot (lanes, bays, cameras, traffic) with no hardware."""


@sim.command("run")
@click.argument("scenario", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seed", type=int, help="Random seed (default: the scenario's).")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True),
              help="Simulated hours (default: the scenario's).")
@click.option("--time-scale", "time_scale", default="virtual", show_default=True,
              help="'virtual' (as fast as it goes) or a speed-up factor, e.g. 60.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), callback=png_path,
              help="Where to save the plot (default: sim-<scenario>-seed<N>.png here).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run_command(scenario: Path, seed: int | None, hours: float | None, time_scale: str,
                out: Path | None, as_json: bool) -> None:
    """Run SCENARIO (a TOML file), show live occupancy and save a plot of the day as a PNG.

    An invalid scenario, or an invalid lot config it names, exits 2 naming the file.
    """
    from parking_sim import vtime
    from parking_sim.run import plot, simulate

    scale = _time_scale(time_scale)
    spec, settings = _load(scenario)
    seed = spec.scenario.seed if seed is None else seed
    hours = spec.scenario.hours if hours is None else hours
    path = out or Path(f"sim-{spec.scenario.name}-seed{seed}.png")
    folder_for(path)  # before the run, not after it
    live = _LiveView(as_json=as_json)
    with live:
        result = vtime.run(
            lambda clock: simulate(spec, clock=clock, seed=seed, hours=hours, settings=settings,
                                   report=live.update),
            # Nothing here waits on a thread or a file descriptor, so the loop may jump on
            # at once (the gateway daemon on this loop needs the default, 1 ms).
            scale=scale, start=spec.scenario.start, io_grace_s=0.0,
        )
    plot(result, path)
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2))
        return
    summary = result.summary()
    click.echo(f"simulated {hours:g} h in {result.wall_s:.1f} s; peak occupancy "
               f"{summary['peak_occupied']}/{result.capacity}; events {result.truth}")
    click.echo(f"safety events: {result.safety or 'none'}")
    click.echo(f"plot: {path.resolve()}")


def _load(path: Path) -> tuple[Scenario, Settings]:
    """The scenario at `path` and its lot's settings; what is wrong with either is the
    technician's input (exit 2), naming the file."""
    from gateway.config import ConfigError
    from parking_sim.scenario import ScenarioError, load_scenario

    try:
        spec = load_scenario(path)  # its errors begin with the path
    except ScenarioError as exc:
        raise InvalidInput(str(exc)) from None
    try:
        return spec, spec.settings()
    except ConfigError as exc:  # the lot's config file, which the scenario names
        assert spec.lot.config is not None  # a generated lot raises no ConfigError
        raise config_problems(spec.resolve(spec.lot.config), exc) from None
    except ValueError as exc:  # a generated lot that cannot be built
        raise InvalidInput(f"{path}: {exc}") from None


class _LiveView:
    """A rich live table on a terminal; plain lines otherwise (CI logs, pipes)."""

    def __init__(self, *, as_json: bool) -> None:
        self._quiet = as_json
        self._tty = sys.stdout.isatty() and not as_json
        self._live: Any = None

    def __enter__(self) -> _LiveView:
        if self._tty:
            from rich.live import Live

            self._live = Live(auto_refresh=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, snap: Snapshot) -> None:
        if self._quiet:
            return
        if self._live is None:
            click.echo(
                f"{snap.local_time}  occupied {snap.occupied}/{snap.capacity}  "
                f"inside {snap.inside}  queued {snap.queued}  arrivals {snap.arrivals}  "
                f"entered {snap.entered}  exited {snap.exited}  refused {snap.refused}  "
                f"reversed {snap.reversed}  tailgates {snap.tailgates}  "
                f"unsafe lowerings {snap.safety_violations}  x{snap.speed:.0f}"
            )
            return
        from rich.table import Table

        table = Table(title=f"simulated lot, {snap.local_time} (x{snap.speed:.0f} real time)")
        table.add_column("measure")
        table.add_column("value", justify="right")
        share = snap.occupied / snap.capacity if snap.capacity else 0.0
        rows = [("bays occupied", f"{snap.occupied}/{snap.capacity} ({share:.0%})"),
                ("cars inside", snap.inside), ("queued in lanes", snap.queued),
                ("arrivals", snap.arrivals), ("entered", snap.entered),
                ("exited", snap.exited), ("refused", snap.refused),
                ("reversed out", snap.reversed), ("tailgates", snap.tailgates),
                ("barrier lowered onto a vehicle", snap.safety_violations)]
        for name, value in rows:
            table.add_row(name, str(value))
        self._live.update(table, refresh=True)
