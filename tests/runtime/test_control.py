"""The control socket: a real Unix socket, the real client, a fake lot behind the server."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import cli
from gateway.cli import service as service_cli
from gateway.config import ControlConfig
from gateway.core.operations import LaneMode, LotState, OperationRefused
from gateway.runtime import control
from gateway.runtime.control import (
    MAX_REQUEST_BYTES,
    ControlClient,
    ControlError,
    ControlPermissionDenied,
    ControlServer,
    ControlSetupError,
    DaemonNotRunning,
    Peer,
    RemoteError,
    permitted,
)

ME = f"cli:{pwd.getpwuid(os.geteuid()).pw_name}"


class FakeLot:
    """A LotControl that records what it was asked, as the daemon's app would audit it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.lanes = {"entry-1", "exit-1"}
        self.readings: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.watch_closed = asyncio.Event()
        self.fail_status = False

    async def status(self) -> dict[str, Any]:
        if self.fail_status:
            raise RuntimeError("bug in the lot")
        return {"lot": {"state": "open"}, "lanes": [{"id": lane} for lane in sorted(self.lanes)]}

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

    async def set_level_count(self, level: str, count: int, *, actor: str) -> dict[str, Any]:
        self.calls.append(("set_level_count", level, count, actor))
        return {"level": level, "count": count, "previous": 7, "error": 7 - count}

    async def level_counts(self) -> dict[str, Any]:
        return {"levels": [{"levelId": "2", "count": 7}]}

    async def alarms(self) -> list[dict[str, Any]]:
        return [{"alarmId": "bus.port:rs485", "severity": "critical"}]

    async def acknowledge_alarm(self, alarm_id: str, *, actor: str) -> dict[str, Any]:
        if alarm_id != "bus.port:rs485":
            raise OperationRefused(f"no active alarm {alarm_id!r}")
        self.calls.append(("acknowledge_alarm", alarm_id, actor))
        return {"alarmId": alarm_id}

    async def open_sessions(self) -> list[dict[str, Any]]:
        return [{"session_id": "s-1", "plate": "AB123"}]

    async def recent_plates(self, limit: int = 50) -> list[dict[str, Any]]:
        return [{"plate": f"P{i}"} for i in range(limit)]

    async def purge_plate(self, plate: str, *, actor: str) -> dict[str, Any]:
        self.calls.append(("purge_plate", plate, actor))
        return {"sessions": 2, "payments": 1}

    async def export_plate(self, plate: str) -> dict[str, Any]:
        return {"plate": plate, "sessions": [{"session_id": "s-1"}]}

    async def reset_passback(self, plate: str, *, actor: str) -> dict[str, Any]:
        if plate != "AB123CD":
            raise OperationRefused(f"{plate!r} is not inside: no anti-passback to clear")
        self.calls.append(("reset_passback", plate, actor))
        return {"sessionId": "s-1", "enteredAt": "2026-03-02T08:00:00.000000Z",
                "entryLane": "entry-1"}

    async def watch_sensors(self) -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                reading = await self.readings.get()
                if reading.get("end"):
                    return
                yield reading
        finally:
            self.watch_closed.set()

    def _lane(self, lane_id: str) -> None:
        if lane_id not in self.lanes:
            raise OperationRefused(f"no lane {lane_id!r}")


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "control.sock"


@pytest.fixture
def lot() -> FakeLot:
    return FakeLot()


@pytest.fixture
async def server(lot: FakeLot, sock_path: Path) -> AsyncIterator[ControlServer]:
    srv = ControlServer(lot, ControlConfig(socket_path=sock_path, group="no-such-group-xyz"),
                        write_timeout_s=0.5)
    await srv.start()
    yield srv
    await srv.close()


async def _raw(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path))


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    line: bytes) -> dict[str, Any]:
    writer.write(line)
    await writer.drain()
    return json.loads(await asyncio.wait_for(reader.readline(), 5))


async def test_status_round_trip(server, sock_path):
    result = await ControlClient(sock_path).call("status")
    assert result == {"lot": {"state": "open"}, "lanes": [{"id": "entry-1"}, {"id": "exit-1"}]}


