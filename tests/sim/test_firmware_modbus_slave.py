"""The sensor node's Modbus RTU slave and register map, under CPython."""

from __future__ import annotations

import pytest
from parking_sim.nodes import load_firmware

from gateway.drivers.modbus import crc16 as master_crc16

detect = load_firmware("detect")
mb = load_firmware("modbus_slave")
regs = load_firmware("registers")


def frame(*body: int) -> bytes:
    return mb.with_crc(bytes(body))


def node(unit: int = 7):
    settings = regs.clean_settings({"unit_id": unit, "baseline": [0.0, 0.0, 400.0]})
    detector = detect.Detector(regs.detector_settings(settings), baseline=settings["baseline"])
    bank = regs.NodeRegisters(detector, settings, lambda: 70000)
    slave = mb.ModbusSlave(unit, bank, 19200)
    bank.slave = slave
    return slave, bank, detector


# --- CRC and framing ----------------------------------------------------------------------


def test_crc_matches_the_spec_example_and_the_gateway():
    # Modbus over Serial Line v1.02, 6.2.2: read 10 holding registers of unit 1.
    assert frame(0x01, 0x03, 0x00, 0x00, 0x00, 0x0A) == bytes.fromhex("01030000000AC5CD")
    data = bytes(range(200))
    assert mb.crc16(data) == master_crc16(data)
    assert mb.crc_ok(frame(1, 2, 3))
    assert not mb.crc_ok(b"\x01\x02\x03\x00\x00")


def test_silences_follow_the_spec():
    assert mb.char_time_us(19200) == 572
    assert mb.silence_us(19200) == (858, 2002)
    assert mb.silence_us(9600) == (1717, 4007)
    assert mb.silence_us(115200) == (750, 1750)  # fixed above 19200 baud


def test_a_frame_is_answered_only_after_three_and_a_half_characters_of_silence():
    slave, _, _ = node()
    request = frame(7, 0x04, 0x00, 0x01, 0x00, 0x01)
    slave.feed(request[:3], 1000)
    t_last = 1000 + 5 * 572 + 800  # the next 5 bytes, after a gap of 800 us < 1.5 characters
    slave.feed(request[3:], t_last)
    assert slave.poll(t_last + 2001) is None  # not yet 3.5 characters
    assert slave.next_deadline_us() == t_last + 2002
    reply = slave.poll(t_last + 2002)
    assert reply is not None
    assert reply[:3] == bytes((7, 0x04, 2))
    assert mb.crc_ok(reply)


def test_a_gap_inside_a_frame_discards_it():
    slave, _, _ = node()
    request = frame(7, 0x04, 0x00, 0x01, 0x00, 0x01)
    slave.feed(request[:4], 0)
    slave.feed(request[4:], 4 * 572 + 900)  # a gap of 900 us mid-frame: more than 1.5 chars
    assert slave.poll(4 * 572 + 900 + 2002) is None
    assert slave.framing_errors == 1
    assert slave.frames_ok == 0


def test_a_bad_crc_is_counted_and_never_answered():
    slave, _, _ = node()
    damaged = bytearray(frame(7, 0x04, 0x00, 0x01, 0x00, 0x01))
    damaged[3] ^= 0x10
    assert slave.handle_frame(bytes(damaged)) is None
    assert slave.crc_errors == 1


def test_frames_for_other_units_are_ignored_silently():
    slave, _, _ = node()
    assert slave.handle_frame(frame(8, 0x04, 0x00, 0x01, 0x00, 0x01)) is None
    assert (slave.crc_errors, slave.frames_ok) == (0, 0)


# --- function codes and exceptions ------------------------------------------------------------


def test_read_input_registers_reports_the_detector():
    slave, _, detector = node()
    detector.occupied = True
    detector.magnitude_mg, detector.deviation_mg = 512.4, 96.6
    reply = slave.handle_frame(frame(7, 0x04, 0x00, 0x00, 0x00, regs.INPUT_COUNT))
    values = [(reply[3 + 2 * i] << 8) | reply[4 + 2 * i] for i in range(regs.INPUT_COUNT)]
    assert values[regs.IR_FIRMWARE] == 0x0100
    assert values[regs.IR_STATUS] == regs.ST_OCCUPIED
    assert values[regs.IR_MAGNITUDE_MG] == 512
    assert values[regs.IR_DEVIATION_MG] == 97
    assert values[regs.IR_DISTANCE_CM] == regs.NO_DISTANCE
    assert (values[regs.IR_UPTIME_HI] << 16) | values[regs.IR_UPTIME_LO] == 70000
    assert values[regs.IR_FRAMES_OK] == 1


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ((7, 0x2B, 0x0E, 0x01, 0x00), mb.ILLEGAL_FUNCTION),
        ((7, 0x04, 0x00, 0x0C, 0x00, 0x05), mb.ILLEGAL_DATA_ADDRESS),  # past the map
        ((7, 0x04, 0x00, 0x00, 0x00, 0x00), mb.ILLEGAL_DATA_VALUE),  # count 0
        ((7, 0x04, 0x00, 0x00, 0x00, 0x7E), mb.ILLEGAL_DATA_VALUE),  # count 126 > 125
        ((7, 0x03, 0x00, 0x10, 0x00, 0x01), mb.ILLEGAL_DATA_ADDRESS),  # no holding reg 16
        ((7, 0x06, 0x00, 0x65, 0x00, 0x00), mb.ILLEGAL_DATA_VALUE),  # unit id 0
        ((7, 0x06, 0x00, 0x64, 0x12, 0x34), mb.ILLEGAL_DATA_VALUE),  # unknown command
        ((7, 0x06, 0x00, 0x69, 0x00, 0x50), mb.ILLEGAL_DATA_VALUE),  # off_mg 80 >= on_mg 60
        ((7, 0x10, 0x00, 0x65, 0x00, 0x02, 0x03, 0, 9, 0), mb.ILLEGAL_DATA_VALUE),  # bad count
    ],
)
def test_exception_replies(request_body: tuple[int, ...], code: int):
    slave, bank, _ = node()
    before = dict(bank.settings)
    reply = slave.handle_frame(frame(*request_body))
    assert reply == frame(7, request_body[1] | 0x80, code)
    assert slave.exceptions == 1
    assert bank.settings == before  # a rejected write changes nothing


