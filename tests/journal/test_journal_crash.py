"""kill -9 at random moments: nothing the journal acknowledged is ever lost."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("journal_child.py")
ROOT = CHILD.parent.parent
KILLS = 20


def run_and_kill(path: Path, delay: float, log: Path) -> dict[int, str]:
    """Start the child, SIGKILL it after `delay` s of writing; return what it saw acked."""
    with log.open("ab") as stderr:
        proc = subprocess.Popen([sys.executable, str(CHILD), str(path)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=stderr)
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    assert ready == b"ready\n", f"child failed to start; see {log}"
    chunks: list[bytes] = []
    # Drain the pipe while the child runs, so it never blocks on a full pipe.
    reader = threading.Thread(target=lambda: chunks.extend(iter(
        lambda: proc.stdout.read1(65536), b"")))  # type: ignore[union-attr]
    reader.start()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join()
    acked: dict[int, str] = {}
    for line in b"".join(chunks).split(b"\n")[:-1]:  # the last piece may be cut short
        seq, event_id = line.decode().split()
        acked[int(seq)] = event_id
    return acked


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    path = tmp_path / "journal.db"
    log = tmp_path / "child.log"
    acknowledged: dict[int, str] = {}
    for attempt in range(KILLS):
        seen = run_and_kill(path, rng.uniform(0.05, 0.6), log)
        assert seen, f"kill {attempt}: the child acknowledged nothing; see {log}"
        acknowledged.update(seen)

        con = sqlite3.connect(path)
        try:
            assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            stored = dict(con.execute("SELECT seq, id FROM outbox").fetchall())
            last = max(stored)
            assert sorted(stored) == list(range(1, last + 1)), f"kill {attempt}: a gap"
            lost = {s: i for s, i in acknowledged.items() if stored.get(s) != i}
            assert not lost, f"kill {attempt}: acknowledged events lost: {sorted(lost)[:10]}"
            # State and event committed together: each bay's state is its latest event's.
            latest: dict[str, str] = {}
            for (data,) in con.execute("SELECT data FROM outbox ORDER BY seq"):
                d = json.loads(data)
                latest[d["bayId"]] = d["state"]
            assert dict(con.execute("SELECT bay_id, state FROM bay_state").fetchall()) == latest
        finally:
            con.close()
    assert len(acknowledged) > KILLS * 10
