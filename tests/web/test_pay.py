"""Pay on foot against the real server: a real desk over a real session book and SQLite
journal, a pay station's account (`pay`, role device) calling it with its token.

The lot's example tariff: 15 free minutes, then 2.50 for the first hour and 1.00 per started
half hour up to the fourth; the payment grace is 15 minutes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import load_settings
from gateway.controllers.paydesk import PayDesk
from gateway.controllers.sessions import SessionBook
from gateway.core.access import Access, EntryDecision, OpenStay
from gateway.core.clock import FakeClock
from gateway.core.pay import PaymentRequest, PayRefused, payment_id
from gateway.journal import Journal, JournalWriteError
from gateway.web.live import AvailabilityFeed
from tests.conftest import EXAMPLE
from tests.web.conftest import FakeLot, bearer, http_config, serving
from tests.web.test_daemon import running, settings_for

SETTINGS = load_settings(EXAMPLE, env={})
PLATE = "AB123CD"
GOOD_TICKET = "ticket-of-the-stay"


class Lot:
    """The real parts a pay station talks to, and the stay of one car inside."""

    def __init__(self, journal: Journal, clock: FakeClock) -> None:
        self.journal, self.clock = journal, clock
        self.access = Access(SETTINGS.lot, tz=SETTINGS.gateway.tzinfo)
        self.book = SessionBook(SETTINGS, journal, self.access, clock)
        self.stay: OpenStay | None = None
        self.desk = PayDesk(self.book, journal, tickets=self.ticket)

    def ticket(self, text: str) -> str:
        if text != GOOD_TICKET or self.stay is None:
            raise ValueError("forged")
        return self.stay.session_id

    async def enter(self, plate: str = PLATE) -> OpenStay:
        self.stay = await self.book.open(EntryDecision(True, "visitor", plate),
                                         lane_id="entry-north", at=self.clock.stamp(),
                                         confidence=0.95)
        return self.stay

    async def payment_events(self) -> list[dict[str, Any]]:
        return [json.loads(r.data_json) for r in await self.journal.read_events(0, 1000)
                if r.type.endswith("payment.recorded")]


@pytest.fixture
async def lot(journal: Journal, clock: FakeClock) -> Lot:
    return Lot(journal, clock)


@pytest.fixture
async def station(lot: Lot, feed: AvailabilityFeed) -> AsyncIterator[aiohttp.ClientSession]:
    """The pay station: a client with its device token."""
    async with (serving(FakeLot(), feed, http_config(), pay=lot.desk) as server,
                aiohttp.ClientSession(f"http://127.0.0.1:{server.port}",
                                      headers=bearer("pay")) as client):
        yield client


@pytest.fixture
def feed() -> AvailabilityFeed:
    fake = FakeLot()
    feed = AvailabilityFeed(fake.availability)
    feed.refresh()
    return feed


async def get_fee(station: aiohttp.ClientSession, **query: str) -> tuple[int, Any]:
    async with station.get("/api/v1/pay/fee", params=query) as response:
        return response.status, await response.json()


async def post_payment(station: aiohttp.ClientSession, session: str, amount: int, *,
                       reference: str = "rcpt-1", currency: str = "EUR",
                       method: str = "card") -> tuple[int, Any]:
    body = {"session": session, "amountMinor": amount, "currency": currency,
            "method": method, "reference": reference}
    async with station.post("/api/v1/pay/payments", json=body) as response:
        return response.status, await response.json()


async def test_the_fee_of_a_stay_found_by_its_plate(lot: Lot, clock: FakeClock,
                                                    station: aiohttp.ClientSession) -> None:
    stay = await lot.enter()
    clock.advance(40 * 60)
    status, fee = await get_fee(station, plate="ab-123 cd")  # as the driver types it
    assert status == 200, fee
    assert fee["session"] == stay.session_id
    assert fee["plate"] == PLATE
    assert (fee["feeMinor"], fee["paidMinor"], fee["dueMinor"], fee["currency"]) == (
        250, 0, 250, "EUR")
    assert fee["exitBy"] == "2026-03-02T08:55:00.000000Z"  # now + the 15 min grace


async def test_a_plate_read_one_character_off_finds_the_stay(
        lot: Lot, clock: FakeClock, station: aiohttp.ClientSession) -> None:
    """The exit lane's matching: a confusable character (0 for D) still finds the one car."""
    stay = await lot.enter()
    status, fee = await get_fee(station, plate="AB123C0")
    assert (status, fee["session"]) == (200, stay.session_id)


