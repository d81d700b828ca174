"""`parking-gateway bench footprint`: what the gateway costs the small computer it runs on.

The figures a Raspberry Pi owner asks about, measured on the demo lot from outside the
processes, through /proc, as `top` and `iotop` see them:

* the daemon at rest with plate reading off: its resident memory (`daemon_rss_mb`), how often
  its threads wake (`idle_wakeups_per_s`: the voluntary and involuntary context switches of all
  of them) and its CPU share over a quiet window, and its start (`start_to_ready_s`: from the
  spawn to systemd's READY=1; the bench is its `$NOTIFY_SOCKET`, as systemd would be);
* the daemon with plate reading on, and the plate worker's processes (`worker_rss_mb`);
* the demo's traffic (`parking-gateway demo`: the real daemon and the simulated lot, which
  share one process): that process's memory, and what it has written to disk per 1,000
  journaled events (/proc's write_bytes: what the kernel sends to the SD card), split into
  the journal's WAL, its checkpoints and the rest (`WalMeter`), with the fsyncs;
* the installed size of a venv with and without the `lpr` extra (`venv_size`).

The daemon runs as `parking-gateway run` runs it, on the demo lot's settings, except for the
lanes' cameras: in the demo the simulator supplies them, here each lane has one with nothing in
view (`IdleCamera`), so no camera driver, and no OpenCV, is loaded (a lot that reads plates
from RTSP cameras loads both; with plate reading off no lane opens its camera). Nothing
answers on the sensor bus's port either. A local mosquitto plays the backend when one is
installed; otherwise the daemon runs offline, as on a lot with no network.
"""

# The daemon's process imports this module too (`DAEMON`): at the top, only what the daemon
# loads anyway, or the memory measured would be the bench's.
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.drivers import Frame

DEMO_LOT = Path(__file__).resolve().parents[2] / "config" / "demo-lot.toml"
CLI = "from gateway.cli import main; main()"
# The daemon's process: what `parking-gateway run` has imported when it starts the daemon (the
# CLI's root and the command's module), then the daemon (`serve_demo_lot`).
DAEMON = ("import gateway.cli.main, gateway.cli.daemon\n"
          "from gateway.bench.footprint import serve_demo_lot\n"
          "serve_demo_lot()")
# systemd/parking-gateway.service: WatchdogSec (as $WATCHDOG_USEC), TimeoutStartSec,
# TimeoutStopSec.
WATCHDOG_USEC = 20_000_000
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
STARTS = 3  # of the idle daemon: a start's time varies with whatever else the machine does
SETTLE_S = 5.0  # after READY, before measuring: the start's own work (first polls) is done
DEMO_START_S = 60.0  # the longest the demo may take to write its journal's first event
SAMPLE_S = 0.25  # how often the traffic's memory and WAL are sampled
MB = 1024 * 1024
LINUX_TAG = re.compile(r"(?:many|musl)?linux(?:_\d+_\d+|\d+)?_(\w+)")  # a wheel's, for Linux


# --- a process, from /proc ----------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """A process's counters at one moment."""

    at: float  # time.monotonic()
    rss_bytes: int
    switches: int  # context switches of its threads so far, voluntary and involuntary
    cpu_s: float  # user and system time so far
    write_bytes: int  # bytes it has had written to storage so far


def usage(pid: int) -> Usage:
    """`pid`'s counters now. A thread that has ended takes its switches with it; the daemon's
    threads live as long as it does."""
    proc = Path(f"/proc/{pid}")
    at = time.monotonic()
    switches = 0
    for task in proc.glob("task/*"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # it just ended
            fields = _status(task / "status")
            switches += fields["voluntary_ctxt_switches"] + fields["nonvoluntary_ctxt_switches"]
    stat = (proc / "stat").read_text()
    after_name = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces
    ticks = int(after_name[11]) + int(after_name[12])  # utime, stime
    io = dict(line.split(": ") for line in (proc / "io").read_text().splitlines())
    return Usage(at, rss_bytes(pid), switches, ticks / os.sysconf("SC_CLK_TCK"),
                 int(io["write_bytes"]))


def rss_bytes(pid: int) -> int:
    return _status(Path(f"/proc/{pid}/status"))["VmRSS"] * 1024


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2:].split()[1])
    found: list[int] = []
    wanted = [pid]
    while wanted:
        parent = wanted.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        wanted += children
    return found


