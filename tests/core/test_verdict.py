"""The lot's verdict: failing, degraded or ok, and why."""

from __future__ import annotations

import pytest

from gateway.core.verdict import Verdict, verdict


@pytest.mark.parametrize(("severities", "lanes", "expected"), [
    ((), (), Verdict("ok", ())),
    (("info", "info"), (), Verdict("ok", ())),
    (("warning", "info"), (), Verdict("degraded", ("1 warning alarm",))),
    (("warning", "critical", "warning"), (),
     Verdict("failing", ("1 critical alarm", "2 warning alarms"))),
    ((), ("exit-1",), Verdict("failing", ("lane exit-1 out of order",))),
    (("critical",), ("exit-2", "entry-1"), Verdict("failing", (
        "lane entry-1 out of order", "lane exit-2 out of order", "1 critical alarm"))),
])
def test_verdict(severities: tuple[str, ...], lanes: tuple[str, ...], expected: Verdict) -> None:
    assert verdict(severities, lanes) == expected
