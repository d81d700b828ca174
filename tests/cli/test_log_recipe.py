"""The log recipe a technician is given (docs/operations.md, "Logs"), run on the daemon's real
log lines as `journalctl -u parking-gateway -o cat` shows them (issue 20, item 5).

`journalctl -u` shows systemd's own lines about the unit too ("Started parking-gateway.service
..."), and a Python that dies writes a plain traceback: `jq .` stops at the first line that is
not JSON, with nothing printed after it. The recipe reads lines raw and keeps those that are
JSON (`jq -R 'fromjson? | ...'`); these are its filters, as the guide must print them.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.cli.test_cli import MINIMAL, SECRET

pytestmark = [
    pytest.mark.slow,  # the daemon for a few seconds
    pytest.mark.skipif(shutil.which("jq") is None,
                       reason="jq is not installed (Debian: apt-get install jq); the bootstrap"
                              " should install it"),
]

ALL = "fromjson?"
ERRORS = 'fromjson? | select(.level == "error")'
CLI_USE = 'fromjson? | select(.event | startswith("control."))'
UNIT = "parking-gateway.service - Parking-lot edge gateway"
SYSTEMD_BEFORE = [f"Starting {UNIT}...", f"Started {UNIT}."]
SYSTEMD_AFTER = [f"Stopping {UNIT}...", "parking-gateway.service: Deactivated successfully.",
                 f"Stopped {UNIT}."]


def jq(program: str, text: str) -> list[dict[str, Any]]:
    done = subprocess.run(["jq", "-c", "-R", program], input=text, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module")
def daemon_log(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The daemon's stdout over a start, one change from the CLI and a stop; with an error
    among them (its sequence mark unreadable)."""
    folder = tmp_path_factory.mktemp("daemon")
    socket = folder / "control.sock"
    config = folder / "gateway.toml"
    config.write_text(MINIMAL.format(journal=folder / "journal.db", secret=SECRET) + f"""
[control]
socket_path = "{socket}"

[gpio]
pin_factory = "mock"

[lpr]
enabled = false
""")
    (folder / "journal.db.seq").write_text("not a number")
    env = {name: value for name, value in os.environ.items()
           if not name.upper().startswith("PARKING_GATEWAY")}
    cli = [sys.executable, "-c", "from gateway.cli import main; main()"]
    daemon = subprocess.Popen([*cli, "run", "--config", str(config), "--no-sync"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([*cli, "lot", "state", "closed", "--socket", str(socket)],
                             capture_output=True, env=env, check=False).returncode != 0:
            assert time.monotonic() < deadline, "the daemon's socket never answered"
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    finally:
        if daemon.returncode is None:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0, err
    return out.splitlines()


def as_journalctl_shows_it(lines: list[str]) -> str:
    return "\n".join([*SYSTEMD_BEFORE, *lines, *SYSTEMD_AFTER]) + "\n"


def test_every_log_line_of_the_daemon_comes_through(daemon_log: list[str]) -> None:
    found = jq(ALL, as_journalctl_shows_it(daemon_log))

    assert found == [json.loads(line) for line in daemon_log]
    assert {"gateway.ready", "gateway.stopped"} <= {line["event"] for line in found}


def test_the_errors_and_only_them(daemon_log: list[str]) -> None:
    found = jq(ERRORS, as_journalctl_shows_it(daemon_log))

    assert [line["event"] for line in found] == ["journal.seqmark_unreadable"]


def test_the_technicians_commands(daemon_log: list[str]) -> None:
    found = jq(CLI_USE, as_journalctl_shows_it(daemon_log))

    events = [line["event"] for line in found]
    assert events.index("control.listening") < events.index("control.closed")
    assert {event.partition(".")[0] for event in events} == {"control"}
    change = next(line for line in found if line["event"] == "control.request")
    assert (change["method"], change["params"]) == ("lot.state", {"state": "closed"})
    assert change["actor"] == f"cli:{getpass.getuser()}"
