"""The technician's commands as a person sees them: on a pseudo-terminal (rich's terminal
output, 80 and 120 columns), against the demo's running daemon (issue 20, item 7).

`status` leads with its verdict; `sensors watch` opens with what is wrong first (a bay taken
out of service here); `journal tail -f` shows a new event as it is committed; and no line is
wider than the terminal.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.runtime.control import ControlClient, ControlError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # the demo's daemon, a minute

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from gateway.cli import main; main()"]
ROWS = 40
OUT_OF_SERVICE = "A0-01"
# A live view redraws itself: a carriage return, a line erased, or the cursor moved up ends
# what was on a line. Then colours and the rest of the terminal's sequences go.
LINE_ENDS = re.compile(r"\r|\x1b\[\d*[AK]")
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[=>]")


@dataclass
class Demo:
    state: Path
    socket: Path

    def call(self, method: str, params: dict[str, object] | None = None) -> object:
        return asyncio.run(ControlClient(self.socket, timeout_s=5).call(method, params))


def _environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items()
            if not name.upper().startswith(("PARKING_GATEWAY", "NO_COLOR", "COLUMNS", "LINES"))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    state = tmp_path_factory.mktemp("demo")
    log = (state.parent / "demo.log").open("w")
    process = subprocess.Popen([*CLI, "demo", "--state-dir", str(state)], stdout=log,
                               stderr=subprocess.STDOUT, env=_environment(),
                               start_new_session=True)
    running = Demo(state, state / "control.sock")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                running.call("status")
                break
            except ControlError:
                assert process.poll() is None, (state.parent / "demo.log").read_text()
                assert time.monotonic() < deadline, "the demo's daemon never answered"
                time.sleep(0.2)
        running.call("bay.service", {"bay": OUT_OF_SERVICE, "in_service": False})
        yield running
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class Terminal:
    """A command on a pseudo-terminal of `columns` by ROWS, and what it printed, the
    terminal's control sequences taken out."""

    def __init__(self, args: list[str], columns: int) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, columns, 0, 0))
        env = {**_environment(), "COLUMNS": str(columns), "LINES": str(ROWS),
               "TERM": "xterm-256color"}
        self.process = subprocess.Popen([*CLI, *args], stdin=slave, stdout=slave,
                                        stderr=slave, env=env, cwd=ROOT)
        os.close(slave)
        self.master = master
        self.raw = bytearray()

    @property
    def text(self) -> str:
        return ESCAPES.sub("", LINE_ENDS.sub("\n", self.raw.decode(errors="replace")))

    def lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line.strip()]

    def read_until(self, done: Callable[[str], bool], seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not done(self.text):
            assert time.monotonic() < deadline, f"not seen in {seconds} s:\n{self.text}"
            if not self._read(0.2):
                break

    def interrupt(self) -> int:
        """Ctrl-C; the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.finish()

    def finish(self) -> int:
        while self._read(1.0):
            pass
        code = self.process.wait(timeout=20)
        os.close(self.master)
        return code

    def _read(self, timeout_s: float) -> bool:
        """False once the command has closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return self.process.poll() is None
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: no process holds the terminal any more
            return False
        self.raw += chunk
        return bool(chunk)


def fits(lines: list[str], columns: int) -> bool:
    return all(len(line) <= columns for line in lines)


@pytest.mark.parametrize("columns", [80, 120])
def test_status_leads_with_the_verdict(demo: Demo, columns: int) -> None:
    terminal = Terminal(["status", "--socket", str(demo.socket)], columns)

    assert terminal.finish() == 0, terminal.text
    lines = terminal.lines()
    assert re.match(r"(OK|DEGRADED|FAILING): ", lines[0]), lines[0]
    assert fits(lines, columns), terminal.text
    assert any(line.strip().startswith("entry-a") for line in lines)  # the lanes follow
    assert "─" in terminal.text  # rich's tables, not plain text


@pytest.mark.parametrize("columns", [80, 120])
def test_sensors_watch_opens_with_what_is_wrong(demo: Demo, columns: int) -> None:
    terminal = Terminal(["sensors", "watch", "--socket", str(demo.socket), "--config",
                         "config/demo-lot.toml"], columns)
    terminal.read_until(lambda text: "Ctrl-C to stop" in text)

    assert terminal.interrupt() == 0, terminal.text
    lines = terminal.lines()
    assert fits(lines, columns), terminal.text
    assert re.match(r"\d+ bays with sensors: .*1 out of service", lines[0]), lines[0]
    rows = [line.split() for line in lines if re.match(r" [A-Z]-?\d+-\d+ ", line)]
    first_fine = next(i for i, row in enumerate(rows) if row[2] == "ok" and "in" in row)
    bay = next(i for i, row in enumerate(rows) if row[0] == OUT_OF_SERVICE)
    assert bay < first_fine  # the problems come first
    assert "OUT" in rows[bay]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\+01:00", rows[bay][-1])  # lot time, its offset


@pytest.mark.parametrize("columns", [80, 120])
def test_journal_tail_follows_a_new_event(demo: Demo, columns: int) -> None:
    terminal = Terminal(["journal", "tail", "-f", "-n", "3", "--journal",
                         str(demo.state / "journal.db"), "--config", "config/demo-lot.toml"],
                        columns)
    terminal.read_until(lambda text: len([line for line in text.split("\n")
                                          if re.match(r"\s*\d+  ", line)]) >= 3)
    shown = [int(line.split()[0]) for line in terminal.lines() if re.match(r"\s*\d+  ", line)]

    demo.call("gate.open", {"lane": "entry-a", "reason": "a test on a terminal"})
    terminal.read_until(lambda text: any(
        int(line.split()[0]) > shown[-1] for line in text.split("\n")
        if re.match(r"\s*\d+  ", line)))

    assert terminal.interrupt() == 0, terminal.text
    lines = terminal.lines()
    assert fits(lines, columns), terminal.text
    assert lines[1].split()[:3] == ["seq", "time", "(Europe/Berlin)"]
    assert re.search(r"\+01:00  ", lines[2])  # the lot's time, with its offset