def _status(path: Path) -> dict[str, int]:
    """The numeric fields of a /proc status file (VmRSS in kB)."""
    fields: dict[str, int] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        words = value.split()
        if words and words[0].isdigit():
            fields[name] = int(words[0])
    return fields


# --- the daemon, as systemd starts it -------------------------------------------------------


class IdleCamera:
    """A lane's camera with nothing in view: it never has a frame. In the demo, the simulator's
    camera stands here."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def latest(self) -> Frame | None:
        return None

    async def next_frame(self, timeout_s: float) -> Frame | None:
        await asyncio.sleep(timeout_s)
        return None


def serve_demo_lot() -> None:
    """The daemon's process (`DAEMON`): `parking-gateway run` on the demo lot, its settings
    overridden through the environment as `run`'s are, each lane with an idle camera."""
    from gateway.app import Gateway, HardwareOverrides, run_until_signalled
    from gateway.config import load_settings
    from gateway.runtime.log import configure_logging

    settings = load_settings(DEMO_LOT)
    configure_logging(settings.logging.level, settings.logging.format, sys.stdout)
    cameras = {lane.id: IdleCamera(lane.id) for lane in settings.lanes}
    gateway = Gateway(settings, hardware=HardwareOverrides(cameras=cameras))
    asyncio.run(run_until_signalled(gateway))