@pytest.mark.parametrize(("query", "status", "code"), [
    ({"plate": "ZZ999ZZ"}, 404, "not_found"),
    ({"ticket": "forged"}, 404, "bad_ticket"),
    ({}, 400, "invalid_params"),
    ({"plate": PLATE, "ticket": GOOD_TICKET}, 400, "invalid_params"),
    ({"plate": "X" * 33}, 400, "invalid_params"),
])
async def test_a_lookup_that_finds_nothing_says_so(
        lot: Lot, station: aiohttp.ClientSession, query: dict[str, str], status: int,
        code: str) -> None:
    await lot.enter()
    got, body = await get_fee(station, **query)
    assert (got, body["error"]["code"]) == (status, code)


async def test_the_fee_of_a_stay_found_by_its_ticket(lot: Lot, clock: FakeClock,
                                                     station: aiohttp.ClientSession) -> None:
    stay = await lot.enter()
    clock.advance(90 * 60)
    status, fee = await get_fee(station, ticket=GOOD_TICKET)
    assert (status, fee["session"], fee["dueMinor"]) == (200, stay.session_id, 350)


async def test_a_payment_is_journaled_and_lets_the_car_out_within_the_grace(
        lot: Lot, clock: FakeClock, station: aiohttp.ClientSession) -> None:
    stay = await lot.enter()
    clock.advance(55 * 60)
    status, receipt = await post_payment(station, stay.session_id, 250, method="mobile")
    assert status == 200, receipt
    assert (receipt["replayed"], receipt["device"], receipt["amountMinor"]) == (
        False, "pay", 250)
    assert receipt["exitBy"] == "2026-03-02T09:10:00.000000Z"
    (event,) = await lot.payment_events()
    assert event == {"paymentId": receipt["paymentId"], "sessionId": stay.session_id,
                     "amount": {"amountMinor": 250, "currency": "EUR"}, "method": "app",
                     "source": "pay_station", "device": "pay", "reference": "rcpt-1"}
    # Nothing more is due while the payment is valid, though the fee has stepped up since.
    clock.advance(14 * 60)
    _, fee = await get_fee(station, plate=PLATE)
    assert (fee["feeMinor"], fee["paidMinor"], fee["dueMinor"]) == (350, 250, 0)
    assert fee["exitBy"] == receipt["exitBy"]
    assert await exit_reason(lot) == "paid"
    # Past the grace, the extra time is due.
    clock.advance(2 * 60)
    _, fee = await get_fee(station, plate=PLATE)
    assert fee["dueMinor"] == 100
    assert await exit_reason(lot) == "unpaid"


async def exit_reason(lot: Lot) -> str:
    assert lot.stay is not None
    decision = lot.access.exit(PLATE, at=lot.clock.now(),
                               payments=await lot.journal.payments(lot.stay.session_id),
                               price=lot.book.fee_at, online=True)
    return decision.reason


async def test_the_same_reference_again_is_the_first_payment(
        lot: Lot, clock: FakeClock, station: aiohttp.ClientSession) -> None:
    stay = await lot.enter()
    clock.advance(30 * 60)
    _, first = await post_payment(station, stay.session_id, 250)
    clock.advance(60)
    status, again = await post_payment(station, stay.session_id, 250)
    assert status == 200
    assert again["paymentId"] == first["paymentId"]
    assert again["paidAt"] == first["paidAt"]
    assert again["replayed"] is True
    assert len(await lot.journal.payments(stay.session_id)) == 1
    assert len(await lot.payment_events()) == 1
    # A restarted gateway (a new desk, nothing in memory) knows it from the journal.
    replay = await PayDesk(lot.book, lot.journal).pay("pay", PaymentRequest(
        stay.session_id, 250, "EUR", "card", "rcpt-1"))
    assert (replay.payment_id, replay.replayed) == (first["paymentId"], True)


@pytest.mark.parametrize("change", [{"amount": 300}, {"method": "cash"},
                                    {"currency": "USD"}])
async def test_the_same_reference_with_another_payment_is_a_conflict(
        lot: Lot, clock: FakeClock, station: aiohttp.ClientSession,
        change: dict[str, Any]) -> None:
    stay = await lot.enter()
    clock.advance(30 * 60)
    await post_payment(station, stay.session_id, 250)
    status, body = await post_payment(station, stay.session_id, **{"amount": 250, **change})
    assert (status, body["error"]["code"]) == (409, "reference_reused")
    assert len(await lot.payment_events()) == 1


