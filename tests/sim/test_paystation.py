"""The simulated pay station's HTTP client against the real server and a real pay desk: the
same answers as the desk gives in the process, the API's refusals as the desk's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from parking_sim.paystation import HttpPayDesk, PayApiError

from gateway.core.clock import FakeClock
from gateway.core.pay import PaymentRequest, PayRefused
from gateway.journal import Journal
from gateway.web.live import AvailabilityFeed
from tests.web.conftest import TOKENS, FakeLot, http_config, serving
from tests.web.test_pay import Lot


@pytest.fixture
async def lot(journal: Journal, clock: FakeClock) -> Lot:
    return Lot(journal, clock)


@pytest.fixture
async def api(lot: Lot) -> AsyncIterator[HttpPayDesk]:
    """The pay station's client, under the `pay` device account's token."""
    feed = AvailabilityFeed(FakeLot().availability)
    feed.refresh()
    async with (serving(FakeLot(), feed, http_config(), pay=lot.desk) as server,
                HttpPayDesk(f"http://127.0.0.1:{server.port}", TOKENS["pay"]) as desk):
        yield desk


async def test_a_fee_and_a_payment_over_http_are_the_desks(lot: Lot, clock: FakeClock,
                                                           api: HttpPayDesk) -> None:
    stay = await lot.enter()
    clock.advance(40 * 60)

    fee = await api.fee_by_plate(stay.plate)

    assert fee == await lot.desk.fee_by_plate(stay.plate)
    assert (fee.session_id, fee.due_minor, fee.currency) == (stay.session_id, 250, "EUR")
    request = PaymentRequest(stay.session_id, 250, "EUR", "card", "sim-1")
    receipt = await api.pay("pay", request)
    assert (receipt.request, receipt.device, receipt.replayed) == (request, "pay", False)
    assert (await api.pay("pay", request)).replayed  # the same reference: the same payment
    assert (await api.fee_by_plate(stay.plate)).due_minor == 0
    assert len(await lot.payment_events()) == 1


async def test_the_apis_refusals_are_the_desks(lot: Lot, clock: FakeClock,
                                               api: HttpPayDesk) -> None:
    stay = await lot.enter()
    clock.advance(40 * 60)

    with pytest.raises(PayRefused) as unknown:
        await api.fee_by_plate("ZZ999ZZ")
    with pytest.raises(PayRefused) as short:
        await api.pay("pay", PaymentRequest(stay.session_id, 100, "EUR", "card", "sim-2"))
    with pytest.raises(PayRefused) as forged:
        await api.fee_by_ticket("not-a-ticket")

    assert (unknown.value.kind, unknown.value.code) == ("not_found", "not_found")
    assert (short.value.kind, short.value.code) == ("conflict", "amount_mismatch")
    assert forged.value.kind == "not_found"


async def test_a_token_without_the_device_role_is_not_a_refusal_but_an_error(
        lot: Lot) -> None:
    feed = AvailabilityFeed(FakeLot().availability)
    feed.refresh()
    async with (serving(FakeLot(), feed, http_config(), pay=lot.desk) as server,
                HttpPayDesk(f"http://127.0.0.1:{server.port}", TOKENS["view"]) as desk):
        with pytest.raises(PayApiError, match="403"):
            await desk.fee_by_plate("AB123CD")
