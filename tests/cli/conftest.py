"""Fixtures of the CLI's tests: a journal to read, and a config naming it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cli.test_cli import MINIMAL, SECRET, _fill


@pytest.fixture
def journal_file(tmp_path: Path) -> Path:
    """A journal of five bay.changed events, the first two acknowledged by the backend."""
    path = tmp_path / "journal.db"
    # Made before any CLI run, in its own loop: the CLI runs asyncio.run itself.
    asyncio.run(_fill(path, count=5, acked=2))
    return path


@pytest.fixture
def config_file(tmp_path: Path, journal_file: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(MINIMAL.format(journal=journal_file, secret=SECRET))
    return path
