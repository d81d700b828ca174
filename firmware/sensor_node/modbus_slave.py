"""Modbus RTU slave: framing by silence, CRC16, function codes 03/04/06/16, exceptions, broadcast.

Pure logic, no hardware: bytes go in through ``feed`` with the time they arrived, and
``poll`` hands back the frame to transmit once the line has been quiet for 3.5 characters.
``main.py`` moves bytes between the UART and this object and drives the RS-485 DE pin through
``board``; the hardware simulator and the tests run the very same code under CPython.

MicroPython-compatible: no typing, no dataclasses, no f-strings in hot paths.
"""

# Function codes.
READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10

# Exception codes (Modbus Application Protocol v1.1b3, section 7).
ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
SERVER_DEVICE_FAILURE = 0x04

BROADCAST = 0

# Protocol limits: at most 125 registers per read, 123 per write (a 256-byte RTU frame).
MAX_READ = 125
MAX_WRITE = 123


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data):
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body):
    """``body`` (address + PDU) with its CRC appended, low byte first."""
    crc = crc16(body)
    return bytes(body) + bytes((crc & 0xFF, crc >> 8))


def crc_ok(frame):
    return len(frame) >= 4 and crc16(frame) == 0  # the CRC over a frame with its CRC is 0


def char_time_us(baudrate, bits_per_char=11):
    """Time of one character on the wire: start + 8 data + parity + stop bits (11 in RTU)."""
    return bits_per_char * 1000000 // baudrate


def silence_us(baudrate, bits_per_char=11):
    """(t1.5, t3.5) in microseconds; fixed 750 and 1750 above 19200 baud, as the spec says."""
    if baudrate > 19200:
        return 750, 1750
    char = char_time_us(baudrate, bits_per_char)
    return (3 * char) // 2, (7 * char) // 2


def _u16(hi, lo):
    return (hi << 8) | lo


class ModbusSlave:
    """One node's RTU slave.

    ``registers`` is the node's register bank (see ``registers.py``): it answers
    ``read_input(addr, count)``, ``read_holding(addr, count)`` (a list of ints, or an
    exception code) and ``write_holding(addr, values)`` (0, or an exception code).

    Counters (for the error-counter registers): ``frames_ok`` (addressed to us, valid),
    ``crc_errors``, ``framing_errors`` (a gap of more than 1.5 characters inside a frame, or a
    frame too short), ``exceptions`` (exception responses sent), ``broadcasts``.
    """

    def __init__(self, unit_id, registers, baudrate=19200, bits_per_char=11):
        self.unit_id = unit_id
        self.registers = registers
        self.frames_ok = 0
        self.crc_errors = 0
        self.framing_errors = 0
        self.exceptions = 0
        self.broadcasts = 0
        self._buf = bytearray()
        self._last_rx_us = None
        self._broken = False  # an intra-frame gap was seen: the frame is discarded
        self.set_baudrate(baudrate, bits_per_char)

    def set_baudrate(self, baudrate, bits_per_char=11):
        self.char_us = char_time_us(baudrate, bits_per_char)
        self.t15_us, self.t35_us = silence_us(baudrate, bits_per_char)

    # --- byte stream (main loop / simulator) -------------------------------------------

    def feed(self, data, now_us):
        """Bytes received from the line; ``now_us`` is when the last of them arrived."""
        if not data:
            return
        last = self._last_rx_us
        if last is not None and self._buf:
            # A chunk of n bytes that arrived at now_us began n characters earlier.
            gap = now_us - len(data) * self.char_us - last
            if gap > self.t35_us:
                # The previous frame ended unnoticed (poll was late): handle it as finished.
                self._buf = bytearray()
                self._broken = False
            elif gap > self.t15_us:
                self._broken = True
        self._buf.extend(data)
        self._last_rx_us = now_us

    def poll(self, now_us):
        """The response to transmit, once a frame has ended (3.5 characters of silence), or None."""
        if not self._buf or now_us - self._last_rx_us < self.t35_us:
            return None
        frame = bytes(self._buf)
        broken = self._broken
        self._buf = bytearray()
        self._broken = False
        if broken:
            self.framing_errors += 1
            return None
        return self.handle_frame(frame)

    def next_deadline_us(self):
        """When ``poll`` may next have a frame to act on (None when idle)."""
        if not self._buf:
            return None
        return self._last_rx_us + self.t35_us

    # --- frames --------------------------------------------------------------------------

    def handle_frame(self, frame):
        """Act on one complete frame; return the reply, or None (bad, not ours, broadcast)."""
        if len(frame) < 4:
            self.framing_errors += 1
            return None
        if not crc_ok(frame):
            self.crc_errors += 1
            return None
        address = frame[0]
        if address != self.unit_id and address != BROADCAST:
            return None
        pdu = frame[1:-2]
        if address == BROADCAST:
            self.broadcasts += 1
            # Only writes make sense to everyone at once, and nobody answers (spec 2.1).
            if pdu[0] in (WRITE_SINGLE, WRITE_MULTIPLE):
                self._execute(pdu)
            return None
        self.frames_ok += 1
        reply = self._execute(pdu)
        if reply[0] & 0x80:
            self.exceptions += 1
        return with_crc(bytes((self.unit_id,)) + reply)

    def _execute(self, pdu):
        function = pdu[0]
        try:
            if function in (READ_HOLDING, READ_INPUT):
                return self._read(function, pdu)
            if function == WRITE_SINGLE:
                return self._write_single(pdu)
            if function == WRITE_MULTIPLE:
                return self._write_multiple(pdu)
        except Exception:  # a bad register bank must not kill the node
            return _exception(function, SERVER_DEVICE_FAILURE)
        return _exception(function, ILLEGAL_FUNCTION)

    def _read(self, function, pdu):
        if len(pdu) != 5:
            return _exception(function, ILLEGAL_DATA_VALUE)
        addr = _u16(pdu[1], pdu[2])
        count = _u16(pdu[3], pdu[4])
        if not 1 <= count <= MAX_READ:
            return _exception(function, ILLEGAL_DATA_VALUE)
        if function == READ_INPUT:
            values = self.registers.read_input(addr, count)
        else:
            values = self.registers.read_holding(addr, count)
        if isinstance(values, int):
            return _exception(function, values)
        out = bytearray((function, 2 * count))
        for value in values:
            out.append((value >> 8) & 0xFF)
            out.append(value & 0xFF)
        return bytes(out)

    def _write_single(self, pdu):
        if len(pdu) != 5:
            return _exception(WRITE_SINGLE, ILLEGAL_DATA_VALUE)
        addr = _u16(pdu[1], pdu[2])
        code = self.registers.write_holding(addr, [_u16(pdu[3], pdu[4])])
        if code:
            return _exception(WRITE_SINGLE, code)
        return bytes(pdu)  # the echo of the request

    def _write_multiple(self, pdu):
        if len(pdu) < 6:
            return _exception(WRITE_MULTIPLE, ILLEGAL_DATA_VALUE)
        addr = _u16(pdu[1], pdu[2])
        count = _u16(pdu[3], pdu[4])
        nbytes = pdu[5]
        if not 1 <= count <= MAX_WRITE or nbytes != 2 * count or len(pdu) != 6 + nbytes:
            return _exception(WRITE_MULTIPLE, ILLEGAL_DATA_VALUE)
        values = [_u16(pdu[6 + 2 * i], pdu[7 + 2 * i]) for i in range(count)]
        code = self.registers.write_holding(addr, values)
        if code:
            return _exception(WRITE_MULTIPLE, code)
        return bytes(pdu[:5])


def _exception(function, code):
    return bytes((function | 0x80, code))
