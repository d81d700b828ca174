"""scripts/install as a lot controller's root runs it, into a directory tree (--root): a first
install, an upgrade, the rollback it refuses and the one it makes, and old releases pruned.

uv installs offline (UV_OFFLINE) from the cache that scripts/bootstrap.sh filled: nothing goes
to the network. Without the pinned uv or the locked wheels in the cache, the tests are skipped.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.journal import migrations

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install"
PREFIX = "opt/parking-gateway"
CONFIG = "etc/parking-gateway/gateway.toml"
JOURNAL = "var/lib/parking-gateway/journal.db"  # the example config's journal.path
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
SCHEMA = migrations()[-1][0]  # the newest journal schema this checkout knows
# The interpreter this venv was made from: bootstrap.sh filled uv's cache with its wheels.
PYTHON = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")
CACHE_MISS = "wasn't found in the cache"


@pytest.fixture(scope="module")
def uv() -> str:
    """The uv that scripts/uv.sh pins: bootstrap's in .tools/uv, or one on PATH."""
    if os.environ.get("UV_NO_CACHE"):
        pytest.skip("UV_NO_CACHE is set: these tests install offline, from uv's cache")
    pinned = re.search(r"^UV_VERSION=(\S+)$", (REPO / "scripts" / "uv.sh").read_text(), re.M)
    assert pinned is not None
    for candidate in (REPO / ".tools" / "uv" / "bin" / "uv", shutil.which("uv")):
        if candidate is None or not Path(candidate).exists():
            continue
        shown = subprocess.run([str(candidate), "--version"], capture_output=True, text=True,
                               check=False).stdout
        if shown.split()[:2] == ["uv", pinned[1]]:
            return str(candidate)
    pytest.skip(f"no uv {pinned[1]}: scripts/bootstrap.sh installs it in .tools/uv")


@pytest.fixture
def root(tmp_path: Path, uv: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the installer runs as root only")
    return tmp_path


def install(root: Path, uv: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(INSTALL), "--root", str(root), "--uv", uv, "--python", PYTHON, *args],
        capture_output=True, text=True, env={**os.environ, "UV_OFFLINE": "1"}, timeout=300,
        check=False)
    if CACHE_MISS in done.stderr:
        pytest.skip("uv's cache lacks a locked wheel (scripts/bootstrap.sh fills it): "
                    + done.stderr.strip().splitlines()[-1])
    return done


def installed(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def link(root: Path, name: str) -> str:
    """The release that `current` or `previous` names."""
    target = (root / PREFIX / name).readlink()
    assert target.parent == Path("releases")  # relative: right inside --root and in the image
    return target.name


def releases(root: Path) -> list[str]:
    return sorted(p.name for p in (root / PREFIX / "releases").iterdir())


def site_packages(root: Path, release: str) -> Path:
    (found,) = (root / PREFIX / "releases" / release / "venv" / "lib").glob("python3.*")
    return found / "site-packages"


def has_plate_reader(root: Path, release: str) -> bool:
    return (site_packages(root, release) / "onnxruntime").is_dir()


def exec_start(root: Path) -> Path:
    """The program the installed unit starts, inside the tree."""
    unit = (root / "etc/systemd/system/parking-gateway.service").read_text()
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    return root / shlex.split(line.removeprefix("ExecStart="))[0].lstrip("/")


def version_of(program: Path) -> str:
    done = subprocess.run([str(program), "--version"], capture_output=True, text=True,
                          cwd="/", timeout=60, check=True)
    return done.stdout


def set_schema(journal: Path, version: int) -> None:
    with sqlite3.connect(journal) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def group_id(root: Path, name: str) -> int:
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"no group {name} in the tree")


def old_release(root: Path, name: str) -> None:
    """A release left from long ago: the next install prunes it."""
    release = root / PREFIX / "releases" / name
    release.mkdir(parents=True)
    (release / "RELEASE").write_text("version=0.0.1\ncommit=0000000\nextras=lpr pi\n")


