"""The retained `health` document of the whole daemon, as a subscriber on a real broker sees it.

Issue 18, item 2: the document held the parts' restarts, the bus's and its nodes' traffic
counters and readings and the cameras' frame counts, so it changed, and went out (about
9.5 KB), almost every second: some 800 MB a day on a cellular link. It now holds states
only; the counters are still in `status` over the control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.app import Gateway
from gateway.config import Settings, load_settings
from gateway.journal import Alarm
from gateway.runtime.control import ControlClient
from tests.conftest import EXAMPLE
from tests.core.schemas import schemas
from tests.e2e.test_app import running
from tests.sync import mosquitto
from tests.sync.mosquitto import Mosquitto

pytestmark = pytest.mark.slow  # the daemon, on mock pins, against a real mosquitto (~10 s)

broker = mosquitto.broker  # the fixture: a fresh mosquitto per test
TICK_S = 1.0  # the daemon's maintenance tick, which sets the retained state


@pytest.fixture
def settings(tmp_path: Path, broker: Mosquitto) -> Settings:
    example = load_settings(EXAMPLE, env={
        "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
        "PARKING_GATEWAY__BUS__PORT": str(tmp_path / "no-such-port"),
    })
    mqtt = example.sync.mqtt.model_copy(update={"host": "127.0.0.1", "port": broker.port,
                                                "tls": None, "username": None})
    return example.model_copy(update={"sync": example.sync.model_copy(update={"mqtt": mqtt})})


class Retained:
    """Every `state/health` document the broker passes on, with when it came."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.last_at = time.monotonic()

    async def settled(self, after: int = 0, quiet_s: float = 2.5 * TICK_S,
                      within_s: float = 20.0) -> None:
        """Until more than `after` have come and none for `quiet_s`: the changes are over."""
        deadline = time.monotonic() + within_s
        while len(self.documents) <= after or time.monotonic() - self.last_at < quiet_s:
            assert time.monotonic() < deadline, f"health never settled: {self.documents}"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def health_of(gateway: Gateway, port: int) -> AsyncIterator[Retained]:
    topic = f"{gateway.settings.sync.topic_prefix}/{gateway.settings.gateway.lot_id}/" \
            f"{gateway.settings.gateway.gateway_id}/state/health"
    seen = Retained()

    async def listen(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            seen.documents.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
            seen.last_at = time.monotonic()

    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topic, qos=1)
        task = asyncio.create_task(listen(client))
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_counters_moving_send_nothing_and_a_state_change_sends_the_new_state(
        settings: Settings, tmp_path: Path, broker: Mosquitto) -> None:
    async with running(settings, tmp_path, sync=True) as gateway, \
            health_of(gateway, broker.port) as health:
        await health.settled()
        before = len(health.documents)
        assert gateway.bus is not None
        # What used to change the document every second: restarts, the bus's traffic.
        gateway.parts["maintenance"].restarts += 3
        gateway.bus.link.counters.timeouts += 5
        gateway.bus.cycles += 7
        await asyncio.sleep(2.5 * TICK_S)
        assert len(health.documents) == before, health.documents[before:]

        await gateway.journal.raise_alarm(Alarm("test.health", "warning", "a test",
                                                component="test"))
        await health.settled(after=before, quiet_s=1.5 * TICK_S)
        assert len(health.documents) == before + 1
        latest = health.documents[-1]
        assert latest["alarms"]["test.health"] == "warning"
        assert latest["parts"]["maintenance"] == {"running": True, "lastError": None}
        assert latest["bus"]["portState"] == "missing"
        assert latest["cameras"] == {lane.id: "unmonitored" for lane in settings.lanes}

        # The counters are still there for the technician.
        status = await ControlClient(settings.control.socket_path).call("status")
        assert status["health"]["parts"]["maintenance"]["restarts"] == 3
        assert status["health"]["bus"]["counters"]["timeouts"] >= 5


async def test_the_retained_document_fits_its_schema(
        settings: Settings, tmp_path: Path, broker: Mosquitto) -> None:
    from jsonschema import Draft202012Validator

    async with running(settings, tmp_path, sync=True) as gateway, \
            health_of(gateway, broker.port) as health:
        await gateway.journal.raise_alarm(Alarm("test.health", "critical", "a test",
                                                component="test"))
        await health.settled()
        while "test.health" not in health.documents[-1]["alarms"]:
            await health.settled(after=len(health.documents), quiet_s=0)
    validator = Draft202012Validator(schemas()["health"])
    for document in health.documents:
        validator.validate(document)
    assert health.documents[-1]["alarms"]["test.health"] == "critical"
