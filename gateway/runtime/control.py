"""The control socket: how the technician CLI talks to the running daemon.

A Unix stream socket (default /run/parking-gateway/control.sock, mode 0660, group `parking`
when it exists), so only root and that group's members can reach it; the kernel tells the
server who connected (SO_PEERCRED), and every change is made, and audited, as
`cli:<unix user>`.

The protocol is line-delimited JSON, one request and one response per line:

    -> {"id": 1, "method": "gate.open", "params": {"lane": "entry-north", "reason": "..."}}
    <- {"id": 1, "result": null}
    <- {"id": 1, "error": {"code": "refused", "message": "no lane 'x'"}}

A streaming method (`sensors.watch`) answers with `{"id": 1, "event": {...}}` lines until the
client closes the connection, then (if the stream itself ends) a final `result`; the daemon's
first event is the state of every sensor (`"kind": "snapshot"`), then its changes. Error codes:
`bad_request`, `too_large`, `unknown_method`, `invalid_params`, `refused`, `forbidden`,
`busy`, `internal`.

The server only calls `LotControl`; it owns no lot state. A client that sends garbage, too
much, nothing at all, or stops reading is answered or dropped, and never disturbs the daemon
or the other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from gateway.config import DEFAULT_CONTROL_SOCKET, ControlConfig
from gateway.core.operations import LaneMode, LotControl, LotState, OperationRefused
from gateway.core.signs import MAX_OFFSET, SignMode
from gateway.runtime.aio import TaskSet

log = structlog.get_logger(__name__)

__all__ = [
    "DEFAULT_CONTROL_SOCKET", "ControlClient", "ControlError", "ControlPermissionDenied",
    "ControlServer", "ControlSetupError", "DaemonNotRunning", "Peer", "RemoteError",
]

MAX_REQUEST_BYTES = 64 * 1024  # a request is a method and a few short strings
MAX_RESPONSE_BYTES = 64 * 2**20  # a status or a session list of a big lot
MAX_CLIENTS = 16
IDLE_TIMEOUT_S = 60.0  # a connection that sends no request for this long is closed
WRITE_TIMEOUT_S = 5.0  # a client that does not read its answer for this long is dropped
SOCKET_MODE = 0o660


# --- errors --------------------------------------------------------------------------------


class ControlError(Exception):
    """The CLI could not get an answer from the daemon; the message says why, for a person."""


class DaemonNotRunning(ControlError):
    pass


class ControlPermissionDenied(ControlError):
    pass


class RemoteError(ControlError):
    """The daemon answered with an error (`code` is one of the protocol's codes)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ControlSetupError(Exception):
    """The daemon cannot open its control socket (a path in use, too long, not writable)."""


class _ClientFault(Exception):
    """A request the server answers with an error code and then goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- who is calling ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a connection, as the kernel vouches for it."""

    pid: int
    uid: int
    gid: int
    user: str | None  # None: a uid with no passwd entry

    @property
    def actor(self) -> str:
        """Who the audit trail names: `cli:<user>` (or `cli:uid:<n>`)."""
        return f"cli:{self.user or f'uid:{self.uid}'}"


def peer_of(sock: socket.socket) -> Peer:
    """SO_PEERCRED of a connected Unix socket: the peer's pid, uid and gid at connect time."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    try:
        user: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    return Peer(pid, uid, gid, user)


def permitted(peer: Peer, group_id: int | None) -> bool:
    """Root, the daemon's own user, or a member of the control group.

    The socket's mode already keeps others out; this is the same rule checked again by the
    server, so that a socket left with a wrong mode (a hand-made path) does not open the lot.
    """
    if peer.uid in (0, os.geteuid()):
        return True
    if group_id is None:
        return False
    if peer.gid == group_id:
        return True
    if peer.user is None:
        return False
    try:
        return group_id in os.getgrouplist(peer.user, peer.gid)
    except OSError:
        return False


# --- methods ---------------------------------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Id = Annotated[str, StringConstraints(min_length=1, max_length=63)]


class _NoParams(_Params):
    pass


class _GateOpen(_Params):
    lane: Id
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3,
                                             max_length=500)]


class _LaneMode(_Params):
    lane: Id
    mode: LaneMode


class _LotState(_Params):
    state: LotState


class _BayService(_Params):
    bay: Id
    in_service: bool


class _CountSet(_Params):
    level: Id
    count: int = Field(ge=0, le=100_000)


class _AlarmAck(_Params):
    alarm_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _RecentPlates(_Params):
    limit: int = Field(50, ge=1, le=1000)


class _Plate(_Params):
    plate: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class _SignMode(_Params):
    sign: Id
    mode: SignMode
    offset: int | None = Field(None, ge=0, le=MAX_OFFSET)


Call = Callable[[LotControl, Any, Peer], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class _Method:
    params: type[_Params]
    call: Call
    changes_lot: bool  # logged at info, with the actor


async def _open_gate(lot: LotControl, p: _GateOpen, peer: Peer) -> None:
    await lot.open_gate(p.lane, reason=p.reason, actor=peer.actor)


async def _lane_mode(lot: LotControl, p: _LaneMode, peer: Peer) -> None:
    await lot.set_lane_mode(p.lane, p.mode, actor=peer.actor)


async def _lot_state(lot: LotControl, p: _LotState, peer: Peer) -> None:
    await lot.set_lot_state(p.state, actor=peer.actor)


async def _bay_service(lot: LotControl, p: _BayService, peer: Peer) -> None:
    await lot.set_bay_service(p.bay, p.in_service, actor=peer.actor)


async def _count_set(lot: LotControl, p: _CountSet, peer: Peer) -> Any:
    return await lot.set_level_count(p.level, p.count, actor=peer.actor)


async def _count_show(lot: LotControl, _p: _NoParams, _peer: Peer) -> Any:
    return await lot.level_counts()


async def _alarms(lot: LotControl, _p: _NoParams, _peer: Peer) -> Any:
    return await lot.alarms()


async def _alarm_ack(lot: LotControl, p: _AlarmAck, peer: Peer) -> Any:
    return await lot.acknowledge_alarm(p.alarm_id, actor=peer.actor)


async def _status(lot: LotControl, _p: _NoParams, _peer: Peer) -> Any:
    return await lot.status()


async def _sessions(lot: LotControl, _p: _NoParams, _peer: Peer) -> Any:
    return await lot.open_sessions()


async def _plates(lot: LotControl, p: _RecentPlates, _peer: Peer) -> Any:
    return await lot.recent_plates(p.limit)


async def _privacy_purge(lot: LotControl, p: _Plate, peer: Peer) -> Any:
    return await lot.purge_plate(p.plate, actor=peer.actor)


async def _privacy_export(lot: LotControl, p: _Plate, _peer: Peer) -> Any:
    return await lot.export_plate(p.plate)


async def _passback_reset(lot: LotControl, p: _Plate, peer: Peer) -> Any:
    return await lot.reset_passback(p.plate, actor=peer.actor)


async def _signs(lot: LotControl, _p: _NoParams, _peer: Peer) -> Any:
    return await lot.signs()


async def _sign_mode(lot: LotControl, p: _SignMode, peer: Peer) -> Any:
    return await lot.set_sign_mode(p.sign, p.mode, offset=p.offset, actor=peer.actor)


METHODS: Mapping[str, _Method] = {
    "status": _Method(_NoParams, _status, changes_lot=False),
    "gate.open": _Method(_GateOpen, _open_gate, changes_lot=True),
    "lane.mode": _Method(_LaneMode, _lane_mode, changes_lot=True),
    "lot.state": _Method(_LotState, _lot_state, changes_lot=True),
    "bay.service": _Method(_BayService, _bay_service, changes_lot=True),
    "count.set": _Method(_CountSet, _count_set, changes_lot=True),
    "count.show": _Method(_NoParams, _count_show, changes_lot=False),
    "alarms.list": _Method(_NoParams, _alarms, changes_lot=False),
    "alarms.ack": _Method(_AlarmAck, _alarm_ack, changes_lot=True),
    "sessions.open": _Method(_NoParams, _sessions, changes_lot=False),
    "plates.recent": _Method(_RecentPlates, _plates, changes_lot=False),
    # Not logged with its params, which would put the plate in the log: the lot audits it.
    "privacy.purge": _Method(_Plate, _privacy_purge, changes_lot=False),
    "privacy.export": _Method(_Plate, _privacy_export, changes_lot=False),
    # Not logged with the plate either: the lot audits and logs the session it cleared.
    "passback.reset": _Method(_Plate, _passback_reset, changes_lot=False),
    "sign.list": _Method(_NoParams, _signs, changes_lot=False),
    "sign.mode": _Method(_SignMode, _sign_mode, changes_lot=True),
}
STREAMS: Mapping[str, type[_Params]] = {"sensors.watch": _NoParams}


def _parse(line: bytes) -> tuple[Any, str, Mapping[str, Any]]:
    """(id, method, params) of one request line; raises `_ClientFault`."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise _ClientFault("bad_request", "a request is one JSON object per line") from None
    if not isinstance(request, dict):
        raise _ClientFault("bad_request", "a request is one JSON object per line")
    method, params = request.get("method"), request.get("params", {})
    if not isinstance(method, str):
        raise _ClientFault("bad_request", "the request has no method")
    if not isinstance(params, dict):
        raise _ClientFault("bad_request", "params must be an object")
    return request.get("id"), method, params


def _validate(model: type[_Params], params: Mapping[str, Any]) -> _Params:
    try:
        return model.model_validate(params)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'params'}: {err['msg']}"
            for err in e.errors(include_url=False, include_input=False))
        raise _ClientFault("invalid_params", problems) from None


