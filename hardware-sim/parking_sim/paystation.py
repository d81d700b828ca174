"""A pay-on-foot station's side of the gateway's pay API (`GET /api/v1/pay/fee`, `POST
/api/v1/pay/payments`, docs/http.md "Pay on foot"), as a station on the lot's network calls it.

`HttpPayDesk` is the gateway's :class:`~gateway.core.pay.PayOnFoot` seen through HTTP: the
same three calls, each a request under the station's own `device` account and bearer token,
the API's refusals (404, 409, 503) turned back into :class:`~gateway.core.pay.PayRefused` with
the API's code. The simulated lot's pay station (`parking_sim.daemon.PayStation`) pays through
it whenever the lot serves its HTTP API, so the API is what the simulated day exercises.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, Self

import aiohttp

from gateway.core.pay import Fee, PaymentRequest, PayRefused, Receipt, RefusalKind

FEE = "/api/v1/pay/fee"
PAYMENTS = "/api/v1/pay/payments"
TIMEOUT_S = 10.0  # a station gives up on an answer this late and asks again
REFUSALS: dict[int, RefusalKind] = {404: "not_found", 409: "conflict", 503: "unavailable"}


class PayApiError(RuntimeError):
    """An answer the pay API's contract does not have (a 401, a 500, a body that is not its)."""


class HttpPayDesk:
    """The gateway's pay desk over its HTTP API; `async with` it, or `close()` it."""

    def __init__(self, base_url: str, token: str) -> None:
        self._http = aiohttp.ClientSession(
            base_url, headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        self.answers = 0  # the API's answers, refusals included

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def fee_by_plate(self, plate: str) -> Fee:
        return _fee(await self._call("GET", FEE, params={"plate": plate}))

    async def fee_by_ticket(self, ticket: str) -> Fee:
        return _fee(await self._call("GET", FEE, params={"ticket": ticket}))

    async def pay(self, device: str, request: PaymentRequest) -> Receipt:
        """`device` is the station's account, which the token already names."""
        body = await self._call("POST", PAYMENTS, json={
            "session": request.session_id, "amountMinor": request.amount_minor,
            "currency": request.currency, "method": request.method,
            "reference": request.reference})
        try:
            if body["device"] != device or body["reference"] != request.reference:
                raise PayApiError(f"a receipt for another payment: {body}")
            return Receipt(body["paymentId"], request, body["device"], _time(body["paidAt"]),
                           _time(body["exitBy"]), bool(body["replayed"]))
        except (KeyError, TypeError, ValueError) as e:
            raise PayApiError(f"not a receipt: {body}") from e

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        async with self._http.request(method, path, **kw) as response:
            self.answers += 1
            try:
                body = await response.json()
            except (aiohttp.ContentTypeError, ValueError) as e:
                raise PayApiError(f"{method} {path}: {response.status}, not JSON") from e
            if response.status == 200 and isinstance(body, dict):
                return body
            error = body.get("error") if isinstance(body, dict) else None
            kind = REFUSALS.get(response.status)
            if kind is None or not isinstance(error, dict):
                raise PayApiError(f"{method} {path}: {response.status} {body}")
            code = str(error.get("code", ""))
            if kind == "conflict" and code == "ambiguous":
                kind = "ambiguous"  # 409 both: the plate matches two cars inside
            raise PayRefused(kind, code, str(error.get("message", "")))


def _fee(body: dict[str, Any]) -> Fee:
    try:
        return Fee(body["session"], body["plate"], _time(body["enteredAt"]),
                   _time(body["pricedAt"]), int(body["feeMinor"]), int(body["paidMinor"]),
                   int(body["dueMinor"]), body["currency"],
                   None if body["exitBy"] is None else _time(body["exitBy"]))
    except (KeyError, TypeError, ValueError) as e:
        raise PayApiError(f"not a fee: {body}") from e


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)
