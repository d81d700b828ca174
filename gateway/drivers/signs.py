"""Free-space count signs on RS-485: one small interface (:class:`Sign`), two kinds of sign.

**ASCII signs.** Many count signs take a short ASCII frame with their address, a brightness
and the text. This driver's frame (docs/operations.md, "Free-space signs", has it too)::

    STX  A A  ;  B B B  ;  T...T  ETX  C C
    02   address: 2 decimal digits, 01-99 (the sign's DIP switches)
         ';'  brightness: 3 decimal digits, 000-100 (percent)
         ';'  text: 0-16 printable ASCII characters (0x20-0x7E)
    03   checksum: the XOR of every byte from the first address digit to ETX included,
         as 2 upper-case hex digits

    address 1, brightness 80, "123":  02 '01;080;123' 03 '0A'  (0x30 ^ 0x31 ^ ... ^ 0x03)

and the sign answers within ``timeout_ms`` of the frame's last byte::

    ACK A A   06 and its own address: shown
    NAK A A   15 and its own address: it could not show the frame (a bad field)

A frame whose checksum fails gets no answer (its address cannot be trusted), so a damaged
frame and a dead sign both end in a timeout, and the board tries again. Whatever else comes
back (noise, an echo, another sign's answer) is garbage: counted and skipped, never raised.

**Modbus signs.** A sign that is a Modbus RTU slave, at ``unit_id``: three holding registers
from ``first_register``: the count (0xFFFF: no number), the mode (0 count, 1 FULL, 2 CLOSED,
3 blank, 4 test) and the brightness (percent), written with one 0x10 request (or three
0x06 ones, ``write_function = 6``), on :class:`~gateway.drivers.modbus.RtuLink`, the detector
bus's own framing and timing, on a port of the signs' own.

Signs on one port share its line (multi-drop), one frame at a time. A port that cannot be
opened is tried again at the next update. All timing runs on the asyncio loop, so signs run
under the simulator's virtual time too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from gateway.config import BusConfig, SignConfig
from gateway.core.signs import Display, Shown
from gateway.drivers.modbus import Counters, LineTiming, ModbusError, Opener, RtuLink, open_serial
from gateway.drivers.serial_line import LineDown, SerialLine

log = structlog.get_logger(__name__)

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15
MAX_TEXT = 16
MAX_FRAME = 1 + 2 + 1 + 3 + 1 + MAX_TEXT + 1 + 2
REPLY_BYTES = 3

# Modbus sign registers, from first_register on.
MODBUS_MODES: dict[Shown, int] = {"count": 0, "full": 1, "closed": 2, "blank": 3, "test": 4}
NO_COUNT = 0xFFFF
WRITE_SINGLE, WRITE_MULTIPLE = 0x06, 0x10


# --- errors ----------------------------------------------------------------------------------


class SignError(Exception):
    """An update the sign did not confirm; ``counter`` is the Counters field it was counted in."""

    counter = "io_errors"


class SignTimeout(SignError):
    counter = "timeouts"


class SignRefused(SignError):
    counter = "exceptions"  # a NAK, or a Modbus exception reply


class SignLinkDown(SignError):
    counter = "io_errors"


# --- the ASCII codec (pure) ------------------------------------------------------------------


class FrameError(ValueError):
    """A frame that cannot be shown; ``address`` is set when the frame's own checksum held
    (then the sign it names answers NAK)."""

    def __init__(self, message: str, address: int | None = None) -> None:
        super().__init__(message)
        self.address = address


@dataclass(frozen=True, slots=True)
class AsciiFrame:
    address: int
    brightness: int
    text: str


def checksum(body: bytes | bytearray) -> int:
    """XOR of the bytes from the first address digit to ETX included."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def encode_frame(address: int, brightness: int, text: str) -> bytes:
    """The frame that shows `text` on the sign at `address`; ValueError for what no frame
    can carry."""
    if not 1 <= address <= 99:
        raise ValueError(f"an ASCII sign's address is 1-99, not {address}")
    if not 0 <= brightness <= 100:
        raise ValueError(f"brightness is 0-100 percent, not {brightness}")
    if len(text) > MAX_TEXT or not all(" " <= c <= "~" for c in text):
        raise ValueError(f"a sign's text is at most {MAX_TEXT} printable ASCII characters")
    body = b"%02d;%03d;%s\x03" % (address, brightness, text.encode("ascii"))
    return bytes((STX,)) + body + b"%02X" % checksum(body)