# --- server ----------------------------------------------------------------------------------


class ControlServer:
    """Serves `LotControl` on the control socket.

    Use as `async with ControlServer(lot, settings.control):` around the daemon's run, or
    `await start()` ... `await close()`.
    """

    def __init__(self, lot: LotControl, settings: ControlConfig | None = None, *,
                 max_clients: int = MAX_CLIENTS, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 write_timeout_s: float = WRITE_TIMEOUT_S) -> None:
        settings = settings or ControlConfig()
        self.lot = lot
        self.path = settings.socket_path
        self.group = settings.group
        self.max_clients = max_clients
        self.idle_timeout_s = idle_timeout_s
        self.write_timeout_s = write_timeout_s
        self.counters = {"requests": 0, "errors": 0, "refused": 0, "dropped": 0}
        self._group_id: int | None = None
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._clients = TaskSet("control")  # one per connection, ended by close()
        self._closing = False

    async def start(self) -> None:
        """Bind the socket (mode 0660, the control group) and accept connections.

        A socket left by a dead daemon is replaced; one a live daemon answers on is not.
        Raises `ControlSetupError`.
        """
        sock, self._group_id = await asyncio.to_thread(_bind, self.path, self.group)
        self._inode = os.stat(sock.getsockname()).st_ino
        self._server = await asyncio.start_unix_server(
            self._connected, sock=sock, limit=MAX_REQUEST_BYTES)
        log.info("control.listening", path=str(self.path), group=self.group,
                 group_id=self._group_id)

    async def close(self) -> None:
        """Stop accepting, end every connection (watch streams too), remove the socket."""
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        await self._clients.cancel_and_wait()
        await self._server.wait_closed()
        self._server = None
        self._remove_socket()
        log.info("control.closed", path=str(self.path), **self.counters)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _remove_socket(self) -> None:
        # Only our own socket: a daemon started since may have bound a new one at the path.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # gone, or dropped for not reading (counted by _send): nothing to answer
        except asyncio.CancelledError:
            # close() ends the connections; a handler task that ends cancelled makes Python
            # 3.11's stream protocol log a spurious error.
            if not self._closing:
                raise
        except Exception:  # a bug here must cost one connection, never the daemon
            log.exception("control.connection_failed")
        finally:
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # close() would wait for a reader that never reads
            else:
                writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.get_extra_info("socket"))
        if not permitted(peer, self._group_id):
            log.warning("control.forbidden", uid=peer.uid, user=peer.user, pid=peer.pid)
            self.counters["refused"] += 1
            await self._send(writer, _error(None, "forbidden", "root or the control group only"))
            return
        if len(self._clients) > self.max_clients:
            self.counters["refused"] += 1
            await self._send(writer, _error(None, "busy", "too many control connections"))
            return
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self.idle_timeout_s)
            except ValueError:  # over the reader's limit; the rest of the line is unread
                self.counters["errors"] += 1
                log.warning("control.request_too_large", actor=peer.actor)
                await self._send(writer, _error(
                    None, "too_large", f"a request is at most {MAX_REQUEST_BYTES} bytes"))
                return
            if not line:
                return
            if not line.strip():
                continue
            if not await self._answer(line, peer, reader, writer):
                return

    async def _answer(self, line: bytes, peer: Peer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        """Handle one request; False when the connection is to end (a stream ended)."""
        self.counters["requests"] += 1
        request_id: Any = None
        try:
            request_id, name, raw = _parse(line)
            if name in STREAMS:
                _validate(STREAMS[name], raw)
                log.info("control.stream", method=name, actor=peer.actor)
                await self._stream(request_id, reader, writer)
                return False
            method = METHODS.get(name)
            if method is None:
                known = ", ".join(sorted([*METHODS, *STREAMS]))
                raise _ClientFault("unknown_method", f"no method {name!r} (known: {known})")
            params = _validate(method.params, raw)
            if method.changes_lot:
                log.info("control.request", method=name, actor=peer.actor,
                         params=params.model_dump())
            result = await method.call(self.lot, params, peer)
        except _ClientFault as e:
            self.counters["errors"] += 1
            await self._send(writer, _error(request_id, e.code, str(e)))
            return True
        except OperationRefused as e:
            self.counters["errors"] += 1
            log.info("control.refused", actor=peer.actor, reason=str(e))
            await self._send(writer, _error(request_id, "refused", str(e)))
            return True
        except Exception:
            self.counters["errors"] += 1
            log.exception("control.method_failed", actor=peer.actor)
            await self._send(writer, _error(
                request_id, "internal", "the daemon failed to do this; see its log"
                " (journalctl -u parking-gateway)"))
            return True
        await self._send(writer, {"id": request_id, "result": result})
        return True

    async def _stream(self, request_id: Any, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """Forward sensor readings until the client hangs up (or the lot ends the stream)."""

        async def forward() -> None:
            readings = self.lot.watch_sensors()
            try:
                async for reading in readings:
                    await self._send(writer, {"id": request_id, "event": reading})
            finally:
                close = getattr(readings, "aclose", None)
                if close is not None:
                    await close()
            await self._send(writer, {"id": request_id, "result": None})

        async def hang_up() -> None:
            while await reader.read(4096):  # anything sent during a stream is ignored
                pass

        tasks = [asyncio.create_task(forward()), asyncio.create_task(hang_up())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # a failure of the stream ends this connection, logged above

    async def _send(self, writer: asyncio.StreamWriter, message: Mapping[str, Any]) -> None:
        writer.write(_encode(message))
        try:
            await asyncio.wait_for(writer.drain(), self.write_timeout_s)
        except TimeoutError:
            self.counters["dropped"] += 1
            log.warning("control.client_not_reading", timeout_s=self.write_timeout_s)
            raise


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"code": code, "message": message}}


def _encode(message: Mapping[str, Any]) -> bytes:
    return (json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str)
            + "\n").encode()


