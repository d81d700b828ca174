"""The session book's pricing: which rate table prices a stay."""

from __future__ import annotations

from gateway.config import Settings, load_settings
from gateway.controllers.sessions import SessionBook
from gateway.core.access import Access, OpenStay
from gateway.core.clock import FakeClock
from gateway.journal import Journal
from tests.conftest import EXAMPLE


def stay_on(table: str, clock: FakeClock) -> OpenStay:
    return OpenStay("s-1", "AB123CD", "permit", "p-1", "entry-north", clock.stamp(),
                    {"rateTable": table})


async def test_a_permit_names_its_rate_table_in_any_case(journal: Journal,
                                                         clock: FakeClock) -> None:
    """Tariff names are lower case (the config refuses another; pushed ones are stored so), but
    a backend's permit may say "Staff": it is priced by `staff`, not by the default table."""
    settings: Settings = load_settings(EXAMPLE, env={})
    book = SessionBook(settings, journal, Access(settings.lot), clock)
    assert settings.gateway.default_tariff != "staff"

    stay = stay_on("Staff", clock)

    assert book.table(stay) is settings.tariffs["staff"]
    assert book.table_name(stay) == "staff"
