"""Fixtures of the driver tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory
from parking_sim.gpio import SimPins

from gateway.config import LaneGpio

# A lane's pins as the example config wires them.
LANE = LaneGpio(arming_loop=5, safety_loop=6, closing_loop=13, open_relay=17, close_relay=27,
                up_limit=22, down_limit=23)


@pytest.fixture
def pins() -> Iterator[SimPins]:
    sim = SimPins(MockFactory())
    yield sim
    # gpiozero's mock factory keeps its pins (and reservations) after the devices close.
    sim.factory.reset()