async def test_changes_are_made_as_the_connecting_unix_user(server, sock_path, lot):
    client = ControlClient(sock_path)
    assert await client.call("gate.open", {"lane": "entry-1", "reason": "ticket jammed"}) is None
    await client.call("lane.mode", {"lane": "exit-1", "mode": "locked_open"})
    await client.call("lot.state", {"state": "full"})
    await client.call("bay.service", {"bay": "A-01", "in_service": False})
    assert lot.calls == [
        ("open_gate", "entry-1", "ticket jammed", ME),
        ("set_lane_mode", "exit-1", "locked_open", ME),
        ("set_lot_state", "full", ME),
        ("set_bay_service", "A-01", False, ME),
    ]


async def test_count_set_is_made_as_the_caller_and_count_show_reads(server, sock_path, lot):
    client = ControlClient(sock_path)
    assert await client.call("count.set", {"level": "2", "count": 5}) == {
        "level": "2", "count": 5, "previous": 7, "error": 2}
    assert lot.calls == [("set_level_count", "2", 5, ME)]
    assert (await client.call("count.show"))["levels"][0]["count"] == 7


async def test_reads(server, sock_path):
    client = ControlClient(sock_path)
    assert await client.call("sessions.open") == [{"session_id": "s-1", "plate": "AB123"}]
    assert len(await client.call("plates.recent", {"limit": 3})) == 3
    assert len(await client.call("plates.recent")) == 50


async def test_a_refusal_carries_the_lots_message(server, sock_path, lot):
    with pytest.raises(RemoteError) as caught:
        await ControlClient(sock_path).call("gate.open", {"lane": "lane-9", "reason": "test"})
    assert caught.value.code == "refused"
    assert str(caught.value) == "no lane 'lane-9'"
    assert lot.calls == []


@pytest.mark.parametrize(("method", "params", "where"), [
    ("lane.mode", {"lane": "entry-1", "mode": "sideways"}, "mode"),
    ("gate.open", {"lane": "entry-1"}, "reason"),
    ("gate.open", {"lane": "entry-1", "reason": "  "}, "reason"),  # an audit needs a reason
    ("bay.service", {"bay": "A-01", "in_service": "no"}, "in_service"),
    ("lot.state", {"state": "open", "extra": 1}, "extra"),
    ("plates.recent", {"limit": 0}, "limit"),
    ("count.set", {"level": "2", "count": -1}, "count"),
    ("count.set", {"level": "2", "count": "12"}, "count"),
])
async def test_invalid_params_are_named(server, sock_path, lot, method, params, where):
    with pytest.raises(RemoteError) as caught:
        await ControlClient(sock_path).call(method, params)
    assert caught.value.code == "invalid_params"
    assert where in str(caught.value)
    assert lot.calls == []


async def test_unknown_method_lists_the_known_ones(server, sock_path):
    with pytest.raises(RemoteError) as caught:
        await ControlClient(sock_path).call("gate.explode")
    assert caught.value.code == "unknown_method"
    assert "gate.open" in str(caught.value)


async def test_garbage_is_answered_and_the_connection_goes_on(server, sock_path):
    reader, writer = await _raw(sock_path)
    try:
        for junk in (b"not json\n", b"[1, 2]\n", b'{"id": 7}\n', b'{"method": "status",'
                     b' "params": [1]}\n', b"\xff\xfe\n"):
            answer = await _exchange(reader, writer, junk)
            assert answer["error"]["code"] == "bad_request", junk
        answer = await _exchange(reader, writer, b'{"id": 8, "method": "status"}\n')
        assert answer["id"] == 8
        assert answer["result"]["lot"] == {"state": "open"}
    finally:
        writer.close()
    assert server.counters["errors"] == 5


async def test_an_oversized_request_is_refused_and_others_are_served(server, sock_path):
    reader, writer = await _raw(sock_path)
    writer.write(b'{"id": 1, "method": "status", "params": {"x": "' + b"a" * MAX_REQUEST_BYTES
                 + b'"}}\n')
    await writer.drain()
    answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert answer["error"]["code"] == "too_large"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection is closed
    writer.close()
    assert await ControlClient(sock_path).call("status")


async def test_a_failure_inside_the_lot_is_an_internal_error_not_a_crash(server, sock_path, lot):
    lot.fail_status = True
    with pytest.raises(RemoteError) as caught:
        await ControlClient(sock_path).call("status")
    assert caught.value.code == "internal"
    assert "journalctl" in str(caught.value)
    lot.fail_status = False
    assert await ControlClient(sock_path).call("status")


async def test_an_idle_client_is_closed_and_blocks_no_one(lot, sock_path):
    async with ControlServer(lot, ControlConfig(socket_path=sock_path),
                             idle_timeout_s=0.2) as _:
        reader, writer = await _raw(sock_path)  # connects, says nothing
        assert await ControlClient(sock_path).call("status")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then dropped
        writer.close()


