"""The journal's reserve on a really full disk, and the early warning before the disk fills.

The full disk is a small tmpfs, mounted for the test: SQLite's `max_page_count` is not a disk
(giving up a ballast file frees nothing under it). Mounting needs root; without it the test is
skipped with the reason, and the disk-low alarm, which reads `statvfs`, is tested by giving it
the free space a disk would report.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import JournalConfig
from gateway.core import events
from gateway.core.clock import FakeClock
from gateway.journal import Journal, JournalFullError
from gateway.journal import writer as writer_module
from gateway.journal.reserve import MB, Reserve


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that fills up for real."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _event(clock: FakeClock, n: int) -> events.Event:
    return events.violation_detected(at=clock.now(), kind="overstay", plate=f"P{n}",
                                     details={"pad": "x" * 4000})


async def test_a_full_disk_gives_up_the_reserve_and_the_journal_writes_on(
        small_disk: Path, clock: FakeClock) -> None:
    settings = JournalConfig(path=small_disk / "journal.db", reserve_mb=1, min_free_mb=0,
                             maintenance_interval_s=3600)
    async with await Journal.open(settings, clock=clock) as j:
        ballast = small_disk / "journal.db.reserve"
        assert os.stat(ballast).st_blocks * 512 >= MB  # allocated, not sparse
        written_before = written_after = 0
        for n in range(10_000):
            try:
                await j.append(_event(clock, n))
            except JournalFullError:
                break  # the reserve too runs out, in the end
            if ballast.exists():
                written_before += 1
            else:
                written_after += 1
        else:
            pytest.fail("the disk never filled")
        alarms = {a.alarm_id: a.severity for a in j.active_alarms()}
        assert alarms == {"journal.reserve_used": "critical",
                          "journal.write_failed.disk_full": "critical"}
        # The reserve held a quarter of the disk: it bought a good share of the writes more.
        assert written_after > written_before / 10
        kept = [r for r in await j.read_outbox(0, 20_000) if r.type == "violation.detected"]
        assert len(kept) == written_before + written_after


async def test_the_reserve_is_made_again_once_the_disk_has_room(
        small_disk: Path, clock: FakeClock) -> None:
    settings = JournalConfig(path=small_disk / "journal.db", reserve_mb=1, min_free_mb=0,
                             maintenance_interval_s=0.01)
    filler = small_disk / "filler"
    filler.write_bytes(bytes(int(3.3 * MB)))  # leaves less than the reserve free
    async with await Journal.open(settings, clock=clock):
        reserve = small_disk / "journal.db.reserve"
        assert not reserve.exists()  # no room for it
        filler.unlink()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if reserve.exists():
                break
        assert reserve.stat().st_size == MB


async def test_low_free_space_raises_an_early_warning_cleared_with_some_slack(
        tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    free = [10_000 * MB]
    monkeypatch.setattr(writer_module, "free_bytes", lambda path: free[0])
    settings = JournalConfig(path=tmp_path / "journal.db", reserve_mb=0, min_free_mb=256,
                             maintenance_interval_s=0.01)

    async def alarms_after(free_mb: float) -> list[str]:
        free[0] = int(free_mb * MB)
        await asyncio.sleep(0.1)  # a few maintenance rounds
        return [a.alarm_id for a in j.active_alarms()]

    async with await Journal.open(settings, clock=clock) as j:
        assert await alarms_after(300) == []
        assert await alarms_after(200) == ["journal.disk_low"]
        (alarm,) = j.active_alarms()
        assert (alarm.severity, alarm.details["freeBytes"]) == ("warning", 200 * MB)
        assert await alarms_after(270) == ["journal.disk_low"]  # just above: not yet
        assert await alarms_after(400) == []
    types = [r.type for r in await _outbox(settings, clock)]
    assert types == ["alarm.raised", "alarm.cleared"]


async def _outbox(settings: JournalConfig, clock: FakeClock) -> list[object]:
    async with await Journal.open(settings, clock=clock) as j:
        return list(await j.read_outbox(0, 100))


def test_a_ballast_that_cannot_be_made_whole_is_not_left_behind(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    reserve = Reserve(tmp_path / "journal.db", MB)

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    assert not reserve.ensure(0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert reserve.ensure(0)
    assert reserve.held
    assert reserve.release()
    assert not reserve.held
    assert not reserve.release()