def test_write_single_echoes_and_is_flagged_for_flash():
    slave, bank, detector = node()
    request = frame(7, 0x06, 0x00, regs.HR_ON_MG, 0x00, 90)
    assert slave.handle_frame(request) == request
    assert bank.settings["on_mg"] == 90
    assert detector.settings["on_mg"] == 90
    assert bank.dirty


def test_write_multiple_is_all_or_nothing():
    slave, bank, _ = node()
    good = frame(7, 0x10, 0x00, regs.HR_ON_MG, 0x00, 0x02, 0x04, 0x00, 100, 0x00, 40)
    assert slave.handle_frame(good) == frame(7, 0x10, 0x00, regs.HR_ON_MG, 0x00, 0x02)
    assert (bank.settings["on_mg"], bank.settings["off_mg"]) == (100, 40)
    bad = frame(7, 0x10, 0x00, regs.HR_ON_MG, 0x00, 0x02, 0x04, 0x00, 50, 0x00, 70)
    assert slave.handle_frame(bad)[1] == 0x90
    assert (bank.settings["on_mg"], bank.settings["off_mg"]) == (100, 40)


def test_read_holding_registers_gives_the_settings():
    slave, _, _ = node()
    reply = slave.handle_frame(frame(7, 0x03, 0x00, regs.HR_COMMAND, 0x00, 4))
    assert reply[3:-2] == bytes((0, 0, 0, 7, 0, 192, 0, 2))  # command, unit, 19200, even


def test_calibrate_command_starts_a_calibration():
    slave, bank, detector = node()
    assert not detector.calibrating
    slave.handle_frame(frame(7, 0x06, 0x00, regs.HR_COMMAND, 0xCA, 0x1B))
    assert detector.calibrating
    assert bank.status() & regs.ST_CALIBRATING


def test_broadcast_writes_are_applied_and_never_answered():
    slave, bank, _ = node()
    assert slave.handle_frame(frame(0, 0x06, 0x00, regs.HR_DWELL_ON_MS, 0x03, 0xE8)) is None
    assert bank.settings["dwell_on_ms"] == 1000
    assert slave.handle_frame(frame(0, 0x04, 0x00, 0x00, 0x00, 0x01)) is None  # read: ignored
    assert slave.broadcasts == 2
    assert slave.frames_ok == 0


def test_a_broken_register_bank_answers_device_failure():
    slave, bank, _ = node()

    def broken(addr: int, count: int) -> list[int]:
        raise ZeroDivisionError

    bank.read_input = broken
    assert slave.handle_frame(frame(7, 0x04, 0, 0, 0, 1)) == frame(7, 0x84, 0x04)


# --- settings from flash --------------------------------------------------------------------


@pytest.mark.parametrize("stored", [None, "garbage", [], {"unit_id": 999, "on_mg": "x"},
                                    {"baseline": [1, "a", 3]}, {"on_mg": 20, "off_mg": 30}])
def test_corrupt_settings_fall_back_to_defaults(stored: object):
    settings = regs.clean_settings(stored)
    assert settings["unit_id"] == 247
    assert settings["off_mg"] < settings["on_mg"]
    assert settings["baseline"] is None


def test_settings_round_trip_through_flash():
    stored = {"unit_id": 12, "baudrate": 38400, "parity": "N", "on_mg": 80, "off_mg": 35,
              "baseline": [1.5, 2.5, 401.0]}
    settings = regs.clean_settings(stored)
    assert {k: settings[k] for k in stored} == stored


def test_a_new_baseline_is_saved_once_and_small_drift_is_not():
    _, bank, detector = node()
    bank.settings["baseline"] = None
    assert bank.take_baseline()
    bank.dirty = False
    detector.baseline = (1.0, 1.0, 401.0)  # drift tracking moved it a little
    assert not bank.take_baseline()
    detector.baseline = (9.0, 1.0, 401.0)
    assert bank.take_baseline()