async def test_too_many_connections_are_turned_away(lot, sock_path):
    async with ControlServer(lot, ControlConfig(socket_path=sock_path), max_clients=1):
        reader, writer = await _raw(sock_path)
        await _exchange(reader, writer, b'{"id": 1, "method": "status"}\n')  # holds the slot
        with pytest.raises(RemoteError) as caught:
            await ControlClient(sock_path).call("status")
        assert caught.value.code == "busy"
        writer.close()


async def test_sensor_watch_streams_until_the_client_stops(server, sock_path, lot):
    client = ControlClient(sock_path)
    stream = client.stream("sensors.watch")
    await lot.readings.put({"bay_id": "A-01", "state": "occupied"})
    await lot.readings.put({"bay_id": "A-02", "state": "free"})
    first = await asyncio.wait_for(anext(stream), 5)
    second = await asyncio.wait_for(anext(stream), 5)
    assert [first["bay_id"], second["bay_id"]] == ["A-01", "A-02"]
    await stream.aclose()  # Ctrl-C in the CLI
    await asyncio.wait_for(lot.watch_closed.wait(), 5)  # the lot's iterator is released
    assert await client.call("status")


async def test_a_stream_the_lot_ends_ends_cleanly(server, sock_path, lot):
    await lot.readings.put({"bay_id": "A-01", "state": "occupied"})
    await lot.readings.put({"end": True})
    events = [e async for e in ControlClient(sock_path).stream("sensors.watch")]
    assert events == [{"bay_id": "A-01", "state": "occupied"}]


async def test_a_watcher_that_stops_reading_is_dropped(server, sock_path, lot):
    _reader, writer = await _raw(sock_path)
    writer.write(b'{"id": 1, "method": "sensors.watch"}\n')
    await writer.drain()
    big = {"bay_id": "A-01", "state": "occupied", "padding": "x" * 65536}
    for _ in range(200):  # more than the socket buffers hold: the server's writes block
        lot.readings.put_nowait(big)
    await asyncio.wait_for(lot.watch_closed.wait(), 10)  # write timeout: dropped, released
    assert server.counters["dropped"] == 1
    assert await ControlClient(sock_path).call("status")  # everyone else is still served
    writer.close()


async def test_socket_is_0660(server, sock_path):
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to another group")
async def test_socket_belongs_to_the_control_group(lot, sock_path):
    group = next(g for g in grp.getgrall() if g.gr_gid != 0)
    async with ControlServer(lot, ControlConfig(socket_path=sock_path, group=group.gr_name)):
        assert os.stat(sock_path).st_gid == group.gr_gid


async def test_close_removes_the_socket_and_the_client_says_not_running(lot, sock_path):
    async with ControlServer(lot, ControlConfig(socket_path=sock_path)):
        assert sock_path.exists()
    assert not sock_path.exists()
    with pytest.raises(DaemonNotRunning, match="not running"):
        await ControlClient(sock_path).call("status")


async def test_a_dead_daemons_socket_says_not_running_and_is_replaced(lot, sock_path):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))  # bound, never listening: what a killed daemon leaves
    dead.close()
    with pytest.raises(DaemonNotRunning, match="nothing answers"):
        await ControlClient(sock_path).call("status")
    async with ControlServer(lot, ControlConfig(socket_path=sock_path)):
        assert await ControlClient(sock_path).call("status")


async def test_a_second_daemon_does_not_steal_the_socket(server, lot, sock_path):
    with pytest.raises(ControlSetupError, match="another gateway daemon"):
        await ControlServer(lot, ControlConfig(socket_path=sock_path)).start()
    assert await ControlClient(sock_path).call("status")


async def test_a_file_in_the_way_is_not_removed(lot, sock_path):
    sock_path.write_text("precious")
    with pytest.raises(ControlSetupError, match="not a socket"):
        await ControlServer(lot, ControlConfig(socket_path=sock_path)).start()
    assert sock_path.read_text() == "precious"


async def test_an_unusable_path_is_a_clear_setup_error(lot, tmp_path):
    with pytest.raises(ControlSetupError, match="cannot open the control socket"):
        await ControlServer(lot, ControlConfig(socket_path=tmp_path / "no" / "dir.sock")).start()


