"""The one percentile: every latency figure the gateway reports (benches, the reader's stats)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank `q`-quantile (0 < q <= 1) of `values`; None when there are none.

    Nearest rank is always a value that was observed, and never under-reports a tail: the
    p99 of 100 samples is the worst but one, of 10 samples the worst.
    """
    if not 0 < q <= 1:
        raise ValueError(f"a quantile is in (0, 1], got {q}")
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
