"""`parking-gateway doctor`: is this lot controller ready to run the gateway?

Each check is a small function that returns a `Finding`: ok, warn or fail, and when not ok one
line saying what to do. What a check learns from the machine (a command's output, the kernel's
clock state, the service's account, free space, a test write, where / is) comes through `Host`,
so that a test stands in another machine: the one the tests run on has no systemd, GPIO or
watchdog. The network checks really connect, each with a bounded wait, and all checks run at
once, so the slowest camera bounds the wait, not the sum of them.

fail: the lot does not work as configured, or lacks something it relies on (an NTP-set clock,
the hardware watchdog), until this is fixed. warn: it works but needs a look, or the doctor
cannot tell (there is no service user yet: the installer was not run).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import grp
import os
import pwd
import re
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from gateway.cli.common import (
    Section,
    config_option,
    json_option,
    plural,
    print_json,
    print_sections,
)
from gateway.config import (
    CameraConfig,
    ConfigError,
    JournalConfig,
    LaneConfig,
    MqttConfig,
    Settings,
    SyncConfig,
    load_settings,
)
from gateway.core.clock import SystemClock
from gateway.journal.reserve import MB, Reserve, free_bytes
from gateway.runtime.log import configure_logging

if TYPE_CHECKING:
    from gateway.drivers.camera import HttpSnapshotSource

# As systemd/parking-gateway.service runs the daemon: User= and SupplementaryGroups=.
SERVICE_USER = "parking"
SERVICE_GROUPS = ("gpio", "dialout", "video")
INSTALLER = "sudo scripts/install"  # run in the gateway's checkout
GPIO_RULE = "/etc/udev/rules.d/60-parking-gateway-gpio.rules"  # the installer's
WATCHDOG_CONF = "/etc/systemd/system.conf.d/parking-gateway-watchdog.conf"  # the installer's
STATE_DIR = "var/lib/parking-gateway"  # the unit's WorkingDirectory, under Host.root
AS_ROOT = "run the doctor as root: sudo parking-gateway doctor"
NETWORK_TIMEOUT_S = 3.0  # per connection, TLS handshake or snapshot
COMMAND_TIMEOUT_S = 5.0  # per command (timedatectl, systemctl)
FULL_BELOW = MB  # free space for the service under this: the journal's next write fails
WATCHDOG_DEVICES = ("dev/watchdog", "dev/watchdog0")
STA_UNSYNC = 0x0040  # <sys/timex.h>: the kernel's clock is not synchronised
R, W, X = 4, 2, 1  # permission bits, as in a mode's owner, group and other digits

DOCTOR_EXIT_CODES = """\b
Exit codes:
  0  success: every check is ok
  1  operational failure: a check failed; its line says what to do
  2  invalid input: bad usage, or a config that is missing or invalid (the
     checks that need it are then left out)
  3  warnings only: no check failed, but some need a look
"""

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Finding:
    """What one check found; `action` is one line, a command to run or a setting to change."""

    check: str
    status: Status
    detail: str
    action: str | None = None


def ok(check: str, detail: str) -> Finding:
    return Finding(check, "ok", detail)


def warn(check: str, detail: str, action: str) -> Finding:
    return Finding(check, "warn", detail, action)


def fail(check: str, detail: str, action: str) -> Finding:
    return Finding(check, "fail", detail, action)


# --- the machine's facts ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    """The service's user as its unit runs it: its own groups and the unit's besides."""

    uid: int
    gids: frozenset[int]
    missing_groups: tuple[str, ...] = ()  # the unit's groups that do not exist


def service_account(name: str) -> Account | None:
    """The account `name`, None if there is none."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    gids = set(os.getgrouplist(name, entry.pw_gid))
    missing = []
    for group in SERVICE_GROUPS:
        try:
            gids.add(grp.getgrnam(group).gr_gid)
        except KeyError:
            missing.append(group)
    return Account(entry.pw_uid, frozenset(gids), tuple(missing))


def command_output(argv: Sequence[str]) -> str | None:
    """A command's stdout, stripped; None where it is missing, fails or hangs (no systemd)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


class _Timex(ctypes.Structure):
    """struct timex of adjtimex(2) up to `status`, the one field read."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int)]


