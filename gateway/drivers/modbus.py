"""The RS-485 sensor bus: a Modbus RTU master that polls the bays' detector nodes.

One read of input registers 1-4 (status, magnetic magnitude, deviation, distance; see
docs/modbus-register-map.md) per node per cycle, so a cycle costs what the wire costs and
little more. A bay's reading goes to the listener only when it changes. A node that fails
``fault_after_failures`` cycles in a row is faulty and its bay reads ``unknown`` (never
``free``) until it answers again. Timeouts, CRC errors, garbage bytes and exception replies
are counted per node and per bus and logged at a bounded rate; none reaches the caller.

Why not pymodbus's AsyncModbusSerialClient (measured against the simulator; figures in
docs/modbus-register-map.md): its async path sends a request as soon as the previous reply
is parsed, with no 3.5-character silence (its cycles came in under the wire's physical
limit); and it drops a reply with a bad CRC at debug level and lets the request run into its
timeout, so a CRC error costs a whole timeout and cannot be told from a silent node. The
framing here is small (the master always knows the exact length of the reply it waits for)
and does the timing by the Modbus over Serial Line spec: 3.5 characters of silence before
every request (1.75 ms above 19200 baud), the reply timeout counted from the request's last
bit. The 1.5-character intra-frame rule is not enforced on this side: a USB adapter or a
kernel tty hands bytes over in chunks, so inter-byte gaps are not observable here.

All timing runs on the asyncio loop (``loop.time()``, ``call_at``), so the bus also runs
under the simulator's virtual-time loop; the injected Clock only stamps readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import serial  # type: ignore[import-untyped]
import structlog

from gateway.config import BusConfig, ModbusSensor, Settings
from gateway.core.clock import Clock, Stamp
from gateway.core.records import Alarm
from gateway.drivers import AlarmLatch, AlarmSink, BayListener, BayReading, BayReadingState
from gateway.runtime.aio import cancel_and_wait

log = structlog.get_logger(__name__)

# --- register map (docs/modbus-register-map.md) ----------------------------------------------

READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_SINGLE = 0x06

IR_STATUS = 1
POLL_FIRST = IR_STATUS  # status, magnitude (mG), deviation (mG), distance (cm)
POLL_COUNT = 4
ST_OCCUPIED = 0x0001
ST_SENSOR_FAULT = 0x0002
ST_CALIBRATING = 0x0004
ST_ULTRASONIC_FAULT = 0x0010
NO_DISTANCE = 0xFFFF

HR_COMMAND = 100
CMD_CALIBRATE = 0xCA1B

REQUEST_BYTES = 8  # address, function, start (2), count (2), CRC (2)
POLL_REPLY_BYTES = 5 + 2 * POLL_COUNT  # address, function, byte count, data, CRC (2)

LOG_INTERVAL_S = 30.0  # at most one line per node and kind of fault in this time
REOPEN_INTERVAL_S = 1.0

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "server device failure", 6: "server device busy",
}


# --- framing ---------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """Modbus CRC-16 (0xA001 reflected, initial 0xFFFF), transmitted low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def rtu_frame(unit: int, pdu: bytes) -> bytes:
    """Address + PDU + CRC."""
    body = bytes((unit,)) + pdu
    crc = crc16(body)
    return body + bytes((crc & 0xFF, crc >> 8))


@dataclass(frozen=True, slots=True)
class LineTiming:
    """Character and silence times of an RTU line."""

    baudrate: int
    bits_per_char: int  # start + 8 data + parity + stop bits: 11 as RTU specifies
    char_s: float
    t15_s: float  # longest gap inside a frame
    t35_s: float  # shortest gap between frames

    @classmethod
    def of(cls, baudrate: int, parity: str = "E", stopbits: int = 1) -> LineTiming:
        bits = 1 + 8 + (parity != "N") + stopbits
        char = bits / baudrate
        if baudrate > 19200:  # the spec fixes the gaps above 19200 baud
            return cls(baudrate, bits, char, 0.00075, 0.00175)
        return cls(baudrate, bits, char, 1.5 * char, 3.5 * char)

    def wire_s(self, nbytes: int) -> float:
        return nbytes * self.char_s


