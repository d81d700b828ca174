"""The console's share of the server: its page and files (nothing from elsewhere), the bay
grid's data, today's report from the journal (read as the journal grows, not whole each time),
the plates and the backend link. Who may call each is tested with every route in test_api.py."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from gateway.config import BayConfig
from gateway.core.availability import Availability, Place, tally
from gateway.core.records import OutboxRecord
from gateway.web.console import ASSETS, bays_document
from gateway.web.today import first_after
from tests.web.conftest import SETTINGS, FakeJournal, FakeLot, bearer

BERLIN_DAY = datetime(2026, 12, 7, tzinfo=UTC) - timedelta(hours=1)  # 00:00 in Europe/Berlin


# --- the page ----------------------------------------------------------------------------------


async def test_the_page_and_its_files_are_served_from_the_package(
        client: aiohttp.ClientSession) -> None:
    async with client.get("/") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        policy = response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    linked = re.findall(r'(?:src|href)="([^"#][^"]*)"', page)
    assert sorted(linked) == ["/static/console.css", "/static/console.js", "/static/icon.svg"]
    for name, media in ASSETS.items():
        async with client.get(f"/static/{name}") as response:
            assert response.status == 200, name
            assert response.headers["Content-Type"] == f"{media}; charset=utf-8"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with client.get("/static/server.py") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_the_console_needs_nothing_from_elsewhere(client: aiohttp.ClientSession) -> None:
    """No CDN, font or script from another host: a lot with no internet gets the whole page."""
    texts = {}
    for path in ("/", *(f"/static/{name}" for name in ASSETS)):
        async with client.get(path) as response:
            texts[path] = await response.text()
    for path, text in texts.items():
        addresses = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text))
        assert addresses <= {"http://www.w3.org/2000/svg"}, path  # SVG's namespace: no fetch
        assert "@import" not in text, path
        assert "url(" not in text, path
    requested = re.findall(r'(?:call\("(?:GET|POST)", |EventSource\()[`"]([^`"]+)[`"]',
                           texts["/static/console.js"])
    assert len(requested) > 10
    assert all(path.startswith("/api/v1/") for path in requested)


# --- the bay grid ------------------------------------------------------------------------------


def bay(bay_id: str, floor: str, zone: str, sensor: str = "modbus",
        bay_type: str = "regular") -> BayConfig:
    kind = {"modbus": {"kind": "modbus", "unit_id": int(bay_id.split("-")[1])},
            "none": {"kind": "none"}}[sensor]
    return BayConfig.model_validate({"id": bay_id, "floor": floor, "zone": zone,
                                     "type": bay_type, "sensor": kind})


def test_the_bay_grid_agrees_with_the_availability_document() -> None:
    bays = [bay("A-1", "0", "A"), bay("A-2", "0", "A"), bay("A-3", "0", "A"),
            bay("A-4", "0", "A", "none"), bay("A-5", "0", "A", "none"),
            bay("B-6", "1", "B", "none", "ev"), bay("B-7", "1", "B"),
            bay("B-8", "1", "B", "none")]
    sensed = [{"bayId": "A-1", "state": "occupied", "inService": True},
              {"bayId": "A-2", "state": "occupied", "inService": False},  # a car on a closed bay
              {"bayId": "B-7", "state": "free", "inService": True}]  # no word yet
    at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    doc = bays_document(bays, sensed, inside=4, at=at)
    assert [(b["bayId"], b["state"], b["inService"]) for b in doc["bays"]] == [
        ("A-1", "occupied", True), ("A-2", "occupied", False), ("A-3", "unknown", True),
        ("B-7", "free", True)]
    # Four inside, one of them on a sensed bay in service: three of the four counted bays are
    # taken, shared out by the largest remainders (1.5, 0.75, 0.75: the two 0.75s round up).
    counted = {(c["floor"], c["zone"], c["type"]): (c["total"], c["occupied"])
               for c in doc["counted"]}
    assert counted == {("0", "A", "regular"): (2, 1), ("1", "B", "ev"): (1, 1),
                       ("1", "B", "regular"): (1, 1)}
    places = [Place(b.floor, b.zone, b.type, None) for b in bays if b.sensor.kind == "none"]
    places += [Place("0", "A", "regular", "occupied"),
               Place("0", "A", "regular", "occupied", in_service=False),
               Place("0", "A", "regular", "unknown"), Place("1", "B", "regular", "free")]
    availability = Availability("lot", "gw", at, "open", tally(places, inside=4)).document()
    for floor, counts in availability["floors"].items():
        taken = sum(1 for b in doc["bays"] if b["floor"] == floor and b["inService"]
                    and b["state"] == "occupied")
        taken += sum(c["occupied"] for c in doc["counted"] if c["floor"] == floor)
        assert taken == counts["occupied"], floor
    assert doc["recordDateTime"] == "2026-12-07T09:30:00.000000Z"


async def test_the_bay_grid_is_served_to_a_viewer(client: aiohttp.ClientSession,
                                                  lot: FakeLot) -> None:
    lot.sensed[0]["state"] = "occupied"
    async with client.get("/api/v1/bays", headers=bearer("view")) as response:
        doc = await response.json()
    assert [b["bayId"] for b in doc["bays"]] == [b.id for b in SETTINGS.bays
                                                  if b.sensor.kind != "none"]
    assert doc["bays"][0]["state"] == "occupied"
    # The one inside is on the sensed bay: the counted bay is free.
    assert [c["occupied"] for c in doc["counted"]] == [0]


async def test_the_bay_grid_leaves_out_the_cars_on_a_ramp_counted_level(
        client: aiohttp.ClientSession, lot: FakeLot) -> None:
    """The car inside is on a level counted at its ramps: the bays with no sensor hold none of
    it (they took every car inside before, and looked fuller than they were)."""
    lot.uncounted = 0
    async with client.get("/api/v1/bays", headers=bearer("view")) as response:
        doc = await response.json()
    assert [c["occupied"] for c in doc["counted"]] == [0]
    assert all(b["state"] != "occupied" for b in doc["bays"])


# --- today's report ----------------------------------------------------------------------------


def record(seq: int, kind: str, at: datetime, data: dict[str, Any]) -> OutboxRecord:
    return OutboxRecord(seq, f"id-{seq}", kind, at.isoformat().replace("+00:00", "Z"),
                        json.dumps(data), False)


def ended(seq: int, at: datetime, fee: int) -> OutboxRecord:
    return record(seq, "session.ended", at, {
        "actualEnd": at.isoformat(), "fee": {"amountMinor": fee, "currency": "EUR"}})


def filler(journal: FakeJournal, start: datetime, count: int) -> None:
    """`count` bay changes a minute apart from `start`: what most of a day's events are."""
    for i in range(count):
        journal.records.append(record(journal.last_seq + 1, "bay.changed",
                                      start + timedelta(minutes=i), {}))


