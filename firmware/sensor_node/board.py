"""The only module that touches hardware: Raspberry Pi Pico (RP2040), MicroPython.

Wiring (see README.md): QMC5883L on I2C0 (GP4 SDA, GP5 SCL); HC-SR04 trigger GP6, echo GP7
(through a 5 V -> 3.3 V divider); RS-485 transceiver (MAX3485 / SP3485) on UART0 (GP0 TX ->
DI, GP1 RX <- RO) with DE and /RE tied together on GP2; status LED on GP25.

Everything else (detect, modbus_slave, registers) is pure logic that the tests and the
hardware simulator run under CPython; this module is never imported there.
"""

import json
import time

import machine

SETTINGS_FILE = "/settings.json"

QMC5883L_ADDR = 0x0D
_QMC_DATA = 0x00
_QMC_STATUS = 0x06
_QMC_CTRL1 = 0x09
_QMC_CTRL2 = 0x0A
_QMC_SET_RESET = 0x0B
# Continuous mode, 50 Hz, +-2 G, 512x oversampling: 12000 LSB per gauss.
_QMC_MODE = 0x05
_LSB_PER_MG = 12.0
_QMC_DRDY = 0x01
_QMC_OVERFLOW = 0x02

_ECHO_TIMEOUT_US = 30000  # ~5 m: longer would block the Modbus loop
_US_PER_CM = 58.3  # round trip at 343 m/s

WATCHDOG_MS = 2000


def _signed(lo, hi):
    value = lo | (hi << 8)
    return value - 0x10000 if value & 0x8000 else value


class Board:
    def __init__(self):
        self.led = machine.Pin(25, machine.Pin.OUT)
        self.de = machine.Pin(2, machine.Pin.OUT, value=0)  # receive until we answer
        self.i2c = machine.I2C(0, sda=machine.Pin(4), scl=machine.Pin(5), freq=400000)
        self.trigger = machine.Pin(6, machine.Pin.OUT, value=0)
        self.echo = machine.Pin(7, machine.Pin.IN)
        self.uart = None
        self.wdt = None
        self._start_ms = time.ticks_ms()
        self._last_us = time.ticks_us()
        self._now_us = 0
        self._mag_ok = self._init_magnetometer()

    # --- time ----------------------------------------------------------------------------

    def now_us(self):
        """Microseconds since boot, never wrapping (ticks_us wraps after ~18 minutes)."""
        t = time.ticks_us()
        self._now_us += time.ticks_diff(t, self._last_us)
        self._last_us = t
        return self._now_us

    def uptime_s(self):
        return self.now_us() // 1000000

    # --- watchdog ------------------------------------------------------------------------

    def start_watchdog(self):
        # The RP2040 watchdog cannot be stopped once started; the main loop feeds it.
        self.wdt = machine.WDT(timeout=WATCHDOG_MS)

    def feed_watchdog(self):
        if self.wdt is not None:
            self.wdt.feed()

    def reset_was_watchdog(self):
        return machine.reset_cause() == machine.WDT_RESET

    def reboot(self):
        machine.reset()

    # --- RS-485 --------------------------------------------------------------------------

    def open_uart(self, baudrate, parity):
        bits = {"N": None, "E": 0, "O": 1}[parity]
        # Modbus RTU: 11 bits a character, so no parity means two stop bits.
        stop = 2 if bits is None else 1
        self.uart = machine.UART(0, baudrate=baudrate, bits=8, parity=bits, stop=stop,
                                 tx=machine.Pin(0), rx=machine.Pin(1), rxbuf=512, timeout=0)

    def uart_read(self):
        if self.uart.any():
            return self.uart.read()
        return None

    def uart_write(self, data):
        """Drive the bus only while transmitting: DE high, send, wait for the last stop bit."""
        self.de.value(1)
        self.led.value(1)
        self.uart.write(data)
        self.uart.flush()  # returns when the shift register is empty (MicroPython >= 1.20)
        self.de.value(0)
        self.led.value(0)

    # --- sensors -------------------------------------------------------------------------

    def _init_magnetometer(self):
        try:
            self.i2c.writeto_mem(QMC5883L_ADDR, _QMC_CTRL2, b"\x80")  # soft reset
            time.sleep_ms(2)
            self.i2c.writeto_mem(QMC5883L_ADDR, _QMC_SET_RESET, b"\x01")  # datasheet value
            self.i2c.writeto_mem(QMC5883L_ADDR, _QMC_CTRL1, bytes((_QMC_MODE,)))
            return True
        except OSError:
            return False

    def read_field(self):
        """(x, y, z) in milligauss, or None (no sensor, no new data, or saturated)."""
        if not self._mag_ok:
            self._mag_ok = self._init_magnetometer()
            return None
        try:
            status = self.i2c.readfrom_mem(QMC5883L_ADDR, _QMC_STATUS, 1)[0]
            if status & _QMC_OVERFLOW:
                return None
            raw = self.i2c.readfrom_mem(QMC5883L_ADDR, _QMC_DATA, 6)
        except OSError:
            self._mag_ok = False
            return None
        return (_signed(raw[0], raw[1]) / _LSB_PER_MG,
                _signed(raw[2], raw[3]) / _LSB_PER_MG,
                _signed(raw[4], raw[5]) / _LSB_PER_MG)

    def read_distance_cm(self):
        """HC-SR04 distance in cm, or None when no echo came back in time."""
        self.trigger.value(0)
        time.sleep_us(2)
        self.trigger.value(1)
        time.sleep_us(10)
        self.trigger.value(0)
        us = machine.time_pulse_us(self.echo, 1, _ECHO_TIMEOUT_US)
        if us < 0:
            return None
        return us / _US_PER_CM

    # --- flash ---------------------------------------------------------------------------

    def load_settings(self):
        try:
            with open(SETTINGS_FILE) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def save_settings(self, settings):
        # Write a new file, then rename: a power cut mid-write leaves the old settings.
        tmp = SETTINGS_FILE + ".new"
        with open(tmp, "w") as f:
            json.dump(settings, f)
        import os
        os.rename(tmp, SETTINGS_FILE)
