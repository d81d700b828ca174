"""`bench footprint`: its meters on real processes and a real SQLite WAL, the venv's size on a
venv laid out by hand, and the command."""

from __future__ import annotations

import json
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gateway.bench import footprint
from gateway.bench.footprint import WalMeter, descendants, usage, venv_size
from gateway.cli.main import cli

# --- /proc ----------------------------------------------------------------------------------

# Wakes 200 times, writes and fsyncs 64 KiB, starts a child that says when it sleeps, and
# waits to be killed.
BUSY = """
import os, subprocess, sys, time
for _ in range(200):
    time.sleep(0.001)
with open(sys.argv[1], "wb") as f:
    f.write(os.urandom(65536))
    f.flush()
    os.fsync(f.fileno())
child = subprocess.Popen([sys.executable, "-c", SLEEPER])
print(child.pid, flush=True)
time.sleep(60)
"""
SLEEPER = "import sys, time; print('asleep', flush=True); time.sleep(60)"


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen([sys.executable, "-c", f"SLEEPER = {SLEEPER!r}\n{BUSY}",
                                str(tmp_path / "written")], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = {process.stdout.readline().strip() for _ in range(2)}  # the child's pid, "asleep"
    (child,) = (int(line) for line in lines if line.isdigit())
    yield process, child
    subprocess.run(["kill", str(child)], check=False)
    process.kill()
    process.wait()


def test_usage_sees_a_process_wake_write_and_hold_memory(
        busy: tuple[subprocess.Popen[str], int]) -> None:
    process, child = busy
    seen = usage(process.pid)

    assert seen.switches >= 200  # each sleep is a wake-up
    assert seen.write_bytes >= 65536  # fsynced: on its way to the disk
    assert seen.rss_bytes > 1024 * 1024
    assert seen.cpu_s > 0
    assert descendants(process.pid) == [child]
    assert descendants(child) == []


def test_usage_of_a_sleeping_process_does_not_grow(
        busy: tuple[subprocess.Popen[str], int]) -> None:
    _, child = busy  # asleep in one call
    before = usage(child)
    time.sleep(0.3)
    after = usage(child)

    assert after.switches - before.switches <= 2  # asleep: nothing wakes it
    assert after.cpu_s == before.cpu_s
    assert after.write_bytes == before.write_bytes


# --- the WAL --------------------------------------------------------------------------------


def wal_journal(path: Path) -> sqlite3.Connection:
    """A journal's settings: WAL, every commit fsynced, and small generations."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA wal_autocheckpoint = 20")  # pages: a checkpoint every few commits
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, data TEXT)")
    return conn


def commit(conn: sqlite3.Connection, rows: int, wal: WalMeter) -> None:
    """`rows` commits of one row each, the WAL sampled after each (as the bench samples)."""
    for _ in range(rows):
        conn.execute("INSERT INTO events (data) VALUES (?)", ("x" * 3000,))
        wal.sample()


def test_the_wal_meter_counts_commits_their_pages_and_the_checkpoints(tmp_path: Path) -> None:
    conn = wal_journal(tmp_path / "journal.db")
    wal = WalMeter(tmp_path / "journal.db-wal")
    commit(conn, 5, wal)  # before the window: not counted
    wal.start()
    assert (wal.commits(), wal.written_bytes(), wal.checkpointed_pages()) == (0, 0, 0)

    commit(conn, 40, wal)
    conn.close()

    assert wal.page_size == 4096
    assert wal.commits() == 40
    # A row of 3000 bytes: one page a commit at least, each frame a page and 24 bytes.
    assert wal.written_bytes() >= 40 * (4096 + 24)
    # 40 pages of rows and more written in generations of 20 pages: checkpoints came and
    # copied each generation's pages (fewer than its frames: a page is often written again).
    assert 0 < wal.checkpointed_pages() * wal.page_size < wal.written_bytes()


def test_the_wal_meter_counts_a_commit_of_many_pages_once(tmp_path: Path) -> None:
    conn = wal_journal(tmp_path / "journal.db")
    wal = WalMeter(tmp_path / "journal.db-wal")
    wal.start()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO events (data) VALUES (?)", [("y" * 3000,)] * 10)
    conn.execute("COMMIT")
    wal.sample()
    conn.close()

    assert wal.commits() == 1
    assert wal.written_bytes() >= 10 * 4096


# --- the venv -------------------------------------------------------------------------------


def dist(site: Path, name: str, requires: list[str], *, size: int,
         tag: str = "py3-none-any") -> None:
    """An installed distribution: metadata, a WHEEL file and one module of `size` bytes."""
    module = site / f"{name.replace('-', '_')}.py"
    module.write_bytes(b"#" * size)
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: " + name + "\nVersion: 1.0\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
    (info / "WHEEL").write_text(f"Wheel-Version: 1.0\nTag: {tag}\n")
    (info / "RECORD").write_text(f"{module.name},,{size}\n{info.name}/METADATA,,\n"
                                 f"{info.name}/RECORD,,\n")


@pytest.fixture
def arm64_venv(tmp_path: Path) -> Path:
    """A venv as one built on a Pi would be, for Python 3.11."""
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion_info = 3.11.2\n")
    dist(site, "parking-gateway", [
        "base-dep>=1",
        "pi-only; platform_machine == 'aarch64'",
        "pc-only; platform_machine == 'x86_64'",
        "old-python; python_version < '3.10'",
        "reader; extra == 'lpr'",
        "trainer; extra == 'train'",
        "absent-dep",
    ], size=1000)
    dist(site, "base-dep", ["transitive[fast]"], size=2 * 1024 * 1024)
    dist(site, "transitive", ["speedup; extra == 'fast'"], size=1024 * 1024,
         tag="cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64")
    dist(site, "speedup", [], size=1024 * 1024)
    dist(site, "pi-only", [], size=1024 * 1024)
    dist(site, "pc-only", [], size=50 * 1024 * 1024)  # installed by mistake: not counted
    dist(site, "old-python", [], size=50 * 1024 * 1024)
    dist(site, "reader", [], size=4 * 1024 * 1024)
    dist(site, "trainer", [], size=50 * 1024 * 1024)
    return venv


def test_a_venvs_size_is_the_closure_of_the_requirements_for_its_platform(
        arm64_venv: Path) -> None:
    sizes = venv_size(arm64_venv)

    assert (sizes["machine"], sizes["python"]) == ("aarch64", "3.11.2")
    # base-dep, transitive with its extra's speedup, pi-only (on aarch64), the gateway.
    assert sizes["without_lpr_mb"] == pytest.approx(5.0, abs=0.05)
    assert sizes["with_lpr_mb"] == pytest.approx(9.0, abs=0.05)  # and the reader
    assert list(sizes["largest_mb"])[:2] == ["reader", "base-dep"]
    assert "pc-only" not in sizes["largest_mb"]
    assert sizes["missing"] == ["absent-dep"]
    assert sizes["editable"] == []


def test_the_running_venv_is_measured_for_this_machine() -> None:
    sizes = venv_size()

    assert sizes["machine"] == platform.machine()
    assert sizes["with_lpr_mb"] > sizes["without_lpr_mb"] > 0  # onnxruntime
    assert sizes["editable"] == ["parking-gateway"]  # this checkout


def test_a_folder_that_is_no_venv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not a venv"):
        venv_size(tmp_path)


# --- the command ----------------------------------------------------------------------------

FIGURES: dict[str, Any] = {
    "machine": "x86_64", "daemon_rss_mb": 57.5, "idle_wakeups_per_s": 11.5,
    "disk_causes_per_1000_events": {"wal": 2, "checkpoints": 1, "other": 0},
    "venv": {"path": "/venv/site-packages", "without_lpr_mb": 276.0},
}


def test_the_command_prints_the_figures_and_fails_as_a_benchmark_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def measured(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return json.loads(json.dumps(FIGURES))

    monkeypatch.setattr(footprint, "footprint", measured)
    as_json = CliRunner().invoke(cli, ["bench", "footprint", "--json", "--seconds", "3"])
    human = CliRunner().invoke(cli, ["bench", "footprint"])

    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == FIGURES
    assert calls == [{"seconds": 3.0, "venv": None}, {"seconds": 20.0, "venv": None}]
    assert human.exit_code == 0, human.output
    assert "idle wakeups per s" in human.stdout
    assert "disk writes per 1,000 events, by cause" in human.stdout
    assert "venv /venv/site-packages" in human.stdout

    def broken(**kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("the daemon sent no READY=1 within 90 s")

    monkeypatch.setattr(footprint, "footprint", broken)
    failed = CliRunner().invoke(cli, ["bench", "footprint"])
    assert failed.exit_code == 1
    assert "benchmark failed: the daemon sent no READY=1" in failed.stderr


@pytest.mark.slow  # starts the daemon four times and runs the demo: about a minute
def test_the_footprint_of_the_demo_lot() -> None:
    done = subprocess.run([sys.executable, "-c", "from gateway.cli import main; main()",
                           "bench", "footprint", "--json", "--seconds", "2"],
                          capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["machine"] == platform.machine()
    for name in ("daemon_rss_mb", "idle_wakeups_per_s", "start_to_ready_s", "daemon_rss_lpr_mb",
                 "demo_rss_mb", "disk_bytes_per_1000_events"):
        assert figures[name] > 0, name
    assert figures["worker_processes"] >= 1  # the lpr extra is installed here
    assert figures["worker_rss_mb"] > 0
    assert figures["demo_events"] > 0
    assert figures["disk_largest_cause"] in figures["disk_causes_per_1000_events"]
    assert figures["fsyncs_per_1000_events"] >= 1000  # each event is committed, and fsynced
    assert figures["venv"]["machine"] == platform.machine()
