"""The gateway's Modbus master and the detector node's firmware agree on the register map.

Two copies of docs/modbus-register-map.md live in code: gateway/drivers/modbus.py and the
MicroPython firmware in firmware/sensor_node. The firmware is read as source (ast), as it is
flashed, without importing it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway.drivers import modbus

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware" / "sensor_node"
# The driver's register map: function codes, registers, status bits, commands, sentinels.
MAP_NAME = re.compile(r"(READ|WRITE|IR|HR|ST|CMD)_[A-Z0-9_]+|NO_DISTANCE")
# What the driver decodes from one poll (status, magnitude, deviation, distance), in order.
POLLED = ("IR_STATUS", "IR_MAGNITUDE_MG", "IR_DEVIATION_MG", "IR_DISTANCE_CM")
EXCEPTIONS = {"ILLEGAL_FUNCTION": "illegal function",
              "ILLEGAL_DATA_ADDRESS": "illegal data address",
              "ILLEGAL_DATA_VALUE": "illegal data value",
              "SERVER_DEVICE_FAILURE": "server device failure"}


def constants(path: Path) -> dict[str, int]:
    """Module-level `NAME = integer` (or `= OTHER_NAME`) assignments of a source file."""
    found: dict[str, int] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            continue
        value = node.value
        if isinstance(value, ast.Constant) and type(value.value) is int:
            found[node.targets[0].id] = value.value
        elif isinstance(value, ast.Name) and value.id in found:
            found[node.targets[0].id] = found[value.id]
    return found


def firmware() -> dict[str, int]:
    return constants(FIRMWARE / "registers.py") | constants(FIRMWARE / "modbus_slave.py")


def driver_map() -> dict[str, int]:
    return {name: value for name, value in vars(modbus).items()
            if MAP_NAME.fullmatch(name) and type(value) is int}


def test_every_register_the_driver_uses_is_the_firmwares() -> None:
    ours, theirs = driver_map(), firmware()

    assert len(ours) >= 10  # the pattern still finds the driver's map
    assert {name: theirs.get(name) for name in ours} == ours


def test_one_poll_reads_status_magnitude_deviation_and_distance() -> None:
    theirs = firmware()

    polled = range(modbus.POLL_FIRST, modbus.POLL_FIRST + modbus.POLL_COUNT)

    assert list(polled) == [theirs[name] for name in POLLED]
    assert polled.stop <= theirs["INPUT_COUNT"]


def test_the_firmwares_exception_codes_have_the_drivers_names() -> None:
    theirs = firmware()

    assert {name: modbus.EXCEPTION_NAMES.get(theirs[name]) for name in EXCEPTIONS} == EXCEPTIONS


def test_the_simulator_runs_this_firmware() -> None:
    """parking_sim finds the firmware as package data (importlib.resources): the same files."""
    from parking_sim.nodes import FIRMWARE_DIR

    for name in ("detect.py", "modbus_slave.py", "registers.py"):
        assert (FIRMWARE_DIR / name).read_bytes() == (FIRMWARE / name).read_bytes(), name
