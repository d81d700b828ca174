"""`parking-gateway run`: the daemon itself, as systemd starts it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from gateway.cli.common import EXIT_CODES, OperationalError, config_option, load_settings
from gateway.journal import JournalError
from gateway.runtime.log import configure_logging

RUN_EXIT_CODES = (EXIT_CODES
                  + "  70 a stop overran its deadline and was cut short (gateway.stop_forced)\n")


@click.command("run", epilog=RUN_EXIT_CODES)
@config_option
@click.option("--no-sync", is_flag=True, help="Do not connect to the backend (buffer offline).")
def run(config_path: Path, no_sync: bool) -> None:
    """Run the gateway daemon in the foreground (systemd: Type=notify).

    SIGTERM lets barrier movements finish, flushes the journal and exits 0; a stop that
    overruns 20 s is cut short with exit code 70.
    """
    from gateway.app import Gateway, run_until_signalled

    settings = load_settings(config_path)
    configure_logging(settings.logging.level, settings.logging.format, sys.stdout)
    gateway = Gateway(settings, sync=not no_sync)
    try:
        asyncio.run(run_until_signalled(gateway))
    except JournalError as e:  # a second daemon: the journal's lock already asks if it runs
        raise OperationalError(str(e)) from None
