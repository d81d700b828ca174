"""`parking-gateway doctor`: each check's ok, warn and fail on a stand-in machine (`Host`), with a
real TCP listener, a TLS server and a tiny HTTP camera on 127.0.0.1; the command's output, its
--json and its exit codes. Nothing here reaches beyond 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import socket
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import structlog
import trustme
from click.testing import CliRunner, Result

from gateway.cli import common
from gateway.cli.doctor import (
    SERVICE_GROUPS,
    SERVICE_USER,
    Account,
    Finding,
    Host,
    Status,
    _watchdog_on,
    backend_checks,
    check_broker,
    check_camera,
    check_clock,
    check_config,
    check_gpio,
    check_journal_disk,
    check_journal_write,
    check_serial,
    check_user,
    check_watchdog,
    command_output,
    exit_code,
    kernel_clock_synced,
    run_checks,
    service_account,
)
from gateway.cli.main import cli
from gateway.config import JournalConfig, LaneConfig, MqttConfig, Settings, SyncConfig
from gateway.journal.reserve import MB
from tests.cli.test_cli import INVALID

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "parking-gateway.service"
USER = "parking"
# The owner of every file a test makes; a member of its group; neither.
OWNER = Account(os.getuid(), frozenset({os.getegid()}))
MEMBER = Account(os.getuid() + 4242, frozenset({os.getegid()}))
STRANGER = Account(os.getuid() + 4242, frozenset({os.getegid() + 4242}))
PASSWORD = "cam-pass-never-shown"
TOKEN = "tok-never-shown"
FAST_S = 0.3  # the network checks' wait where a test makes one wait in vain

BASE = """
[gateway]
lot_id = "test-lot"
gateway_id = "gw-1"
timezone = "Europe/Berlin"
default_tariff = "standard"

[journal]
path = "{journal}"

[sync.mqtt]
host = "127.0.0.1"
port = {port}