async def test_a_forbidden_peer_gets_a_permission_error(server, sock_path, lot, monkeypatch):
    monkeypatch.setattr(control, "permitted", lambda peer, group: False)
    with pytest.raises(ControlPermissionDenied, match="root, or as a member"):
        await ControlClient(sock_path).call("gate.open", {"lane": "entry-1", "reason": "hack"})
    assert lot.calls == []
    assert server.counters["refused"] == 1


def test_who_may_use_the_socket():
    euid = os.geteuid()
    assert permitted(Peer(1, 0, 0, "root"), None)  # root, always
    assert permitted(Peer(1, euid, 4242, None), None)  # the daemon's own user
    assert permitted(Peer(1, 4242, 5151, None), 5151)  # primary group is the control group
    assert not permitted(Peer(1, 4242, 4242, None), 5151)
    assert not permitted(Peer(1, 4242, 4242, None), None)


def test_membership_by_supplementary_group():
    # A real account and one of its groups, as /etc/group lists members.
    for group in grp.getgrall():
        for member in group.gr_mem:
            try:
                account = pwd.getpwnam(member)
            except KeyError:
                continue
            if account.pw_uid in (0, os.geteuid()) or account.pw_gid == group.gr_gid:
                continue
            peer = Peer(1, account.pw_uid, account.pw_gid, member)
            assert permitted(peer, group.gr_gid)
            return
    pytest.skip("no account with a supplementary group on this machine")


def test_actor_names_the_user_or_the_uid():
    assert Peer(1, 1000, 1000, "alice").actor == "cli:alice"
    assert Peer(1, 4242, 4242, None).actor == "cli:uid:4242"


async def test_stopping_the_server_ends_a_watch(lot, sock_path):
    server = ControlServer(lot, ControlConfig(socket_path=sock_path))
    await server.start()
    stream = ControlClient(sock_path).stream("sensors.watch")
    await lot.readings.put({"bay_id": "A-01", "state": "occupied"})
    assert await asyncio.wait_for(anext(stream), 5)
    await asyncio.wait_for(server.close(), 5)
    with pytest.raises(ControlError, match="closed the connection"):
        await asyncio.wait_for(anext(stream), 5)
    await asyncio.wait_for(lot.watch_closed.wait(), 5)


# --- the technician's commands against a running server ------------------------------------


STATUS = {
    "lotState": "open", "operatorState": "open", "openSessions": 3,
    "occupancy": {
        "total": {"free": 7, "occupied": 3, "unknown": 1, "outOfService": 1},
        "counted": {"capacity": 40, "occupied": 12},
        "byFloor": {"0": {"free": 4, "occupied": 2, "unknown": 1, "outOfService": 0},
                    "1": {"free": 3, "occupied": 1, "unknown": 0, "outOfService": 1}},
        "byZone": {"A": {"free": 7, "occupied": 3, "unknown": 1, "outOfService": 1}},
        "byType": {"ev": {"free": 1, "occupied": 1, "unknown": 0, "outOfService": 0}},
    },
    "lanes": [{"laneId": "entry-1", "direction": "entry", "mode": "auto", "state": "idle",
               "barrier": "down", "outOfOrder": False},
              {"laneId": "exit-1", "direction": "exit", "mode": "locked_closed",
               "state": "out_of_order", "barrier": "unknown", "outOfOrder": True}],
    "sync": {"transport": "mqtt", "connected": False, "backlog": 1234, "lag_s": 420.0,
             "last_error": "connection refused"},
    "alarms": [{"alarmId": "gate.fault:exit-1", "severity": "critical",
                "message": "barrier did not reach its limit", "component": "lane"}],
}


class DaemonLot(FakeLot):
    async def status(self) -> dict[str, Any]:
        return STATUS


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, DaemonLot, asyncio.AbstractEventLoop]]:
    """A control server on its own loop and thread, as the running daemon: the CLI runs its
    own event loop in the test's thread."""
    path = tmp_path / "daemon.sock"
    loop = asyncio.new_event_loop()
    started = threading.Event()
    lot = DaemonLot()
    server = ControlServer(lot, ControlConfig(socket_path=path))

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    thread = threading.Thread(target=serve, name="fake-daemon", daemon=True)
    thread.start()
    assert started.wait(10)
    yield path, lot, loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_cli_status_for_a_person(daemon):
    path, _, _ = daemon
    result = _run("status", "--socket", str(path))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "7 free, 3 occupied, 1 unknown, 1 out of service" in out
    assert ("offline (mqtt), 1,234 events to send, oldest 7 min, last error: connection"
            " refused") in out
    assert "OUT OF ORDER" in out
    assert "locked_closed" in out
    assert "bays with sensors, by floor" in out
    assert "40, 12 taken by the count" in out
    assert "bays with sensors, by type" in out
    assert "gate.fault:exit-1" in out


