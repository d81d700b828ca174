"""The node's Modbus register map (docs/modbus-register-map.md) and its settings.

Input registers (function 04) report the detector; holding registers (03, 06, 16) hold the
settings kept in flash and the command register. A written setting is validated here, stored
in ``settings`` and flagged ``dirty``; ``main.py`` saves it to flash and applies a new unit id
or line setting only after the write's response has gone out (the master expects the answer
from the old address).

Pure logic; runs under MicroPython and CPython.
"""

FIRMWARE_VERSION = (1, 0)

# Input registers.
IR_FIRMWARE = 0
IR_STATUS = 1
IR_MAGNITUDE_MG = 2
IR_DEVIATION_MG = 3
IR_DISTANCE_CM = 4
IR_UPTIME_HI = 5
IR_UPTIME_LO = 6
IR_FRAMES_OK = 7
IR_CRC_ERRORS = 8
IR_FRAMING_ERRORS = 9
IR_EXCEPTIONS = 10
IR_SENSOR_ERRORS = 11
IR_STATE_CHANGES = 12
IR_RESET_CAUSE = 13  # 0 power-on or other, 1 watchdog
INPUT_COUNT = 14

# Status bits (IR_STATUS).
ST_OCCUPIED = 0x0001
ST_SENSOR_FAULT = 0x0002
ST_CALIBRATING = 0x0004
ST_ULTRASONIC_FITTED = 0x0008
ST_ULTRASONIC_FAULT = 0x0010

NO_DISTANCE = 0xFFFF

# Holding registers.
HR_COMMAND = 100
HR_UNIT_ID = 101
HR_BAUD_DIV100 = 102
HR_PARITY = 103
HR_ON_MG = 104
HR_OFF_MG = 105
HR_DWELL_ON_MS = 106
HR_DWELL_OFF_MS = 107
HR_DRIFT_TAU_S = 108
HR_US_ON_CM = 109
HR_US_HYST_CM = 110
HOLDING_FIRST = HR_COMMAND
HOLDING_LAST = HR_US_HYST_CM

CMD_CALIBRATE = 0xCA1B
CMD_REBOOT = 0xB007

PARITIES = ("N", "O", "E")
BAUDRATES = (9600, 19200, 38400, 57600, 115200)

# Holding register -> (settings key, lowest, highest).
_SETTINGS = {
    HR_UNIT_ID: ("unit_id", 1, 247),
    HR_ON_MG: ("on_mg", 5, 2000),
    HR_OFF_MG: ("off_mg", 1, 2000),
    HR_DWELL_ON_MS: ("dwell_on_ms", 0, 60000),
    HR_DWELL_OFF_MS: ("dwell_off_ms", 0, 60000),
    HR_DRIFT_TAU_S: ("drift_tau_s", 0, 65535),
    HR_US_ON_CM: ("us_on_cm", 0, 400),
    HR_US_HYST_CM: ("us_hyst_cm", 0, 100),
}

DEFAULT_SETTINGS = {
    "unit_id": 247,  # a fresh node answers at 247 until commissioned
    "baudrate": 19200,
    "parity": "E",
    "on_mg": 60,
    "off_mg": 30,
    "dwell_on_ms": 2000,
    "dwell_off_ms": 3000,
    "drift_tau_s": 900,
    "us_on_cm": 0,
    "us_hyst_cm": 15,
    "baseline": None,  # [x, y, z] milligauss once calibrated
}

ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03


def clean_settings(stored):
    """Settings read from flash, with every missing or out-of-range value set to its default.

    A corrupt settings file must not brick the node: it answers at its defaults instead.
    """
    out = dict(DEFAULT_SETTINGS)
    if not isinstance(stored, dict):
        return out
    for key, lo, hi in _SETTINGS.values():
        value = stored.get(key)
        if isinstance(value, int) and lo <= value <= hi:
            out[key] = value
    if stored.get("baudrate") in BAUDRATES:
        out["baudrate"] = stored["baudrate"]
    if stored.get("parity") in PARITIES:
        out["parity"] = stored["parity"]
    baseline = stored.get("baseline")
    if isinstance(baseline, list) and len(baseline) == 3:
        try:  # noqa: SIM105 - MicroPython has no contextlib
            out["baseline"] = [float(v) for v in baseline]
        except (TypeError, ValueError):
            pass
    if out["off_mg"] >= out["on_mg"]:
        out["on_mg"], out["off_mg"] = DEFAULT_SETTINGS["on_mg"], DEFAULT_SETTINGS["off_mg"]
    return out


def detector_settings(settings):
    """The subset of the settings the Detector takes."""
    keys = ("on_mg", "off_mg", "dwell_on_ms", "dwell_off_ms", "drift_tau_s", "us_on_cm",
            "us_hyst_cm")
    return {key: settings[key] for key in keys}


def _clip16(value):
    value = int(value + 0.5)
    return 0 if value < 0 else 0xFFFF if value > 0xFFFF else value


