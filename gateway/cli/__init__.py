"""The technician's command line, `parking-gateway`: check a config, price a stay, read the journal.

Handlers stay thin: parse, call the library, print. The root command is in `main`; each group
of commands has its module (`config`, `tariff`, `journal`, `bench`, `daemon`, `lpr`,
`service`, `sync`), imported when one of its commands runs; all of them share `common`
(output, options, exit codes). The simulator's commands are plugins (entry points).
"""

from gateway.cli.common import DEFAULT_CONFIG
from gateway.cli.main import cli, main

__all__ = ["DEFAULT_CONFIG", "cli", "main"]