@pytest.mark.parametrize(("lot_state", "operator", "shown"), [
    ("open", "open", "open"),
    ("full", "open", "full (automatic: free bays at or below lot.full_when_free_at_most)"),
    ("closed", "closed", "closed (set to closed by a technician or the backend)"),
])
def test_status_says_why_the_lot_is_in_its_state(lot_state, operator, shown):
    sections = service_cli.status_sections({"lotState": lot_state, "operatorState": operator})
    assert sections[0].rows[0] == ("state", shown)


def test_status_shows_the_counted_levels_and_a_drift() -> None:
    sections = service_cli.status_sections({"lotState": "open", "levels": [
        {"levelId": "3", "zone": "roof", "count": 31, "capacity": 40, "free": 9,
         "drift": False, "ramps": []},
        {"levelId": "4", "zone": "", "count": 12, "capacity": 20, "free": 8, "drift": True,
         "ramps": []}]})
    (levels,) = [s for s in sections if s.title == "counted levels"]
    assert levels.rows == [("3", "roof", "31", "40", "9", "ok"),
                           ("4", "", "12", "20", "8", "DRIFT: recount")]


def test_cli_status_json_is_the_daemons_answer(daemon):
    path, _, _ = daemon
    result = _run("status", "--socket", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**STATUS, "verdict": "failing"}


def test_cli_socket_from_the_environment(daemon, monkeypatch):
    path, _, _ = daemon
    monkeypatch.setenv("PARKING_GATEWAY_SOCKET", str(path))
    assert _run("status", "--json").exit_code == 0


def test_cli_changes(daemon):
    path, lot, _ = daemon
    sock = ("--socket", str(path))
    assert _run("gate", "open", "entry-1", "--reason", "ticket jammed", *sock).exit_code == 0
    assert _run("lane", "mode", "exit-1", "open", *sock).exit_code == 0
    assert _run("lane", "mode", "exit-1", "closed", *sock).exit_code == 0
    assert _run("lane", "mode", "exit-1", "auto", *sock).exit_code == 0
    assert _run("lot", "state", "full", *sock).exit_code == 0
    result = _run("bay", "service", "A-01", "off", *sock, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"ok": True, "bay": "A-01", "in_service": False}
    assert lot.calls == [
        ("open_gate", "entry-1", "ticket jammed", ME),
        ("set_lane_mode", "exit-1", "locked_open", ME),
        ("set_lane_mode", "exit-1", "locked_closed", ME),
        ("set_lane_mode", "exit-1", "auto", ME),
        ("set_lot_state", "full", ME),
        ("set_bay_service", "A-01", False, ME),
    ]


def test_cli_refusal_is_exit_1_with_the_lots_message(daemon):
    path, lot, _ = daemon
    result = _run("gate", "open", "lane-9", "--reason", "testing", "--socket", str(path))
    assert result.exit_code == 1
    assert "no lane 'lane-9'" in result.stderr
    assert lot.calls == []


@pytest.mark.parametrize("args", [
    ("gate", "open", "entry-1"),  # no reason
    ("gate", "open", "entry-1", "--reason", " x "),  # no real reason
    ("lane", "mode", "entry-1", "sideways"),
    ("lot", "state", "half"),
    ("bay", "service", "B" * 64, "on"),  # the daemon's own check
])
def test_cli_bad_input_is_exit_2(daemon, args):
    path, lot, _ = daemon
    result = _run(*args, "--socket", str(path))
    assert result.exit_code == 2, result.output
    assert lot.calls == []


def test_cli_reads(daemon):
    path, _, _ = daemon
    result = _run("sessions", "open", "--socket", str(path))
    assert result.exit_code == 0
    assert "AB123" in result.stdout
    result = _run("plates", "recent", "-n", "2", "--socket", str(path), "--json")
    assert json.loads(result.stdout) == [{"plate": "P0"}, {"plate": "P1"}]


def test_cli_without_a_daemon_says_it_is_not_running(tmp_path):
    result = _run("status", "--socket", str(tmp_path / "none.sock"))
    assert result.exit_code == 1
    assert "daemon is not running" in result.stderr
    assert "systemctl status parking-gateway" in result.stderr