def kernel_clock_synced() -> bool | None:
    """Whether the kernel's clock is NTP-synchronised (STA_UNSYNC, set by chrony, ntpd or
    timesyncd); None where adjtimex(2) is missing or refused."""
    try:
        adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex
    except (OSError, AttributeError):
        return None
    # The kernel writes the whole struct (208 bytes on 64-bit Linux); modes 0 only reads.
    buffer = ctypes.create_string_buffer(512)
    if adjtimex(buffer) < 0:
        return None
    return not (_Timex.from_buffer(buffer).status & STA_UNSYNC)


def write_test(folder: Path) -> None:
    """Create, fsync and remove a file in `folder`: what the journal does, in small."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".doctor-")
    try:
        os.write(fd, bytes(4096))
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


@dataclass(frozen=True, slots=True)
class Host:
    """The machine as the checks see it; a test replaces what it needs."""

    command: Callable[[Sequence[str]], str | None] = command_output
    kernel_clock_synced: Callable[[], bool | None] = kernel_clock_synced
    account: Callable[[str], Account | None] = service_account
    free_bytes: Callable[[Path], int] = free_bytes
    write_test: Callable[[Path], None] = write_test
    root: Path = Path("/")  # where /dev and /etc/systemd are


# --- the config -----------------------------------------------------------------------------


def check_config(path: Path) -> tuple[Finding, Settings | None]:
    """The config, loaded as the daemon loads it (`parking-gateway run`, `config check`)."""
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        return fail("config", f"{path} does not exist",
                    f"run the installer ({INSTALLER}), which makes it from the example, or "
                    "name the config with --config"), None
    except PermissionError:
        return fail("config", f"{path}: permission denied", AS_ROOT), None
    except OSError:
        pass  # load_settings says what is wrong with it
    try:
        settings = load_settings(path)
    except ConfigError as e:
        more = len(e.problems) - 1
        detail = f"{path}: {e.problems[0]}" + (f" (and {more} more)" if more else "")
        return fail("config", detail,
                    f"fix it: parking-gateway config check {path} lists every problem"), None
    return ok("config", f"{path}: valid, {plural(len(settings.lanes), 'lane')}, "
                        f"{plural(len(settings.bays), 'bay')}"), settings


# --- the service's user and what it may use -------------------------------------------------


def check_user(user: str, who: Account | None) -> Finding:
    if who is None:
        return warn("user", f"there is no user {user}: the installer has not run",
                    f"run the installer: {INSTALLER}")
    if who.missing_groups:
        return fail("user", f"the unit's groups {', '.join(who.missing_groups)} do not exist: "
                            "the service cannot start (status=216/GROUP)",
                    "sudo systemd-sysusers (the installer's sysusers file makes them)")
    return ok("user", f"{user} (uid {who.uid}), with the unit's groups "
                      f"{', '.join(SERVICE_GROUPS)}")


def permits(st: os.stat_result, who: Account, want: int) -> bool:
    """Whether `who` may `want` (R|W|X bits) by owner, group and mode.

    As the kernel decides for a process without capabilities (the unit grants none): the
    owner's bits for the owner, else the group's for a member, else the others'. ACLs are not
    read.
    """
    if st.st_uid == who.uid:
        bits = st.st_mode >> 6
    elif st.st_gid in who.gids:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


@dataclass(frozen=True, slots=True)
class Device:
    """A file the service must reach, and what to do when it is missing or out of reach."""

    check: str
    path: Path
    want: int
    missing: str
    fix: str


def device(check: str, path: Path, group: str, missing: str, want: int = R | W,
           fix: str | None = None) -> Device:
    """A device the unit's `group` should own, as a udev rule gives it."""
    letters = "".join(letter for bit, letter in ((R, "r"), (W, "w"), (X, "x")) if want & bit)
    fix = fix or (f"sudo chgrp {group} {path} && sudo chmod g+{letters} {path}; a udev rule "
                  f'keeps it so: GROUP="{group}", MODE="0660"')
    return Device(check, path, want, missing, fix)


def check_device(dev: Device, who: Account | None, user: str) -> Finding:
    try:
        st = dev.path.stat()
    except FileNotFoundError:
        return fail(dev.check, f"{dev.path} does not exist", dev.missing)
    except OSError as e:
        return warn(dev.check, f"cannot look at {dev.path}: {e.strerror or e}", AS_ROOT)
    if who is None:
        return warn(dev.check, f"{dev.path} exists; whether {user} may use it is unknown: "
                               f"there is no user {user}", f"run the installer: {INSTALLER}")
    shown = _shown(dev.path, st)
    if permits(st, who, dev.want):
        return ok(dev.check, f"{shown}: {user} may {_verb(dev.want)} it")
    return fail(dev.check, f"{shown}: {user} may not {_verb(dev.want)} it", dev.fix)