def bus_limit_s(timing: LineTiming, nodes: int, *, turnaround_s: float = 0.0,
                request_bytes: int = REQUEST_BYTES, reply_bytes: int = POLL_REPLY_BYTES) -> float:
    """The shortest possible poll cycle: what the wire and the nodes take, nothing else.

    Per node: the request's and the reply's characters, the 3.5-character silence that ends
    the request (the node only then knows it is complete), the node's turnaround, and the
    silence after the reply before the next request may start.
    """
    per_node = (timing.wire_s(request_bytes + reply_bytes) + 2 * timing.t35_s + turnaround_s)
    return nodes * per_node


# --- errors and counters -----------------------------------------------------------------------


class ModbusError(Exception):
    """A transaction that failed; the poller counts it, ``calibrate`` raises it."""

    kind = "error"  # for log event names and a bay's fault
    counter = "io_errors"  # the Counters field it adds to


class ReplyTimeout(ModbusError):
    kind, counter = "timeout", "timeouts"


class CrcError(ModbusError):
    kind, counter = "crc_error", "crc_errors"


class ExceptionReply(ModbusError):
    kind, counter = "exception", "exceptions"

    def __init__(self, code: int) -> None:
        super().__init__(f"exception reply {code}: {EXCEPTION_NAMES.get(code, 'unknown')}")
        self.code = code


class LinkDown(ModbusError):
    kind, counter = "io_error", "io_errors"


@dataclass(slots=True)
class Counters:
    """Traffic and faults, for one node or the whole bus."""

    requests: int = 0
    replies: int = 0  # valid replies, exception replies included
    timeouts: int = 0  # no complete reply in time (partial replies included)
    crc_errors: int = 0
    garbage_bytes: int = 0  # bytes that belonged to no valid reply
    exceptions: int = 0  # Modbus exception replies
    io_errors: int = 0  # the serial port itself failed

    def add(self, counter: str, n: int = 1) -> None:
        setattr(self, counter, getattr(self, counter) + n)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --- the line ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Waiter:
    unit: int
    function: int
    reply_len: int
    future: asyncio.Future[bytes]
    buf: bytearray = field(default_factory=bytearray)
    garbage: int = 0


Opener = Callable[[BusConfig], Any]


def open_serial(config: BusConfig) -> Any:
    """The port, configured by pyserial (line settings, exclusive lock); RtuLink uses its fd."""
    return serial.serial_for_url(
        config.port, baudrate=config.baudrate, bytesize=8, parity=config.parity,
        stopbits=config.stopbits, timeout=0, write_timeout=0, exclusive=True)


