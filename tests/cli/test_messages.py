"""Messages that pointed the wrong way, and summaries that left out what a technician needs
(issue 20, items 2, 5 and 6): each test failed on the code before the fix."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from gateway.cli import common
from gateway.cli.main import cli
from tests.cli.test_cli import MINIMAL, SECRET
from tests.conftest import EXAMPLE


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv(common.CONFIG_ENV, raising=False)
    for name in list(os.environ):
        if name.upper().startswith("PARKING_GATEWAY"):
            monkeypatch.delenv(name)
    yield
    structlog.reset_defaults()  # the CLI pointed structlog at the runner's streams


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_second_daemon_hears_the_hint_once(tmp_path: Path) -> None:
    """`... is a second parking-gateway running? (is another gateway running?)`."""
    journal = tmp_path / "journal.db"
    config = tmp_path / "gateway.toml"
    config.write_text(MINIMAL.format(journal=journal, secret=SECRET) + f"""
[control]
socket_path = "{tmp_path / 'control.sock'}"

[gpio]
pin_factory = "mock"

[lpr]
enabled = false
""")
    lock = os.open(journal.with_name("journal.db.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the first daemon's hold
        result = run("run", "--config", config, "--no-sync")
    finally:
        os.close(lock)

    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"Error: {journal} is in use by another process")
    assert message.count("running?") == 1


def test_config_check_says_where_the_daemon_and_its_hardware_are() -> None:
    result = run("config", "check", EXAMPLE)

    assert result.exit_code == 0, result.stderr
    daemon = result.stdout.split("\ndaemon\n")[1].splitlines()
    assert daemon[0].split() == ["control", "socket", "/run/parking-gateway/control.sock",
                                 "(group", "parking)"]
    assert daemon[1].split()[:3] == ["http", "api", "off"]  # the example leaves it off
    assert daemon[2].split() == ["plate", "reading", "on,", "formats", "eu,", "uk"]
    assert daemon[3].split() == [
        "sensor", "bus", "/dev/serial/by-id/usb-FTDI_USB-RS485_Cable-if00-port0", "at",
        "19200", "baud,", "9", "nodes"]


def test_config_check_says_when_plates_are_not_read_and_there_is_no_bus(
        tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MINIMAL.format(journal=tmp_path / "j.db", secret=SECRET)
                      + "\n[lpr]\nenabled = false\n")

    result = run("config", "check", config)

    assert "plate reading   off (every car goes to the intercom)" in result.stdout
    assert "sensor bus      none" in result.stdout


def test_config_check_gives_the_http_apis_address_when_it_is_on(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(MINIMAL.format(journal=tmp_path / "j.db", secret=SECRET)
                      + "\n[http]\nenabled = true\nlisten = '0.0.0.0:8443'\n")

    result = run("config", "check", config)

    assert result.exit_code == 0, result.stderr
    assert "http api        http://0.0.0.0:8443, accounts: none" in result.stdout


def test_tariff_names_are_lower_case_as_the_config_comment_says(tmp_path: Path) -> None:
    """The comment said names are matched in lower case; a file's `Staff` was kept as it was,
    so neither an environment variable (read in lower case) nor `--tariff staff` reached it."""
    config = tmp_path / "gateway.toml"
    config.write_text(MINIMAL.format(journal=tmp_path / "j.db", secret=SECRET)
                      + "\n[tariffs.Staff]\ncurrency = 'EUR'\nlines = [{ flat_minor = 0 }]\n")

    checked = run("config", "check", config)
    quoted = run("tariff", "quote", "--config", EXAMPLE, "--tariff", "STANDARD", "--lost-ticket",
                 "--json")

    assert checked.exit_code == 2
    assert "tariffs.Staff: a tariff name is lower case: write tariffs.staff" in checked.stderr
    assert quoted.exit_code == 0, quoted.stderr  # matched in lower case
    comment = EXAMPLE.read_text()
    assert "tariff names here are lower case (another is an error)" in comment


@pytest.mark.parametrize("source", [
    "urn:parking:Riverside:gw-1", "riverside-garage", "urn:parking:lot", "urn:parking:a:b:c",
    "urn:parking:lot:gw 1", "",
])
def test_export_source_is_checked(config_file: Path, source: str) -> None:
    """Any text was written into every event's `source`, where the backend files them."""
    result = run("journal", "export", "--config", config_file, "--source", source)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (f"Error: --source {source}: give urn:parking:<lot_id>:<gateway_id>,"
                             " each id 1 to 63 lowercase letters, digits or '-'\n")


def test_export_takes_a_well_formed_source(config_file: Path) -> None:
    result = run("journal", "export", "--config", config_file, "--source",
                 "urn:parking:other-lot:gw-2")

    assert result.exit_code == 0, result.stderr
    assert '"source":"urn:parking:other-lot:gw-2"' in result.stdout


def test_report_shows_money_with_its_currency_on_an_empty_day(
        config_file: Path) -> None:
    """An empty day's fees were `0`: the currency came only from the day's payments."""
    result = run("report", "--config", config_file, "--day", "2020-01-01", "--no-png")

    assert result.exit_code == 0, result.stderr
    day = result.stdout.splitlines()[-1].split()
    assert day[0] == "day"
    assert day[-4:] == ["0.00", "EUR", "0.00", "EUR"]
    assert "note: no hourly occupancy in the journal for this day" in result.stderr


def test_report_into_a_new_folder_makes_it_and_says_so(config_file: Path,
                                                       tmp_path: Path) -> None:
    """It failed ("No such file or directory"), while `sim run --out` made the folder."""
    pytest.importorskip("matplotlib")
    chart = tmp_path / "charts" / "march" / "day.png"

    result = run("report", "--config", config_file, "--day", "2026-03-02", "-o", chart)

    assert result.exit_code == 0, result.stderr
    assert chart.is_file()
    assert result.stderr.splitlines()[0] == f"created the folder {chart.parent}"


def test_export_into_a_new_folder_makes_it_and_says_so(config_file: Path,
                                                       tmp_path: Path) -> None:
    target = tmp_path / "exports" / "events.csv"

    result = run("journal", "export", "--config", config_file, "--format", "csv", "-o", target)

    assert result.exit_code == 0, result.stderr
    assert target.read_text().startswith("seq,id,type,time,acked,data\n")
    assert result.stderr.splitlines()[0] == f"created the folder {target.parent}"


def test_a_command_of_a_missing_extra_says_which_extra(tmp_path: Path) -> None:
    """numpy and OpenCV come with the `lpr` extra: on a lot installed without it, `lpr` says
    so in one line (exit 1) instead of a traceback."""
    blocked = "import sys; sys.modules['numpy'] = None; from gateway.cli.main import main; main()"
    done = subprocess.run([sys.executable, "-c", blocked, "lpr", "read", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: 'lpr' needs the 'lpr' extra (numpy is not installed): pip install "
        "'parking-gateway[lpr]', or on a lot controller scripts/install --lpr"]