def _bind(path: Path, group: str) -> tuple[socket.socket, int | None]:
    """A bound (not yet listening) socket at `path`, mode 0660, in `group` when it exists.

    The mode is set before listen(), so there is no moment when others could connect.
    """
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
        group_id = _group_id(group)
        if group_id is not None and group_id != os.getegid():
            try:
                os.chown(path, -1, group_id)
            except PermissionError:
                log.warning("control.group_not_set", group=group, path=str(path),
                            hint="the daemon's user must be a member of the group")
                group_id = None
    except OSError as e:
        sock.close()
        raise ControlSetupError(f"cannot open the control socket {path}: {e.strerror or e}"
                                ) from None
    return sock, group_id if group_id is not None else os.getegid()


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.info("control.group_missing", group=name,
                 effect="only root and the daemon's own user and group may use the socket")
        return None


def _clear_stale(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ControlSetupError(f"cannot check {path}: {e.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ControlSetupError(f"{path} exists and is not a socket; remove it or choose"
                                " another control.socket_path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:  # refused: the daemon that made it is gone
        log.info("control.stale_socket_removed", path=str(path))
        os.unlink(path)
        return
    finally:
        probe.close()
    raise ControlSetupError(f"another gateway daemon is serving {path}")


# --- client ----------------------------------------------------------------------------------


class ControlClient:
    """The CLI's side: one connection per call, errors worded for a technician."""

    def __init__(self, path: Path = DEFAULT_CONTROL_SOCKET, *, timeout_s: float = 15.0) -> None:
        self.path = path
        self.timeout_s = timeout_s

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """The `result` of one request; raises a `ControlError` subclass."""
        reader, writer = await self._connect()
        try:
            await self._request(writer, method, params)
            message = await self._receive(reader, self.timeout_s)
            return self._result(message)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stream(self, method: str, params: Mapping[str, Any] | None = None
                     ) -> AsyncIterator[Any]:
        """The `event`s of a streaming request, until the daemon ends it or the caller stops."""
        reader, writer = await self._connect()
        try:
            await self._request(writer, method, params)
            while True:
                message = await self._receive(reader, None)
                if "event" not in message:
                    self._result(message)  # raises on an error
                    return
                yield message["event"]
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path), limit=MAX_RESPONSE_BYTES),
                self.timeout_s)
        except FileNotFoundError:
            raise DaemonNotRunning(
                f"the gateway daemon is not running: no control socket at {self.path}"
                " (check: systemctl status parking-gateway)") from None
        except ConnectionRefusedError:
            raise DaemonNotRunning(
                f"the gateway daemon is not running: nothing answers on {self.path}"
                " (check: systemctl status parking-gateway)") from None
        except PermissionError:
            raise self._denied() from None
        except TimeoutError:
            raise ControlError(f"the daemon did not accept a connection on {self.path} within"
                               f" {self.timeout_s:g} s") from None
        except OSError as e:
            raise ControlError(f"cannot connect to {self.path}: {e.strerror or e}") from None

    def _denied(self) -> ControlPermissionDenied:
        return ControlPermissionDenied(
            f"permission denied on {self.path}: run as root, or as a member of the"
            f" {_socket_group(self.path)!r} group (sudo usermod -aG {_socket_group(self.path)}"
            " $USER, then log in again)")

    async def _request(self, writer: asyncio.StreamWriter, method: str,
                       params: Mapping[str, Any] | None) -> None:
        writer.write(_encode({"id": 1, "method": method, "params": dict(params or {})}))
        # The daemon may turn a client away (forbidden, busy) before reading its request: the
        # send then fails, but the answer that says why is waiting to be read.
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _receive(self, reader: asyncio.StreamReader, timeout_s: float | None
                       ) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout_s)
        except TimeoutError:
            raise ControlError(f"the daemon did not answer within {timeout_s:g} s") from None
        except ValueError:
            raise ControlError("the daemon's answer is too large") from None
        except ConnectionError as e:
            raise ControlError(f"the daemon closed the connection: {e}") from None
        if not line:
            raise ControlError("the daemon closed the connection without an answer")
        try:
            message = json.loads(line)
        except ValueError:
            raise ControlError("the daemon's answer is not JSON") from None
        if not isinstance(message, dict):
            raise ControlError("the daemon's answer is not a JSON object")
        return message

    def _result(self, message: Mapping[str, Any]) -> Any:
        error = message.get("error")
        if error is None:
            return message.get("result")
        code = str(error.get("code", "internal")) if isinstance(error, dict) else "internal"
        text = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        if code == "forbidden":
            raise self._denied()
        raise RemoteError(code, text)


def _socket_group(path: Path) -> str:
    """The group that may use the socket, as the file says; `parking` if it cannot be read."""
    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return ControlConfig().group
