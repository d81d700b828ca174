"""A gateway process for the sync crash test, and helpers the sync tests share.

Run as `python -m tests.sync.sync_child JOURNAL PORT TOTAL`: it opens the journal, keeps
committing events until TOTAL exist (a lane that never waits for the network) and
drains them to the broker, until it is killed. It prints `ready` once connected.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.core import events
from gateway.core.clock import Clock, SystemClock
from gateway.core.operations import LaneMode, LotState, OperationRefused
from gateway.journal import Journal

LOT, GATEWAY = "test-lot", "gw-1"
KEY = "k" * 40  # the command HMAC key of the test gateway (>= 32 characters)


def sync_settings(port: int, journal_path: Path | None = None, **sync: Any) -> Settings:
    """A small lot whose sync talks to 127.0.0.1:`port`, with fast reconnects."""
    base: dict[str, Any] = {
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive_s": 5},
        "backlog_rate_per_s": None, "reconnect_min_s": 0.05, "reconnect_max_s": 0.3,
        "command_hmac_key": KEY,
    }
    for key, value in sync.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    doc: dict[str, Any] = {
        "gateway": {"lot_id": LOT, "gateway_id": GATEWAY, "timezone": "Europe/Berlin",
                    "default_tariff": "standard"},
        "tariffs": {"standard": {"currency": "EUR", "lines": [{"flat_minor": 100}]}},
        "sync": base,
    }
    if journal_path is not None:
        doc["journal"] = {"path": str(journal_path)}
    return Settings.model_validate(doc)


def bay_event(clock: Clock, i: int) -> events.Event:
    occupied = i % 2 == 0
    return events.bay_changed(
        at=clock.now(), bay_id=f"B-{i % 50}", floor="-1", zone="A", bay_type="regular",
        state="occupied" if occupied else "free", previous_state="free" if occupied else "occupied",
        source="magnetic", sensor_healthy=True)


class FakeLot:
    """A LotControl that records what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def status(self) -> dict[str, Any]:
        self.calls.append(("status",))
        return {"lotState": "open", "lanes": {"entry-1": "auto"}}

    async def open_gate(self, lane_id: str, *, reason: str, actor: str) -> None:
        if lane_id != "entry-1":
            raise OperationRefused(f"no lane {lane_id!r}")
        self.calls.append(("open_gate", lane_id, reason, actor))

    async def set_lane_mode(self, lane_id: str, mode: LaneMode, *, actor: str) -> None:
        self.calls.append(("set_lane_mode", lane_id, mode, actor))

    async def set_lot_state(self, state: LotState, *, actor: str) -> None:
        self.calls.append(("set_lot_state", state, actor))

    async def set_bay_service(self, bay_id: str, in_service: bool, *, actor: str) -> None:
        self.calls.append(("set_bay_service", bay_id, in_service, actor))

    async def alarms(self) -> list[dict[str, Any]]:
        return []

    async def acknowledge_alarm(self, alarm_id: str, *, actor: str) -> dict[str, Any]:
        raise OperationRefused(f"no active alarm {alarm_id!r}")

    async def open_sessions(self) -> list[dict[str, Any]]:
        return []

    async def recent_plates(self, limit: int = 50) -> list[dict[str, Any]]:
        return []

    async def purge_plate(self, plate: str, *, actor: str) -> dict[str, Any]:
        self.calls.append(("purge_plate", plate, actor))
        return {"sessions": 1}

    async def export_plate(self, plate: str) -> dict[str, Any]:
        self.calls.append(("export_plate", plate))
        return {"plate": plate, "sessions": []}

    async def reset_passback(self, plate: str, *, actor: str) -> dict[str, Any]:
        self.calls.append(("reset_passback", plate, actor))
        return {"sessionId": "s-1"}

    def watch_sensors(self) -> Any:
        raise OperationRefused("not in tests")


async def _child(journal_path: Path, port: int, total: int) -> None:
    from gateway.sync import Sync

    clock = SystemClock()
    settings = sync_settings(port, journal_path, inflight_window=64, batch_size=100)
    journal = await Journal.open(settings.journal, clock=clock)
    sync = Sync(settings, journal, clock, FakeLot())
    runner = asyncio.create_task(sync.run())
    await sync.connected_event.wait()
    print("ready", flush=True)
    i = journal.last_seq
    while i < total:
        n = min(20, total - i)
        await journal.commit((), [bay_event(clock, i + k) for k in range(n)])
        i += n
        await asyncio.sleep(0.001)
    await runner


if __name__ == "__main__":
    asyncio.run(_child(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