class RtuLink:
    """The serial line: one transaction at a time, RTU silences kept, every byte accounted for."""

    def __init__(self, config: BusConfig, *, opener: Opener = open_serial) -> None:
        self.config = config
        self.timing = LineTiming.of(config.baudrate, config.parity, config.stopbits)
        self.timeout_s = config.timeout_ms / 1000
        self.counters = Counters()
        self._opener = opener
        self._port: Any = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._waiter: _Waiter | None = None
        self._line_quiet_from = 0.0  # when the last byte, in or out, left the wire
        self.bytes_written = 0
        self.bytes_read = 0

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def open(self) -> None:
        """Open the port; raises OSError (pyserial's SerialException is one) if it cannot."""
        self._loop = asyncio.get_running_loop()
        self._port = self._opener(self.config)
        self._fd = int(self._port.fileno())
        os.set_blocking(self._fd, False)  # reads and writes go straight to the fd
        self._loop.add_reader(self._fd, self._on_readable)
        self._line_quiet_from = self._loop.time()

    def close(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._fd = None
        if self._port is not None:
            with contextlib.suppress(OSError):
                self._port.close()
            self._port = None

    async def transact(self, unit: int, pdu: bytes, reply_len: int, node: Counters) -> bytes:
        """Send ``pdu`` to ``unit`` and return the reply's PDU.

        ``reply_len`` is the whole normal reply frame's length (an exception reply is 5).
        Raises ReplyTimeout, CrcError, ExceptionReply or LinkDown; each is counted in
        ``node`` and in the bus's counters before it is raised.
        """
        async with self._lock:
            try:
                return await self._transact(unit, pdu, reply_len, node)
            except ModbusError as exc:
                self._count(node, exc.counter)
                raise

    async def _transact(self, unit: int, pdu: bytes, reply_len: int, node: Counters) -> bytes:
        loop = self._loop
        if loop is None or self._fd is None:
            raise LinkDown("serial port is not open")
        await self._wait_for_silence(loop)
        request = rtu_frame(unit, pdu)
        waiter = _Waiter(unit, pdu[0], reply_len, loop.create_future())
        self._waiter = waiter
        self._count(node, "requests")
        try:
            self._write(request)
            tx_end = loop.time() + self.timing.wire_s(len(request))
            self._line_quiet_from = max(self._line_quiet_from, tx_end)
            timer = loop.call_at(tx_end + self.timeout_s, _expire, waiter.future)
            try:
                frame = await waiter.future
            except ReplyTimeout:
                waiter.garbage += len(waiter.buf)  # an incomplete reply
                raise
            finally:
                timer.cancel()
        finally:
            self._waiter = None
            if waiter.garbage:
                self._count(node, "garbage_bytes", waiter.garbage)
        self._count(node, "replies")
        if frame[1] & 0x80:
            raise ExceptionReply(frame[2])
        return frame[1:-2]

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                self.bytes_written += written
                view = view[written:]
        except BlockingIOError:  # an RTU frame is far smaller than any tty buffer
            raise LinkDown("serial output buffer full") from None
        except OSError as exc:
            raise LinkDown(f"serial write failed: {exc.strerror or exc}") from None

    async def _wait_for_silence(self, loop: asyncio.AbstractEventLoop) -> None:
        """3.5 characters of quiet line since the last byte in or out (it may be a late reply)."""
        # A loop, not an Event: every byte that arrives meanwhile moves the deadline.
        while (wait := self._line_quiet_from + self.timing.t35_s - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)

    def _on_readable(self) -> None:
        assert self._loop is not None
        assert self._fd is not None
        try:
            data = os.read(self._fd, 512)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.counters.io_errors += 1
            log.warning("modbus.read_failed", port=self.config.port, error=str(exc))
            self.close()
            return
        if not data:
            return
        self.bytes_read += len(data)
        self._line_quiet_from = self._loop.time()
        waiter = self._waiter
        if waiter is None or waiter.future.done():
            # Nobody asked: a late reply, an echo, noise. Counted on the bus, not on a node.
            self.counters.garbage_bytes += len(data)
            return
        waiter.buf.extend(data)
        _parse(waiter)

    def _count(self, node: Counters, kind: str, n: int = 1) -> None:
        node.add(kind, n)
        self.counters.add(kind, n)


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(ReplyTimeout("no reply in time"))


def _parse(w: _Waiter) -> None:
    """Find the reply in what arrived: skip leading bytes that cannot start it, check its CRC.

    The master knows the exact length of the reply it waits for (or 5, for an exception
    reply), so a damaged byte-count field cannot make it wait for bytes that never come.
    """
    buf = w.buf
    while buf:
        if buf[0] != w.unit:
            del buf[0]
            w.garbage += 1
            continue
        if len(buf) < 2:
            return
        if buf[1] == w.function | 0x80:
            need = 5
        elif buf[1] == w.function:
            need = w.reply_len
        else:  # an address byte by coincidence: noise
            del buf[0]
            w.garbage += 1
            continue
        if len(buf) < need:
            return
        frame = bytes(buf[:need])
        w.garbage += len(buf) - need
        buf.clear()
        if crc16(frame) != 0:
            w.future.set_exception(CrcError("reply failed its CRC check"))
        else:
            w.future.set_result(frame)
        return


# --- the poller ------------------------------------------------------------------------------


@dataclass(slots=True)
class NodeHealth:
    """What the bus knows about one node, for `status` and metrics."""

    unit_id: int
    bay_id: str
    state: BayReadingState = "unknown"
    fault: str | None = "not polled yet"
    faulty: bool = False  # stopped answering
    consecutive_failures: int = 0
    status_bits: int | None = None
    magnitude_mg: int | None = None
    deviation_mg: int | None = None
    distance_cm: int | None = None
    last_reply: Stamp | None = None
    silent_since: float | None = None  # loop time of the first unanswered poll; None: answers
    counters: Counters = field(default_factory=Counters)

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in (
            "unit_id", "bay_id", "state", "fault", "faulty", "consecutive_failures",
            "status_bits", "magnitude_mg", "deviation_mg", "distance_cm")}
        out["last_reply"] = self.last_reply.wall.isoformat() if self.last_reply else None
        out["counters"] = self.counters.as_dict()
        return out


