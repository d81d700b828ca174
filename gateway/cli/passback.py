"""`passback reset PLATE`: clear one credential's anti-passback.

A car that left while a lane was out of order (or by a gate held open) still has its session
open, and the lot's anti-passback keeps it out at its next entry. The reset asks the running
daemon to let that plate in once: its stale session is ended as a lost ticket (uncollected)
and a new one opens. Audited by the daemon with the session, not the plate.
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import json_option, print_json
from gateway.cli.service import DAEMON_EXIT_CODES, call_daemon, socket_option


@click.group()
def passback() -> None:
    """Anti-passback: a credential still counted inside."""


@passback.command("reset", epilog=DAEMON_EXIT_CODES)
@click.argument("plate")
@socket_option
@json_option
def passback_reset(plate: str, socket_path: Path, as_json: bool) -> None:
    """Let PLATE in once though its session is still open (its car left unseen)."""
    cleared = call_daemon(socket_path, "passback.reset", {"plate": plate})
    if as_json:
        print_json(cleared)
        return
    click.echo(f"cleared: session {cleared['sessionId']} (in since {cleared['enteredAt']},"
               f" lane {cleared['entryLane']}); its next entry replaces it")
