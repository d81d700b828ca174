"""`parking-gateway sign ...`: the free-space signs of the running daemon.

`sign list` shows each sign, its scope, mode and offset, what it shows and whether it
answers; `sign mode SIGN MODE [--offset N]` sets a sign's mode, audited and kept across
restarts. Handlers stay thin: ask the daemon, print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gateway.cli.common import Section, json_option, plural, print_json, print_sections
from gateway.cli.service import DAEMON_EXIT_CODES, call_daemon, socket_option
from gateway.cli.sign_view import health, mode_text, showing
from gateway.core.signs import MAX_OFFSET, SIGN_MODES


@click.group()
def sign() -> None:
    """Free-space signs: what each shows, and its mode (auto, full, closed, blank, test)."""


@sign.command("list", epilog=DAEMON_EXIT_CODES)
@socket_option
@json_option
def sign_list(socket_path: Path, as_json: bool) -> None:
    """Each sign: its scope, mode and offset, what it shows, and whether it answers."""
    rows = call_daemon(socket_path, "sign.list")
    if as_json:
        print_json(rows)
        return
    print_sections([Section(plural(len(rows), "sign"), [
        (str(row.get("signId", "?")), str(row.get("shows", "")), mode_text(row),
         showing(row), health(row), f"{row.get('kind', '')} {row.get('port', '')}"
         f" @{row.get('address', '')}")
        for row in rows
    ], header=("sign", "counts", "mode", "showing", "answers", "line"), wrap=4)])


@sign.command("mode", epilog=DAEMON_EXIT_CODES)
@click.argument("sign_id", metavar="SIGN")
@click.argument("mode", type=click.Choice(SIGN_MODES))
@click.option("--offset", type=click.IntRange(0, MAX_OFFSET), metavar="N",
              help="Keep N bays free: the sign shows the free count less N, FULL at 0"
                   " (default: the sign's offset now).")
@socket_option
@json_option
def sign_mode(sign_id: str, mode: str, offset: int | None, socket_path: Path,
              as_json: bool) -> None:
    """Set SIGN's mode: auto (its free count), full, closed, blank (dark) or test (every
    segment lit). Audited with your user name; kept until set again, across restarts."""
    params: dict[str, Any] = {"sign": sign_id, "mode": mode}
    if offset is not None:
        params["offset"] = offset
    row = call_daemon(socket_path, "sign.mode", params)
    if as_json:
        print_json({"ok": True, **row})
        return
    click.echo(f"{sign_id}: mode {mode_text(row)}; wants {row.get('wanted') or '(nothing yet)'}")
