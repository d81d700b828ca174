"""Parking-lot edge gateway: the daemon that runs a lot's lanes, bays and journal."""

import sys
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("parking-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def _import_structlog_without_rich() -> None:
    """Import structlog with rich hidden from it.

    structlog's console module imports rich (and rich pygments) at import when they are
    installed, as they are for the command line's tables: over 4 MB in every process, the
    daemon's included, which logs JSON to journald and never draws a rich traceback. The
    console renderer imports rich itself when a terminal asks for one (gateway.runtime.log),
    and the command line imports it as usual: only structlog's import is kept from it.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()
