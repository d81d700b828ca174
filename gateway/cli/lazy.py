"""Command groups that import a command's module only when that command is asked for.

A group knows its own commands by name ("gateway.cli.journal:journal"), and takes the others
from the entry points of a group of plugins (the hardware simulator's `sim`, `demo`,
`bench lane`, `bench bus`), so the product never imports the simulator. A plugin that is
expected but not installed, or that fails to load, answers with one line saying why instead
of click's "No such command" or a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from gateway.cli.common import InvalidInput, OperationalError

# Where the simulator's commands come from, for the message when it is not installed.
SIMULATOR = "the hardware simulator (parking-sim), which is not installed; in a checkout: " \
            "pip install -e hardware-sim"


class LazyGroup(click.Group):
    """A click group whose commands load on use.

    ``lazy``: command name -> "module:attribute" of a command of this package. ``plugins``:
    the entry point group whose entries (name = "module:attribute") add commands.
    ``expected``: plugin commands that may be missing -> where they come from and how to get
    them, for the message.
    """

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None,
                 plugins: str | None = None, expected: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})
        self.plugins = plugins
        self.expected = dict(expected or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy, *self._entry_points()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        # Nothing is cached here: Python keeps the imported modules, and a run asks once.
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        if cmd_name in self.lazy:
            return _import(self.lazy[cmd_name])
        if (entry := self._entry_points().get(cmd_name)) is not None:
            return _load(entry)
        if cmd_name in self.expected:
            return _unavailable(cmd_name, InvalidInput(
                f"'{cmd_name}' comes with {self.expected[cmd_name]}"))
        return None

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self.plugins is None:
            return {}
        return {entry.name: entry for entry in entry_points(group=self.plugins)}


# Modules of the optional extras (pyproject.toml), by the extra that brings them.
EXTRA_OF = {"numpy": "lpr", "cv2": "lpr", "onnxruntime": "lpr", "matplotlib": "sim"}


def _import(target: str) -> click.Command:
    """A command of this package, named "module:attribute"; one that needs an extra that is
    not installed becomes a command that says which."""
    module, _, attribute = target.partition(":")
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as e:
        extra = EXTRA_OF.get((e.name or "").partition(".")[0])
        if extra is None:
            raise
        name = module.rpartition(".")[2]
        return _unavailable(name, OperationalError(
            f"'{name}' needs the '{extra}' extra ({e.name} is not installed): "
            f"pip install 'parking-gateway[{extra}]', or on a lot controller scripts/install"
            + (" --lpr" if extra == "lpr" else "")))
    command = getattr(loaded, attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


def _load(entry: EntryPoint) -> click.Command:
    """A plugin's command; one that cannot load becomes a command that says why."""
    source = entry.value + (f" ({entry.dist.name})" if entry.dist else "")
    try:
        command = entry.load()
    except (ImportError, AttributeError) as e:
        return _unavailable(entry.name, OperationalError(f"cannot load '{entry.name}' from "
                                                        f"{source}: {e}"))
    if not isinstance(command, click.Command):
        return _unavailable(entry.name, OperationalError(
            f"'{entry.name}' from {source} is not a click command"))
    return command


def _unavailable(name: str, error: click.ClickException) -> click.Command:
    """A stand-in for a command that cannot run: whatever it is given, it fails with `error`."""

    def fail() -> None:
        raise error

    return click.Command(
        name, callback=fail, help=error.message, add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