PortState = Literal["ok", "missing", "failing"]  # missing: it cannot be opened


@dataclass(frozen=True, slots=True)
class BusHealth:
    port: str
    open: bool
    port_state: PortState
    port_error: str | None
    cycles: int
    last_cycle_ms: float | None
    nodes_faulty: int
    counters: dict[str, int]
    nodes: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _RateLimitedLog:
    """One warning per key per interval, with the number of lines held back since the last."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple[int, str], float] = {}
        self._held: dict[tuple[int, str], int] = {}

    def warning(self, now: float, unit: int, kind: str, **kw: Any) -> None:
        """Log ``modbus.<kind>`` for ``unit`` (0: the bus itself) unless logged lately."""
        key = (unit, kind)
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        self._last[key] = now
        log.warning(f"modbus.{kind}", unit_id=unit, suppressed=self._held.pop(key, 0), **kw)


def bus_name(port: str) -> str:
    """The bus's name in alarm ids: the port's last path part, as an alarm id may spell it."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", port.rstrip("/").rpartition("/")[2])[:64]
    return name or "bus"


def bays_on_bus(settings: Settings) -> dict[int, str]:
    """Unit id -> bay id of every bay with a Modbus detector."""
    return {bay.sensor.unit_id: bay.id for bay in settings.bays
            if isinstance(bay.sensor, ModbusSensor)}


