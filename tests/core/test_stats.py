"""gateway.core.stats: the nearest-rank percentile every reported latency uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.stats import percentile


def test_nearest_rank_on_a_small_sample() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.2) == 1.0
    assert percentile(values, 0.21) == 2.0
    assert percentile(values, 1.0) == 5.0


def test_the_p99_of_ten_samples_is_the_worst() -> None:
    assert percentile(range(10), 0.99) == 9


def test_no_samples_have_no_percentile() -> None:
    assert percentile([], 0.5) is None


@pytest.mark.parametrize("q", [0.0, -0.5, 1.5, 99])
def test_a_quantile_outside_0_1_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        percentile([1.0], q)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1),
       st.floats(min_value=0.001, max_value=1.0))
def test_it_is_an_observed_value_with_at_least_q_of_the_samples_at_or_below(
        values: list[float], q: float) -> None:
    p = percentile(values, q)
    assert p in values
    assert sum(v <= p for v in values) >= q * len(values)
