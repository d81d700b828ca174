"""The virtual-time loop and its clock: hours pass in milliseconds, in order, with threads."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from parking_sim import vtime

from gateway.config import JournalConfig
from gateway.core import events
from gateway.journal import Journal
from gateway.journal.connection import DbThread


def test_an_hour_of_sleep_takes_no_real_time() -> None:
    async def main(clock: vtime.VirtualClock) -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - t0

    real0 = time.monotonic()
    assert vtime.run(main) == pytest.approx(3600)
    assert time.monotonic() - real0 < 2.0


def test_timers_fire_in_order_and_the_clock_follows_the_loop() -> None:
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)

    async def main(clock: vtime.VirtualClock) -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []
        for name, delay in (("c", 30.0), ("a", 0.5), ("b", 10.0)):
            loop.call_later(delay, lambda n=name: fired.append((n, clock.elapsed())))
        await asyncio.sleep(60)
        assert clock.now() == start + timedelta(seconds=60)
        assert clock.monotonic() == loop.time()
        stamp = clock.stamp()
        assert stamp.synced
        assert stamp.boot_id == clock.boot_id()
        return fired

    fired = vtime.run(main, start=start)
    assert [name for name, _ in fired] == ["a", "b", "c"]
    assert [at for _, at in fired] == pytest.approx([0.5, 10.0, 30.0])


def test_a_thread_that_answers_within_the_grace_comes_before_a_far_timer() -> None:
    async def main(clock: vtime.VirtualClock) -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        loop.call_later(100.0, order.append, "timer")
        await asyncio.to_thread(lambda: None)
        order.append("thread")
        await asyncio.sleep(200)
        return order, clock.elapsed()

    order, elapsed = vtime.run(main, io_grace_s=0.2)
    assert order == ["thread", "timer"]
    assert elapsed == pytest.approx(200.0, abs=1.0)


def test_a_journal_call_on_its_thread_holds_virtual_time_until_it_is_back() -> None:
    async def main(clock: vtime.VirtualClock) -> tuple[list[str], float]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        loop.call_later(10.0, order.append, "timer")
        db = await DbThread.open("test-db", lambda: sqlite3.connect(":memory:"))
        try:
            await db.run(lambda _: time.sleep(0.05))  # far longer than the grace
        finally:
            await db.close()
        order.append("thread")
        back = clock.elapsed()
        await asyncio.sleep(20)
        return order, back

    order, back = vtime.run(main, io_grace_s=0.0)
    assert order == ["thread", "timer"]
    assert back == 0.0


def test_journal_commits_take_no_virtual_time(tmp_path: Path) -> None:
    async def main(clock: vtime.VirtualClock) -> tuple[float, int]:
        settings = JournalConfig(path=tmp_path / "journal.db", maintenance_interval_s=60)
        async with await Journal.open(settings, clock=clock) as journal:
            t0 = clock.elapsed()
            for _ in range(20):
                await journal.append(events.bay_changed(
                    at=clock.now(), bay_id="A-01", floor="1", zone="A", bay_type="regular",
                    state="occupied", previous_state="free", source="magnetic",
                    sensor_healthy=True))
            return clock.elapsed() - t0, journal.last_seq

    # Each commit waits for a thread and its fsync; had time jumped to the next timer (the
    # journal's maintenance) meanwhile, 20 commits would take 20 minutes.
    assert vtime.run(main, io_grace_s=0.0) == (0.0, 20)


def test_with_nothing_scheduled_the_loop_waits_for_real_io() -> None:
    async def main(clock: vtime.VirtualClock) -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        threading.Thread(target=lambda: (time.sleep(0.05),
                                         loop.call_soon_threadsafe(done.set_result, 1))).start()
        await done
        return clock.elapsed()

    assert vtime.run(main, io_grace_s=0.0) < 0.01  # no timer to jump to: time stood still


def test_scaled_time_runs_faster_than_real_time() -> None:
    async def main(clock: vtime.VirtualClock) -> float:
        await asyncio.sleep(5.0)
        return clock.elapsed()

    real0 = time.monotonic()
    elapsed = vtime.run(main, scale=100.0)
    assert elapsed >= 5.0
    assert time.monotonic() - real0 < 1.0


def test_a_time_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="> 0"):
        vtime.TimeWarpLoop(0)