def _shown(path: Path, st: os.stat_result) -> str:
    """`/dev/ttyUSB0 (root:dialout 0660)`."""
    return f"{path} ({_owner(st)} {stat.S_IMODE(st.st_mode):04o})"


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def _verb(want: int) -> str:
    return {R: "read", R | W: "read and write", W | X: "write in"}[want]


def _uses_pins(settings: Settings) -> bool:
    return bool(settings.lanes) or settings.gpio.lot_full_lamp is not None or any(
        bay.sensor.kind == "ultrasonic" for bay in settings.bays)


def check_gpio(settings: Settings, who: Account | None, user: str, root: Path) -> list[Finding]:
    """The GPIO chips the pin factory opens, when the config drives any pin."""
    if not _uses_pins(settings):
        return []
    factory = settings.gpio.pin_factory
    if factory == "mock":
        return [warn("gpio", "gpio.pin_factory is mock: the lanes drive no real pin",
                     'set gpio.pin_factory = "auto" (mock is for the simulator)')]
    missing = "run the doctor on the lot controller: ls /dev/gpiochip* lists a Pi's chips"
    if factory == "rpigpio":
        return [check_device(device("gpio", root / "dev/gpiomem", "gpio", missing), who, user)]
    # lgpio, gpiozero's first choice ("auto"): chip 0, or chip 4 where a Pi 5 with a kernel
    # before 6.6.45 has one (gpiozero then opens that).
    chip4 = root / "dev/gpiochip4"
    fix = (f"the installer's udev rule ({GPIO_RULE}) gives the chips to group gpio; with it "
           "there: sudo udevadm trigger --subsystem-match=gpio --action=add")
    return [check_device(device("gpio", path, "gpio", missing, fix=fix), who, user)
            for path in (root / "dev/gpiochip0", *([chip4] if chip4.exists() else []))]


def check_serial(settings: Settings, who: Account | None, user: str) -> list[Finding]:
    """Each serial port the config names, once however many devices share it: the RS-485
    sensor bus, the count signs' lines, the lanes' ticket printers and scanners."""
    ls = "(ls /dev/serial/by-id/)"
    ports: dict[str, tuple[str, str]] = {}  # port: the check's name, what to do if it is missing
    if settings.bus is not None:
        ports[settings.bus.port] = (
            "serial", f"plug in the RS-485 adapter, or set bus.port to it {ls}")
    for sign in settings.signs:
        ports.setdefault(sign.port, (
            f"serial: sign {sign.id}",
            f"plug in sign {sign.id}'s RS-485 adapter, or set its port to it {ls}"))
    for lane in settings.lanes:
        for kind, part in (("printer", lane.printer), ("scanner", lane.scanner)):
            if part is not None:
                ports.setdefault(part.port, (
                    f"serial: {lane.id} {kind}",
                    f"plug in lane {lane.id}'s ticket {kind}, or set lanes.{kind}.port to it {ls}"))
    return [check_device(device(check, Path(port), "dialout", missing), who, user)
            for port, (check, missing) in ports.items()]


# --- the journal ----------------------------------------------------------------------------

FREE_SPACE = ("free space on it (sudo journalctl --vacuum-size=100M; sudo apt-get clean), or "
              "lower journal.retention_days")


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists: the file system it will be on."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_journal_disk(journal: JournalConfig, host: Host) -> Finding:
    """Free space against the daemon's own bounds (gateway.journal.reserve, `_watch_disk`)."""
    check = "journal disk"
    folder = _existing(journal.path.parent)
    try:
        free = host.free_bytes(folder)
    except OSError as e:
        return warn(check, f"cannot tell the free space of {folder}: {e.strerror or e}", AS_ROOT)
    held = Reserve(journal.path, journal.reserve_mb * MB).held
    shown = f"{free // MB:,} MiB free on {folder}"
    if free < FULL_BELOW:
        return fail(check, f"{shown}: the journal's disk is full", FREE_SPACE)
    if free < journal.min_free_mb * MB:
        return warn(check, f"{shown}, under journal.min_free_mb ({journal.min_free_mb}): the "
                           "daemon raises journal.disk_low", FREE_SPACE)
    if journal.reserve_mb and not held and free < (journal.min_free_mb + journal.reserve_mb) * MB:
        return warn(check, f"{shown}: no room for the journal's {journal.reserve_mb} MiB "
                           "reserve (journal.reserve_mb) with journal.min_free_mb besides",
                    FREE_SPACE)
    reserve = "held" if held else "none" if not journal.reserve_mb else "made at start"
    return ok(check, f"{shown} (min_free_mb {journal.min_free_mb}; reserve {reserve})")


