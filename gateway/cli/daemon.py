"""`parking-gateway run`: the daemon itself, as systemd starts it; `bench lane`: the daemon's lanes
measured."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gateway.cli import (
    EXIT_CODES,
    InvalidInput,
    OperationalError,
    Section,
    _load_settings,
    _print_json,
    _print_sections,
    _terminal,
    config_option,
)
from gateway.journal import JournalError, JournalLockedError
from gateway.runtime.log import configure_logging

PROGRESS_EVERY = 20  # passages between progress lines when stderr is not a terminal


@click.command("run", epilog=EXIT_CODES)
@config_option
@click.option("--no-sync", is_flag=True, help="Do not connect to the backend (buffer offline).")
def run(config_path: Path, no_sync: bool) -> None:
    """Run the gateway daemon in the foreground (systemd: Type=notify).

    SIGTERM lets barrier movements finish, flushes the journal and exits 0.
    """
    from gateway.app import Gateway, run_until_signalled

    settings = _load_settings(config_path)
    configure_logging(settings.logging.level, settings.logging.format, sys.stdout)
    gateway = Gateway(settings, sync=not no_sync)
    try:
        asyncio.run(run_until_signalled(gateway))
    except JournalLockedError as e:
        raise OperationalError(f"{e} (is another gateway running?)") from None
    except JournalError as e:
        raise OperationalError(str(e)) from None


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
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout, and nothing else.")
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
    from parking_sim.lane_bench import lane_bench

    from gateway.config import ConfigError
    from gateway.lpr.evaluate import LabelError, load_samples

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
        _print_json(result)
        return
    _print_sections([Section("bench lane", [(key.replace("_", " "), _figure(value))
                                            for key, value in result.items()])])


def _progress_on_stderr() -> Callable[[int, int], None]:
    """Passages done: a count kept up to date on a terminal, a line every PROGRESS_EVERY else."""
    on_terminal = _terminal(sys.stderr)

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
