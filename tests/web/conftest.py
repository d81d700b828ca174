"""The web tests' lot, accounts and server: the real aiohttp server on 127.0.0.1 (a free port),
in front of a fake lot that records what it is asked to do.

Account hashes use scrypt's smallest cost the config allows (N=1024), so that a test logs in
in a millisecond; the server checks them exactly as it checks the default cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import structlog

from gateway.config import HttpAccount, HttpRole, HttpServerConfig, load_settings
from gateway.core.availability import Availability, Place, tally
from gateway.core.clock import FakeClock
from gateway.core.operations import LaneMode, LotState, OperationRefused
from gateway.core.pay import Fee, PaymentRequest, PayOnFoot, Receipt
from gateway.core.records import OutboxRecord
from gateway.runtime.log import configure_logging
from gateway.web.accounts import hash_secret
from gateway.web.live import AvailabilityFeed
from gateway.web.server import WebServer
from tests.conftest import EXAMPLE

PASSWORDS = {"tech": "tech-password-1", "view": "view-password-1"}
TOKENS = {"tech": "tech.T0ken-of-the-technician", "view": "view.T0ken-of-the-viewer",
          "pay": "pay.T0ken-of-the-pay-station"}
ROLES: dict[str, HttpRole] = {"tech": "technician", "view": "viewer", "pay": "device"}
AT = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)


def _hash(secret: str) -> str:
    return hash_secret(secret, n=1024)


ACCOUNTS = {name: HttpAccount(
    role=role,
    password_hash=_hash(PASSWORDS[name]) if name in PASSWORDS else None,
    token_hash=_hash(TOKENS[name]) if name in TOKENS else None) for name, role in ROLES.items()}


SETTINGS = load_settings(EXAMPLE)  # the console reads the lot's bays, time zone and currency


class FakeJournal:
    """The stored events (`records`, in sequence order) that the day's report reads."""

    def __init__(self) -> None:
        self.records: list[OutboxRecord] = []
        self.reads = 0

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq if self.records else 0

    async def read_events(self, after: int, limit: int = 500) -> list[OutboxRecord]:
        self.reads += 1
        return [r for r in self.records if r.seq > after][:limit]


def http_config(**overrides: Any) -> HttpServerConfig:
    return HttpServerConfig.model_validate({
        "enabled": True, "listen": "127.0.0.1:0", "accounts": ACCOUNTS, **overrides})


def bearer(account: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[account]}"}


