"""`parking-gateway bench bus`: the real poller over the simulated pty bus, against its limit."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gateway.cli import cli
from gateway.drivers.modbus import LineTiming, bus_limit_s


@pytest.mark.parametrize("link", ["pty", "socket"])
def test_bench_bus_json_reports_the_cycle_against_the_physical_limit(link: str):
    result = CliRunner().invoke(cli, ["bench", "bus", "--nodes", "4", "--baud", "115200",
                                      "--cycles", "3", "--link", link, "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    limit_ms = bus_limit_s(LineTiming.of(115200), 4, turnaround_s=0.0005) * 1000
    assert figures["bus_limit_ms"] == round(limit_ms, 3)
    assert figures["failed_transactions"] == 0
    assert figures["link"] == link
    # The simulator charges every byte its wire time: no cycle can beat the wire.
    assert figures["cycle_ms_min"] >= figures["bus_limit_ms"]
    assert figures["ratio"] == pytest.approx(figures["cycle_ms"] / limit_ms, abs=1e-3)


def test_bench_bus_prints_a_table_for_a_person():
    result = CliRunner().invoke(cli, ["bench", "bus", "--nodes", "2", "--baud", "115200",
                                      "--cycles", "1"])
    assert result.exit_code == 0, result.output
    assert "physical bus limit" in result.output
    assert "ratio" in result.output


def test_bench_bus_rejects_a_bad_node_count():
    result = CliRunner().invoke(cli, ["bench", "bus", "--nodes", "248", "--json"])
    assert result.exit_code == 2
