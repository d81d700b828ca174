"""How the CLI is put together: lazily registered commands with no import cycle, and plugins
(the hardware simulator's commands) found through entry points, with a clear message when the
simulator is not installed."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gateway.cli import lazy
from gateway.cli.main import cli

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
CLI = GATEWAY / "cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> Iterator[str]:
    """Every module `path` imports, at the top or inside a function (lazy imports count)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            for alias in node.names:  # `from gateway.cli import common` imports a module
                if (CLI / f"{alias.name}.py").exists() and node.module == "gateway.cli":
                    yield f"gateway.cli.{alias.name}"


def cli_graph() -> dict[str, set[str]]:
    return {module_name(path): {name for name in imported(path) if name.startswith("gateway.cli")}
            for path in CLI.glob("*.py")}


def test_no_command_module_imports_the_root() -> None:
    graph = cli_graph()
    importers = {module for module, names in graph.items()
                 if module != "gateway.cli" and names & {"gateway.cli", "gateway.cli.main"}}

    assert len(graph) > 5
    assert importers == set()


def test_the_cli_has_no_import_cycle() -> None:
    graph = cli_graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for name in sorted(graph.get(module, ())):
            visit(name, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_gateway_never_names_the_simulator() -> None:
    """Not in an import, nor in a string handed to importlib."""
    named = [
        f"{path.relative_to(GATEWAY.parent)}:{node.lineno}"
        for path in GATEWAY.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and "parking_sim" in node.value)
        or (isinstance(node, ast.Import) and any(a.name.startswith("parking_sim")
                                                 for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("parking_sim"))
    ]

    assert named == []


def test_every_registered_command_loads_under_its_name() -> None:
    for group in (cli, cli.get_command(click.Context(cli), "bench")):
        assert isinstance(group, click.Group)
        ctx = click.Context(group)
        names = group.list_commands(ctx)
        for name in names:
            command = group.get_command(ctx, name)
            assert isinstance(command, click.Command), name
            assert command.name == name
    assert {"config", "journal", "run", "status", "report", "lpr"} <= set(cli.list_commands(
        click.Context(cli)))


# --- plugins ----------------------------------------------------------------------------------


def test_the_simulators_commands_come_from_its_entry_points() -> None:
    """parking-sim (hardware-sim/) declares sim, demo, bench lane and bench bus."""
    from parking_sim import bench_cli, demo
    from parking_sim import cli as sim_cli

    root = {entry.name: entry.value for entry in entry_points(group=cli.plugins or "")}
    bench = cli.get_command(click.Context(cli), "bench")
    assert isinstance(bench, lazy.LazyGroup)
    benches = {entry.name: entry.value for entry in entry_points(group=bench.plugins or "")}

    assert root == {"sim": "parking_sim.cli:sim", "demo": "parking_sim.demo:demo"}
    assert benches == {"lane": "parking_sim.bench_cli:bench_lane",
                       "bus": "parking_sim.bench_cli:bench_bus"}
    assert cli.get_command(click.Context(cli), "sim") is sim_cli.sim
    assert cli.get_command(click.Context(cli), "demo") is demo.demo
    assert bench.get_command(click.Context(bench), "bus") is bench_cli.bench_bus


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution on sys.path whose entry points add `hello` (works) and `broken`."""
    (tmp_path / "hello_plugin.py").write_text(
        "import click\n\n"
        "@click.command()\n"
        "@click.argument('name')\n"
        "def hello(name):\n"
        "    click.echo(f'hello {name}')\n")
    info = tmp_path / "hello_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[parking_gateway.cli]\n"
        "hello = hello_plugin:hello\n"
        "broken = no_such_module_here:command\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hello_plugin", raising=False)
    return tmp_path


@pytest.mark.usefixtures("plugin_dist")
def test_a_plugin_is_found_through_its_entry_point() -> None:
    result = CliRunner().invoke(cli, ["hello", "world"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "hello world\n"
    assert "hello" in CliRunner().invoke(cli, ["--help"]).stdout


@pytest.mark.usefixtures("plugin_dist")
def test_a_plugin_that_cannot_load_says_why() -> None:
    result = CliRunner().invoke(cli, ["broken", "--some-option"])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert result.stderr == ("Error: cannot load 'broken' from no_such_module_here:command "
                             "(hello-plugin): No module named 'no_such_module_here'\n")


@pytest.mark.parametrize("args", [("sim", "run", "day.toml"), ("demo", "--help"),
                                  ("bench", "bus", "--nodes", "4"), ("bench", "lane")])
def test_a_missing_simulator_is_one_clear_line(
    args: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lazy, "entry_points", lambda group: [])  # nothing installed

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # no traceback
    name = args[1] if args[0] == "bench" else args[0]
    assert result.stderr == (
        f"Error: '{name}' comes with the hardware simulator (parking-sim), which is not "
        "installed; in a checkout: pip install -e hardware-sim\n")
    assert result.stdout == ""


def test_an_unknown_command_is_still_click_usage_error() -> None:
    result = CliRunner().invoke(cli, ["simulate"])

    assert result.exit_code == 2
    assert "No such command 'simulate'" in result.stderr
