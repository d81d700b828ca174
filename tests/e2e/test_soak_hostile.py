"""A soak: 2,000 hostile MQTT messages against the whole daemon, over a real mosquitto.

Garbage, forged and replayed commands, commands with hostile reply topics, config documents
nested deep, with huge or mistyped versions, oversized payloads and unknown kinds: the daemon
must not lose a part, must audit or count every message, must still obey a signed command
afterwards, and must not grow without bound.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gateway.config import Settings
from gateway.sync.commands import signed_command
from gateway.sync.mqtt import EventClient
from tests.e2e.test_app import running, settings  # noqa: F401 (the fixture)
from tests.sync.mosquitto import Mosquitto, broker  # noqa: F401 (the fixture)
from tests.sync.test_sync import journaled

pytestmark = pytest.mark.slow

KEY = "k" * 40
MESSAGES = 2000


def _command(name: str, args: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    return {"commandId": f"cmd-{uuid.uuid4().hex[:8]}", "command": name, "args": args or {},
            "issuedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "nonce": uuid.uuid4().hex, **overrides}


def _hostile(rnd: random.Random, base: str) -> list[tuple[str, bytes]]:
    """(topic, payload) of every kind of junk, shuffled, `MESSAGES` in all."""
    commands, config = f"{base}/commands", f"{base}/config"
    key = KEY.encode()
    replayed = signed_command(key, _command("request_status"))
    out: list[tuple[str, bytes]] = []
    for i in range(MESSAGES):
        kind = i % 10
        if kind == 0:
            out.append((commands, bytes(rnd.randrange(256) for _ in range(rnd.randrange(200)))))
        elif kind == 1:  # signed with the wrong key
            out.append((commands, signed_command(b"x" * 40, _command("open_gate", {
                "laneId": "exit", "reason": "let me out"}))))
        elif kind == 2:  # the same signed command again and again
            out.append((commands, replayed))
        elif kind == 3 and i % 100 == 3:  # signed (a backend's bug), a reply topic outside
            # replies/: a few, since signed commands queue apart from junk and only a holder
            # of the key can make them
            out.append((commands, signed_command(key, _command(
                "request_status", replyTo=rnd.choice(["#", "+/x", f"{base}/repliesX/e",
                                                      "a\x00b", "", "/"])))))
        elif kind == 4:
            depth = rnd.randrange(40, 3000)
            out.append((f"{config}/permits", b'{"version": 5, "data": ' + b"[" * depth
                        + b"]" * depth + b"}"))
        elif kind == 5:
            version = rnd.choice([2**63, 2**53, -1, True, "7", 7.5, None])
            out.append((f"{config}/deny_list", json.dumps(
                {"version": version, "data": [{"plate": "AB1", "reason": "x"}]}).encode()))
        elif kind == 6:
            out.append((f"{config}/{rnd.choice(['nope', 'x' * 60, 'tariffs '])}",
                        b'{"version": 1, "data": {}}'))
        elif kind == 7:
            out.append((f"{config}/tariffs", b"{" * rnd.randrange(1, 10) + b"garbage"))
        elif kind == 8:  # big
            out.append((commands, b"A" * rnd.randrange(20_000, 70_000)))
        else:  # a well-formed command nobody signed
            out.append((commands, json.dumps(_command("set_lot_state",
                                                      {"state": "closed"})).encode()))
    rnd.shuffle(out)
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _wait(predicate: Any, timeout_s: float = 120.0, show: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out: {show() if show else ''}"
        await asyncio.sleep(0.1)


async def test_two_thousand_hostile_messages_and_a_signed_command_still_works(
        settings: Settings, tmp_path: Path, broker: Mosquitto) -> None:  # noqa: F811
    sync = settings.sync.model_copy(update={
        "mqtt": settings.sync.mqtt.model_copy(update={"host": "127.0.0.1", "port": broker.port,
                                                      "tls": None, "username": None}),
        "command_hmac_key": SecretStr(KEY), "reconnect_min_s": 0.05, "reconnect_max_s": 0.5})
    settings = settings.model_copy(update={"sync": sync})
    base = f"parking/v1/{settings.gateway.lot_id}/{settings.gateway.gateway_id}"
    journal = settings.journal.path
    rnd = random.Random(2000)
    async with running(settings, tmp_path, sync=True) as gateway:
        assert gateway.sync is not None
        await asyncio.wait_for(gateway.sync.connected_event.wait(), 30)
        rss_before = _rss_mb()
        messages = _hostile(rnd, base)
        async with EventClient("127.0.0.1", broker.port, client_id="attacker",
                               will_topic="attacker/gone") as attacker:
            for start in range(0, len(messages), 100):
                await asyncio.gather(*(attacker.publish_nowait(topic, payload)
                                       for topic, payload in messages[start:start + 100]))
            good = _command("set_lot_state", {"state": "full"})
            await attacker.publish_nowait(f"{base}/commands", signed_command(KEY.encode(), good))

        def accounted(stats: Any) -> int:
            """Messages handled one by one (a command audited, a config applied, rejected or
            ignored, a message on no known topic) or dropped unread in the flood (counted)."""
            audited = [e for e in journaled(journal, "command.executed")
                       if e["outcome"] != "dropped"]
            return (len(audited) + stats.configs_applied + stats.configs_rejected
                    + stats.configs_ignored + stats.bad_messages + stats.inbound_dropped)

        deadline = time.monotonic() + 90
        while accounted(stats := await gateway.sync.stats()) < MESSAGES + 1:
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.2)
        await _wait(lambda: gateway.lot_state() == "full", 30, lambda: [
            e for e in journaled(journal, "command.executed")
            if e.get("commandId") == good["commandId"]])
        rss_after = _rss_mb()
        assert all(part.restarts == 0 for part in gateway.parts.values()), {
            name: part.last_error for name, part in gateway.parts.items()}
        assert gateway.alive()
    executed = journaled(journal, "command.executed")
    outcome = {e["commandId"]: e["outcome"] for e in executed if "commandId" in e}
    assert outcome[good["commandId"]] == "accepted"
    assert accounted(stats) == MESSAGES + 1
    # What the flood dropped unread is audited in aggregate, not one event per message.
    dropped = [e for e in executed if e["outcome"] == "dropped"]
    assert sum(e["details"]["count"] for e in dropped) == stats.inbound_dropped
    assert len(dropped) < 20
    assert stats.configs_applied == 0
    assert rss_after - rss_before < 100, (rss_before, rss_after)
