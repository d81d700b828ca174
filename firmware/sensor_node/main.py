"""Sensor node main loop: Modbus RTU slave on RS-485, bay detection, watchdog, settings in flash.

The loop never blocks for long: it moves UART bytes into the slave, answers when a frame has
ended, and samples the sensors when due and the line is idle (an ultrasonic echo may take
30 ms). The watchdog reboots the node if the loop ever stalls for two seconds.
"""

from board import Board
from detect import Detector
from modbus_slave import ModbusSlave
from registers import NodeRegisters, clean_settings, detector_settings

SAMPLE_PERIOD_US = 100000  # 10 Hz
# The watchdog cannot be stopped once armed: arming it a few seconds after boot leaves a
# window in which mpremote can interrupt main.py (Ctrl-C) for maintenance.
WATCHDOG_ARM_AFTER_US = 3000000


def build(board):
    settings = clean_settings(board.load_settings())
    detector = Detector(detector_settings(settings), baseline=settings["baseline"])
    registers = NodeRegisters(detector, settings, board.uptime_s)
    bits = 11  # RTU: 8 data bits + parity + 1 stop, or 8 + 2 stop without parity
    slave = ModbusSlave(settings["unit_id"], registers, settings["baudrate"], bits)
    registers.slave = slave
    return settings, detector, registers, slave


def sample(board, detector, registers):
    field = board.read_field()
    if field is None:
        registers.sensor_errors += 1
    distance = board.read_distance_cm() if registers.settings["us_on_cm"] else None
    detector.update(board.now_us() // 1000, field, distance)
    registers.take_baseline()


def apply_settings(board, registers, slave, line):
    """After a reply has gone out: save changed settings, take a new address and line.

    ``line`` is the (baudrate, parity) the UART runs at; returns the one it runs at now.
    """
    settings = registers.settings
    board.save_settings(settings)
    registers.dirty = False
    slave.unit_id = settings["unit_id"]
    wanted = (settings["baudrate"], settings["parity"])
    if wanted != line:
        board.open_uart(wanted[0], wanted[1])
        slave.set_baudrate(wanted[0])
    return wanted


def run():
    board = Board()
    settings, detector, registers, slave = build(board)
    registers.reset_cause = 1 if board.reset_was_watchdog() else 0
    line = (settings["baudrate"], settings["parity"])
    board.open_uart(line[0], line[1])
    armed = False
    next_sample = board.now_us()
    while True:
        if armed:
            board.feed_watchdog()
        elif board.now_us() >= WATCHDOG_ARM_AFTER_US:
            board.start_watchdog()
            armed = True
        data = board.uart_read()
        now = board.now_us()
        if data:
            slave.feed(data, now)
        reply = slave.poll(now)
        if reply is not None:
            board.uart_write(reply)
        if registers.dirty:
            line = apply_settings(board, registers, slave, line)
        if registers.reboot_requested:
            board.reboot()
        if now >= next_sample and slave.next_deadline_us() is None:
            sample(board, detector, registers)
            next_sample += SAMPLE_PERIOD_US
            if next_sample < now:  # fell behind (a long echo): skip, do not burst
                next_sample = now + SAMPLE_PERIOD_US


run()
