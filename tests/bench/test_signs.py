"""`bench signs`: a change is timed to the first frame that shows its count on that sign, and a
short run on the demo lot's daemon gives every figure, the JSON's keys included."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gateway.bench.signs import _delays
from gateway.cli.main import cli


def test_a_change_is_timed_to_the_first_frame_that_shows_it_on_that_sign() -> None:
    made = [(10.0, "12", "4"), (10.25, "11", "3")]
    frames = [(9.0, 1, "11"), (10.004, 1, "11"), (10.006, 2, "12"), (10.008, 1, "12"),
              (10.009, 2, "4"), (10.3, 1, "11"), (10.31, 2, "3")]
    assert [round(d, 3) for d in _delays(made, frames, 1, 1)] == [8.0, 50.0]
    assert [round(d, 3) for d in _delays(made, frames, 2, 2)] == [9.0, 60.0]
    with pytest.raises(RuntimeError, match="never reached sign 1"):
        _delays(made, frames[:4], 1, 1)


@pytest.mark.slow
def test_a_short_run_gives_every_figure() -> None:
    result = CliRunner().invoke(cli, ["bench", "signs", "--changes", "4", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["changes"], figures["sign_timeouts"]) == (4, 0)
    for sign in ("entrance", "level"):
        p50, p99 = (figures[f"p50_change_to_{sign}_sign_ms"],
                    figures[f"p99_change_to_{sign}_sign_ms"])
        assert 0 < p50 <= p99 < 5000, sign
    assert figures["frames"] >= 2 * 4