class NodeRegisters:
    """The register bank the Modbus slave reads and writes.

    ``detector`` is a ``detect.Detector``; ``slave`` (set after the slave is built) gives the
    protocol error counters; ``uptime_s`` is a function; ``sensor_errors`` and ``reset_cause``
    are kept by the main loop.
    """

    def __init__(self, detector, settings, uptime_s):
        self.detector = detector
        self.settings = settings
        self.uptime_s = uptime_s
        self.slave = None
        self.sensor_errors = 0
        self.reset_cause = 0
        self.dirty = False  # settings changed: save to flash, apply line settings
        self._calibrations_saved = detector.calibrations
        self.reboot_requested = False

    def status(self):
        d = self.detector
        bits = 0
        if d.occupied:
            bits |= ST_OCCUPIED
        if d.sensor_fault:
            bits |= ST_SENSOR_FAULT
        if d.calibrating:
            bits |= ST_CALIBRATING
        if self.settings["us_on_cm"]:
            bits |= ST_ULTRASONIC_FITTED
        if d.us_fault:
            bits |= ST_ULTRASONIC_FAULT
        return bits

    def read_input(self, addr, count):
        if addr + count > INPUT_COUNT:
            return ILLEGAL_DATA_ADDRESS
        d = self.detector
        s = self.slave
        uptime = int(self.uptime_s()) & 0xFFFFFFFF
        distance = NO_DISTANCE if d.distance_cm is None else _clip16(d.distance_cm)
        values = (
            (FIRMWARE_VERSION[0] << 8) | FIRMWARE_VERSION[1],
            self.status(),
            _clip16(d.magnitude_mg),
            _clip16(d.deviation_mg),
            distance,
            uptime >> 16,
            uptime & 0xFFFF,
            (s.frames_ok if s else 0) & 0xFFFF,
            (s.crc_errors if s else 0) & 0xFFFF,
            (s.framing_errors if s else 0) & 0xFFFF,
            (s.exceptions if s else 0) & 0xFFFF,
            self.sensor_errors & 0xFFFF,
            d.changes & 0xFFFF,
            self.reset_cause,
        )
        return list(values[addr:addr + count])

    def read_holding(self, addr, count):
        if addr < HOLDING_FIRST or addr + count - 1 > HOLDING_LAST:
            return ILLEGAL_DATA_ADDRESS
        out = []
        for reg in range(addr, addr + count):
            if reg == HR_COMMAND:
                out.append(0)
            elif reg == HR_BAUD_DIV100:
                out.append(self.settings["baudrate"] // 100)
            elif reg == HR_PARITY:
                out.append(PARITIES.index(self.settings["parity"]))
            else:
                out.append(self.settings[_SETTINGS[reg][0]])
        return out

    def write_holding(self, addr, values):
        """Validate every value first, then apply all: a rejected write changes nothing."""
        if addr < HOLDING_FIRST or addr + len(values) - 1 > HOLDING_LAST:
            return ILLEGAL_DATA_ADDRESS
        new = dict(self.settings)
        command = None
        for i, value in enumerate(values):
            reg = addr + i
            if reg == HR_COMMAND:
                if value not in (CMD_CALIBRATE, CMD_REBOOT):
                    return ILLEGAL_DATA_VALUE
                command = value
            elif reg == HR_BAUD_DIV100:
                if value * 100 not in BAUDRATES:
                    return ILLEGAL_DATA_VALUE
                new["baudrate"] = value * 100
            elif reg == HR_PARITY:
                if value >= len(PARITIES):
                    return ILLEGAL_DATA_VALUE
                new["parity"] = PARITIES[value]
            else:
                key, lo, hi = _SETTINGS[reg]
                if not lo <= value <= hi:
                    return ILLEGAL_DATA_VALUE
                new[key] = value
        if new["off_mg"] >= new["on_mg"]:
            return ILLEGAL_DATA_VALUE
        if new != self.settings:
            self.settings.update(new)
            self.detector.settings.update(detector_settings(new))
            self.dirty = True
        if command == CMD_CALIBRATE:
            self.detector.start_calibration()
        elif command == CMD_REBOOT:
            self.reboot_requested = True
        return 0

    def take_baseline(self):
        """Put the baseline into the settings (to be saved) after a calibration or a real move."""
        d = self.detector
        if d.baseline is None or d.calibrating:
            return False
        stored = self.settings.get("baseline")
        as_list = [round(v, 1) for v in d.baseline]
        calibrated = d.calibrations != self._calibrations_saved
        if calibrated or stored is None or self._moved(stored, as_list):
            self._calibrations_saved = d.calibrations
            self.settings["baseline"] = as_list
            self.dirty = True
            return True
        return False

    @staticmethod
    def _moved(old, new):
        # Drift tracking moves the baseline slowly; only a real move is worth a flash write.
        moved = max(abs(a - b) for a, b in zip(old, new))  # noqa: B905 - no strict in MicroPython
        return moved >= 5.0
