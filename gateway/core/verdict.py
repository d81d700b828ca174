"""How the lot is doing, in one word: ok, degraded or failing.

What a technician reads first on a bad day, and what a monitoring script can test, from what
the daemon's status holds: the active alarms' severities and the lanes out of order. A lane out
of order or a critical alarm means cars or money are stuck (failing); a warning means something
needs a look but the lot works (degraded); info alarms leave the lot ok.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "degraded", "failing"]


@dataclass(frozen=True, slots=True)
class Verdict:
    level: Level
    reasons: tuple[str, ...]  # why it is not ok, worst first; empty when ok


def verdict(alarm_severities: Iterable[str], lanes_out_of_order: Iterable[str]) -> Verdict:
    severities = Counter(alarm_severities)
    reasons = [f"lane {lane} out of order" for lane in sorted(lanes_out_of_order)]
    failing = bool(reasons) or severities["critical"] > 0
    for severity in ("critical", "warning"):
        if severities[severity]:
            count = severities[severity]
            reasons.append(f"{count} {severity} alarm{'' if count == 1 else 's'}")
    level: Level = "failing" if failing else "degraded" if reasons else "ok"
    return Verdict(level, tuple(reasons))
