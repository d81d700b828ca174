"""What `bench footprint` keeps down, kept down: what an idle daemon loads and what wakes it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory
from parking_sim.gpio import SimPins

from gateway.bench.footprint import DEMO_LOT
from gateway.config import UltrasonicSensor
from gateway.core.clock import FakeClock
from gateway.drivers.gpio import UltrasonicBay

# The daemon as `run` starts it (its logs to stderr here); once READY, the heavy libraries
# it has loaded. rich (and pygments) are the command line's tables, which structlog's console
# module imports too when they are installed: over 4 MB the daemon, logging JSON, never uses.
LOADED = """
import asyncio, sys
import gateway.cli.main, gateway.cli.daemon
from pathlib import Path
from gateway.app import Gateway
from gateway.cli.common import load_settings
from gateway.runtime.log import configure_logging

async def main() -> None:
    settings = load_settings(Path(sys.argv[1]))
    configure_logging(settings.logging.level, settings.logging.format, sys.stderr)
    gateway = Gateway(settings)
    task = asyncio.create_task(gateway.run())
    await gateway.started.wait()
    print("loaded:", *(m for m in ("cv2", "numpy", "httpx", "onnxruntime", "rich", "pygments")
                     if m in sys.modules))
    gateway.stop()
    await task

asyncio.run(main())
"""


@pytest.mark.slow  # starts the daemon
def test_a_daemon_without_lanes_or_plate_reading_loads_neither_opencv_nor_numpy(
        tmp_path: Path) -> None:
    """OpenCV and numpy are some 15 MB of a daemon's 60: only cameras and the plate reader
    need them. httpx is for a lot that syncs over HTTP; the demo lot's backend is MQTT."""
    env = {**os.environ,
           "PARKING_GATEWAY__LANES": "[]",
           "PARKING_GATEWAY__LPR__ENABLED": "false",
           "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
           "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
           "PARKING_GATEWAY__BUS__PORT": str(tmp_path / "no-bus"),
           "PARKING_GATEWAY__SYNC__MQTT__PORT": "9",  # nothing answers: it runs offline
           "PARKING_GATEWAY__LOGGING__LEVEL": "error"}
    done = subprocess.run([sys.executable, "-c", LOADED, str(DEMO_LOT)], env=env,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["loaded:"]


@pytest.mark.slow  # starts the daemon
def test_lanes_with_cameras_but_no_plate_reading_load_neither_opencv_nor_numpy(
        tmp_path: Path) -> None:
    """Plate reading off: nothing reads a camera's frames, so no lane opens its camera, and
    OpenCV and numpy (the `lpr` extra) are not needed. Before, each lane opened its camera
    (gateway.drivers.camera imports cv2 and numpy) and decoded frames nobody read."""
    env = {**os.environ,
           "PARKING_GATEWAY__LPR__ENABLED": "false",
           "PARKING_GATEWAY__JOURNAL__PATH": str(tmp_path / "journal.db"),
           "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(tmp_path / "control.sock"),
           "PARKING_GATEWAY__BUS__PORT": str(tmp_path / "no-bus"),
           "PARKING_GATEWAY__SYNC__MQTT__PORT": "9",
           "PARKING_GATEWAY__GPIO__PIN_FACTORY": "mock",
           "PARKING_GATEWAY__LOGGING__LEVEL": "error"}
    done = subprocess.run([sys.executable, "-c", LOADED, str(DEMO_LOT)], env=env,
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["loaded:"]


@pytest.mark.slow  # real seconds of echo pings
async def test_an_ultrasonic_sensor_pings_only_as_often_as_its_bay_is_read() -> None:
    """The bay reads its sensor every poll (0.5 s); the sensor pinged every 60 ms all the
    same, the most of an idle daemon's wake-ups."""
    pins = SimPins(MockFactory())
    trigger = pins.ultrasonic(4, 18, lambda: 250.0)
    sensor = UltrasonicSensor(kind="ultrasonic", trigger_pin=4, echo_pin=18, min_dwell_s=0.5)
    bay = UltrasonicBay("U-01", sensor, clock=FakeClock(), factory=pins.factory, poll_s=0.5)
    polls = 0
    counted = bay.poll

    def poll() -> None:
        nonlocal polls
        polls += 1
        counted()

    bay.poll = poll  # type: ignore[method-assign]
    await bay.start()
    try:
        await asyncio.sleep(2.2)
    finally:
        await bay.close()
        pins.factory.reset()

    assert polls >= 4  # at 0, 0.5, 1, 1.5 and 2 s, a busy machine's loop willing
    assert polls - 1 <= trigger.pings <= polls  # one ping for each poll's figures
    assert bay.reading is not None
    assert bay.reading.state == "free"  # read all the same, once it held its dwell
