"""Rights as the backend pushes them: their times are RFC 3339, as every time on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.core.rights import DENY_LIST, PERMITS, RESERVATIONS


@pytest.mark.parametrize("when", ["2026-12-31T23:59:60Z", "2026-12-31t23:59:59.5z",
                                  "2027-01-01T00:59:59+01:00"])
def test_a_pushed_right_takes_any_rfc3339_time(when: str) -> None:
    """A leap second (pydantic alone refuses `:60`), lower-case separators, any fraction and
    any offset: the envelope's and the commands' times take them, and so do the rights."""
    (permit,) = PERMITS.validate_python([{"permitId": "p-1", "plates": ["AB123CD"],
                                          "validUntil": when}])
    (booking,) = RESERVATIONS.validate_python([{
        "reservationId": "r-1", "plate": "AB123CD", "start": "2026-12-31T08:00:00Z",
        "end": when}])
    (denied,) = DENY_LIST.validate_python([{"plate": "BAD666", "until": when}])

    new_year = datetime(2027, 1, 1, tzinfo=UTC)
    assert permit.validUntil is not None
    assert permit.validUntil <= new_year
    assert booking.end <= new_year
    assert denied.until is not None
    assert denied.until <= new_year
