"""Fuzzing the control socket's protocol: whatever a client sends, it gets a JSON answer (an
error saying why) or is cut off, the daemon's lot is never called with bad values, and the
server serves the next client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.runtime.control import (
    MAX_REQUEST_BYTES,
    METHODS,
    ControlClient,
    ControlServer,
    _ClientFault,
    _parse,
    _validate,
)
from tests.fuzz import FUZZ
from tests.runtime.test_control import FakeLot

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20)
FIELDS = st.sampled_from(["lane", "mode", "state", "bay", "in_service", "reason", "limit",
                          "alarm_id", "x"])


@FUZZ
@given(st.binary(max_size=300))
def test_any_line_parses_or_is_a_client_fault(line: bytes) -> None:
    with contextlib.suppress(_ClientFault):  # anything else fails the test
        _parse(line)


@FUZZ
@given(method=st.sampled_from(sorted(METHODS)),
       params=st.dictionaries(FIELDS, JSON, max_size=5))
def test_any_params_validate_or_are_a_client_fault(method: str, params: dict[str, Any]) -> None:
    with contextlib.suppress(_ClientFault):
        _validate(METHODS[method].params, params)


def _hostile_lines(seed: int, count: int) -> list[bytes]:
    rnd = random.Random(seed)
    methods = [*sorted(METHODS), "sensors.watch", "nope", "", "status\n"]
    lines: list[bytes] = []
    for _ in range(count):
        kind = rnd.randrange(6)
        if kind == 0:  # bytes
            line = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
        elif kind == 1:  # deep nesting
            depth = rnd.randrange(1, 5000)
            line = b"[" * depth + b"]" * depth
        elif kind == 2:  # a request with wrong params
            params = {rnd.choice(["lane", "mode", "state", "bay", "limit", "alarm_id"]):
                      rnd.choice([None, -1, 10**30, "x" * rnd.randrange(300), [], {}, 1.5, True])}
            line = json.dumps({"id": rnd.randrange(10**6), "method": rnd.choice(methods),
                               "params": params}).encode()
        elif kind == 3:  # not an object
            line = json.dumps(rnd.choice([[], 1, "status", None, 1e308])).encode()
        elif kind == 4:  # invalid UTF-8 inside JSON
            line = b'{"method": "st\xff\xfeatus"}'
        else:  # too long
            line = b'{"method": "status", "x": "' + b"a" * (MAX_REQUEST_BYTES + 10) + b'"}'
        lines.append(line.replace(b"\n", b" ") + b"\n")
    return lines


async def test_hostile_lines_get_errors_and_the_server_serves_on(tmp_path: Path) -> None:
    from gateway.config import ControlConfig

    lot = FakeLot()
    path = tmp_path / "control.sock"
    server = ControlServer(lot, ControlConfig(socket_path=path, group="no-such-group-xyz"),
                           write_timeout_s=0.5)
    await server.start()
    try:
        answered = cut_off = 0
        for line in _hostile_lines(seed=16, count=150):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=2**20)
            writer.write(line)
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            if not reply:
                cut_off += 1
                continue
            answered += 1
            body = json.loads(reply)
            assert "id" in body
            assert "error" in body or "result" in body
        assert answered + cut_off == 150
        assert answered >= 145
        assert all(call[0] != "set_lot_state" or call[1] in ("open", "full", "closed")
                   for call in lot.calls)
        assert await ControlClient(path).call("status") == await lot.status()
        assert server.counters["errors"] > 0
    finally:
        await server.close()
