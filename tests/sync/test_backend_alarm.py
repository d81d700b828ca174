"""The backend out of reach for longer than `sync.unreachable_alarm_s` raises an alarm.

A real mosquitto that starts late, and an injected clock: the outage's length is the clock's,
so five minutes down cost no real time.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from gateway.core.clock import FakeClock
from gateway.journal import Journal
from gateway.sync import Sync
from tests.sync.mosquitto import Mosquitto
from tests.sync.sync_child import FakeLot, bay_event, sync_settings

pytestmark = pytest.mark.slow  # a real mosquitto

ALARM = "sync.backend_unreachable"


async def _until_alarm(journal: Journal, active: bool) -> None:
    async with asyncio.timeout(10):
        while (ALARM in {a.alarm_id for a in journal.active_alarms()}) != active:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_broker_down_past_the_bound_raises_an_alarm_that_clears_on_reconnect(
        tmp_path: Path, journal: Journal, clock: FakeClock) -> None:
    broker = Mosquitto(tmp_path / "broker")  # not started yet: the backend is unreachable
    await journal.commit((), [bay_event(clock, i) for i in range(3)])
    sync = Sync(sync_settings(broker.port, unreachable_alarm_s=300), journal, clock, FakeLot())
    task = asyncio.create_task(sync.run())
    try:
        async with asyncio.timeout(10):
            while (await sync.stats()).last_error is None:  # noqa: ASYNC110 (no event)
                await asyncio.sleep(0.02)
        clock.advance(299)
        await asyncio.sleep(1.2)  # a check or more at 299 s: not yet
        assert ALARM not in {a.alarm_id for a in journal.active_alarms()}
        clock.advance(2)
        await _until_alarm(journal, True)
        [alarm] = [a for a in journal.active_alarms() if a.alarm_id == ALARM]
        assert alarm.severity == "warning"
        assert alarm.component == "sync"
        assert f"127.0.0.1:{broker.port}" in alarm.message
        assert alarm.details["backlog"] == 3
        with broker:
            try:
                await _until_alarm(journal, False)
                assert sync.connected_event.is_set()
            finally:  # stopped before the broker is
                await _stop(task)
    finally:
        await _stop(task)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
