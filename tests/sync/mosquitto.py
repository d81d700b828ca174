"""The sync tests' broker: a real mosquitto on a free 127.0.0.1 port, each test its own.

The launcher lives in gateway/sync/broker.py because `parking-gateway bench sync` starts
one too; this module adds the fixtures and skips cleanly where mosquitto is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.bench.broker import BrokerTls, Mosquitto, free_port

__all__ = ["BrokerTls", "Mosquitto", "broker", "free_port"]

HAVE_MOSQUITTO = shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if not HAVE_MOSQUITTO:
        pytest.fail("mosquitto is not installed (scripts/bootstrap.sh installs it)")
    with Mosquitto(tmp_path / "broker") as b:
        yield b
