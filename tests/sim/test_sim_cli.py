"""`sim run` on a scenario it cannot use: exit 2, naming the file (issue 20, item 5). It was
exit 1, and a lot config's problems did not say which file they were in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from gateway.cli import cli

SCENARIOS = Path(__file__).resolve().parents[2] / "hardware-sim" / "scenarios"
HOURS = "rate_per_hour = [" + ", ".join(["1.0"] * 24) + "]"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # the CLI pointed structlog at the runner's stderr


def sim_run(scenario: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["sim", "run", str(scenario), "--out",
                                      str(scenario.with_suffix(".png"))])
    return result.exit_code, result.stderr


def test_an_invalid_scenario_exits_2_naming_it(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text("[scenario]\nname = 'x'\n[traffic]\nrate_per_hour = [1.0]\n")

    code, err = sim_run(scenario)

    assert code == 2
    assert err.startswith(f"Error: {scenario}: traffic.rate_per_hour:")


def test_a_scenario_that_is_not_toml_exits_2_naming_it(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text("[scenario\n")

    code, err = sim_run(scenario)

    assert (code, err.startswith(f"Error: {scenario}: TOML syntax error")) == (2, True)


def test_a_lot_config_with_problems_is_named_with_each_problem(tmp_path: Path) -> None:
    lot = tmp_path / "lot.toml"
    lot.write_text((SCENARIOS.parent.parent / "config" / "demo-lot.toml").read_text().replace(
        'timezone = "Europe/Berlin"', 'timezone = "Mars/Base"'))
    scenario = tmp_path / "day.toml"
    scenario.write_text(f"[scenario]\nname = 'x'\n[lot]\nconfig = 'lot.toml'\n[traffic]\n{HOURS}\n")

    code, err = sim_run(scenario)

    assert code == 2
    assert err.splitlines()[0].startswith("gateway.timezone: unknown time zone 'Mars/Base'")
    assert err.splitlines()[-1] == f"Error: {lot}: 1 problem"


def test_a_generated_lot_that_cannot_be_built_is_named(tmp_path: Path) -> None:
    scenario = tmp_path / "big.toml"
    scenario.write_text("[scenario]\nname = 'x'\n[lot]\nentries = 2\nexits = 2\n"
                        f"ultrasonic_bays = 4\n[traffic]\n{HOURS}\n")

    code, err = sim_run(scenario)

    assert code == 2
    assert err.startswith(f"Error: {scenario}: a generated lot with these lanes")