async def report(client: aiohttp.ClientSession) -> dict[str, Any]:
    async with client.get("/api/v1/report/today", headers=bearer("tech")) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


async def test_todays_report_is_the_lot_local_day_and_follows_the_journal(
        client: aiohttp.ClientSession, lot: FakeLot) -> None:
    journal = lot.journal
    filler(journal, BERLIN_DAY - timedelta(hours=30), 30 * 60)  # yesterday's, and before
    journal.records.append(ended(journal.last_seq + 1, BERLIN_DAY - timedelta(minutes=5), 900))
    filler(journal, BERLIN_DAY, 10 * 60)  # today's morning, to 10:00 in Berlin
    hour_8 = BERLIN_DAY + timedelta(hours=8)
    journal.records += [
        record(journal.last_seq + 1, "occupancy.hourly", hour_8 + timedelta(hours=1), {
            "hourStart": hour_8.isoformat(), "entries": 7, "exits": 2,
            "groups": [{"capacity": 10, "occupiedAvg": 4.0, "occupiedMax": 6}]}),
        ended(journal.last_seq + 2, hour_8 + timedelta(minutes=10), 250),
        record(journal.last_seq + 3, "payment.recorded", hour_8 + timedelta(minutes=20),
               {"amount": {"amountMinor": 300, "currency": "EUR"}}),
    ]
    first = await report(client)  # at 09:30 UTC, 10:30 in Berlin
    assert (first["day"], first["timezone"], first["currency"]) == (
        "2026-12-07", "Europe/Berlin", "EUR")
    by_label = {h["label"]: h for h in first["hours"]}
    assert by_label["08:00"]["occupancy"] == 0.4  # the UTC 07:00 hour
    assert (by_label["08:00"]["fees_minor"], by_label["08:00"]["payments_minor"]) == (250, 300)
    assert first["totals"]["fees_minor"] == 250  # yesterday's 900 is not today's
    # The day's start was found in about log2(2,400) reads, not by reading 2,400 events.
    assert journal.reads <= 16

    reads = journal.reads
    journal.records.append(ended(journal.last_seq + 1, hour_8 + timedelta(hours=1), 400))
    second = await report(client)
    assert second["totals"]["fees_minor"] == 650
    assert journal.reads - reads == 1  # only what came since


async def test_a_new_day_starts_a_new_report(client: aiohttp.ClientSession,
                                             lot: FakeLot) -> None:
    lot.journal.records.append(ended(1, BERLIN_DAY + timedelta(hours=9), 250))
    assert (await report(client))["totals"]["fees_minor"] == 250
    lot.clock.advance(24 * 3600)
    lot.journal.records.append(ended(2, BERLIN_DAY + timedelta(days=1, hours=9), 100))
    after = await report(client)
    assert (after["day"], after["totals"]["fees_minor"]) == ("2026-12-08", 100)


async def test_the_start_of_a_day_is_found_in_a_journal_with_gaps() -> None:
    journal = FakeJournal()
    start = datetime(2026, 12, 6, tzinfo=UTC)
    filler(journal, start, 3000)
    journal.records = journal.records[::3]  # pruned: a third kept
    at = start + timedelta(minutes=1500)
    after = await first_after(journal, at)
    following = [r for r in journal.records if r.seq > after]
    assert datetime.fromisoformat(following[0].time) >= at
    assert datetime.fromisoformat(journal.records[journal.records.index(following[0]) - 1]
                                  .time) < at
    assert await first_after(journal, start - timedelta(days=1)) == 0
    assert await first_after(journal, start + timedelta(days=9)) == journal.last_seq
    assert await first_after(FakeJournal(), at) == 0


# --- the technician's reads ------------------------------------------------------------------


async def test_plates_and_the_backend_link(client: aiohttp.ClientSession, lot: FakeLot,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    async def recent_plates(limit: int = 50) -> list[dict[str, Any]]:
        asked.append(limit)
        return [{"laneId": "entry", "plate": "AB123CD"}]

    monkeypatch.setattr(lot, "recent_plates", recent_plates)
    headers = bearer("tech")
    async with client.get("/api/v1/plates/recent", headers=headers) as response:
        assert (await response.json())["plates"][0]["plate"] == "AB123CD"
    for bad in ("0", "201", "x"):
        async with client.get("/api/v1/plates/recent", params={"limit": bad},
                              headers=headers) as response:
            assert response.status == 400, bad
    assert asked == [20]
    async with client.get("/api/v1/sync", headers=headers) as response:
        sync = (await response.json())["sync"]
    assert (sync["connected"], sync["backlog"], sync["lag_s"]) == (True, 5, 2.5)