def check_journal_write(journal: JournalConfig, who: Account | None, user: str,
                        host: Host) -> Finding:
    """A file written and synced where the journal is, and the service's right to do it."""
    check = "journal write"
    folder = journal.path.parent
    if not folder.is_dir():
        return fail(check, f"{folder} does not exist",
                    f"sudo install -d -o {user} -g {user} -m 0750 {folder}")
    try:
        host.write_test(folder)
    except OSError as e:
        return _write_failed(check, folder, e)
    if who is None:
        return ok(check, f"{folder}: a test file was written, synced and removed")
    for path, want in ((folder, W | X), (journal.path, R | W)):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue  # no journal yet: the daemon makes it
        if not permits(st, who, want):
            return fail(check, f"{_shown(path, st)}: {user} may not {_verb(want)} it",
                        f"sudo chown {user}:{user} {path}")
    return ok(check, f"{folder}: a test file was written, synced and removed; {user} may "
                     "write there")


def _write_failed(check: str, folder: Path, e: OSError) -> Finding:
    reason = e.strerror or str(e)
    if e.errno in (errno.EACCES, errno.EPERM):
        return warn(check, f"cannot test writing in {folder} as this user: {reason}", AS_ROOT)
    if e.errno == errno.EROFS:
        return fail(check, f"{folder} is on a read-only file system",
                    "the SD card may be failing: look at dmesg | tail, then sudo mount -o "
                    "remount,rw /")
    if e.errno == errno.ENOSPC:
        return fail(check, f"{folder}: no space left on the device", FREE_SPACE)
    return fail(check, f"cannot write and sync a file in {folder}: {reason}",
                "look for disk errors: dmesg | tail")


# --- the clock and the watchdog -------------------------------------------------------------


def check_clock(host: Host) -> Finding:
    """NTP sync as systemd's timedated reports it, else as the kernel does."""
    answer = host.command(("timedatectl", "show", "-p", "NTPSynchronized", "--value"))
    synced = {"yes": True, "no": False}.get(answer or "")
    source = "timedatectl"
    if synced is None:
        synced, source = host.kernel_clock_synced(), "the kernel's adjtimex"
    if synced is None:
        return warn("clock", "cannot tell whether the clock is synchronised: no timedatectl, "
                             "and adjtimex failed",
                    "check the time service by hand: chronyc tracking, or ntpq -p")
    if synced:
        return ok("clock", f"synchronised, says {source}")
    return fail("clock", f"not synchronised, says {source}: event times and fees may be wrong, and "
                         "signed commands refused",
                "sudo timedatectl set-ntp true, and let the controller reach an NTP server "
                "(timedatectl timesync-status)")


def configured_watchdog(root: Path) -> tuple[str, Path] | None:
    """RuntimeWatchdogSec= as systemd reads it, and the file that set it.

    system.conf, then the drop-ins in name order (one in /etc hides one of the same name in
    /run or /usr/lib); the last one set wins.
    """
    dropins: dict[str, Path] = {}
    for base in ("usr/lib", "usr/local/lib", "run", "etc"):  # lowest precedence first
        for path in (root / base / "systemd/system.conf.d").glob("*.conf"):
            dropins[path.name] = path
    found = None
    for path in (root / "etc/systemd/system.conf", *(dropins[n] for n in sorted(dropins))):
        if (value := _manager_setting(path, "RuntimeWatchdogSec")) is not None:
            found = (value, path)
    return found