class NotifySocket:
    """The bench in systemd's place: the datagram socket a daemon sends READY=1 and its STATUS
    lines to. It must be read: a full socket would make the daemon's sends fail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))

    def wait_ready(self, process: subprocess.Popen[bytes], timeout_s: float) -> float:
        """When READY=1 came (time.monotonic()); an error if the process ended or timed out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(line == "READY=1" for line in self._receive(0.1).splitlines()):
                return time.monotonic()
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode} before READY")
        raise RuntimeError(f"the daemon sent no READY=1 within {timeout_s:g} s")

    def wait(self, seconds: float) -> None:
        """Let `seconds` pass, reading what the daemon sends."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._receive(left)

    def close(self) -> None:
        self._socket.close()

    def _receive(self, timeout_s: float) -> str:
        self._socket.settimeout(timeout_s)
        try:
            return self._socket.recv(4096).decode(errors="replace")
        except TimeoutError:
            return ""


@dataclass
class Daemon:
    """A daemon started by `daemon`, and how its start went."""

    process: subprocess.Popen[bytes]
    notify: NotifySocket
    ready_s: float  # from the spawn to READY=1
    ready_cpu_s: float  # the CPU time it took, which other work on the machine does not stretch


@contextlib.contextmanager
def daemon(state: Path, env: Mapping[str, str], *, lpr: bool) -> Iterator[Daemon]:
    """The daemon on the demo lot with its files in `state`, started, until the block ends;
    then stopped with SIGTERM, as systemd stops it."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "notify").unlink(missing_ok=True)  # the socket of a start before
    notify = NotifySocket(state / "notify")
    overrides = {
        **env,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "PARKING_GATEWAY__JOURNAL__PATH": str(state / "journal.db"),
        "PARKING_GATEWAY__CONTROL__SOCKET_PATH": str(state / "control.sock"),
        "PARKING_GATEWAY__BUS__PORT": str(state / "ttyUSB-absent"),
        "PARKING_GATEWAY__LPR__ENABLED": "true" if lpr else "false",
    }
    with contextlib.closing(notify), (state / "daemon.log").open("ab") as log:
        began = time.monotonic()
        process = subprocess.Popen([sys.executable, "-c", DAEMON], env=overrides, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            try:
                ready = notify.wait_ready(process, START_TIMEOUT_S)
            except RuntimeError as e:
                raise RuntimeError(f"{e}; its log ends:\n{_tail(Path(log.name))}") from None
            yield Daemon(process, notify, ready - began, usage(process.pid).cpu_s)
        finally:
            _stop(process, signal.SIGTERM)


def _tail(log: Path, lines: int = 20) -> str:
    """The end of a child's log, for an error message (the scratch folder goes with the bench)."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes], sig: int) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def idle(state: Path, env: Mapping[str, str], seconds: float) -> dict[str, Any]:
    """The daemon with plate reading off, started `STARTS` times on one journal (the first
    start creates it; the median start is reported), the last time for a quiet window of
    `seconds` once settled. A start before, on a journal of its own, compiles its bytecode."""
    with daemon(state.parent / "compile", env, lpr=False):
        pass  # compiles the daemon's bytecode (see `footprint`): an installed one has it
    starts: list[Daemon] = []
    for _ in range(STARTS - 1):
        with daemon(state, env, lpr=False) as started:
            starts.append(started)
    with daemon(state, env, lpr=False) as started:
        starts.append(started)
        started.notify.wait(SETTLE_S)
        first = usage(started.process.pid)
        started.notify.wait(seconds)
        last = usage(started.process.pid)
    window = last.at - first.at
    return {
        "daemon_rss_mb": _mb(last.rss_bytes),
        "idle_wakeups_per_s": round((last.switches - first.switches) / window, 1),
        "idle_cpu_percent": round(100 * (last.cpu_s - first.cpu_s) / window, 2),
        "start_to_ready_s": round(statistics.median(s.ready_s for s in starts), 3),
        "start_cpu_s": round(statistics.median(s.ready_cpu_s for s in starts), 3),
    }


def plate_reading(state: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The daemon with plate reading on, once its worker is up; the worker is None when no
    worker process runs (the `lpr` extra is not installed: the daemon's log says why)."""
    with daemon(state, env, lpr=True) as started:
        started.notify.wait(SETTLE_S)
        workers = [rss_bytes(pid) for pid in descendants(started.process.pid)]
        return {
            "daemon_rss_lpr_mb": _mb(rss_bytes(started.process.pid)),
            "worker_rss_mb": _mb(sum(workers)) if workers else None,
            "worker_processes": len(workers),
        }


# --- the demo's traffic ---------------------------------------------------------------------

WAL_MAGIC = (0x377F0682, 0x377F0683)
WAL_HEADER = struct.Struct(">8I")  # magic, version, page size, checkpoint no., salts, checksums
FRAME_HEADER = struct.Struct(">4I")  # page no., db size after a commit (else 0), salts
FRAME_HEADER_BYTES = 24  # the four above and two checksums


@dataclass
class WalMeter:
    """What SQLite appends to a WAL file, counted from outside the process that writes it.

    After a complete checkpoint SQLite writes the WAL from its start again, under new salts; a
    frame carries its generation's salts, a commit's last frame the database's size. Sampled
    often enough that no generation comes and goes unseen between two samples, the frames seen
    are the frames written: the new generation overwrites the old one's from the start, and the
    old one's end stays readable until then. A generation that ended has been checkpointed:
    each page it held was copied into the database once.
    """

    path: Path
    page_size: int = 0
    _seen: dict[tuple[int, int], dict[int, tuple[int, bool]]] = field(default_factory=dict)
    _baseline: set[tuple[tuple[int, int], int]] = field(default_factory=set)
    _current: list[tuple[int, int]] = field(default_factory=list)  # generations, in order

    def start(self) -> None:
        """The frames already there are not counted."""
        self.sample()
        self._baseline = {(salts, index) for salts, frames in self._seen.items()
                          for index in frames}
        self._current = self._current[-1:]

    def sample(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        if len(data) < WAL_HEADER.size:
            return
        magic, _, page_size, _, salt1, salt2, _, _ = WAL_HEADER.unpack_from(data)
        if magic not in WAL_MAGIC:
            return
        self.page_size = page_size
        if not self._current or self._current[-1] != (salt1, salt2):
            self._current.append((salt1, salt2))
        frame = FRAME_HEADER_BYTES + page_size
        for index, offset in enumerate(range(WAL_HEADER.size, len(data) - frame + 1, frame)):
            page, db_size, s1, s2 = FRAME_HEADER.unpack_from(data, offset)
            self._seen.setdefault((s1, s2), {})[index] = (page, db_size != 0)

    def commits(self) -> int:
        """Transactions committed, each one fsync of the WAL (`synchronous=FULL`)."""
        return sum(self._seen[salts][index][1] for salts, indexes in self._new()
                   for index in indexes)

    def checkpointed_pages(self) -> int:
        """Pages copied into the database by the checkpoints that ended a generation."""
        return sum(len({page for page, _ in self._seen[salts].values()})
                   for salts in self._current[:-1])

    def written_bytes(self) -> int:
        """The new frames as the kernel writes them to the file. Each commit is fsynced, so it
        dirties every page of the file that its frames touch; a frame being a page and 24
        bytes, most straddle two, one of them shared with the commit before."""
        page = os.sysconf("SC_PAGE_SIZE")
        frame = FRAME_HEADER_BYTES + self.page_size
        total = 0
        for first, last in self._commits():
            start = WAL_HEADER.size + first * frame
            end = WAL_HEADER.size + (last + 1) * frame
            total += (-(-end // page) - start // page) * page
        return total

    def _commits(self) -> Iterator[tuple[int, int]]:
        """The first and last new frame of each transaction (the last may be under way)."""
        for salts, indexes in self._new():
            present = set(indexes)
            first: int | None = None
            for index in indexes:
                if first is None:
                    first = index
                if self._seen[salts][index][1] or index + 1 not in present:
                    yield first, index
                    first = None

    def _new(self) -> Iterator[tuple[tuple[int, int], list[int]]]:
        """Each generation's new frames, in order. Only generations seen in the header count:
        a frame being written as the file is read can show torn salts."""
        for salts in self._current:
            yield salts, sorted(index for index in self._seen.get(salts, {})
                                if (salts, index) not in self._baseline)


def traffic(state: Path, env: Mapping[str, str], seconds: float) -> dict[str, Any]:
    """`parking-gateway demo` at its own pace: a window of `seconds` from its first events."""
    journal = state / "journal.db"
    wal = WalMeter(journal.with_name(journal.name + "-wal"))
    with (state.with_suffix(".out")).open("w+b") as out, \
            (state.with_suffix(".log")).open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", CLI, "demo", "--json", "--state-dir", str(state)],
            env=dict(env), stdout=out, stderr=log)
        try:
            _wait_for_events(process, journal)
            time.sleep(SETTLE_S)
            wal.start()
            first, first_seq = usage(process.pid), _last_seq(journal)
            peak = first.rss_bytes
            while time.monotonic() - first.at < seconds:
                time.sleep(SAMPLE_S)
                wal.sample()
                peak = max(peak, rss_bytes(process.pid))
            last, last_seq = usage(process.pid), _last_seq(journal)
            wal.sample()
        except (RuntimeError, OSError) as e:  # OSError: it ended while being read
            raise RuntimeError(f"{e}; the demo's log ends:\n{_tail(Path(log.name))}") from None
        finally:
            code = _stop(process, signal.SIGINT)  # the demo's Ctrl-C: a summary, exit 0
        if code != 0:
            raise RuntimeError(f"the demo exited with {code}; its log ends:\n"
                               f"{_tail(Path(log.name))}")
        out.seek(0)
        summary = json.loads(out.read())
    return _writes(wal, last.write_bytes - first.write_bytes, last_seq - first_seq) | {
        "demo_rss_mb": _mb(peak),
        "demo_rss_growth_mb": _mb(last.rss_bytes - first.rss_bytes),
        "demo_events": last_seq - first_seq,
        "demo_backend": summary["backend"],
    }


def _wait_for_events(process: subprocess.Popen[bytes], journal: Path) -> None:
    deadline = time.monotonic() + DEMO_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the demo exited with {process.returncode} before its traffic")
        if journal.exists() and _last_seq(journal) > 0:
            return
        time.sleep(SAMPLE_S)
    raise RuntimeError(f"the demo journaled no event within {DEMO_START_S:g} s")


def _last_seq(journal: Path) -> int:
    """The newest event's sequence, read as `journal tail` reads a running daemon's journal."""
    from gateway.journal.reader import connect_from_outside

    try:
        conn = connect_from_outside(journal)
    except sqlite3.Error:
        return 0  # the daemon is creating it
    try:
        (seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()
    except sqlite3.Error:
        seq = 0  # its schema is not there yet
    finally:
        conn.close()
    return int(seq)


def _writes(wal: WalMeter, written: int, events: int) -> dict[str, Any]:
    """Disk writes per 1,000 events, and their causes: the WAL's commits, the checkpoints'
    pages, and the rest (the sequence mark, the simulator's saved lot, a file's metadata)."""
    if events <= 0:
        raise RuntimeError("the demo journaled no event in the window")
    per_1000 = 1000 / events
    causes = {
        "wal": wal.written_bytes(),
        "checkpoints": wal.checkpointed_pages() * wal.page_size,
    }
    causes["other"] = max(0, written - sum(causes.values()))
    return {
        "disk_bytes_per_1000_events": round(written * per_1000),
        "disk_causes_per_1000_events": {k: round(v * per_1000) for k, v in causes.items()},
        "disk_largest_cause": max(causes, key=lambda k: causes[k]),
        "fsyncs_per_1000_events": round(wal.commits() * per_1000),
    }


# --- the installed size of a venv -----------------------------------------------------------


def venv_size(venv: Path | None = None) -> dict[str, Any]:
    """The size of the gateway's installed distributions without extras and with `lpr`: the
    files each one's RECORD lists, over the closure of the requirements. `venv`: another venv
    (one built on a Pi, say), measured for its own platform; default: the running one.

    An editable install (a checkout's) lists no files of its own: it is named, not counted.
    """
    from packaging.markers import default_environment

    site = Path(sysconfig.get_paths()["purelib"]) if venv is None else _site_packages(venv)
    installed = {_name(d.metadata["Name"]): d for d in distributions(path=[str(site)])}
    if "parking-gateway" not in installed:
        raise RuntimeError(f"parking-gateway is not installed in {site}")
    machine = platform.machine() if venv is None else _machine(installed.values())
    environment = {key: str(value) for key, value in default_environment().items()}
    environment["platform_machine"] = machine
    if venv is not None:
        python = re.sub(r"^python", "", site.parent.name)
        environment |= {"python_version": python,
                        "python_full_version": _pyvenv(venv).get("version_info", python)}
    base = _closure(installed, environment, extras=())
    with_lpr = _closure(installed, environment, extras=("lpr",))
    sizes = {name: _installed_bytes(installed[name]) for name in with_lpr if name in installed}
    return {
        "path": str(site),
        "machine": machine,
        "python": environment["python_full_version"],
        "without_lpr_mb": _mb(sum(sizes[n] for n in base if n in sizes)),
        "with_lpr_mb": _mb(sum(sizes.values())),
        "largest_mb": {n: _mb(s) for n, s in sorted(sizes.items(), key=lambda i: -i[1])[:6]},
        "editable": sorted(n for n in with_lpr if n in installed and _editable(installed[n])),
        "missing": sorted(n for n in with_lpr if n not in installed),
    }


def _closure(installed: Mapping[str, Distribution], environment: Mapping[str, str],
             extras: tuple[str, ...]) -> set[str]:
    """parking-gateway and every distribution it needs with `extras`, installed or not."""
    from packaging.requirements import Requirement

    wanted: list[tuple[str, tuple[str, ...]]] = [("parking-gateway", extras)]
    found: set[str] = set()
    while wanted:
        name, with_extras = wanted.pop()
        if name in found:
            continue
        found.add(name)
        dist = installed.get(name)
        for line in (dist.requires or []) if dist is not None else []:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({**environment, "extra": extra})
                                     for extra in (*with_extras, "")):
                wanted.append((_name(requirement.name), tuple(requirement.extras)))
    return found


def _installed_bytes(dist: Distribution) -> int:
    total = 0
    for file in dist.files or []:
        with contextlib.suppress(OSError):  # listed, since removed
            total += Path(str(dist.locate_file(file))).stat().st_size
    return total


def _editable(dist: Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    return text is not None and bool(json.loads(text).get("dir_info", {}).get("editable"))


def _machine(dists: Iterable[Distribution]) -> str:
    """The machine a venv's binary wheels were built for: their WHEEL files' platform tags
    (`Tag: cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64`)."""
    for dist in dists:
        for line in (dist.read_text("WHEEL") or "").splitlines():
            name, _, tag = line.partition(": ")
            platform_tag = tag.strip().split("-")[-1].split(".")[0]
            found = LINUX_TAG.fullmatch(platform_tag) if name == "Tag" else None
            if found is not None:
                return found[1]
    raise RuntimeError("no binary wheel in that venv tells its machine")


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise RuntimeError(f"{venv} is not a venv with one site-packages (found {len(found)})")
    return found[0]


def _pyvenv(venv: Path) -> dict[str, str]:
    config = venv / "pyvenv.cfg"
    if not config.exists():
        return {}
    pairs = (line.partition("=") for line in config.read_text().splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- all of it -------------------------------------------------------------------------------


def footprint(*, seconds: float, venv: Path | None = None) -> dict[str, Any]:
    """Every figure, in the order above: about four windows of `seconds` and a minute more."""
    from gateway.bench.broker import MOSQUITTO, Mosquitto

    if not DEMO_LOT.exists():
        raise RuntimeError(f"no demo lot at {DEMO_LOT}: run the bench in a checkout")
    sizes = venv_size(venv)  # first: a venv that cannot be measured fails at once
    with tempfile.TemporaryDirectory(prefix="parking-gateway-footprint-") as scratch:
        work = Path(scratch)
        broker = Mosquitto(work / "broker") if Path(MOSQUITTO).exists() else None
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "PYTHONDONTWRITEBYTECODE")}
        # As installed: the installer compiles every module's bytecode (`uv sync
        # --compile-bytecode`), so a lot controller's daemon never compiles one as it starts.
        # A checkout's venv may hold none (a fresh clone, PYTHONDONTWRITEBYTECODE), and
        # compiling some 300 modules doubles a start's time and adds megabytes: the bench's
        # processes keep their bytecode in a cache of their own, filled by an unmeasured start.
        env["PYTHONPYCACHEPREFIX"] = str(work / "bytecode")
        with broker if broker is not None else contextlib.nullcontext():
            if broker is not None:
                env["PARKING_GATEWAY__SYNC__MQTT__PORT"] = str(broker.port)
            figures = {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "backend": "a local mosquitto" if broker is not None else "none (offline)",
                **idle(work / "idle", env, seconds),
                **plate_reading(work / "lpr", env),
                **traffic(work / "demo", env, 2 * seconds),
            }
    return figures | {"venv": sizes}


def _mb(size: int) -> float:
    return round(size / MB, 1)
