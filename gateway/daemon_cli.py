"""`parking-gateway run`: the daemon itself, as systemd starts it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from gateway.cli import EXIT_CODES, OperationalError, _load_settings, config_option
from gateway.journal import JournalError, JournalLockedError
from gateway.log import configure_logging


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
              help="Permit holders driven through the lane.")
@click.option("--reader", type=click.Choice(["auto", "easyocr", "ground-truth"]), default="auto",
              show_default=True, help="auto: EasyOCR when the lpr extra is installed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout, and nothing else.")
def bench_lane(trials: int, reader: str, as_json: bool) -> None:
    """Lane open latency (arming loop to barrier command, permit plate) and bay-to-journal."""
    import json

    from parking_sim.lane_bench import lane_bench

    configure_logging("error", "console", sys.stderr)
    result = asyncio.run(lane_bench(trials=trials, reader=reader.replace("-", "_")))
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        click.echo(f"{key.replace('_', ' '):<24} {value}")