def _manager_setting(path: Path, key: str) -> str | None:
    """The last `key=` of the [Manager] section of a systemd config file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    section, value = "", None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        name, sep, rest = line.partition("=")
        if sep and section == "[Manager]" and name.strip() == key:
            value = rest.strip()
    return value


def _watchdog_on(value: str) -> bool:
    """Whether RuntimeWatchdogSec (or systemd's RuntimeWatchdogUSec) arms the watchdog:
    `15s`, `1min`, `default` and `infinity` do; empty, `off` and `0` do not."""
    if value.strip().lower() in ("", "off"):
        return False
    number = re.match(r"\d+(\.\d+)?", value.strip())
    return number is None or float(number.group()) > 0


def check_watchdog(host: Host) -> Finding:
    """systemd pets the hardware watchdog, so a hung controller is reset."""
    check = "watchdog"
    wdt = next((path for name in WATCHDOG_DEVICES if (path := host.root / name).exists()), None)
    if wdt is None:
        return fail(check, "no hardware watchdog device (/dev/watchdog)",
                    "on a Raspberry Pi: add dtparam=watchdog=on to /boot/firmware/config.txt, "
                    "and reboot")
    running = host.command(("systemctl", "show", "-p", "RuntimeWatchdogUSec", "--value"))
    if running is not None and _watchdog_on(running):
        return ok(check, f"RuntimeWatchdogSec is {running}, on {wdt}")
    configured = configured_watchdog(host.root)
    if configured is not None and _watchdog_on(configured[0]):
        value, source = configured
        if running is None:
            return ok(check, f"RuntimeWatchdogSec={value} in {source}, on {wdt} (systemd is "
                             "not running here to confirm it)")
        return warn(check, f"RuntimeWatchdogSec={value} in {source} is not in effect yet",
                    "sudo systemctl daemon-reexec (or reboot)")
    return fail(check, "systemd does not drive the hardware watchdog: RuntimeWatchdogSec is off",
                f"put RuntimeWatchdogSec=15s under [Manager] in {WATCHDOG_CONF} (the installer "
                "does), then sudo systemctl daemon-reexec")


# --- the network: backend and cameras -------------------------------------------------------


async def reach(check: str, host: str, port: int, timeout_s: float, *, where: str,
                context: ssl.SSLContext | None = None, trust: str = "") -> Finding:
    """A TCP connection to host:port, with a TLS handshake when `context` is given."""
    target = f"{host}:{port}"
    how = "TLS handshake" if context else "TCP connect"
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host if context else None)
    except TimeoutError:
        return fail(check, f"{target}: no answer within {timeout_s:g} s ({how})",
                    f"check {where}, and that this controller's network reaches {host} "
                    "(firewall, route)")
    except ssl.SSLCertVerificationError as e:
        return fail(check, f"{target}: the TLS certificate is not trusted: {e.verify_message}",
                    f"the server's certificate must be signed by the CA in {trust}, and the "
                    "clock must be right")
    except ssl.SSLError as e:
        return fail(check, f"{target}: the TLS handshake failed: {e.reason or e}",
                    f"check that {target} speaks TLS, or leave TLS out of {where}")
    except socket.gaierror as e:
        return fail(check, f"cannot resolve {host}: {e.strerror}",
                    f"check {where}, and the DNS server (/etc/resolv.conf)")
    except OSError as e:
        # asyncio words a refusal "Connect call failed ('10.0.0.5', 1883)"; the errno says it.
        reason = os.strerror(e.errno) if e.errno else str(e)
        return fail(check, f"{target}: {reason}",
                    f"check that the server runs and listens on port {port}, and {where}")
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    return ok(check, f"{target}: {how} done")


async def check_broker(mqtt: MqttConfig, timeout_s: float) -> Finding:
    context = None
    if mqtt.tls is not None:
        from gateway.sync.mqtt import tls_context  # the sync package: a third of a second

        try:
            context = await asyncio.to_thread(tls_context, mqtt.tls)
        except (OSError, ssl.SSLError) as e:
            files = ", ".join(str(f) for f in (mqtt.tls.ca_file, mqtt.tls.cert_file,
                                                 mqtt.tls.key_file) if f is not None)
            files = files or "the system's CA store"
            return fail("broker", f"cannot load the TLS files of sync.mqtt.tls ({files}): "
                                  f"{e.strerror or e}",
                        "check that sync.mqtt.tls.ca_file (and cert_file, key_file) exist "
                        "and are PEM")
    return await reach("broker", mqtt.host, mqtt.port, timeout_s, context=context,
                       where="sync.mqtt.host and port", trust="sync.mqtt.tls.ca_file")


def backend_checks(sync: SyncConfig, timeout_s: float) -> list[Awaitable[Finding]]:
    """The MQTT broker when sync uses it, and the HTTP backend when it does."""
    checks: list[Awaitable[Finding]] = []
    if sync.transport == "mqtt":
        checks.append(check_broker(sync.mqtt, timeout_s))
    else:
        checks.append(_done(ok("broker", "not used: sync.transport is http")))
    url = sync.http.base_url
    if url is not None and url.host and (sync.transport == "http"
                                         or sync.http_fallback_after_s is not None):
        context = ssl.create_default_context() if url.scheme == "https" else None
        port = url.port or (443 if context else 80)
        checks.append(reach("backend", url.host, port, timeout_s, context=context,
                            where="sync.http.base_url",
                            trust="the system's CA store (ca-certificates)"))
    return checks


async def _done(finding: Finding) -> Finding:
    return finding


def shown_url(url: str) -> str:
    """scheme://host:port of a URL: its path or query may carry a token, its user part a name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


async def check_camera(index: int, lane: LaneConfig, who: Account | None, user: str,
                       timeout_s: float, root: Path) -> Finding:
    """A snapshot camera answers with a picture; a stream's port takes a connection; a V4L2
    device or a file is there for the service."""
    camera, check, where = lane.camera, f"camera {lane.id}", f"lanes.{index}.camera"
    if camera.kind == "http":
        return await _snapshot(check, where, lane.id, camera, timeout_s)
    if camera.kind == "rtsp":
        parts = urlsplit(camera.url)
        try:
            port = parts.port or (322 if parts.scheme.lower() == "rtsps" else 554)
        except ValueError:
            return fail(check, f"{shown_url(camera.url)}: the URL's port is not a number",
                        f"fix {where}.url")
        return await reach(check, parts.hostname or "", port, timeout_s, where=f"{where}.url")
    if camera.kind == "v4l2":
        dev = device(check, root / camera.url.removeprefix("/"), "video",
                     f"plug in the camera, or fix {where}.url (v4l2-ctl --list-devices)")
    else:
        dev = Device(check, Path(camera.url), R, f"fix {where}.url: no such file",
                     f"sudo chgrp {user} {camera.url} && sudo chmod g+r {camera.url}")
    return await asyncio.to_thread(check_device, dev, who, user)


def _snapshot_source(camera_id: str, camera: CameraConfig,
                     timeout_s: float) -> HttpSnapshotSource:
    """The lane's own driver for a snapshot camera. Made off the event loop: it imports OpenCV
    and loads a CA bundle, which would hold up the other checks' waits."""
    from gateway.drivers.camera import HttpSnapshotSource

    password = None if camera.password is None else camera.password.get_secret_value()
    return HttpSnapshotSource(camera_id, camera.url, clock=SystemClock(),
                              username=camera.username, password=password, timeout_s=timeout_s)


async def _snapshot(check: str, where: str, camera_id: str, camera: CameraConfig,
                    timeout_s: float) -> Finding:
    """One snapshot through the lane's own driver: its credentials, size cap and decoding."""
    shown = shown_url(camera.url)
    try:
        source = await asyncio.to_thread(_snapshot_source, camera_id, camera, timeout_s)
    except ModuleNotFoundError as e:  # OpenCV and numpy come with the lpr extra
        return fail(check, f"plate reading is on, but {e.name} is not installed",
                    f"{INSTALLER} --lpr (or set [lpr] enabled = false)")
    try:
        async with asyncio.timeout(timeout_s * 2):  # the request, then decoding the picture
            answered = await source.snapshot()
    except TimeoutError:
        return fail(check, f"{shown}: no answer within {timeout_s * 2:g} s",
                    f"check that the camera is on the network, and {where}.url")
    finally:
        await source.close()
    if source.health.frames:
        return ok(check, f"{shown}: answered with a picture")
    if answered:
        return warn(check, f"{shown}: answers, but not with a picture the lane can read",
                    f"check the path of {where}.url: it must give a JPEG or PNG snapshot")
    error = (source.health.last_error or "no answer").removeprefix("request: ").rstrip(": ")
    error = error.replace(camera.url, shown)  # "ReadTimeout: " has no message
    if error in ("HTTP 401", "HTTP 403"):
        return fail(check, f"{shown}: {error}",
                    f"check {where}.username and {where}.password (or password_file)")
    if error == "HTTP 404":
        return fail(check, f"{shown}: {error}", f"check the path of {where}.url")
    return fail(check, f"{shown}: {error}",
                f"check that the camera is on the network, and {where}.url")


# --- all of them ----------------------------------------------------------------------------


async def run_checks(config: Path, user: str, host: Host,
                     timeout_s: float = NETWORK_TIMEOUT_S) -> list[Finding]:
    """Every check, at once; findings in a fixed order. A config that does not load leaves
    out the checks that need it."""
    configured, settings = await asyncio.to_thread(check_config, config)
    who = await asyncio.to_thread(host.account, user)
    jobs: list[Awaitable[Finding | list[Finding]]] = []

    def local(fn: Callable[..., Finding | list[Finding]], *args: Any) -> None:
        jobs.append(asyncio.to_thread(fn, *args))

    local(check_user, user, who)
    if settings is not None:
        journal = settings.journal
        if not journal.path.is_absolute():  # as the service sees it, from its working directory
            journal = journal.model_copy(update={"path": host.root / STATE_DIR / journal.path})
        local(check_journal_disk, journal, host)
        local(check_journal_write, journal, who, user, host)
        local(check_gpio, settings, who, user, host.root)
        local(check_serial, settings, who, user)
    local(check_clock, host)
    if settings is not None:
        jobs.extend(backend_checks(settings.sync, timeout_s))
        if settings.lpr.enabled:  # else no lane opens its camera (app.py)
            jobs.extend(check_camera(i, lane, who, user, timeout_s, host.root)
                        for i, lane in enumerate(settings.lanes))
    local(check_watchdog, host)
    return [configured, *_flat(await asyncio.gather(*jobs))]


def _flat(results: Iterable[Finding | list[Finding]]) -> list[Finding]:
    return [f for r in results for f in (r if isinstance(r, list) else [r])]


def exit_code(findings: Sequence[Finding]) -> int:
    """0 all ok, 1 a check failed, 2 the config did not load, 3 warnings only."""
    statuses = {f.status for f in findings}
    if any(f.check == "config" and f.status == "fail" for f in findings):
        return 2
    return 1 if "fail" in statuses else 3 if "warn" in statuses else 0


def verdict(findings: Sequence[Finding]) -> Status:
    statuses = {f.status for f in findings}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"


def _tally(findings: Sequence[Finding]) -> str:
    counts = {status: sum(f.status == status for f in findings)
              for status in ("fail", "warn", "ok")}
    parts = [f"{counts['fail']} failed" if counts["fail"] else "",
             plural(counts["warn"], "warning") if counts["warn"] else "",
             f"{counts['ok']} ok"]
    return ", ".join(part for part in parts if part)


@click.command("doctor", epilog=DOCTOR_EXIT_CODES)
@config_option
@click.option("--user", default=SERVICE_USER, show_default=True,
              help="The service's user (User= of parking-gateway.service).")
@json_option
@click.pass_context
def doctor(ctx: click.Context, config_path: Path, user: str, as_json: bool) -> None:
    """Check this lot controller: the config, the journal's disk, the GPIO chip and serial
    port, the clock, the backend, the cameras and the hardware watchdog.

    Each check prints ok, warn or fail; one that is not ok says what to do. Run it as root
    (sudo): the service's config, journal and devices are not everyone's to read. The network
    checks run at once, each waiting 3 s at most.
    """
    root = ctx.find_root()
    if root.get_parameter_source("log_level") is ParameterSource.DEFAULT:
        # The checks run the lanes' own drivers, which log what they find wrong (a camera's
        # 404) ahead of the report: the report says it once, with what to do.
        configure_logging("error", "auto", sys.stderr)
    host = ctx.find_object(Host) or Host()
    findings = asyncio.run(run_checks(config_path, user, host))
    if as_json:
        print_json({"status": verdict(findings), "config": str(config_path), "user": user,
                    "checks": [asdict(f) for f in findings]})
    else:
        rows: list[tuple[str, str, str]] = []
        for f in findings:
            rows.append((f.status, f.check, f.detail))
            if f.action is not None:
                rows.append(("", "", f"→ {f.action}"))
        print_sections([Section(f"parking-gateway doctor: {_tally(findings)}", rows, wrap=2)])
    ctx.exit(exit_code(findings))
