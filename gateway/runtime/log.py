"""Logging: structlog straight to a stream, JSON lines for journald, readable lines for a person.

No stdlib `logging` on the way: a bound logger filters by level itself and writes the
rendered line to the stream. Every line passes `redact_secrets`, so a password, token or
key handed to a log call by mistake is written as `[redacted]`.

OpenCV and FFmpeg write lines of their own to stderr, past all this (360 in half an hour
with cameras out of reach), which would break the JSON stream that `journalctl -o cat | jq`
reads. They are silenced through their environment variables, which the plate reader's
worker process inherits; the camera driver logs and alarms on what they would have said.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, TextIO

import structlog
from pydantic import SecretBytes, SecretStr
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

from gateway.config import LogFormat

__all__ = ["LEVELS", "REDACTED", "configure_logging", "is_secret_key", "redact_secrets"]

LEVELS = ("debug", "info", "warning", "error")
REDACTED = "[redacted]"

Format = LogFormat  # the name this module always used

# The last word of a key that names a secret: `password`, `mqtt_password`, `apiToken`.
_SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "secret", "token", "hmac", "credential", "credentials",
    "authorization", "cookie",
})
# `<something>_key` is taken for a secret key, except these, which name a key, not hold one.
_NOT_SECRET_KEYS = frozenset({
    "primary_key", "foreign_key", "sort_key", "cache_key", "partition_key", "routing_key",
    "public_key", "idempotency_key",
})
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Read when OpenCV is imported, and when FFmpeg's first capture opens; -8 is AV_LOG_QUIET.
NATIVE_QUIET = {"OPENCV_LOG_LEVEL": "SILENT", "OPENCV_FFMPEG_LOGLEVEL": "-8"}


@lru_cache(maxsize=1024)  # log calls repeat the same few keys
def is_secret_key(key: str) -> bool:
    """Whether a log key names a secret, judged by its last word (`bay_id` is not one).

    A bare `key` is not a secret (it names a setting or a row far more often than a
    cryptographic key), and neither is `password_file`: a path to a secret is what a
    technician needs to see.
    """
    words = _CAMEL_HUMP.sub("_", key).lower().replace("-", "_").split("_")
    last = words[-1]
    if last in _SECRET_WORDS:
        return True
    return last == "key" and len(words) > 1 and "_".join(words[-2:]) not in _NOT_SECRET_KEYS


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and v is not None and is_secret_key(k)
            else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the values of secret-looking keys, and any pydantic secret, with `[redacted]`.

    Mappings and lists are searched too (a settings dump); None stays None, since "unset"
    gives nothing away and is what a technician looks for.
    """
    for key, value in event_dict.items():
        if value is not None and is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value)
    return event_dict


class _NamedLogger(structlog.WriteLogger):
    """A `WriteLogger` that keeps the name given to `structlog.get_logger(__name__)`."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _add_logger_name(logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", "")
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def rich_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """A traceback for a person at a terminal, drawn by rich without its frames' locals (a
    local could hold a secret that no key names). structlog's own formatter needs rich at
    structlog's import, which the gateway keeps out of the daemon (gateway/__init__.py)."""
    from rich.console import Console
    from rich.traceback import Traceback

    sio.write("\n")
    Console(file=sio, color_system="truecolor").print(
        Traceback.from_exception(*exc_info, show_locals=False))


def configure_logging(
    level: str = "info", fmt: Format = "auto", stream: TextIO | None = None
) -> None:
    """Send every structlog logger's lines at `level` or above to `stream` (default stdout).

    `json` writes one object per line with `ts` (ISO 8601 UTC), `level`, `event` and
    `logger`, for journald; `console` writes aligned, coloured lines; `auto` picks console
    when the stream is a terminal and JSON otherwise. May be called again to reconfigure.

    OpenCV and FFmpeg are silenced (`NATIVE_QUIET`), unless the environment already says
    how loud they are: that is the way to hear them when debugging a camera.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    for name, value in NATIVE_QUIET.items():
        os.environ.setdefault(name, value)
    out = sys.stdout if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Processor
    if console:
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(),
            timestamp_key="ts",
            # Locals in a traceback could hold a secret that no key names.
            exception_formatter=rich_traceback,
        )
    else:
        renderer = structlog.processors.JSONRenderer()
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        redact_secrets,
    ]
    if not console:
        processors.append(structlog.processors.format_exc_info)  # text: a tb's locals stay out
    processors.append(renderer)

    def logger_factory(*args: Any) -> _NamedLogger:
        return _NamedLogger(out, str(args[0]) if args else "")

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level.lower()),
        logger_factory=logger_factory,
        # Not cached: module-level loggers (`log = structlog.get_logger(__name__)`) must follow
        # a later call, e.g. the daemon's after the CLI's. Building one per call costs
        # microseconds, and the gateway logs state changes, not frames.
        cache_logger_on_first_use=False,
    )

