"""Declared dependencies match the imports, for the gateway (pyproject.toml) and the simulator
(hardware-sim/pyproject.toml): every third-party module the code imports comes from a declared
distribution, and every declared distribution is imported somewhere."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions, requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Extras of tools, not of the code: nothing in the package imports them.
TOOL_EXTRAS = {"dev"}
# Declared but never imported by name, on purpose.
NOT_IMPORTED = {
    "tzdata",  # zoneinfo's time zones where the system has none; read by zoneinfo, not imported
    "lgpio",  # the Pi 5's pins: gpiozero loads it by name (GPIOZERO_PIN_FACTORY=lgpio)
    "onnx",  # torch.onnx.export writes through it (tools/export_onnx.py, the train extra)
}
# Imported, but installed and pinned by the declared distribution named here: declaring it too
# could only fight that pin.
PROVIDED_BY = {"pydantic-core": "pydantic"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    assert match is not None, spec
    return normalize(match.group())


def declared(pyproject: Path) -> set[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    specs = list(project.get("dependencies", []))
    for extra, extra_specs in project.get("optional-dependencies", {}).items():
        if extra not in TOOL_EXTRAS:
            specs += extra_specs
    return {requirement_name(spec) for spec in specs}


def top_level_imports(files: Iterable[Path]) -> Iterator[str]:
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                yield from (alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module.partition(".")[0]


def imported_distributions(files: Iterable[Path], own: set[str]) -> dict[str, set[str]]:
    """Distribution -> the third-party modules of it that `files` import."""
    providers = packages_distributions()
    found: dict[str, set[str]] = {}
    for module in set(top_level_imports(files)) - own - set(sys.stdlib_module_names):
        dists = {normalize(d) for d in providers.get(module, [])}
        assert dists, f"{module} is imported but no installed distribution provides it"
        for dist in dists:
            found.setdefault(dist, set()).add(module)
    return found


PROJECTS = {
    "gateway": (ROOT / "pyproject.toml", sorted((ROOT / "gateway").rglob("*.py")), {"gateway"}),
    # The firmware is MicroPython for the node (`machine` is the board's), not the simulator's.
    "parking_sim": (ROOT / "hardware-sim" / "pyproject.toml",
                    sorted((ROOT / "hardware-sim" / "parking_sim").glob("*.py")),
                    {"parking_sim"}),
}


def _needs_every_extra(pyproject: Path) -> None:
    """Imports map to distributions only through what is installed: scripts/test installs
    every extra; a venv without one (the arm64 root leaves out `train`) cannot tell."""
    missing = []
    for name in sorted(declared(pyproject) - NOT_IMPORTED):
        try:
            distribution(name)
        except PackageNotFoundError:
            missing.append(name)
    if missing:
        pytest.skip(f"needs every extra installed; not here: {', '.join(missing)}")


@pytest.mark.parametrize("project", PROJECTS)
def test_every_imported_distribution_is_declared(project: str) -> None:
    pyproject, files, own = PROJECTS[project]
    _needs_every_extra(pyproject)
    used = imported_distributions(files, own)
    ours = declared(pyproject)
    for dist, through in PROVIDED_BY.items():
        if dist in used and through in ours:
            assert dist in {requirement_name(r) for r in requires(through) or []}
            del used[dist]

    assert {dist: modules for dist, modules in used.items() if dist not in ours} == {}


@pytest.mark.parametrize("project", PROJECTS)
def test_every_declared_distribution_is_imported(project: str) -> None:
    pyproject, files, own = PROJECTS[project]
    _needs_every_extra(pyproject)
    used = imported_distributions(files, own)

    assert declared(pyproject) - set(used) - NOT_IMPORTED == set()


@pytest.mark.parametrize("project", PROJECTS)
def test_every_version_cap_says_why(project: str) -> None:
    """An upper bound (`<`, `<=`, `==`) holds back every upgrade: it carries its reason, as a
    comment on its line or on the line just above it."""
    text = PROJECTS[project][0].read_text()
    meta = tomllib.loads(text)["project"]
    specs = [meta["requires-python"], *meta["dependencies"],
             *(r for extra in meta.get("optional-dependencies", {}).values() for r in extra)]
    lines = text.splitlines()
    caps = [(number, line) for spec in specs if re.search(r"<|==", spec.split(";", 1)[0])
            for number, line in enumerate(lines) if f'"{spec}"' in line]
    unexplained = [line.strip() for number, line in caps
                   if "#" not in line and not lines[number - 1].lstrip().startswith("#")]

    assert caps  # the scan sees the caps there are (paho-mqtt's, at least)
    assert unexplained == []


def test_the_lock_covers_both_machines_and_every_python() -> None:
    """uv.lock is what every install uses: it must be locked for the Pi (aarch64) as well as
    x86_64, and for the Pythons pyproject.toml admits (scripts/bootstrap.sh fails on a lock
    that no longer matches pyproject.toml: `uv sync --locked`)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())

    assert lock["requires-python"].replace(" ", "") == pyproject["project"]["requires-python"]
    assert any("aarch64" in marker for marker in lock["supported-markers"])
    assert any("x86_64" in marker for marker in lock["supported-markers"])
    assert set(lock["manifest"]["members"]) == {"parking-gateway", "parking-sim"}
