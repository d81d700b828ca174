"""Every endpoint of the real server, unauthenticated, with the wrong role and with the right one;
then sessions and CSRF, TLS, the failed-login limit, the bounds, and logs without secrets."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.core.availability import Place
from gateway.web.auth import GRANTS
from gateway.web.routes import BY_NAME, ROUTES
from gateway.web.server import WebServer
from tests.web.conftest import (
    PASSWORDS,
    ROLES,
    TOKENS,
    FakeLot,
    bearer,
    http_config,
    serving,
)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: dict[str, Any] | None = None
    effect: tuple[Any, ...] | None = None  # what the lot is asked to do, actor aside


CALLS = {
    "healthz": Call("GET", "/healthz"),
    "readyz": Call("GET", "/readyz"),
    "metrics": Call("GET", "/metrics"),
    "openapi": Call("GET", "/api/v1/openapi.json"),
    "login": Call("POST", "/api/v1/login", {"user": "tech", "password": PASSWORDS["tech"]}),
    "logout": Call("POST", "/api/v1/logout"),
    "session": Call("GET", "/api/v1/session"),
    "availability": Call("GET", "/api/v1/availability?floor=0"),
    "availability_stream": Call("GET", "/api/v1/availability/stream"),
    "lanes": Call("GET", "/api/v1/lanes"),
    "alarms": Call("GET", "/api/v1/alarms"),
    "sessions": Call("GET", "/api/v1/sessions?state=open"),
    "events": Call("GET", "/api/v1/events?after=1&limit=1"),
    "gate_open": Call("POST", "/api/v1/lanes/entry/open", {"reason": "lost ticket, paid"},
                      ("open_gate", "entry", "lost ticket, paid")),
    "lane_mode": Call("POST", "/api/v1/lanes/exit/mode", {"mode": "locked_open"},
                      ("set_lane_mode", "exit", "locked_open")),
    "lot_state": Call("POST", "/api/v1/lot/state", {"state": "closed"},
                      ("set_lot_state", "closed")),
    "bay_service": Call("POST", "/api/v1/bays/A-01/service", {"inService": False},
                        ("set_bay_service", "A-01", False)),
    "alarm_ack": Call("POST", "/api/v1/alarms/modbus.port_missing/ack", None,
                      ("acknowledge_alarm", "modbus.port_missing")),
    # The console's page and reads (their answers: tests/web/test_console_api.py).
    "console": Call("GET", "/"),
    "static": Call("GET", "/static/console.js"),
    "bays": Call("GET", "/api/v1/bays"),
    "plates_recent": Call("GET", "/api/v1/plates/recent?limit=5"),
    "sync": Call("GET", "/api/v1/sync"),
    "report_today": Call("GET", "/api/v1/report/today"),
    # Pay on foot (its answers: tests/web/test_pay.py).
    "pay_fee": Call("GET", "/api/v1/pay/fee?plate=AB123CD"),
    "pay_payment": Call("POST", "/api/v1/pay/payments", {
        "session": "s-1", "amountMinor": 450, "currency": "EUR", "method": "card",
        "reference": "r-1"}),
}
PUBLIC = [r.name for r in ROUTES if r.allow is None]
GUARDED = [r.name for r in ROUTES if r.allow is not None]
RESTRICTED = [r.name for r in ROUTES if r.allow in ("read", "act")]


async def call(client: aiohttp.ClientSession, name: str, headers: dict[str, str] | None = None
               ) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Make the route's call; (status, JSON or text body, response). A stream's body is its
    first event."""
    spec = CALLS[name]
    async with client.request(spec.method, spec.path, json=spec.body,
                              headers=headers or {}) as response:
        if response.content_type == "text/event-stream":
            first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
            return response.status, first.decode(), response
        if response.content_type == "application/json":
            return response.status, await response.json(), response
        return response.status, await response.text(), response


def actions(lot: FakeLot) -> list[tuple[Any, ...]]:
    return [c for c in lot.calls if c[0] != "status"]


def test_every_route_is_tested() -> None:
    assert set(CALLS) == set(BY_NAME)


@pytest.mark.parametrize("name", PUBLIC)
async def test_a_public_route_answers_anyone(client: aiohttp.ClientSession, name: str) -> None:
    status, _, _ = await call(client, name)
    assert status == 200


