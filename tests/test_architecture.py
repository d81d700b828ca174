"""The import rules of docs/architecture.md, read from the source: layers, no cycles, no simulator.

Every ``import`` in ``gateway/`` counts, also those inside functions and under TYPE_CHECKING:
a lazy import that climbs a layer is still a climb.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway"

# Lower ranks never import higher ones; two different packages of one rank don't import each
# other either (drivers and the journal know nothing of one another).
LAYERS: dict[str, int] = {
    "gateway": 0,  # the package root: the version, nothing else
    "gateway.core": 0,
    "gateway.config": 1,
    "gateway.runtime": 2,
    "gateway.drivers": 3,
    "gateway.journal": 3,
    "gateway.lpr": 4,
    "gateway.sync": 4,
    "gateway.web": 4,
    "gateway.controllers": 5,
    "gateway.app": 6,
    "gateway.bench": 7,
    "gateway.cli": 8,
}

# The core decides; it reads no file, socket, bus or camera, and starts no thread or task.
IO_LIBRARIES = {
    "aiomqtt", "aiosqlite", "asyncio", "cv2", "gpiozero", "http", "httpx", "lgpio",
    "multiprocessing", "numpy", "onnxruntime", "paho", "selectors", "serial", "serial_asyncio",
    "socket", "sqlite3", "ssl", "subprocess", "threading", "urllib",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(module: str, path: Path) -> Iterator[str]:
    """Every absolute module name that ``module`` imports (relative imports resolved)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name``, mod:
            # internal() below cuts a name back to the longest module it is in.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def internal(name: str) -> str | None:
    """The gateway module ``name`` refers to (a name imported from a module is that module)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def layer(module: str) -> tuple[str, int]:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = {internal(name) for name in imported(module, path)}
        edges[module] = {t for t in targets if t is not None and t != module}
    return edges


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer(module)


def climbs(edges: dict[str, set[str]]) -> list[str]:
    """The imports that run against the layers."""
    against = []
    for module, targets in edges.items():
        own, rank = layer(module)
        for target in targets:
            other, other_rank = layer(target)
            if other not in (own, "gateway") and other_rank >= rank:
                against.append(f"{module} ({own}, {rank}) imports {target} ({other}, {other_rank})")
    return sorted(against)


def test_no_import_climbs_a_layer() -> None:
    against = climbs(graph())
    assert not against, "\n".join(against)


def test_no_import_cycles() -> None:
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in edges:
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_the_core_imports_no_io_library() -> None:
    offenders = [
        f"{module} imports {name}"
        for module, path in MODULES.items() if layer(module)[0] == "gateway.core"
        for name in imported(module, path) if name.split(".")[0] in IO_LIBRARIES
    ]
    assert not offenders, offenders


def test_the_product_never_imports_the_simulator() -> None:
    """Not by import statement, and not by a string handed to importlib either."""
    offenders = [module for module, path in MODULES.items()
                 if "parking_sim" in path.read_text(encoding="utf-8")]
    assert not offenders, offenders


@pytest.mark.parametrize(("source", "expected"), [
    ("from gateway.journal import Journal", "gateway.journal"),
    ("from gateway.core.clock import Stamp", "gateway.core.clock"),
    ("import gateway.sync.drain", "gateway.sync.drain"),
    ("from gateway.journal import recovery", "gateway.journal.recovery"),
    ("from . import drain", "gateway.sync.drain"),
])
def test_the_reader_resolves_imports(tmp_path: Path, source: str, expected: str) -> None:
    """The rules above are only as good as this reader: it must see what it is shown."""
    path = tmp_path / "probe.py"
    path.write_text(source + "\n")
    assert {internal(name) for name in imported("gateway.sync.probe", path)} == {expected}


def test_climbs_are_reported() -> None:
    """A climb, and an import between two packages of one rank, are what the rules catch."""
    edges = {
        "gateway.journal.writer": {"gateway.controllers.lane", "gateway.drivers.gpio",
                                   "gateway.journal.records", "gateway.core.events"},
        "gateway.controllers.lane": {"gateway.journal", "gateway.core.access"},
    }
    assert [line.split(" imports ")[1].split()[0] for line in climbs(edges)] == [
        "gateway.controllers.lane", "gateway.drivers.gpio"]