def decode_frame(frame: bytes) -> AsciiFrame:
    """One whole frame, STX to the checksum's last digit; FrameError if it is not a good one."""
    if len(frame) < 11 or frame[0] != STX or frame[-3] != ETX:
        raise FrameError("not a frame: STX ... ETX and two checksum digits")
    body, sent = frame[1:-2], frame[-2:]
    if sent != b"%02X" % checksum(body):
        raise FrameError("checksum does not match")
    fields = body[:-1].split(b";", 2)
    address_field = fields[0]
    address = int(address_field) if len(address_field) == 2 and address_field.isdigit() else None
    if (len(fields) != 3 or address is None or not 1 <= address <= 99
            or len(fields[1]) != 3 or not fields[1].isdigit() or int(fields[1]) > 100):
        raise FrameError("bad address or brightness field", address)
    text = fields[2]
    if len(text) > MAX_TEXT or not all(0x20 <= c <= 0x7E for c in text):
        raise FrameError(f"text is not 0-{MAX_TEXT} printable ASCII characters", address)
    return AsciiFrame(address, int(fields[1]), text.decode("ascii"))


@dataclass
class FrameDecoder:
    """A sign's side of the line: bytes in, whole frames (or their errors) out. The simulator's
    sign and the tests use it; what is not part of a frame is counted in ``garbage``."""

    garbage: int = 0
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[AsciiFrame | FrameError]:
        self._buf.extend(data)
        out: list[AsciiFrame | FrameError] = []
        buf = self._buf
        while buf:
            start = buf.find(STX)
            if start < 0:
                self.garbage += len(buf)
                buf.clear()
                break
            if start:
                self.garbage += start
                del buf[:start]
            end = buf.find(ETX, 1)
            restart = buf.find(STX, 1)
            if restart >= 0 and (end < 0 or restart < end):  # cut short: a new frame began
                self.garbage += restart
                del buf[:restart]
                continue
            if end < 0:
                if len(buf) > MAX_FRAME:  # no ETX where one must be: noise that began with STX
                    self.garbage += 1
                    del buf[0]
                    continue
                break
            if len(buf) < end + 3:
                break
            frame = bytes(buf[:end + 3])
            del buf[:end + 3]
            try:
                out.append(decode_frame(frame))
            except FrameError as e:
                out.append(e)
        return out


def encode_reply(address: int, ok: bool) -> bytes:
    """The sign's answer: ACK or NAK, and its address."""
    return bytes((ACK if ok else NAK,)) + b"%02d" % address


def take_reply(buf: bytearray, address: int) -> tuple[bool | None, int]:
    """The answer of the sign at `address` in what arrived: (True: ACK, False: NAK, None: not
    there yet), and the bytes skipped as garbage; consumes what it read from `buf`."""
    garbage = 0
    mine = b"%02d" % address
    while buf:
        if buf[0] not in (ACK, NAK):
            del buf[0]
            garbage += 1
            continue
        if len(buf) < REPLY_BYTES:
            return None, garbage
        if bytes(buf[1:REPLY_BYTES]) == mine:
            ok = buf[0] == ACK
            del buf[:REPLY_BYTES]
            return ok, garbage
        del buf[0]  # ACK/NAK by coincidence, or another sign's answer
        garbage += 1
    return None, garbage


# --- the ASCII line --------------------------------------------------------------------------


@dataclass(slots=True)
class _Waiter:
    address: int
    future: asyncio.Future[bool]
    buf: bytearray = field(default_factory=bytearray)
    garbage: int = 0


