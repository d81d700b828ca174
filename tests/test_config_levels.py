"""`[[levels]]`: levels counted at their ramps, with their bounds and cross-checks."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_settings
from tests.conftest import EXAMPLE
from tests.test_config import MINIMAL, bay, lane, load, problems

LEVEL = """
[[levels]]
id = "2"
capacity = 60
[[levels.ramps]]
id = "r-1-2"
loop_a = 20
loop_b = 21
from = "outside"
"""


def test_the_example_counts_its_roof_level() -> None:
    settings = load_settings(EXAMPLE, env={})
    (roof,) = settings.levels
    assert (roof.id, roof.capacity, roof.zone_name) == ("2", 60, "roof")
    (ramp,) = roof.ramps
    assert (ramp.loop_a, ramp.loop_b, ramp.into, ramp.from_) == (14, 15, None, "1")
    assert (ramp.glitch_ms, ramp.settle_ms) == (100, 600)


def test_a_counted_level_with_its_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path, MINIMAL + LEVEL)
    (level,) = settings.levels
    assert level.zone_name == "2"
    assert level.correct_at is None


def test_bounds_and_shapes_are_checked(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + LEVEL.replace("capacity = 60", "capacity = 0")
                     .replace("loop_b = 21", "loop_b = 28\nsettle_ms = 10\nglitch_ms = 50"))
    assert set(found) >= {"levels.0.capacity", "levels.0.ramps.0.loop_b",
                          "levels.0.ramps.0.settle_ms"}
    bad_hour = MINIMAL + LEVEL.replace('capacity = 60', 'capacity = 60\ncorrect_at = "3:30"')
    assert "levels.0.correct_at" in problems(tmp_path, bad_hour)


def test_a_ramp_leads_into_or_out_of_its_level(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + bay("A-1", '{ kind = "modbus", unit_id = 1 }')
                     + LEVEL.replace('from = "outside"', 'from = "0"\ninto = "0"'))
    assert "levels.0.ramps.0.from" in found


def test_the_other_end_of_a_ramp_must_exist(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + LEVEL.replace('from = "outside"', 'from = "9"'))
    assert "no level or floor '9'" in found["levels.0.ramps.0.from"]


def test_level_and_ramp_ids_and_pins_are_unique(tmp_path: Path) -> None:
    second = LEVEL.replace('id = "2"', 'id = "3"').replace("loop_a = 20", "loop_a = 5")
    found = problems(tmp_path, MINIMAL + lane(1, (5, 6, 17)) + LEVEL + LEVEL + second)
    assert "duplicate level id" in found["levels.1.id"]
    assert "duplicate ramp id" in found["levels.1.ramps.0.id"]
    assert "GPIO pin already used" in found["levels.2.ramps.0.loop_a"]


def test_a_counted_level_has_no_bay_without_a_sensor(tmp_path: Path) -> None:
    unsensed = bay("A-1", '{ kind = "none" }').replace('floor = "0"', 'floor = "2"')
    found = problems(tmp_path, MINIMAL + unsensed + LEVEL)
    assert "counted at its ramps" in found["bays.0.sensor"]


def test_a_correction_needs_bay_sensors_on_the_level(tmp_path: Path) -> None:
    corrected = LEVEL.replace("capacity = 60", 'capacity = 60\ncorrect_at = "03:30"')
    found = problems(tmp_path, MINIMAL + corrected)
    assert "no bay sensors" in found["levels.0.correct_at"]
    sensed = bay("A-1", '{ kind = "modbus", unit_id = 1 }').replace('floor = "0"', 'floor = "2"')
    settings = load(tmp_path, MINIMAL + sensed + corrected)
    assert settings.levels[0].correct_at == "03:30"