@pytest.mark.slow
def test_install_upgrade_rollback_and_prune(root: Path, uv: str) -> None:
    # A first install: the service user, a release with the plate reader, the config made
    # from the example, the unit on the current release. It is not enabled while the config
    # is the example: the example's pins and cameras are not this lot's.
    out = installed(install(root, uv))
    first = link(root, "current")
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}Z-{re.escape(VERSION)}-[\w-]+", first)
    assert "/etc/parking-gateway/gateway.toml: created from the example" in out
    assert "left alone: /etc/parking-gateway/gateway.toml is still the example" in out
    assert "parking-gateway doctor" in out
    assert any(line.startswith("parking:") for line in (root / "etc/passwd").read_text().split())
    config = root / CONFIG
    assert config.read_bytes() == (REPO / "config/gateway.example.toml").read_bytes()
    mode = config.stat()
    assert (stat.S_IMODE(mode.st_mode), mode.st_uid, mode.st_gid) == (
        0o640, 0, group_id(root, "parking"))
    assert stat.S_IMODE((root / "etc/parking-gateway").stat().st_mode) == 0o750
    enabled = root / "etc/systemd/system/multi-user.target.wants/parking-gateway.service"
    assert not enabled.is_symlink()
    program = exec_start(root)
    assert program.resolve().is_relative_to(root / PREFIX / "releases" / first / "venv")
    assert version_of(program) == f"parking-gateway {VERSION}\n"
    assert has_plate_reader(root, first)
    # The release holds this checkout's code (not a wheel uv built earlier and kept), and
    # every file of the package besides: the journal's migrations, the plate reader's networks.
    site = site_packages(root, first)
    modules = list((REPO / "gateway").rglob("*.py"))
    assert [m for m in modules if (site / m.relative_to(REPO)).read_bytes() != m.read_bytes()] == []
    package = {p.relative_to(REPO).as_posix() for p in (REPO / "gateway").rglob("*")
               if p.is_file() and p.suffix not in (".py", ".pyc")}
    shipped = {p.relative_to(site).as_posix() for p in (site / "gateway").rglob("*") if p.is_file()}
    assert package - shipped == set()

    # The lot's own config and its journal; an upgrade without the plate reader keeps both,
    # enables the service, and of the releases from long ago keeps the newest: three in all,
    # with the current one and the one it replaced.
    config.write_text(config.read_text() + "# this lot's own\n")
    lot_config = config.read_bytes()
    journal = root / JOURNAL
    journal.parent.mkdir(parents=True)
    set_schema(journal, SCHEMA)
    lot_journal = journal.read_bytes()
    old_release(root, "20250101T000000Z-0.0.1-0000000")
    old_release(root, "20250202T000000Z-0.0.1-0000000")
    out = installed(install(root, uv, "--no-lpr"))
    second = link(root, "current")
    assert link(root, "previous") == first
    assert releases(root) == ["20250202T000000Z-0.0.1-0000000", first, second]
    assert "/etc/parking-gateway/gateway.toml: kept" in out
    assert enabled.is_symlink()
    assert f"kept (schema {SCHEMA})" in out
    assert (config.read_bytes(), journal.read_bytes()) == (lot_config, lot_journal)
    assert sorted(p.name for p in journal.parent.iterdir()) == ["journal.db"]  # no -wal, -shm
    assert not has_plate_reader(root, second)
    assert exec_start(root).resolve().is_relative_to(root / PREFIX / "releases" / second)

    # A journal migrated past what the previous release knows: it would not start, so the
    # rollback is refused and nothing changes.
    set_schema(journal, SCHEMA + 1)
    refused = install(root, uv, "--rollback")
    assert refused.returncode == 1
    assert f"has schema {SCHEMA + 1}, from a newer release" in refused.stderr
    assert link(root, "current") == second

    set_schema(journal, SCHEMA)
    installed(install(root, uv, "--rollback"))
    assert (link(root, "current"), link(root, "previous")) == (first, second)
    assert version_of(exec_start(root)) == f"parking-gateway {VERSION}\n"
    assert exec_start(root).resolve().is_relative_to(root / PREFIX / "releases" / first)

    # The next upgrade goes on from the release running: with its plate reader.
    installed(install(root, uv))
    third = link(root, "current")
    assert has_plate_reader(root, third)
    assert (link(root, "previous"), releases(root)) == (first, [first, second, third])

    # A release that rejects the lot's config is not switched to, and not kept.
    config.write_text(config.read_text() + "[no_such_section]\n")
    refused = install(root, uv)
    assert refused.returncode == 1
    assert "no_such_section" in refused.stderr
    assert "rejects /etc/parking-gateway/gateway.toml" in refused.stderr
    assert (link(root, "current"), releases(root)) == (third, [first, second, third])


@pytest.mark.slow
def test_a_non_editable_simulator_runs_its_own_firmware(tmp_path: Path, uv: str) -> None:
    """parking_sim/firmware is a link to firmware/sensor_node in the checkout; the wheel must
    carry a copy, found without the checkout."""
    venv = tmp_path / "venv"
    done = subprocess.run(
        [uv, "sync", "-q", "--locked", "--no-editable", "--reinstall-package", "parking-sim",
         "--project", str(REPO), "--package", "parking-sim", "--python", PYTHON],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "UV_OFFLINE": "1", "UV_PYTHON_DOWNLOADS": "never",
             "UV_PROJECT_ENVIRONMENT": str(venv)})
    if CACHE_MISS in done.stderr:
        pytest.skip("uv's cache lacks a locked wheel (scripts/bootstrap.sh fills it)")
    assert done.returncode == 0, done.stderr
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from parking_sim import nodes; print(nodes.FIRMWARE_DIR); print(nodes.detect.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert probe.returncode == 0, probe.stderr
    firmware, detect = map(Path, probe.stdout.split())
    assert firmware.is_relative_to(venv)
    assert not firmware.is_symlink()
    assert detect == firmware / "detect.py"


def test_the_installer_runs_as_root_only(tmp_path: Path) -> None:
    command = [str(INSTALL), "--root", str(tmp_path)]
    if os.geteuid() == 0:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 1
    assert "error: run the installer as root" in done.stderr
    assert list(tmp_path.iterdir()) == []