@pytest.mark.parametrize(("amount", "currency", "code"), [
    (200, "EUR", "amount_mismatch"),  # partial
    (300, "EUR", "amount_mismatch"),  # more than due
    (250, "CHF", "wrong_currency"),
])
async def test_a_payment_must_be_what_is_due(
        lot: Lot, clock: FakeClock, station: aiohttp.ClientSession, amount: int,
        currency: str, code: str) -> None:
    stay = await lot.enter()
    clock.advance(30 * 60)
    status, body = await post_payment(station, stay.session_id, amount, currency=currency)
    assert (status, body["error"]["code"]) == (409, code)
    assert await lot.payment_events() == []
    assert lot.desk.summary() == {"recorded": 0, "replayed": 0, "refused": {code: 1}}


async def test_nothing_is_taken_when_nothing_is_due(lot: Lot, clock: FakeClock,
                                                    station: aiohttp.ClientSession) -> None:
    stay = await lot.enter()
    clock.advance(10 * 60)  # within the free quarter hour
    _, fee = await get_fee(station, plate=PLATE)
    assert (fee["dueMinor"], fee["exitBy"]) == (0, None)
    status, body = await post_payment(station, stay.session_id, 1)
    assert (status, body["error"]["code"]) == (409, "nothing_due")


async def test_another_station_with_the_same_reference_is_another_payment(
        lot: Lot, clock: FakeClock, station: aiohttp.ClientSession) -> None:
    """References are the station's own: another station's "rcpt-1" is not a retry of this
    one's, so it is checked afresh (and finds the stay paid)."""
    stay = await lot.enter()
    clock.advance(30 * 60)
    _, first = await post_payment(station, stay.session_id, 250)
    assert payment_id("pay-2", "rcpt-1") != first["paymentId"] == payment_id("pay", "rcpt-1")
    with pytest.raises(PayRefused) as refused:
        await lot.desk.pay("pay-2", PaymentRequest(stay.session_id, 250, "EUR", "card",
                                                   "rcpt-1"))
    assert refused.value.code == "nothing_due"


async def test_an_unknown_session_is_not_found(station: aiohttp.ClientSession) -> None:
    status, body = await post_payment(station, "no-such-session", 250)
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_a_payment_the_journal_cannot_take_is_to_be_retried(
        lot: Lot, clock: FakeClock, station: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stay = await lot.enter()
    clock.advance(30 * 60)

    async def full(**_kwargs: Any) -> None:
        raise JournalWriteError("disk full")

    monkeypatch.setattr(lot.book, "record_payment", full)
    async with station.post("/api/v1/pay/payments", json={
            "session": stay.session_id, "amountMinor": 250, "currency": "EUR",
            "method": "cash", "reference": "r-9"}) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["code"] == "unavailable"


@pytest.mark.parametrize("body", [
    {"session": "s", "amountMinor": 0, "currency": "EUR", "method": "card", "reference": "r"},
    {"session": "s", "amountMinor": 250, "currency": "eur", "method": "card", "reference": "r"},
    {"session": "s", "amountMinor": 250, "currency": "EUR", "method": "cheque",
     "reference": "r"},
    {"session": "s", "amountMinor": 250, "currency": "EUR", "method": "card",
     "reference": "has space"},
    {"session": "s", "amountMinor": "250", "currency": "EUR", "method": "card",
     "reference": "r"},
    {"session": "s", "amountMinor": 250, "currency": "EUR", "method": "card"},
])
async def test_a_malformed_payment_is_refused(station: aiohttp.ClientSession,
                                              body: dict[str, Any]) -> None:
    async with station.post("/api/v1/pay/payments", json=body) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_params"


@pytest.mark.parametrize("account", ["view", "tech"])
async def test_only_a_device_pays(lot: Lot, feed: AvailabilityFeed, account: str) -> None:
    async with (serving(FakeLot(), feed, http_config(), pay=lot.desk) as server,
                aiohttp.ClientSession(f"http://127.0.0.1:{server.port}",
                                      headers=bearer(account)) as client):
        for method, path in (("GET", "/api/v1/pay/fee?plate=AB123CD"),
                             ("POST", "/api/v1/pay/payments")):
            async with client.request(method, path, json={}) as response:
                assert response.status == 403


async def test_the_daemon_serves_pay_on_foot(tmp_path: Path) -> None:
    """Wired in the composition root: the running daemon's desk answers a station."""
    settings = settings_for(tmp_path)
    async with running(settings) as gateway:
        stay = await gateway.sessions.open(
            EntryDecision(True, "visitor", PLATE), lane_id=settings.lanes[0].id,
            at=gateway.clock.stamp(), confidence=0.9)
        assert gateway.web is not None
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway.web.port}",
                                         headers=bearer("pay")) as station:
            status, fee = await get_fee(station, plate=PLATE)
            assert (status, fee["session"], fee["dueMinor"]) == (200, stay.session_id, 0)
            status, body = await post_payment(station, stay.session_id, 1)
            assert (status, body["error"]["code"]) == (409, "nothing_due")  # a free quarter
