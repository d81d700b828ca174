"""Shared settings of the fuzz tests: seeded (the same examples on every run, so CI is
reproducible) and bounded (each property runs a fixed number of examples, no deadline on a
shared 2-core machine)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

FUZZ = settings(derandomize=True, deadline=None, max_examples=300, database=None,
                suppress_health_check=[HealthCheck.too_slow])
