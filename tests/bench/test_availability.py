"""`bench availability`: a change is timed to the first document that shows it, and a short run
on the demo lot's daemon with a real mosquitto gives every figure, the JSON's key included."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gateway.bench.availability import _delays
from gateway.cli.main import cli
from tests.sync.mosquitto import HAVE_MOSQUITTO


def test_a_change_is_timed_to_the_first_document_that_shows_it() -> None:
    made = [(10.0, 1), (10.25, 0)]
    receipts = [(9.0, 0), (10.004, 0), (10.006, 1), (10.1, 1), (10.26, 0)]  # 10.004: before
    assert [round(d, 3) for d in _delays(made, receipts, "reader")] == [6.0, 10.0]
    with pytest.raises(RuntimeError, match="never reached the reader"):
        _delays(made, receipts[:3], "reader")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MOSQUITTO, reason="mosquitto is not installed")
def test_a_short_run_gives_every_figure() -> None:
    result = CliRunner().invoke(cli, ["bench", "availability", "--changes", "6",
                                      "--clients", "5", "--seconds", "1", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["changes"], figures["get_clients"], figures["get_errors"]) == (6, 5, 0)
    for way in ("client", "mqtt"):
        p50, p99 = figures[f"p50_change_to_{way}_ms"], figures[f"p99_change_to_{way}_ms"]
        assert 0 < p50 <= p99 < 1000, way  # on change, well within the second of a tick
    assert figures["get_requests"] > 5
    assert 0 < figures["p50_get_ms"] <= figures["p95_get_ms"] <= figures["p99_get_ms"]
