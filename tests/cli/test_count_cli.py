"""`parking-gateway count show` and `count set LEVEL N`, against the daemon's answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.cli import count as count_cli
from gateway.cli.common import OperationalError
from gateway.cli.main import cli

SHOWN = {"levels": [{
    "levelId": "2", "zone": "roof", "count": 41, "capacity": 60, "free": 19, "drift": True,
    "shownBy": "ramps", "correctAt": None,
    "ramps": [{"rampId": "ramp-1-2", "into": "2", "from": "1", "in": 120, "out": 79,
               "backouts": 4, "glitches": 2, "loops": {"a": True, "b": False}}]}]}


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    def answer(_socket: Any, method: str, params: Any = None) -> Any:
        calls.append((method, params))
        if method == "count.show":
            return SHOWN
        if params["level"] != "2":
            raise OperationalError("no level '9' counted at its ramps (levels: 2)")
        return {"level": "2", "count": params["count"], "previous": 41,
                "error": 41 - params["count"]}

    monkeypatch.setattr(count_cli, "call_daemon", answer)
    return calls


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_count_set_asks_the_daemon_and_says_what_it_corrected(
        asked: list[tuple[str, Any]]) -> None:
    result = run("count", "set", "2", "38")
    assert result.exit_code == 0, result.output
    assert asked == [("count.set", {"level": "2", "count": 38})]
    assert "38" in result.stdout
    assert "41" in result.stdout
    machine = run("count", "set", "2", "38", "--json")
    assert json.loads(machine.stdout) == {"ok": True, "level": "2", "count": 38,
                                          "previous": 41, "error": 3}


def test_count_set_refused_and_bad_input_exit_codes(asked: list[tuple[str, Any]]) -> None:
    assert run("count", "set", "9", "3").exit_code == 1
    assert run("count", "set", "2", "-3").exit_code == 2
    assert run("count", "set", "2", "many").exit_code == 2


def test_count_show_lists_levels_and_ramps(asked: list[tuple[str, Any]]) -> None:
    result = run("count", "show")
    assert result.exit_code == 0, result.output
    assert "ramp-1-2" in result.stdout
    assert "DRIFT" in result.stdout
    assert json.loads(run("count", "show", "--json").stdout) == SHOWN