def test_cli_sensor_watch_prints_lines(daemon):
    path, lot, loop = daemon
    for reading in ({"bayId": "A-01", "state": "occupied", "previous": "free", "healthy": True,
                     "at": "2026-03-02T08:00:01.000000Z", "raw": 42},
                    {"bayId": "A-02", "state": "unknown", "previous": "free", "healthy": False,
                     "fault": "no echo", "at": "2026-03-02T08:00:02.000000Z"},
                    {"end": True}):
        loop.call_soon_threadsafe(lot.readings.put_nowait, reading)
    result = _run("sensors", "watch", "--socket", str(path))
    assert result.stdout.splitlines() == [
        "2026-03-02 08:00:01+00:00  A-01  free -> occupied  healthy  raw=42",
        "2026-03-02 08:00:02+00:00  A-02  free -> unknown  FAULT no echo",
    ]
    assert result.exit_code == 1  # the daemon ended the watch: it is stopping
    assert "ended the watch" in result.stderr


def test_cli_sensor_watch_json_lines(daemon):
    path, lot, loop = daemon
    for reading in ({"bayId": "A-01", "state": "occupied"}, {"end": True}):
        loop.call_soon_threadsafe(lot.readings.put_nowait, reading)
    result = _run("sensors", "watch", "--socket", str(path), "--json")
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"bayId": "A-01", "state": "occupied"}]


def test_cli_sensor_watch_ends_quietly_on_ctrl_c(daemon, monkeypatch):
    path, _, _ = daemon

    async def interrupted(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("gateway.cli.sensors._watch", interrupted)
    result = _run("sensors", "watch", "--socket", str(path))
    assert result.exit_code == 0
    assert result.stderr == ""


NOBODY_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
try:
    s.sendall(b'{"id": 1, "method": "lot.state", "params": {"state": "closed"}}\\n')
except BrokenPipeError:
    pass  # turned away before the request was read; the answer says why
print(s.makefile().readline(), end="")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_a_stranger_is_refused_even_through_a_wrong_socket_mode(lot):
    """The kernel's word on the peer (SO_PEERCRED), not the file mode, decides at last."""
    try:
        stranger = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if python is None:
        pytest.skip("no system python3 for the stranger")
    directory = Path(tempfile.mkdtemp(prefix="pg-ctl-"))  # tmp_path's parents are 0700
    try:
        directory.chmod(0o755)
        path = directory / "control.sock"
        server = ControlServer(lot, ControlConfig(socket_path=path, group="no-such-group-xyz"))
        async with server:
            path.chmod(0o666)  # as if someone loosened it by hand
            done = await asyncio.create_subprocess_exec(
                python, "-c", NOBODY_CLIENT, str(path), user=stranger.pw_uid,
                group=stranger.pw_gid, extra_groups=[],
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(done.communicate(), 30)
        assert done.returncode == 0, err.decode()
        assert json.loads(out)["error"]["code"] == "forbidden"
        assert lot.calls == []
        assert server.counters["refused"] == 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_cli_alarms_list_and_ack(daemon):
    path, lot, _ = daemon
    sock = ("--socket", str(path))
    listed = _run("alarms", "list", *sock)
    assert listed.exit_code == 0
    assert "bus.port:rs485" in listed.stdout
    assert "1 active alarms" in listed.stdout
    result = _run("alarms", "ack", "bus.port:rs485", *sock, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"ok": True, "alarm": "bus.port:rs485"}
    assert lot.calls == [("acknowledge_alarm", "bus.port:rs485", ME)]
    refused = _run("alarms", "ack", "camera.stale:exit", *sock)
    assert refused.exit_code == 1
    assert "no active alarm 'camera.stale:exit'" in refused.stderr


def test_cli_privacy_purge_and_export_ask_the_daemon(daemon):
    path, lot, _ = daemon
    purged = _run("privacy", "purge", "--plate", "AB 123", "--socket", str(path))
    assert purged.exit_code == 0, purged.output
    assert purged.output == "removed: sessions 2, payments 1\n"
    assert lot.calls == [("purge_plate", "AB 123", ME)]
    exported = _run("privacy", "export", "--plate", "AB123", "--socket", str(path))
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output) == {"plate": "AB123", "sessions": [{"session_id": "s-1"}]}
    empty = _run("privacy", "purge", "--plate", "", "--socket", str(path))
    assert empty.exit_code == 2  # refused by the control socket's params
