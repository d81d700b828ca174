"""The systemd unit: what the service needs is there, and systemd itself accepts the file."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from gateway.cli import DEFAULT_CONFIG, cli
from gateway.config import DEFAULT_CONTROL_SOCKET, DEFAULT_JOURNAL_PATH

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "parking-gateway.service"
SYSUSERS = ROOT / "systemd" / "parking-gateway.sysusers.conf"
INSTALLED_SCRIPT = "/opt/parking-gateway/current/venv/bin/parking-gateway"  # scripts/install


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of keys, each with every value given (a key may repeat, as DeviceAllow does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"a key outside any section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values, f"{key} is missing"
    assert len(values) == 1, f"{key} is given {len(values)} times"
    return values[0]


def test_notify_service_with_watchdog_and_restart(service):
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert one(service, "Restart") == "always"
    assert one(service, "RestartSec")
    watchdog = one(service, "WatchdogSec")
    assert watchdog.endswith("s")
    assert 5 <= int(watchdog[:-1]) <= 120


def test_runs_the_daemon_command_with_the_installed_config(service):
    argv = shlex.split(one(service, "ExecStart"))
    assert argv[:2] == [INSTALLED_SCRIPT, "run"]
    assert argv[argv.index("--config") + 1] == str(DEFAULT_CONFIG)
    # the command the unit starts exists (commands load lazily: ask the group, not its dict)
    assert "run" in cli.list_commands(click.Context(cli))
    assert cli.get_command(click.Context(cli), "run") is not None


def test_dedicated_user_with_the_hardware_groups(service):
    assert one(service, "User") == "parking"
    assert set(one(service, "SupplementaryGroups").split()) >= {"gpio", "dialout", "video"}


def test_directories_match_the_gateways_defaults(service):
    assert Path("/var/lib") / one(service, "StateDirectory") == DEFAULT_JOURNAL_PATH.parent
    assert Path("/etc") / one(service, "ConfigurationDirectory") == DEFAULT_CONFIG.parent
    # The control socket lives in the runtime directory, which the group may enter.
    assert Path("/run") / one(service, "RuntimeDirectory") == DEFAULT_CONTROL_SOCKET.parent
    assert one(service, "RuntimeDirectoryMode") == "0750"


@pytest.mark.parametrize(("key", "value"), [
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("LockPersonality", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("SystemCallArchitectures", "native"),
    ("DevicePolicy", "closed"),
    ("CapabilityBoundingSet", ""),
])
def test_hardening(service, key, value):
    assert one(service, key) == value


def test_only_the_address_families_the_daemon_uses(service):
    families = set(one(service, "RestrictAddressFamilies").split())
    assert {"AF_UNIX", "AF_INET", "AF_INET6"} <= families <= {
        "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_the_lots_devices_stay_reachable(service):
    allowed = {value.split()[0] for value in service["DeviceAllow"]}
    # /dev/gpiochip*, the RS-485 serial ports, V4L2 cameras (groups of /proc/devices)
    assert {"char-gpiochip", "char-ttyAMA", "char-ttyUSB", "char-video4linux"} <= allowed
    assert "PrivateDevices" not in service  # it would hide them all


def test_the_clock_sync_check_is_not_blocked(service):
    # gateway.core.clock asks the kernel (adjtimex) whether NTP synchronised the clock.
    assert "ProtectClock" not in service
    allowed = " ".join(service.get("SystemCallFilter", [])).split()
    assert "adjtimex" in allowed
    assert "ProcSubset" not in service  # /proc/sys/kernel/random/boot_id must stay readable


def test_sysusers_creates_the_user_and_groups():
    lines = [line.split() for line in SYSUSERS.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert ["g", "parking", "-"] in lines
    assert ["g", "gpio", "-"] in lines
    user = next(line for line in lines if line[:2] == ["u", "parking"])
    assert user[2] == "-:parking"


def _verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart on this checkout's script: verify checks it is executable."""
    script = Path(sys.executable).parent / "parking-gateway"
    if not script.exists():
        pytest.skip("the parking-gateway console script is not installed in this venv")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED_SCRIPT, str(script)))
    return copy


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_verify(tmp_path):
    unit = _verifiable_copy(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, check=False)
    # Warnings about the unit file itself name it; other units of this host are not ours.
    ours = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line]
    assert done.returncode == 0, done.stderr
    assert ours == []


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers not here")
def test_systemd_sysusers_accepts_the_file(tmp_path):
    done = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", "--dry-run", str(SYSUSERS.resolve())],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "Failed" not in done.stderr, done.stderr
    assert "ignoring" not in done.stderr, done.stderr


def test_working_directory_is_writable_state(service):
    # ProtectSystem=strict leaves only the unit's own directories writable.
    assert Path(one(service, "WorkingDirectory")) == Path("/var/lib") / one(
        service, "StateDirectory")