class AsciiLine:
    """An RS-485 line of ASCII signs: one frame and its answer at a time. The port itself (open,
    non-blocking reads on the loop, writes) is a :class:`SerialLine`, as the printers' are."""

    def __init__(self, config: BusConfig, *, opener: Opener = open_serial) -> None:
        self.config = config
        self.timing = LineTiming.of(config.baudrate, config.parity, config.stopbits)
        self.timeout_s = config.timeout_ms / 1000
        self.counters = Counters()
        # The line's own framing (parity, stop bits) comes from its config, not SerialLine's 8N1.
        self._serial = SerialLine(config.port, config.baudrate, on_data=self._on_data,
                                  on_down=self._on_down,
                                  opener=lambda _port, _baudrate: opener(config))
        self._lock = asyncio.Lock()
        self._waiter: _Waiter | None = None

    @property
    def is_open(self) -> bool:
        return self._serial.is_open

    @property
    def bytes_written(self) -> int:
        return self._serial.bytes_written

    @property
    def bytes_read(self) -> int:
        return self._serial.bytes_read

    def open(self) -> None:
        """Raises OSError (pyserial's SerialException is one) or ValueError if it cannot."""
        self._serial.open()

    def close(self) -> None:
        self._serial.close()

    async def transact(self, frame: bytes, address: int, sign: Counters) -> None:
        """Send `frame` and wait for the answer of the sign at `address`; raises SignTimeout,
        SignRefused or SignLinkDown, each counted in `sign` and the line's counters."""
        async with self._lock:
            try:
                await self._transact(frame, address, sign)
            except SignError as e:
                self._count(sign, e.counter)
                raise

    async def _transact(self, frame: bytes, address: int, sign: Counters) -> None:
        if not self.is_open:
            try:
                self.open()
            except (OSError, ValueError) as e:
                raise SignLinkDown(f"cannot open {self.config.port}: {e}") from None
        loop = asyncio.get_running_loop()
        waiter = _Waiter(address, loop.create_future())
        self._waiter = waiter
        self._count(sign, "requests")
        try:
            try:
                await self._serial.write(frame, self.timeout_s)
            except LineDown as e:
                raise SignLinkDown(str(e)) from None
            deadline = loop.time() + self.timing.wire_s(len(frame)) + self.timeout_s
            timer = loop.call_at(deadline, _expire, waiter.future)
            try:
                ok = await waiter.future
            finally:
                timer.cancel()
        finally:
            self._waiter = None
            garbage = waiter.garbage + len(waiter.buf)  # and what came after, or a part
            if garbage:
                self._count(sign, "garbage_bytes", garbage)
        self._count(sign, "replies")
        if not ok:
            raise SignRefused(f"sign {address} answered NAK")

    def _on_down(self, error: str) -> None:
        self.counters.io_errors += 1
        log.warning("signs.read_failed", port=self.config.port, error=error)

    def _on_data(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.future.done():
            self.counters.garbage_bytes += len(data)  # nobody asked
            return
        waiter.buf.extend(data)
        ok, garbage = take_reply(waiter.buf, waiter.address)
        waiter.garbage += garbage
        if ok is not None:
            waiter.future.set_result(ok)

    def _count(self, sign: Counters, kind: str, n: int = 1) -> None:
        sign.add(kind, n)
        self.counters.add(kind, n)


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_exception(SignTimeout("no answer in time"))


# --- the signs -------------------------------------------------------------------------------


class Sign(Protocol):
    """A count sign: shows a picture and says whether the sign took it."""

    sign_id: str
    counters: Counters

    async def show(self, display: Display) -> None:
        """Raises SignError when the sign does not confirm it."""
        ...

    async def close(self) -> None: ...


class AsciiSign:
    """A sign that takes the ASCII frame of the module's docstring."""

    def __init__(self, config: SignConfig, line: AsciiLine) -> None:
        self.sign_id = config.id
        self.address = config.station
        self.line = line
        self.counters = Counters()

    async def show(self, display: Display) -> None:
        frame = encode_frame(self.address, display.brightness, display.text)
        await self.line.transact(frame, self.address, self.counters)

    async def close(self) -> None:
        self.line.close()


class ModbusSign:
    """A sign that is a Modbus RTU slave with count, mode and brightness registers."""

    def __init__(self, config: SignConfig, link: RtuLink) -> None:
        self.sign_id = config.id
        self.unit_id = config.station
        self.first_register = config.first_register
        self.write_function = config.write_function
        self.link = link
        self.counters = Counters()

    @staticmethod
    def registers(display: Display) -> tuple[int, int, int]:
        count = NO_COUNT if display.count is None else min(display.count, NO_COUNT - 1)
        return count, MODBUS_MODES[display.shown], display.brightness

    async def show(self, display: Display) -> None:
        values = self.registers(display)
        if not self.link.is_open:
            try:
                self.link.open()
            except (OSError, ValueError) as e:
                self.counters.io_errors += 1
                raise SignLinkDown(f"cannot open {self.link.config.port}: {e}") from None
        start = self.first_register
        if self.write_function == WRITE_MULTIPLE:
            head = bytes((WRITE_MULTIPLE,)) + start.to_bytes(2, "big") + (3).to_bytes(2, "big")
            await self._write(head + bytes((6,)) + b"".join(v.to_bytes(2, "big")
                                                             for v in values), head)
            return
        for i, value in enumerate(values):
            pdu = bytes((WRITE_SINGLE,)) + (start + i).to_bytes(2, "big") + value.to_bytes(2,
                                                                                         "big")
            await self._write(pdu, pdu)

    async def _write(self, pdu: bytes, echo: bytes) -> None:
        try:
            reply = await self.link.transact(self.unit_id, pdu, 8, self.counters)
        except ModbusError as e:  # counted by the link
            error = SignTimeout if e.counter == "timeouts" else (
                SignRefused if e.counter == "exceptions" else SignError)
            raise error(f"unit {self.unit_id}: {e}") from None
        if reply != echo:
            raise SignRefused(f"unit {self.unit_id} did not confirm the write")

    async def close(self) -> None:
        self.link.close()


def open_signs(configs: Iterable[SignConfig], *, opener: Opener = open_serial
               ) -> dict[str, AsciiSign | ModbusSign]:
    """A driver per sign; signs on one port share its line. Nothing is opened yet: each line
    opens at its first update (and again after a failure)."""
    lines: dict[str, AsciiLine | RtuLink] = {}
    signs: dict[str, AsciiSign | ModbusSign] = {}
    for config in configs:
        line = lines.get(config.port)
        if config.kind == "ascii":
            if not isinstance(line, AsciiLine):
                line = lines[config.port] = AsciiLine(config.line, opener=opener)
            signs[config.id] = AsciiSign(config, line)
        else:
            if not isinstance(line, RtuLink):
                line = lines[config.port] = RtuLink(config.line, opener=opener)
            signs[config.id] = ModbusSign(config, line)
    return signs