[tariffs.standard]
currency = "EUR"
lines = [{{ flat_minor = 100 }}]
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(common.CONFIG_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for name in list(os.environ):
        if name.upper().startswith("PARKING_GATEWAY__"):
            monkeypatch.delenv(name)
    yield
    structlog.reset_defaults()  # the CLI pointed it at the runner's stderr, gone now


def answers(**by_command: str | None) -> Callable[[Sequence[str]], str | None]:
    """A stand-in for running a command: its output by program name; None (failed) if unnamed."""
    return lambda argv: by_command.get(argv[0])


def make(path: Path, mode: int) -> Path:
    """A file with exactly `mode` (touch's mode goes through the umask)."""
    path.touch()
    path.chmod(mode)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A machine's / with the Pi's GPIO chip and a hardware watchdog."""
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    for name in ("gpiochip0", "watchdog"):
        make(root / "dev" / name, 0o660)
    return root


@pytest.fixture
def host(root: Path) -> Host:
    """A lot controller as it should be: systemd up, clock synchronised, watchdog armed,
    the service's user there, room on the disk. Writing is real (in the test's folder)."""
    return Host(command=answers(timedatectl="yes", systemctl="15s"),
                kernel_clock_synced=lambda: True, account=lambda name: OWNER,
                free_bytes=lambda path: 10_000 * MB, root=root)


@pytest.fixture
def listener() -> Iterator[int]:
    """A port on 127.0.0.1 that takes connections (into the kernel's backlog) and never
    says a word."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


PICTURE = cv2.imencode(".png", np.full((32, 48, 3), 128, np.uint8))[1].tobytes()


class CameraHandler(BaseHTTPRequestHandler):
    """/snap.png: a picture; /locked.png: one behind Basic auth; /page: HTML; else 404."""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        expected = "Basic " + base64.b64encode(f"viewer:{PASSWORD}".encode()).decode()
        if path == "/locked.png" and self.headers.get("Authorization") != expected:
            self._answer(401, b"", "text/plain", ('WWW-Authenticate', 'Basic realm="cam"'))
        elif path in ("/snap.png", "/locked.png"):
            self._answer(200, PICTURE, "image/png")
        elif path == "/page":
            self._answer(200, b"<html>camera settings</html>", "text/html")
        else:
            self._answer(404, b"", "text/plain")

    def _answer(self, status: int, body: bytes, kind: str, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def camera_url() -> Iterator[str]:
    """A snapshot camera on 127.0.0.1 (CameraHandler), in a thread of its own."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), CameraHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "gateway.toml"
    path.write_text(BASE.format(journal=tmp_path / "state" / "journal.db", port=port) + extra)
    return path


def lane(url: str, **camera: str) -> LaneConfig:
    return LaneConfig.model_validate({
        "id": "entry-1", "direction": "entry", "name": "Entry",
        "camera": {"url": url, **camera},
        "gpio": {"arming_loop": 5, "safety_loop": 6, "open_relay": 17}})


def settings_with(**sections: Any) -> Settings:
    return Settings.model_validate({
        "gateway": {"lot_id": "test-lot", "gateway_id": "gw-1", "timezone": "Europe/Berlin",
                    "default_tariff": "standard"},
        "tariffs": {"standard": {"currency": "EUR", "lines": [{"flat_minor": 100}]}},
        **sections})


LANE = {"id": "entry-1", "direction": "entry", "name": "Entry", "camera": {"url": "/dev/video0"},
        "gpio": {"arming_loop": 5, "safety_loop": 6, "open_relay": 17}}


# --- the config -----------------------------------------------------------------------------


def test_a_valid_config_is_ok_and_loaded(tmp_path: Path) -> None:
    path = write_config(tmp_path, 1883)

    finding, settings = check_config(path)

    assert finding == Finding("config", "ok", f"{path}: valid, 0 lanes, 0 bays")
    assert settings is not None
    assert settings.sync.mqtt.port == 1883


def test_an_invalid_config_fails_with_its_first_problem_and_the_command_for_all(
        tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(INVALID)

    finding, settings = check_config(path)

    assert settings is None
    assert finding.status == "fail"
    assert finding.detail.startswith(f"{path}: gateway.lot_id: ")
    assert finding.detail.endswith("(and 4 more)")
    assert finding.action == f"fix it: parking-gateway config check {path} lists every problem"


def test_a_missing_config_fails_and_says_the_installer_makes_one(tmp_path: Path) -> None:
    finding, settings = check_config(tmp_path / "nope.toml")

    assert (finding.status, settings) == ("fail", None)
    assert finding.detail == f"{tmp_path / 'nope.toml'} does not exist"
    assert finding.action is not None
    assert "sudo scripts/install" in finding.action


# --- the service's user and devices ---------------------------------------------------------


def test_the_user_and_groups_are_the_units() -> None:
    """The doctor checks the account the unit runs: the same user and supplementary groups."""
    lines = UNIT.read_text().splitlines()
    assert f"User={SERVICE_USER}" in lines
    assert f"SupplementaryGroups={' '.join(SERVICE_GROUPS)}" in lines


@pytest.mark.parametrize(("who", "status", "action"), [
    (OWNER, "ok", None),
    (None, "warn", "run the installer: sudo scripts/install"),
    (replace(OWNER, missing_groups=("gpio",)), "fail",
     "sudo systemd-sysusers (the installer's sysusers file makes them)"),
])
def test_the_user(who: Account | None, status: str, action: str | None) -> None:
    finding = check_user(USER, who)

    assert (finding.status, finding.action) == (status, action)


def test_the_real_account_lookup_knows_root_and_no_stranger() -> None:
    root = service_account("root")
    assert root is not None
    assert root.uid == 0
    assert 0 in root.gids
    assert service_account("no-such-user-here") is None


def test_a_gpio_chip_the_users_group_may_use_is_ok(root: Path) -> None:
    settings = settings_with(lanes=[LANE])

    [finding] = check_gpio(settings, MEMBER, USER, root)

    assert finding.status == "ok"
    assert finding.detail.startswith(f"{root / 'dev/gpiochip0'} (")
    assert finding.detail.endswith(" 0660): parking may read and write it")


def test_a_gpio_chip_out_of_the_users_reach_fails_with_the_fix(root: Path) -> None:
    chip = root / "dev/gpiochip0"
    chip.chmod(0o600)

    [finding] = check_gpio(settings_with(lanes=[LANE]), MEMBER, USER, root)

    assert finding.status == "fail"
    assert finding.detail.endswith(" 0600): parking may not read and write it")
    assert finding.action == (
        "the installer's udev rule (/etc/udev/rules.d/60-parking-gateway-gpio.rules) gives the "
        "chips to group gpio; with it there: sudo udevadm trigger --subsystem-match=gpio "
        "--action=add")


def test_access_goes_by_owner_then_group_then_others(root: Path) -> None:
    chip = root / "dev/gpiochip0"
    settings = settings_with(lanes=[LANE])
    chip.chmod(0o606)  # the owner and others may, the group may not: a member may not
    assert [f.status for f in check_gpio(settings, MEMBER, USER, root)] == ["fail"]
    assert [f.status for f in check_gpio(settings, STRANGER, USER, root)] == ["ok"]
    chip.chmod(0o066)  # all but the owner may: the owner may not
    assert [f.status for f in check_gpio(settings, OWNER, USER, root)] == ["fail"]


def test_a_pi5_chip_4_is_checked_too_and_rpigpio_uses_gpiomem(root: Path) -> None:
    make(root / "dev/gpiochip4", 0o600)

    chips = check_gpio(settings_with(lanes=[LANE]), MEMBER, USER, root)
    mem = check_gpio(settings_with(lanes=[LANE], gpio={"pin_factory": "rpigpio"}), MEMBER,
                     USER, root)

    assert [(f.detail.split()[0], f.status) for f in chips] == [
        (str(root / "dev/gpiochip0"), "ok"), (str(root / "dev/gpiochip4"), "fail")]
    assert [(f.detail, f.status) for f in mem] == [
        (f"{root / 'dev/gpiomem'} does not exist", "fail")]


def test_gpio_is_checked_only_where_pins_are_driven_and_mock_pins_warn(root: Path) -> None:
    assert check_gpio(settings_with(), MEMBER, USER, root) == []
    lamp_only = check_gpio(settings_with(gpio={"lot_full_lamp": 7}), MEMBER, USER, root)
    assert [f.status for f in lamp_only] == ["ok"]
    [mock] = check_gpio(settings_with(lanes=[LANE], gpio={"pin_factory": "mock"}), MEMBER,
                        USER, root)
    assert mock.status == "warn"
    assert mock.action == 'set gpio.pin_factory = "auto" (mock is for the simulator)'


def test_a_missing_chip_fails_and_without_the_user_access_is_a_warning(root: Path) -> None:
    settings = settings_with(lanes=[LANE])
    [unknown] = check_gpio(settings, None, USER, root)
    (root / "dev/gpiochip0").unlink()
    [missing] = check_gpio(settings, MEMBER, USER, root)

    assert (unknown.status, unknown.action) == ("warn", "run the installer: sudo scripts/install")
    assert "there is no user parking" in unknown.detail
    assert missing.status == "fail"


def test_the_serial_port_of_the_bus(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB0"

    def serial(who: Account | None) -> list[Finding]:
        return check_serial(settings_with(bus={"port": str(port)}), who, USER)

    missing = serial(MEMBER)
    make(port, 0o660)

    assert check_serial(settings_with(), MEMBER, USER) == []
    assert [f.status for f in missing] == ["fail"]
    assert missing[0].action == (
        "plug in the RS-485 adapter, or set bus.port to it (ls /dev/serial/by-id/)")
    assert [f.status for f in serial(MEMBER)] == ["ok"]
    assert [f.status for f in serial(STRANGER)] == ["fail"]


def test_the_serial_ports_of_the_signs_and_the_ticket_lanes(tmp_path: Path) -> None:
    """One check a port: two signs on one multi-drop line are one port to look at."""
    bus, signs, printer = (tmp_path / name for name in ("ttyUSB0", "ttyUSB1", "ttyACM0"))
    for port in (bus, signs):
        make(port, 0o660)
    settings = settings_with(
        bus={"port": str(bus)},
        signs=[{"id": "entrance", "kind": "ascii", "port": str(signs), "address": 1},
               {"id": "level-2", "kind": "ascii", "port": str(signs), "address": 2}],
        lanes=[{**LANE, "printer": {"port": str(printer)}, "ticket": "unreadable"}])

    findings = check_serial(settings, MEMBER, USER)

    assert [(f.check, f.status) for f in findings] == [
        ("serial", "ok"), ("serial: sign entrance", "ok"), ("serial: entry-1 printer", "fail")]
    assert findings[2].action == ("plug in lane entry-1's ticket printer, or set "
                                  "lanes.printer.port to it (ls /dev/serial/by-id/)")


# --- the journal ----------------------------------------------------------------------------


def journal_config(tmp_path: Path, **settings: Any) -> JournalConfig:
    (tmp_path / "state").mkdir(exist_ok=True)
    return JournalConfig(path=tmp_path / "state" / "journal.db", **settings)


@pytest.mark.parametrize(("free_mb", "reserve_held", "status", "says"), [
    (10_000, False, "ok", "reserve made at start"),
    (10_000, True, "ok", "reserve held"),
    (300, True, "ok", "300 MiB free"),
    (300, False, "warn", "no room for the journal's 48 MiB reserve"),
    (100, True, "warn", "under journal.min_free_mb (256)"),
    (0.5, True, "fail", "the journal's disk is full"),
])
def test_the_journals_free_space_against_its_bounds(
        tmp_path: Path, host: Host, free_mb: float, reserve_held: bool, status: str,
        says: str) -> None:
    journal = journal_config(tmp_path)  # min_free_mb 256, reserve_mb 48
    if reserve_held:
        journal.path.with_name("journal.db.reserve").touch()

    finding = check_journal_disk(journal, replace(host, free_bytes=lambda p: int(free_mb * MB)))

    assert finding.status == status
    assert says in finding.detail
    if status != "ok":
        assert finding.action is not None
        assert "free space on it" in finding.action


def test_free_space_is_read_where_the_journal_will_be(tmp_path: Path, host: Host) -> None:
    asked: list[Path] = []
    journal = JournalConfig(path=tmp_path / "not" / "yet" / "journal.db")

    def free(path: Path) -> int:
        asked.append(path)
        return 10**12

    check_journal_disk(journal, replace(host, free_bytes=free))

    assert asked == [tmp_path]


def test_the_journal_folder_takes_a_real_write(tmp_path: Path, host: Host) -> None:
    journal = journal_config(tmp_path)

    finding = check_journal_write(journal, OWNER, USER, host)

    assert finding.status == "ok"
    assert "a test file was written, synced and removed; parking may write there" in finding.detail
    assert list(journal.path.parent.iterdir()) == []  # the test file is gone


@pytest.mark.parametrize(("error", "status", "action"), [
    (errno.EROFS, "fail", "the SD card may be failing"),
    (errno.ENOSPC, "fail", "free space on it"),
    (errno.EIO, "fail", "look for disk errors"),
    (errno.EACCES, "warn", "run the doctor as root"),
])
def test_a_failed_write_says_why(tmp_path: Path, host: Host, error: int, status: str,
                                 action: str) -> None:
    def refuse(folder: Path) -> None:
        raise OSError(error, os.strerror(error))

    finding = check_journal_write(journal_config(tmp_path), OWNER, USER,
                                  replace(host, write_test=refuse))

    assert finding.status == status
    assert finding.action is not None
    assert finding.action.startswith(action)


def test_the_journal_must_be_the_services_to_write(tmp_path: Path, host: Host) -> None:
    journal = journal_config(tmp_path)
    journal.path.parent.chmod(0o755)
    folder = check_journal_write(journal, STRANGER, USER, host)
    make(journal.path, 0o640)
    journal.path.parent.chmod(0o770)
    file = check_journal_write(journal, MEMBER, USER, host)

    assert folder.status == "fail"
    assert folder.action == f"sudo chown parking:parking {journal.path.parent}"
    assert file.status == "fail"
    assert file.detail.startswith(f"{journal.path} (")
    assert file.detail.endswith(" 0640): parking may not read and write it")


async def test_a_relative_journal_path_is_in_the_services_working_directory(
        tmp_path: Path, host: Host, root: Path) -> None:
    config = write_config(tmp_path, 1)
    config.write_text(config.read_text().replace(str(tmp_path / "state" / "journal.db"),
                                                 "journal.db"))
    (root / "var/lib/parking-gateway").mkdir(parents=True)
    asked: list[Path] = []

    def free(path: Path) -> int:
        asked.append(path)
        return 10**12

    findings = await run_checks(config, USER, replace(host, free_bytes=free), timeout_s=FAST_S)

    [written] = [f for f in findings if f.check == "journal write"]
    assert asked == [root / "var/lib/parking-gateway"]
    assert written.status == "ok"
    assert written.detail.startswith(f"{root / 'var/lib/parking-gateway'}: a test file")


def test_a_missing_journal_folder_fails_with_the_command_that_makes_it(
        tmp_path: Path, host: Host) -> None:
    journal = JournalConfig(path=tmp_path / "gone" / "journal.db")

    finding = check_journal_write(journal, OWNER, USER, host)

    assert finding.status == "fail"
    assert finding.action == f"sudo install -d -o parking -g parking -m 0750 {tmp_path / 'gone'}"


# --- the clock ------------------------------------------------------------------------------


@pytest.mark.parametrize(("timedatectl", "kernel", "status", "source"), [
    ("yes", False, "ok", "timedatectl"),
    ("no", True, "fail", "timedatectl"),
    (None, True, "ok", "the kernel's adjtimex"),
    (None, False, "fail", "the kernel's adjtimex"),
    ("", True, "ok", "the kernel's adjtimex"),  # an old systemd without the property
    (None, None, "warn", ""),
])
def test_the_clock(host: Host, timedatectl: str | None, kernel: bool | None, status: str,
                   source: str) -> None:
    finding = check_clock(replace(host, command=answers(timedatectl=timedatectl),
                                  kernel_clock_synced=lambda: kernel))

    assert finding.status == status
    assert f"says {source}" in finding.detail or not source
    if status == "fail":
        assert finding.action is not None
        assert finding.action.startswith(
            "sudo timedatectl set-ntp true")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex(2) is Linux's")
def test_the_kernels_clock_state_is_read() -> None:
    """adjtimex(2) through ctypes answers (read only, no privilege needed)."""
    assert isinstance(kernel_clock_synced(), bool)


def test_a_command_that_fails_or_is_missing_gives_nothing() -> None:
    assert command_output(["echo", " yes "]) == "yes"
    assert command_output(["false"]) is None
    assert command_output(["/no/such/program"]) is None


# --- the watchdog ---------------------------------------------------------------------------


def system_conf(root: Path, text: str, name: str = "", under: str = "etc") -> None:
    path = (root / under / "systemd" / "system.conf.d" / name if name
            else root / "etc/systemd/system.conf")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_an_armed_watchdog_is_ok(host: Host, root: Path) -> None:
    finding = check_watchdog(host)

    assert finding == Finding("watchdog", "ok",
                              f"RuntimeWatchdogSec is 15s, on {root / 'dev/watchdog'}")


def test_no_watchdog_device_fails(host: Host, root: Path) -> None:
    (root / "dev/watchdog").unlink()

    finding = check_watchdog(host)

    assert finding.status == "fail"
    assert finding.action == ("on a Raspberry Pi: add dtparam=watchdog=on to "
                              "/boot/firmware/config.txt, and reboot")


def test_a_watchdog_systemd_does_not_drive_fails(host: Host) -> None:
    finding = check_watchdog(replace(host, command=answers(systemctl="0")))

    assert finding.status == "fail"
    assert finding.action is not None
    assert finding.action == (
        "put RuntimeWatchdogSec=15s under [Manager] in "
        "/etc/systemd/system.conf.d/parking-gateway-watchdog.conf (the installer does), then "
        "sudo systemctl daemon-reexec")


def test_a_watchdog_set_but_not_yet_in_effect_warns(host: Host, root: Path) -> None:
    system_conf(root, "[Manager]\nRuntimeWatchdogSec=15s\n")

    finding = check_watchdog(replace(host, command=answers(systemctl="0")))

    assert finding.status == "warn"
    assert finding.action == "sudo systemctl daemon-reexec (or reboot)"


def test_without_systemd_the_watchdog_is_read_from_system_conf(host: Host, root: Path) -> None:
    no_systemd = replace(host, command=answers())
    unset = check_watchdog(no_systemd)
    system_conf(root, "[Manager]\n#RuntimeWatchdogSec=off\nRuntimeWatchdogSec=30s\n")
    system_conf(root, "[Manager]\nRuntimeWatchdogSec=10s\n", "50-pi.conf", under="usr/lib")
    armed = check_watchdog(no_systemd)

    assert unset.status == "fail"
    assert armed.status == "ok"
    assert armed.detail.startswith(
        f"RuntimeWatchdogSec=10s in {root / 'usr/lib/systemd/system.conf.d/50-pi.conf'}, on ")


def test_drop_ins_go_in_name_order_and_etc_hides_the_same_name(host: Host, root: Path) -> None:
    no_systemd = replace(host, command=answers())
    system_conf(root, "[Manager]\nRuntimeWatchdogSec=15s\n")
    system_conf(root, "[Manager]\nRuntimeWatchdogSec=20s\n", "10-a.conf", under="usr/lib")
    system_conf(root, "[Manager]\nRuntimeWatchdogSec=off\n", "20-b.conf", under="usr/lib")
    assert check_watchdog(no_systemd).status == "fail"  # 20-b.conf comes last
    system_conf(root, "[Manager]\n", "20-b.conf", under="etc")  # hides /usr/lib's 20-b.conf
    assert "RuntimeWatchdogSec=20s" in check_watchdog(no_systemd).detail
    system_conf(root, "[Journal]\nRuntimeWatchdogSec=off\n", "30-c.conf")  # not [Manager]
    assert "RuntimeWatchdogSec=20s" in check_watchdog(no_systemd).detail


@pytest.mark.parametrize(("value", "armed"), [
    ("15s", True), ("1min 30s", True), ("default", True), ("infinity", True), ("0.5", True),
    ("0", False), ("0s", False), ("off", False), ("", False),
])
def test_watchdog_values(value: str, armed: bool) -> None:
    assert _watchdog_on(value) is armed


# --- the backend ----------------------------------------------------------------------------


def mqtt(port: int, **settings: Any) -> MqttConfig:
    return MqttConfig.model_validate({"host": "127.0.0.1", "port": port, **settings})


async def test_a_broker_that_takes_a_connection_is_ok(listener: int) -> None:
    finding = await check_broker(mqtt(listener), FAST_S)

    assert finding == Finding("broker", "ok", f"127.0.0.1:{listener}: TCP connect done")


async def test_a_broker_that_refuses_fails(closed_port: int) -> None:
    finding = await check_broker(mqtt(closed_port), FAST_S)

    assert finding == Finding(
        "broker", "fail", f"127.0.0.1:{closed_port}: Connection refused",
        f"check that the server runs and listens on port {closed_port}, and sync.mqtt.host "
        "and port")


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    return ca, ca_file


@pytest.fixture
async def tls_broker(ca: tuple[trustme.CA, Path]) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 with a certificate of `ca`, closing each connection."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("127.0.0.1").configure_cert(context)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_tls_to_a_broker_the_config_trusts_is_ok(
        tls_broker: int, ca: tuple[trustme.CA, Path]) -> None:
    finding = await check_broker(mqtt(tls_broker, tls={"ca_file": str(ca[1])}), FAST_S * 3)

    assert finding == Finding("broker", "ok", f"127.0.0.1:{tls_broker}: TLS handshake done")


async def test_tls_to_a_broker_of_another_ca_fails(tls_broker: int, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)

    finding = await check_broker(mqtt(tls_broker, tls={"ca_file": str(other)}), FAST_S * 3)

    assert finding.status == "fail"
    assert "the TLS certificate is not trusted" in finding.detail
    assert finding.action == ("the server's certificate must be signed by the CA in "
                              "sync.mqtt.tls.ca_file, and the clock must be right")


async def test_tls_to_a_port_that_does_not_speak_it_fails(ca: tuple[trustme.CA, Path]) -> None:
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)  # the client's hello, so that the answer is not lost to a reset
        writer.write(b"220 not a TLS server\r\n" * 20)
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        finding = await check_broker(mqtt(port, tls={"ca_file": str(ca[1])}), FAST_S * 3)
    finally:
        server.close()
        await server.wait_closed()

    assert finding.status == "fail"
    assert "the TLS handshake failed" in finding.detail
    assert finding.action == f"check that 127.0.0.1:{port} speaks TLS, or leave TLS out of " \
                             "sync.mqtt.host and port"


async def test_a_broker_that_never_answers_the_handshake_fails_in_bounded_time(
        listener: int, ca: tuple[trustme.CA, Path]) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()

    finding = await check_broker(mqtt(listener, tls={"ca_file": str(ca[1])}), FAST_S)

    assert loop.time() - began < FAST_S + 1
    assert finding.detail == f"127.0.0.1:{listener}: no answer within {FAST_S:g} s (TLS handshake)"
    assert finding.status == "fail"


async def test_unreadable_tls_files_fail(tmp_path: Path, listener: int) -> None:
    finding = await check_broker(mqtt(listener, tls={"ca_file": str(tmp_path / "no.pem")}),
                                 FAST_S)

    assert finding.status == "fail"
    assert finding.detail.startswith(f"cannot load the TLS files of sync.mqtt.tls "
                                     f"({tmp_path / 'no.pem'}): ")


async def test_over_http_the_broker_is_skipped_and_the_backend_checked(
        listener: int, closed_port: int) -> None:
    def sync(port: int) -> SyncConfig:
        return SyncConfig.model_validate({"transport": "http",
                                          "http": {"base_url": f"http://127.0.0.1:{port}/v1"}})

    up = await asyncio.gather(*backend_checks(sync(listener), FAST_S))
    down = await asyncio.gather(*backend_checks(sync(closed_port), FAST_S))
    mqtt_only = backend_checks(SyncConfig.model_validate(
        {"mqtt": {"port": closed_port}, "http": {"base_url": "http://127.0.0.1:1/"}}), FAST_S)

    assert [(f.check, f.status) for f in up] == [("broker", "ok"), ("backend", "ok")]
    assert up[0].detail == "not used: sync.transport is http"
    assert [(f.check, f.status) for f in down] == [("broker", "ok"), ("backend", "fail")]
    assert [f.check for f in await asyncio.gather(*mqtt_only)] == ["broker"]  # no fallback


# --- the cameras ----------------------------------------------------------------------------


async def camera(lane: LaneConfig, who: Account = OWNER, *, index: int = 0,
                 timeout_s: float = FAST_S * 3, root: Path = Path("/")) -> Finding:
    return await check_camera(index, lane, who, USER, timeout_s, root)


async def test_a_snapshot_camera_that_answers_with_a_picture_is_ok(camera_url: str) -> None:
    finding = await camera(lane(f"{camera_url}/snap.png"))

    assert finding == Finding("camera entry-1", "ok", f"{camera_url}: answered with a picture")


async def test_a_camera_behind_a_password(camera_url: str) -> None:
    without = await camera(lane(f"{camera_url}/locked.png"))
    wrong = await camera(lane(f"{camera_url}/locked.png", username="viewer", password="wrong"))
    right = await camera(lane(f"{camera_url}/locked.png?token={TOKEN}", username="viewer",
                              password=PASSWORD))

    assert (without.status, without.detail) == ("fail", f"{camera_url}: HTTP 401")
    assert without.action == ("check lanes.0.camera.username and lanes.0.camera.password "
                              "(or password_file)")
    assert wrong.status == "fail"
    assert right.status == "ok"
    for shown in (without, wrong, right):
        assert PASSWORD not in str(shown)
        assert TOKEN not in str(shown)


async def test_a_camera_that_answers_without_a_picture(camera_url: str) -> None:
    page = await camera(lane(f"{camera_url}/page"), index=1)
    missing = await camera(lane(f"{camera_url}/nope.jpg"), index=1)

    assert page.status == "warn"
    assert page.action == ("check the path of lanes.1.camera.url: it must give a JPEG or PNG "
                           "snapshot")
    assert (missing.status, missing.action) == ("fail", "check the path of lanes.1.camera.url")


async def test_a_snapshot_camera_that_is_not_there_fails(closed_port: int) -> None:
    finding = await camera(lane(f"http://127.0.0.1:{closed_port}/snap.jpg"), timeout_s=FAST_S)

    assert finding.status == "fail"
    assert finding.detail.startswith(f"http://127.0.0.1:{closed_port}: ConnectError")
    assert finding.action == "check that the camera is on the network, and lanes.0.camera.url"


async def test_a_stream_camera_takes_a_connection(listener: int, closed_port: int) -> None:
    up = await camera(lane(f"rtsp://127.0.0.1:{listener}/stream?token={TOKEN}",
                           username="viewer", password=PASSWORD), timeout_s=FAST_S)
    down = await camera(lane(f"rtsp://127.0.0.1:{closed_port}/stream"), timeout_s=FAST_S)

    assert up == Finding("camera entry-1", "ok", f"127.0.0.1:{listener}: TCP connect done")
    assert (down.status, down.detail) == ("fail", f"127.0.0.1:{closed_port}: Connection refused")


async def test_a_v4l2_or_file_camera_must_be_there_for_the_service(
        tmp_path: Path, root: Path) -> None:
    video = root / "dev/video0"
    photo = tmp_path / "still.jpg"

    missing = await camera(lane("/dev/video0"), MEMBER, root=root)
    make(video, 0o660)
    make(photo, 0o600)
    there = await camera(lane("/dev/video0"), MEMBER, root=root)
    unreadable = await camera(lane(str(photo)), MEMBER, root=root)

    assert (missing.status, missing.detail) == ("fail", f"{video} does not exist")
    assert missing.action == ("plug in the camera, or fix lanes.0.camera.url "
                              "(v4l2-ctl --list-devices)")
    assert there.status == "ok"
    assert (unreadable.status, unreadable.action) == (
        "fail", f"sudo chgrp parking {photo} && sudo chmod g+r {photo}")


async def test_the_checks_run_at_once(tmp_path: Path, host: Host, listener: int) -> None:
    """Three cameras that never answer, and a broker that never finishes its handshake, take
    about one wait, not four."""
    lanes = "".join(f"""
[[lanes]]
id = "lane-{i}"
direction = "entry"
name = "Lane {i}"
camera = {{ url = "http://127.0.0.1:{listener}/snap.jpg" }}
gpio = {{ arming_loop = {5 + 3 * i}, safety_loop = {6 + 3 * i}, open_relay = {7 + 3 * i} }}
""" for i in range(3))
    config = write_config(tmp_path, listener, lanes)
    config.write_text(config.read_text().replace(
        "[sync.mqtt]\n", "[sync.mqtt]\ntls = {}\n"))  # the system's CAs: never reached here
    loop = asyncio.get_running_loop()
    began = loop.time()

    findings = await run_checks(config, USER, host, timeout_s=1.0)

    took = loop.time() - began
    assert [(f.check, f.detail.split(": ", 1)[1]) for f in findings if f.status == "fail"] == [
        ("broker", "no answer within 1 s (TLS handshake)"),
        *((f"camera lane-{i}", "ReadTimeout") for i in range(3))]
    assert took < 3.0, f"{took:.2f} s: four waits of 1 s were not at once"


# --- the command ----------------------------------------------------------------------------


def doctor(host: Host, config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["doctor", "--config", str(config), *args], obj=host)


def entry_lane(camera: str) -> str:
    """An entry lane's config, its camera's lines (`camera`) in its [lanes.camera]."""
    return f"""
[[lanes]]
id = "entry-1"
direction = "entry"
name = "Entry"
gpio = {{ arming_loop = 5, safety_loop = 6, open_relay = 17 }}

[lanes.camera]
{camera}"""


@pytest.fixture
def lot(tmp_path: Path, listener: int, camera_url: str) -> Callable[[int], Path]:
    """A lot's config with its broker at a port: one lane with a snapshot camera behind a
    password, a bus."""
    serial = make(tmp_path / "ttyUSB0", 0o660)

    def config(broker: int = listener) -> Path:
        return write_config(tmp_path, broker, f"""
[bus]
port = "{serial}"
""" + entry_lane(f"""url = "{camera_url}/locked.png?token={TOKEN}"
username = "viewer"
password = "{PASSWORD}"
"""))

    return config


def test_a_healthy_lot_controller_is_all_ok_and_exits_0(
        host: Host, lot: Callable[..., Path]) -> None:
    result = doctor(host, lot())

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "parking-gateway doctor: 10 ok"
    assert [line.split()[:2] for line in lines[1:]] == [
        ["ok", "config"], ["ok", "user"], ["ok", "journal"], ["ok", "journal"], ["ok", "gpio"],
        ["ok", "serial"], ["ok", "clock"], ["ok", "broker"], ["ok", "camera"],
        ["ok", "watchdog"]]
    assert PASSWORD not in result.output
    assert TOKEN not in result.output


def test_the_report_is_all_a_failing_camera_prints(
        host: Host, tmp_path: Path, listener: int, camera_url: str) -> None:
    """The camera check runs the lane's own driver, which logs the 404 it gets: the report
    says it once, with what to do, and no log line comes before it (a log level asked for
    with --log-level still shows them)."""
    config = write_config(tmp_path, listener, entry_lane(f'url = "{camera_url}/gone.png"\n'))

    quiet = doctor(host, config)
    loud = CliRunner().invoke(cli, ["--log-level", "warning", "doctor", "--config",
                                    str(config)], obj=host)

    assert quiet.exit_code == 1, quiet.output
    assert "fail  camera entry-1" in quiet.stdout
    assert quiet.stderr == ""
    assert "camera.error" in loud.stderr


def test_warnings_only_exit_3_and_each_says_what_to_do(
        host: Host, lot: Callable[..., Path]) -> None:
    result = doctor(replace(host, account=lambda name: None), lot())

    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "parking-gateway doctor: 3 warnings, 7 ok"
    warned = lines.index(next(line for line in lines if line.startswith("  warn  user ")))
    assert lines[warned + 1].split() == ["→", "run", "the", "installer:", "sudo",
                                         "scripts/install"]


def test_a_failed_check_exits_1(host: Host, lot: Callable[..., Path]) -> None:
    result = doctor(replace(host, command=answers(timedatectl="no", systemctl="15s")), lot())

    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0] == "parking-gateway doctor: 1 failed, 9 ok"
    assert "  fail  clock " in result.stdout
    assert "→ sudo timedatectl set-ntp true" in result.stdout


def test_an_invalid_config_exits_2_and_leaves_out_what_needs_it(
        host: Host, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(INVALID)

    result = doctor(host, bad)
    machine = doctor(host, bad, "--json")

    assert result.exit_code == 2, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()[1:]
            if not line.lstrip().startswith("→")] == [
        ["fail", "config"], ["ok", "user"], ["ok", "clock"], ["ok", "watchdog"]]
    assert machine.exit_code == 2
    assert [c["check"] for c in json.loads(machine.stdout)["checks"]] == [
        "config", "user", "clock", "watchdog"]


def test_json_holds_every_finding_and_nothing_else_goes_to_stdout(
        host: Host, lot: Callable[..., Path], closed_port: int) -> None:
    config = lot(closed_port)

    result = doctor(host, config, "--json")

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["status"] == "fail"
    assert (report["config"], report["user"]) == (str(config), "parking")
    assert [c["check"] for c in report["checks"]] == [
        "config", "user", "journal disk", "journal write", "gpio", "serial", "clock", "broker",
        "camera entry-1", "watchdog"]
    broker = report["checks"][7]
    assert broker == {
        "check": "broker", "status": "fail",
        "detail": f"127.0.0.1:{closed_port}: Connection refused",
        "action": f"check that the server runs and listens on port {closed_port}, and "
                  "sync.mqtt.host and port"}
    assert all(c["action"] is None for c in report["checks"] if c["status"] == "ok")
    assert PASSWORD not in result.stdout
    assert TOKEN not in result.stdout


@pytest.mark.parametrize(("findings", "code"), [
    ([("config", "ok"), ("clock", "ok")], 0),
    ([("config", "ok"), ("clock", "warn")], 3),
    ([("config", "ok"), ("user", "warn"), ("clock", "fail")], 1),
    ([("config", "fail"), ("clock", "ok")], 2),
    ([("config", "fail"), ("clock", "fail")], 2),
])
def test_exit_codes(findings: list[tuple[str, Status]], code: int) -> None:
    assert exit_code([Finding(check, status, "") for check, status in findings]) == code


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--help"])

    assert result.exit_code == 0
    for line in ("0  success", "1  operational failure", "2  invalid input",
                 "3  warnings only"):
        assert line in result.stdout