class FakeLot:
    """A LotView with two lanes, an alarm, an open session and three stored events; it
    records each action, and its bays (`places`) are what its availability shows."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.uncounted = 1  # the one open session's car, in the bays (no ramp-counted level)
        self.ready = {"started": True, "journal": True, "lanes": True}
        self.state: LotState = "open"
        self.inside = 1
        self.places = [
            Place("0", "A", "regular", "free"), Place("0", "A", "regular", "occupied"),
            Place("0", "B", "ev", "free"), Place("1", "B", "regular", "unknown"),
            Place("1", "B", "regular", "free", in_service=False),
            Place("1", "C", "regular", None), Place("1", "C", "regular", None),
        ]
        self.alarm_list = [{"alarmId": "modbus.port_missing", "severity": "critical",
                            "message": "the bus port is missing", "component": "modbus",
                            "raisedAt": "2026-12-07T09:00:00.000000Z", "details": {}}]
        self.settings = SETTINGS
        self.clock = FakeClock(AT)
        self.journal = FakeJournal()
        # The example lot's sensed bays, as sensor_states() has them (its places aside).
        self.sensed = [{"bayId": b.id, "floor": b.floor, "zone": b.zone, "type": b.type,
                        "state": "free", "inService": True}
                       for b in SETTINGS.bays if b.sensor.kind != "none"]

    def availability(self) -> Availability:
        return Availability("test-lot", "gw-1", AT, self.state,
                            tally(self.places, inside=self.inside))

    async def status(self) -> dict[str, Any]:
        return {
            "pay": {"recorded": 7, "replayed": 1, "refused": {"amount_mismatch": 2}},
            "lanes": [{"laneId": "entry", "mode": "auto", "state": "idle", "passages": 4,
                       "refusals": 1, "tailgates": 0, "outOfOrder": False},
                      {"laneId": "exit", "mode": "auto", "state": "idle", "passages": 3,
                       "refusals": 0, "tailgates": 1, "outOfOrder": True}],
            "sync": {"last_seq": 42, "backlog": 5, "lag_s": 2.5, "connected": True,
                     "published": 40, "acked": 37, "reconnects": 1},
            "alarms": self.alarm_list,
            "health": {"parts": {"lane:entry": {"restarts": 2}},
                       "bus": {"cycles": 100, "last_cycle_ms": 250.0, "nodes_faulty": 1,
                               "nodes": [{"unit_id": 1, "bay_id": "A-01",
                                          "counters": {"timeouts": 3, "crc_errors": 1}}]}},
        }

    async def open_gate(self, lane_id: str, *, reason: str, actor: str) -> None:
        self._lane(lane_id)
        self.calls.append(("open_gate", lane_id, reason, actor))

    async def set_lane_mode(self, lane_id: str, mode: LaneMode, *, actor: str) -> None:
        self._lane(lane_id)
        self.calls.append(("set_lane_mode", lane_id, mode, actor))

    async def set_lot_state(self, state: LotState, *, actor: str) -> None:
        self.calls.append(("set_lot_state", state, actor))

    async def set_bay_service(self, bay_id: str, in_service: bool, *, actor: str) -> None:
        self.calls.append(("set_bay_service", bay_id, in_service, actor))

    async def alarms(self) -> list[dict[str, Any]]:
        return self.alarm_list

    async def acknowledge_alarm(self, alarm_id: str, *, actor: str) -> dict[str, Any]:
        if alarm_id != "modbus.port_missing":
            raise OperationRefused(f"no active alarm {alarm_id!r}")
        self.calls.append(("acknowledge_alarm", alarm_id, actor))
        return self.alarm_list[0]

    async def open_sessions(self) -> list[dict[str, Any]]:
        return [{"sessionId": "s-1", "plate": "AB123CD", "entryLane": "entry"}]

    def vehicles_uncounted(self) -> int:
        return self.uncounted

    async def recent_plates(self, limit: int = 50) -> list[dict[str, Any]]:
        return []

    async def purge_plate(self, plate: str, *, actor: str) -> dict[str, Any]:
        return {}

    async def export_plate(self, plate: str) -> dict[str, Any]:
        return {}

    async def watch_sensors(self) -> AsyncIterator[dict[str, Any]]:
        yield {"kind": "snapshot", "bays": []}

    def readiness(self) -> dict[str, bool]:
        return dict(self.ready)

    def sensor_states(self) -> dict[str, Any]:
        return {"kind": "snapshot", "bays": self.sensed}

    async def events_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        return [{"specversion": "1.0", "seq": seq, "type": "org.parking.v1.bay.changed"}
                for seq in (1, 2, 3) if seq > after][:limit]

    def reader_stats(self) -> dict[str, Any] | None:
        return {"frames_read": 10, "reader_errors": 1, "bad_frames": 2, "requests": 5,
                "timeouts": 0, "drops": 0, "restarts": 0, "crashes": 0, "hangs": 0,
                "p50_ms": 80.0, "p95_ms": 160.0}

    def _lane(self, lane_id: str) -> None:
        if lane_id not in ("entry", "exit"):
            raise OperationRefused(f"no lane {lane_id!r} (lanes: entry, exit)")


@pytest.fixture
def lot() -> FakeLot:
    return FakeLot()


@pytest.fixture
def feed(lot: FakeLot) -> AvailabilityFeed:
    feed = AvailabilityFeed(lot.availability)
    feed.refresh()
    return feed


class FakePayDesk:
    """A pay-on-foot desk that knows one stay and takes any payment of it (the real desk's
    answers: tests/web/test_pay.py)."""

    async def fee_by_plate(self, plate: str) -> Fee:
        return Fee("s-1", "AB123CD", AT, AT, 450, 0, 450, "EUR", AT)

    async def fee_by_ticket(self, ticket: str) -> Fee:
        return await self.fee_by_plate("AB123CD")

    async def pay(self, device: str, request: PaymentRequest) -> Receipt:
        return Receipt("p-1", request, device, AT, AT, replayed=False)


@contextlib.asynccontextmanager
async def serving(lot: FakeLot, feed: AvailabilityFeed, config: HttpServerConfig,
                  pay: PayOnFoot | None = None) -> AsyncIterator[WebServer]:
    server = WebServer(lot, config, feed, pay=pay or FakePayDesk())
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(10):
            await server.listening.wait()
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def server(lot: FakeLot, feed: AvailabilityFeed) -> AsyncIterator[WebServer]:
    async with serving(lot, feed, http_config()) as server:
        yield server


@pytest.fixture
async def client(server: WebServer) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the server, with a cookie jar that keeps cookies of a bare IP address."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}",
                                     cookie_jar=jar) as session:
        yield session


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Every log line the gateway writes during the test, rendered as journald gets it."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    yield stream
    structlog.reset_defaults()
