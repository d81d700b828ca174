"""The root command, `parking-gateway`: its options, and where each command lives.

Commands are registered by name and imported when they run (see gateway.cli.lazy), so a
command's module imports gateway.cli.common, never this one. The hardware simulator's
commands come in as plugins through entry points.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from typing import Any

import click
from click.shell_completion import BashComplete, FishComplete, ShellComplete, ZshComplete

from gateway import __version__
from gateway.cli.common import EXIT_CODES, Section, json_option, print_json, print_sections
from gateway.cli.lazy import SIMULATOR, LazyGroup
from gateway.runtime.log import LEVELS, configure_logging

PLUGINS = "parking_gateway.cli"  # entry point group: commands of other distributions
COMPLETE_VAR = "_PARKING_GATEWAY_COMPLETE"  # click's, from the program's name
SHELLS: dict[str, type[ShellComplete]] = {
    "bash": BashComplete, "zsh": ZshComplete, "fish": FishComplete}

SERVICE_COMMANDS = ("status", "gate", "lane", "lot", "bay", "alarms", "sessions",
                    "plates", "report")
COMMANDS = {
    "config": "gateway.cli.config:config",
    "tariff": "gateway.cli.tariff:tariff",
    "journal": "gateway.cli.journal:journal",
    "bench": "gateway.cli.bench:bench",
    "run": "gateway.cli.daemon:run",
    "lpr": "gateway.cli.lpr:lpr",
    "doctor": "gateway.cli.doctor:doctor",
    "privacy": "gateway.cli.privacy:privacy",
    "passback": "gateway.cli.passback:passback",
    "sensors": "gateway.cli.sensors:sensors",
    "count": "gateway.cli.count:count",
    "user": "gateway.cli.user:user",
    "sign": "gateway.cli.signs:sign",
    **{name: f"gateway.cli.service:{name}" for name in SERVICE_COMMANDS},
}


class RootGroup(LazyGroup):
    """The root command: a reader that stops reading (`| head`) ends any command quietly."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Exit 0, as Unix tools do. What stdout still buffers goes to /dev/null, or the
            # interpreter's last flush would fail on the pipe again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)


@click.group(cls=RootGroup, lazy=COMMANDS, plugins=PLUGINS,
             expected={"sim": SIMULATOR, "demo": SIMULATOR},
             epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level", type=click.Choice(LEVELS, case_sensitive=False), default="warning",
    show_default=True, help="Log lines at this level and above go to stderr.",
)
@click.version_option(__version__, "--version", prog_name="parking-gateway",
                      message="%(prog)s %(version)s", help="Print the version and exit.")
def cli(log_level: str) -> None:
    """Technician's tool for a parking-lot edge gateway."""
    # Logs go to stderr, so that stdout holds only the command's output (or its JSON).
    configure_logging(log_level, "auto", sys.stderr)


def main() -> None:
    """The console script `parking-gateway`."""
    cli(prog_name="parking-gateway")


@cli.command(epilog=EXIT_CODES)
@json_option
def version(as_json: bool) -> None:
    """Versions of the gateway, Python and SQLite, and the platform."""
    info = {
        "version": __version__,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }
    if as_json:
        print_json(info)
        return
    rows = [(name, value) for name, value in info.items() if name != "version"]
    print_sections([Section(f"parking-gateway {__version__}", rows)])


@cli.command(epilog=EXIT_CODES)
@click.argument("shell", type=click.Choice(list(SHELLS)))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell's completion script for parking-gateway, to source from its startup
    file, e.g. in ~/.bashrc: eval "$(parking-gateway completion bash)"."""
    root = ctx.find_root()
    click.echo(SHELLS[shell](root.command, {}, root.info_name or "parking-gateway",
                             COMPLETE_VAR).source())
