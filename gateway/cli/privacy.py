"""`privacy purge` and `privacy export`: a person's request about their plate.

Both ask the running daemon over its control socket, which holds the journal's only writer;
the purge is audited there without the plate (see docs/privacy.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import json_option, print_json
from gateway.cli.service import DAEMON_EXIT_CODES, call_daemon, socket_option

plate_option = click.option("--plate", required=True, help="The plate, as written on the car.")


@click.group()
def privacy() -> None:
    """A person's requests about their plate: what the gateway holds, and deleting it."""


@privacy.command("purge", epilog=DAEMON_EXIT_CODES)
@plate_option
@socket_option
@json_option
def privacy_purge(plate: str, socket_path: Path, as_json: bool) -> None:
    """Delete the plate's closed sessions, payments, synced events, reads and crops.

    A car still inside keeps its open session, and events not yet sent to the backend stay
    until it has them: both are counted in the output. The purge is audited without the plate.
    """
    removed = call_daemon(socket_path, "privacy.purge", {"plate": plate})
    if as_json:
        print_json(removed)
        return
    click.echo("removed: " + ", ".join(f"{_label(k)} {v}" for k, v in removed.items()
                                       if not k.endswith("_kept")))
    kept = {k: v for k, v in removed.items() if k.endswith("_kept") and v}
    if kept:
        click.echo("kept: " + ", ".join(f"{_label(k.removesuffix('_kept'))} {v}"
                                        for k, v in kept.items()))


@privacy.command("export", epilog=DAEMON_EXIT_CODES)
@plate_option
@socket_option
def privacy_export(plate: str, socket_path: Path) -> None:
    """Print, as JSON, everything the gateway holds about the plate (a subject-access request):
    its sessions and payments, the stored events that name it, and its recent reads."""
    print_json(call_daemon(socket_path, "privacy.export", {"plate": plate}))


def _label(key: str) -> str:
    return key.replace("_", " ")