class ModbusBus:
    """Polls every node on the line and reports bay changes to ``listener``.

    ``start()`` opens the port and starts polling; ``poll_once()`` runs one cycle by hand
    (tests, the benchmark). Nothing from the line is ever raised out of the poll loop.

    Two alarms, each raised once the condition has lasted ``alarm_after_s``:
    ``bus.port:<bus>`` (critical) while the port cannot be opened or its I/O fails, and
    ``bus.nodes_silent:<bus>``, one for the whole bus however many nodes are silent (critical
    when all are). The latter keeps the list of its raising (one alarm, not a stream of them
    as nodes come and go: a flaky node must not flood the backend); the current list is in
    :meth:`summary`, which `status` shows. It is not judged while the port is down: the
    nodes are not silent then, just not asked, and the port's alarm names the cause.
    """

    def __init__(self, config: BusConfig, bays: Mapping[int, str], clock: Clock,
                 listener: BayListener, *, link: RtuLink | None = None,
                 alarms: AlarmSink | None = None) -> None:
        self.config = config
        self.clock = clock
        self.listener = listener
        self.link = link or RtuLink(config)
        self.nodes = {unit: NodeHealth(unit, bay) for unit, bay in sorted(bays.items())}
        self.name = bus_name(config.port)
        self.cycles = 0
        self.last_cycle_s: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = _RateLimitedLog()
        self._alarms = AlarmLatch(alarms, "modbus", port=config.port)
        self._port_down_since: float | None = None  # loop time; None: the port works
        self._port_error: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock,
                      listener: BayListener) -> ModbusBus | None:
        """The bus for a lot's settings, or None when no [bus] section is configured."""
        if settings.bus is None:
            return None
        return cls(settings.bus, bays_on_bus(settings), clock, listener)

    async def start(self) -> None:
        self._open()
        self._task = asyncio.create_task(self._run(), name="modbus-poll")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        self._alarms.close()
        self.link.close()

    def _open(self) -> bool:
        now = asyncio.get_running_loop().time()
        try:
            self.link.open()
        except (OSError, ValueError) as exc:  # SerialException is an OSError
            self.link.counters.io_errors += 1
            self._port_failed(now, f"cannot open: {exc}")
            # Retried every second while the adapter is missing: one line per interval.
            self._log.warning(now, 0, "open_failed", port=self.config.port, error=str(exc))
            return False
        log.info("modbus.opened", port=self.config.port, baudrate=self.config.baudrate,
                 nodes=len(self.nodes))
        for node in self.nodes.values():
            if node.silent_since is not None:  # unasked while the port was down: from now
                node.silent_since = now
        if not self.nodes:  # no transaction will ever say so
            self._port_down_since = self._port_error = None
        return True

    def _port_failed(self, now: float, error: str) -> None:
        if self._port_down_since is None:
            self._port_down_since = now
        self._port_error = error

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if not self.link.is_open and not self._open():
                for node in self.nodes.values():
                    self._failed(node, LinkDown("serial port unavailable"))
                self._check_alarms()
                await asyncio.sleep(REOPEN_INTERVAL_S)
                continue
            try:
                await self.poll_once()
            except Exception:  # a bug here must not silence every bay for good
                log.exception("modbus.poll_failed", port=self.config.port)
                await asyncio.sleep(REOPEN_INTERVAL_S)
            rest = self.config.poll_interval_s - (loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)
            else:
                await asyncio.sleep(0)  # back to back, but let the loop breathe

    async def poll_once(self) -> float:
        """Poll every node once; returns the cycle's length in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        for node in self.nodes.values():
            await self._poll_node(node)
        self.cycles += 1
        self.last_cycle_s = loop.time() - started
        self._check_alarms()
        return self.last_cycle_s

    async def _poll_node(self, node: NodeHealth) -> None:
        pdu = bytes((READ_INPUT, POLL_FIRST >> 8, POLL_FIRST & 0xFF, 0, POLL_COUNT))
        last: ModbusError = ReplyTimeout("no attempt made")
        for attempt in range(self.config.retries + 1):
            try:
                reply = await self.link.transact(node.unit_id, pdu, POLL_REPLY_BYTES,
                                                 node.counters)
            except ModbusError as exc:
                now = asyncio.get_running_loop().time()
                if isinstance(exc, LinkDown):
                    self._port_failed(now, str(exc))
                else:  # the port carried the request; the node did not answer well
                    self._port_down_since = self._port_error = None
                self._log.warning(now, node.unit_id, exc.kind, bay_id=node.bay_id,
                                  error=str(exc), attempt=attempt)
                last = exc
                continue
            self._port_down_since = self._port_error = None
            self._answered(node, reply)
            return
        self._failed(node, last)

    def _answered(self, node: NodeHealth, reply: bytes) -> None:
        values = [(reply[2 + 2 * i] << 8) | reply[3 + 2 * i] for i in range(POLL_COUNT)]
        status, magnitude, deviation, distance = values
        node.status_bits, node.magnitude_mg, node.deviation_mg = status, magnitude, deviation
        node.distance_cm = None if distance == NO_DISTANCE else distance
        node.last_reply = self.clock.stamp()
        node.silent_since = None
        if node.faulty:
            log.info("modbus.node_recovered", unit_id=node.unit_id, bay_id=node.bay_id,
                     failures=node.consecutive_failures)
        node.faulty = False
        node.consecutive_failures = 0
        state: BayReadingState
        if status & ST_SENSOR_FAULT:
            state, fault = "unknown", "sensor fault"
        elif status & ST_CALIBRATING:
            state, fault = "unknown", "calibrating"
        else:
            state, fault = ("occupied" if status & ST_OCCUPIED else "free"), None
        self._set(node, state, fault, float(magnitude), node.last_reply)

    def _failed(self, node: NodeHealth, error: ModbusError) -> None:
        if node.silent_since is None:
            node.silent_since = asyncio.get_running_loop().time()
        node.consecutive_failures += 1
        if node.consecutive_failures < self.config.fault_after_failures:
            return
        if not node.faulty:
            node.faulty = True
            log.warning("modbus.node_faulty", unit_id=node.unit_id, bay_id=node.bay_id,
                        failures=node.consecutive_failures, last_error=str(error))
        self._set(node, "unknown", f"node not answering ({error.kind})", None,
                  self.clock.stamp())

    def _set(self, node: NodeHealth, state: BayReadingState, fault: str | None,
             raw: float | None, at: Stamp) -> None:
        if (state, fault) == (node.state, node.fault):
            return
        node.state, node.fault = state, fault
        reading = BayReading(node.bay_id, state, f"modbus:{node.unit_id}", at, fault, raw)
        try:
            self.listener(reading)
        except Exception:  # a consumer's bug must not stop the bus
            log.exception("modbus.listener_failed", bay_id=node.bay_id)

    async def calibrate(self, unit: int) -> None:
        """Tell a node to learn a new empty-bay baseline (its bay must be empty).

        The node reports ``calibrating`` (its bay reads unknown) for about 3 s. Raises
        KeyError for a unit not on this bus, ModbusError when the node does not confirm.
        """
        node = self.nodes[unit]
        pdu = bytes((WRITE_SINGLE, HR_COMMAND >> 8, HR_COMMAND & 0xFF,
                     CMD_CALIBRATE >> 8, CMD_CALIBRATE & 0xFF))
        last: ModbusError = ReplyTimeout("no attempt made")
        for _ in range(self.config.retries + 1):
            try:
                reply = await self.link.transact(unit, pdu, 8, node.counters)
            except ExceptionReply:
                raise
            except ModbusError as exc:
                last = exc
                continue
            if reply != pdu:
                raise ModbusError(f"unit {unit} did not echo the calibrate command")
            log.info("modbus.calibrate_sent", unit_id=unit, bay_id=node.bay_id)
            return
        raise last

    def _check_alarms(self) -> None:
        """Raise or clear the bus's alarms for what the port and the nodes do now."""
        now = asyncio.get_running_loop().time()
        after_s = self.config.alarm_after_s
        port_id = f"bus.port:{self.name}"
        if self._port_down_since is None:
            self._alarms.clear(port_id, f"RS-485 port {self.config.port} works again")
        elif now - self._port_down_since >= after_s:
            self._alarms.set(Alarm(
                port_id, "critical",
                f"RS-485 port {self.config.port} {self._port_state()} for over {after_s:g} s"
                f" ({self._port_error}): the {len(self.nodes)} bays on the bus read unknown",
                {"port": self.config.port, "state": self._port_state(),
                 "error": self._port_error or "", "nodes": len(self.nodes)},
                component="modbus"))
            return  # the nodes are not asked: they are not judged
        silent = [node for node in self.nodes.values() if node.silent_since is not None
                  and now - node.silent_since >= after_s]
        nodes_id = f"bus.nodes_silent:{self.name}"
        if not silent:
            self._alarms.clear(nodes_id, f"every node on {self.config.port} answers")
            return
        units = [node.unit_id for node in silent]
        self._alarms.set(Alarm(
            nodes_id, "critical" if len(silent) == len(self.nodes) else "warning",
            f"{len(silent)} of {len(self.nodes)} nodes on {self.config.port} silent for over"
            f" {after_s:g} s (units {_ranges(units)}); their bays read unknown",
            {"port": self.config.port, "count": len(silent), "nodes": len(self.nodes),
             "units": units, "bays": [node.bay_id for node in silent]},
            component="modbus"))

    def _port_state(self) -> PortState:
        if self._port_down_since is None and self.link.is_open:
            return "ok"
        return "failing" if self.link.is_open else "missing"

    def readings(self) -> dict[str, BayReadingState]:
        return {node.bay_id: node.state for node in self.nodes.values()}

    def health(self) -> BusHealth:
        return BusHealth(
            port=self.config.port,
            open=self.link.is_open,
            port_state=self._port_state(),
            port_error=self._port_error,
            cycles=self.cycles,
            last_cycle_ms=None if self.last_cycle_s is None else self.last_cycle_s * 1000,
            nodes_faulty=sum(node.faulty for node in self.nodes.values()),
            counters=self.link.counters.as_dict(),
            nodes=tuple(node.as_dict() for node in self.nodes.values()),
        )


    def summary(self) -> dict[str, Any]:
        """The bus in a few fields, for `status`: the port's state, which nodes are silent."""
        now = asyncio.get_running_loop().time()
        silent = [{"unitId": n.unit_id, "bayId": n.bay_id, "silentS": round(now - n.silent_since)}
                  for n in self.nodes.values() if n.silent_since is not None]
        return {"port": self.config.port, "portState": self._port_state(),
                "portError": self._port_error, "nodes": len(self.nodes),
                "nodesAnswering": sum(n.last_reply is not None and n.silent_since is None
                                      for n in self.nodes.values()),
                "nodesSilent": silent}


def _ranges(units: list[int]) -> str:
    """`1-4, 7`: sorted unit ids, runs folded, so 24 silent nodes fit in one line."""
    runs: list[list[int]] = []
    for unit in sorted(units):
        if runs and unit == runs[-1][-1] + 1:
            runs[-1].append(unit)
        else:
            runs.append([unit])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