@pytest.mark.parametrize("name", GUARDED)
async def test_a_guarded_route_wants_credentials(client: aiohttp.ClientSession, lot: FakeLot,
                                                 name: str) -> None:
    status, body, response = await call(client, name)
    assert status == 401
    assert body["error"]["code"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert actions(lot) == []


@pytest.mark.parametrize("role_account", ["view", "pay"])
@pytest.mark.parametrize("name", RESTRICTED)
async def test_a_viewer_or_device_may_not_read_more_or_act(
        client: aiohttp.ClientSession, lot: FakeLot, name: str, role_account: str) -> None:
    status, body, _ = await call(client, name, bearer(role_account))
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert actions(lot) == []


@pytest.mark.parametrize("name", GUARDED)
async def test_the_right_role_gets_its_answer(client: aiohttp.ClientSession, lot: FakeLot,
                                              name: str) -> None:
    route = BY_NAME[name]
    account = next(a for a in ("view", "pay", "tech")  # the least that may
                   if route.allow in GRANTS[ROLES[a]])
    status, body, _ = await call(client, name, bearer(account))
    assert status == 200, body
    spec = CALLS[name]
    if spec.effect is not None:
        assert actions(lot) == [(*spec.effect, f"http:{account}")]  # audited as the account


async def test_every_role_reads_availability(client: aiohttp.ClientSession) -> None:
    for account in TOKENS:
        status, body, _ = await call(client, "availability", bearer(account))
        assert (status, body["filter"]) == (200, {"floor": "0"})


# --- what the reads answer ---------------------------------------------------------------------


async def test_availability_filters_agree_with_the_whole_lot(
        client: aiohttp.ClientSession) -> None:
    headers = bearer("view")
    async with client.get("/api/v1/availability", headers=headers) as response:
        whole = await response.json()
    for floor, counts in whole["floors"].items():
        async with client.get("/api/v1/availability", params={"floor": floor},
                              headers=headers) as response:
            assert (await response.json())["lot"] == counts
    async with client.get("/api/v1/availability", params={"floor": "1", "type": "regular"},
                          headers=headers) as response:
        narrowed = await response.json()
    assert narrowed["filter"] == {"floor": "1", "bayType": "regular"}
    assert narrowed["lot"]["total"] == 4


@pytest.mark.parametrize(("query", "status", "message"), [
    ({"type": "truck"}, 400, "type must be one of"),
    ({"colour": "red"}, 400, "unknown parameter 'colour'"),
    ({"floor": "9"}, 404, r"no bay where floor=9 \(the lot has floor: 0, 1;"),
])
async def test_availability_says_what_is_wrong_with_a_filter(
        client: aiohttp.ClientSession, query: dict[str, str], status: int, message: str
) -> None:
    async with client.get("/api/v1/availability", params=query,
                          headers=bearer("view")) as response:
        assert response.status == status
        assert re.search(message, (await response.json())["error"]["message"])


async def test_an_anonymous_viewer_reads_availability_and_nothing_else(
        lot: FakeLot, feed: Any) -> None:
    async with (serving(lot, feed, http_config(anonymous_viewer=True)) as server,
                aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as client):
        assert (await call(client, "availability"))[0] == 200
        assert (await call(client, "availability_stream"))[0] == 200
        status, body, _ = await call(client, "session")
        assert (status, body) == (200, {"account": None, "role": "viewer"})
        assert (await call(client, "lanes"))[0] == 403
        assert (await call(client, "gate_open"))[0] == 403
    assert actions(lot) == []


async def test_events_come_a_bounded_page_at_a_time(client: aiohttp.ClientSession) -> None:
    headers = bearer("tech")
    async with client.get("/api/v1/events", params={"after": "1", "limit": "1"},
                          headers=headers) as response:
        page = await response.json()
    assert ([e["seq"] for e in page["events"]], page["next"], page["more"]) == (
        [2], 2, True)
    async with client.get("/api/v1/events", params={"after": "2"}, headers=headers) as response:
        page = await response.json()
    assert ([e["seq"] for e in page["events"]], page["next"], page["more"]) == (
        [3], 3, False)
    for bad in ({"limit": "0"}, {"limit": "501"}, {"after": "-1"}, {"after": "x"}):
        async with client.get("/api/v1/events", params=bad, headers=headers) as response:
            assert response.status == 400, bad


async def test_only_open_sessions_are_served(client: aiohttp.ClientSession) -> None:
    async with client.get("/api/v1/sessions", headers=bearer("tech")) as response:
        assert (await response.json())["sessions"][0]["sessionId"] == "s-1"
    async with client.get("/api/v1/sessions", params={"state": "closed"},
                          headers=bearer("tech")) as response:
        assert response.status == 400


async def test_readiness_is_every_check(client: aiohttp.ClientSession, lot: FakeLot) -> None:
    lot.ready["lanes"] = False
    async with client.get("/readyz") as response:
        assert response.status == 503
        assert (await response.json())["checks"]["lanes"] is False


async def test_a_refused_action_says_why(client: aiohttp.ClientSession, lot: FakeLot) -> None:
    async with client.post("/api/v1/lanes/nowhere/open", json={"reason": "testing it"},
                           headers=bearer("tech")) as response:
        assert response.status == 409
        assert "no lane 'nowhere'" in (await response.json())["error"]["message"]
    assert actions(lot) == []


# --- browser sessions and CSRF ----------------------------------------------------------------


async def test_a_browser_session_needs_its_csrf_token_for_actions(
        client: aiohttp.ClientSession, lot: FakeLot) -> None:
    async with client.post("/api/v1/login", json={"user": "tech",
                                                   "password": PASSWORDS["tech"]}) as response:
        assert response.status == 200
        login = await response.json()
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    assert login["role"] == "technician"
    async with client.get("/api/v1/lanes") as response:  # the cookie alone reads
        assert response.status == 200
    body = {"reason": "stuck ticket"}
    async with client.post("/api/v1/lanes/entry/open", json=body) as response:
        assert response.status == 403
        assert "X-CSRF-Token" in (await response.json())["error"]["message"]
    for forged in ("forged", "f\u00f6rged"):
        async with client.post("/api/v1/lanes/entry/open", json=body,
                               headers={"X-CSRF-Token": forged}) as response:
            assert response.status == 403
    assert actions(lot) == []
    async with client.post("/api/v1/lanes/entry/open", json=body,
                           headers={"X-CSRF-Token": login["csrfToken"]}) as response:
        assert response.status == 200
    assert actions(lot) == [("open_gate", "entry", "stuck ticket", "http:tech")]
    async with client.get("/api/v1/session") as response:
        assert (await response.json())["csrfToken"] == login["csrfToken"]
    async with client.post("/api/v1/logout") as response:
        assert response.status == 200
    async with client.get("/api/v1/lanes") as response:
        assert response.status == 401


async def test_a_wrong_password_or_unknown_account_is_refused_alike(
        client: aiohttp.ClientSession) -> None:
    answers = []
    for user, password in (("tech", "not-the-password"), ("nobody", PASSWORDS["tech"]),
                           ("pay", "anything-at-all")):  # pay has a token, no password
        async with client.post("/api/v1/login",
                               json={"user": user, "password": password}) as response:
            answers.append((response.status, await response.json(),
                            "Set-Cookie" in response.headers))
    assert all(a == answers[0] for a in answers)
    assert answers[0][0] == 401
    assert not answers[0][2]


async def test_failed_logins_are_limited(lot: FakeLot, feed: Any) -> None:
    config = http_config(login_failures_per_min=3)
    async with (serving(lot, feed, config) as server,
                aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as client):
        for _ in range(3):
            async with client.post("/api/v1/login",
                                   json={"user": "tech", "password": "guess"}) as response:
                assert response.status == 401
        # Now even the right password waits: guessing on is pointless.
        async with client.post("/api/v1/login", json={"user": "tech",
                                                      "password": PASSWORDS["tech"]}) as response:
            assert response.status == 429
            assert 1 <= int(response.headers["Retry-After"]) <= 60
        # Bad tokens from the same address count too, and are refused the same way.
        async with client.get("/api/v1/lanes",
                              headers={"Authorization": "Bearer tech.guessed"}) as response:
            assert response.status == 429


async def test_a_bad_token_is_refused(client: aiohttp.ClientSession) -> None:
    for header in ("Bearer tech.wrong-secret", "Bearer no-dot", "Basic dGVjaDp4",
                   f"Bearer {TOKENS['tech']}x"):
        async with client.get("/api/v1/lanes", headers={"Authorization": header}) as response:
            assert response.status == 401, header


# --- TLS --------------------------------------------------------------------------------------


async def test_under_tls_the_session_cookie_is_secure(lot: FakeLot, feed: Any,
                                                      tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    config = http_config(tls={"cert_file": str(tmp_path / "server.pem"),
                              "key_file": str(tmp_path / "server.pem")})
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with (serving(lot, feed, config) as server,
                aiohttp.ClientSession(f"https://127.0.0.1:{server.port}") as client):
        async with client.post("/api/v1/login", ssl=client_context, json={
                "user": "tech", "password": PASSWORDS["tech"]}) as response:
            assert response.status == 200
            assert "Secure" in response.headers["Set-Cookie"]
        async with client.get("/api/v1/lanes", ssl=client_context,
                              headers=bearer("tech")) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # no plain-text fallback
            await client.get("/healthz")


async def test_unreadable_tls_files_fail_the_server_with_their_names(
        lot: FakeLot, feed: Any, tmp_path: Path) -> None:
    from gateway.web.server import HttpTlsError

    config = http_config(tls={"cert_file": str(tmp_path / "none.pem"),
                              "key_file": str(tmp_path / "none.pem")})
    with pytest.raises(HttpTlsError, match=r"none\.pem"):
        await WebServer(lot, config, feed).run()


# --- bounds -----------------------------------------------------------------------------------


async def test_bodies_are_bounded_and_checked(lot: FakeLot, feed: Any) -> None:
    async with (serving(lot, feed, http_config(max_body_bytes=1024)) as server,
                aiohttp.ClientSession(f"http://127.0.0.1:{server.port}",
                                      headers=bearer("tech")) as client):
        path = "/api/v1/lanes/entry/open"
        async with client.post(path, json={"reason": "x" * 2000}) as response:
            assert response.status == 413
        async with client.post(path, data="reason=because") as response:
            assert response.status == 415
        async with client.post(path, data=b"{not json",
                               headers={"Content-Type": "application/json"}) as response:
            assert response.status == 400
        for body, problem in (({"reason": "ok"}, "reason"), ({"reason": "fine", "x": 1}, "x"),
                              ({"reason": 42}, "reason")):
            async with client.post(path, json=body) as response:
                answer = await response.json()
                assert (response.status, answer["error"]["code"]) == (400, "invalid_params")
                assert answer["error"]["message"].startswith(problem)
    assert actions(lot) == []


async def test_live_streams_are_bounded(lot: FakeLot, feed: Any) -> None:
    async with (serving(lot, feed, http_config(max_stream_clients=2)) as server,
                aiohttp.ClientSession(f"http://127.0.0.1:{server.port}",
                                      headers=bearer("view")) as client):
        first = await client.get("/api/v1/availability/stream")
        second = await client.get("/api/v1/availability/stream")
        async with client.get("/api/v1/availability/stream") as third:
            assert third.status == 503
            assert third.headers["Retry-After"]
        first.close()  # its place is free within a second, with nothing sent meanwhile
        for _ in range(30):
            await asyncio.sleep(0.1)
            async with client.get("/api/v1/availability/stream") as again:
                if again.status == 200:
                    break
        assert again.status == 200
        second.close()


# --- the live stream --------------------------------------------------------------------------


async def read_event(response: aiohttp.ClientResponse) -> dict[str, Any]:
    raw = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    fields = dict(line.split(": ", 1) for line in raw.decode().strip().split("\n"))
    assert fields["event"] == "availability"
    return {"id": int(fields["id"]), **json.loads(fields["data"])}


async def test_the_stream_sends_each_change_of_what_it_shows(
        client: aiohttp.ClientSession, lot: FakeLot, feed: Any) -> None:
    headers = bearer("view")
    async with (client.get("/api/v1/availability/stream", headers=headers) as whole,
                client.get("/api/v1/availability/stream", params={"floor": "0"},
                           headers=headers) as floor0):
        assert whole.headers["Content-Type"] == "text/event-stream"
        first = await read_event(whole)
        assert (await read_event(floor0))["lot"]["free"] == 2
        lot.places[3] = Place("1", "B", "regular", "occupied")  # floor 1
        feed.refresh()
        second = await read_event(whole)
        assert second["id"] > first["id"]
        assert second["floors"]["1"]["unknown"] == first["floors"]["1"]["unknown"] - 1
        lot.places[0] = Place("0", "A", "regular", "occupied")  # floor 0
        feed.refresh()
        shown = await read_event(floor0)  # floor 1's change was not sent to it
        assert shown["lot"]["free"] == 1
        assert (await read_event(whole))["lot"]["free"] == second["lot"]["free"] - 1


# --- logs --------------------------------------------------------------------------------------


async def test_no_secret_reaches_the_log(client: aiohttp.ClientSession,
                                         log_stream: Any) -> None:
    async with client.post("/api/v1/login", json={"user": "tech",
                                                  "password": PASSWORDS["tech"]}) as response:
        login = await response.json()
        session_cookie = response.cookies["pgw_session"].value
    async with client.post("/api/v1/login", json={"user": "tech",
                                                  "password": "Wrong-Secret-9"}) as response:
        assert response.status == 401
    async with client.post("/api/v1/lot/state", json={"state": "closed"},
                           headers={"X-CSRF-Token": login["csrfToken"]}) as response:
        assert response.status == 200
    for token in (TOKENS["tech"], "tech.Not-A-Real-Token"):
        async with client.get("/api/v1/lanes",
                              headers={"Authorization": f"Bearer {token}"}) as response:
            pass
    logged = log_stream.getvalue()
    assert "http.login" in logged
    assert "http.login_failed" in logged
    assert "http.token_refused" in logged
    assert "http.action" in logged
    for secret in (PASSWORDS["tech"], "Wrong-Secret-9", TOKENS["tech"], "Not-A-Real-Token",
                   session_cookie, login["csrfToken"]):
        assert secret not in logged
