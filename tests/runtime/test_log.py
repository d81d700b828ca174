"""Logging: JSON lines for journald, console lines for a person, and no secret in either."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from gateway.runtime.log import REDACTED, configure_logging, is_secret_key

SECRET = "hunter2-never-logged"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset_structlog() -> Any:
    yield
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_shape() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)

    structlog.get_logger("gateway.controllers.lane").info("lane.opened", lane_id="entry-north",
                                                          pulse_ms=500)

    (line,) = json_lines(out)
    assert line == {
        "ts": line["ts"], "level": "info", "event": "lane.opened",
        "logger": "gateway.controllers.lane",
        "lane_id": "entry-north", "pulse_ms": 500,
    }
    assert line["ts"].endswith("Z")
    stamped = datetime.fromisoformat(line["ts"])
    assert stamped.utcoffset() is not None
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60


def test_a_logger_without_a_name_has_no_logger_key() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)

    structlog.get_logger().info("started")

    assert "logger" not in json_lines(out)[0]


def test_level_filters_lower_levels() -> None:
    out = io.StringIO()
    configure_logging("WARNING", "json", out)
    log = structlog.get_logger("gateway.test")

    log.debug("a")
    log.info("b")
    log.warning("c")
    log.error("d")

    assert [(line["level"], line["event"]) for line in json_lines(out)] == [
        ("warning", "c"), ("error", "d"),
    ]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud")


def test_auto_is_json_off_a_terminal_and_console_on_one() -> None:
    pipe, terminal = io.StringIO(), Terminal()

    configure_logging("info", "auto", pipe)
    structlog.get_logger("gateway.test").info("to.journald", bay_id="A-01")
    configure_logging("info", "auto", terminal)
    structlog.get_logger("gateway.test").info("to.person", bay_id="A-01")

    assert json_lines(pipe)[0]["event"] == "to.journald"
    text = terminal.getvalue()
    assert "to.person" in text
    assert "bay_id" in text
    assert "A-01" in text
    assert not text.lstrip().startswith("{")


def test_a_module_logger_follows_a_later_configuration() -> None:
    # Modules keep `log = structlog.get_logger(__name__)` from import time; the daemon
    # configures logging after importing them (and the CLI before it, in tests).
    log = structlog.get_logger("gateway.journal")
    first, second = io.StringIO(), io.StringIO()

    configure_logging("info", "json", first)
    log.info("one")
    configure_logging("info", "json", second)
    log.info("two")

    assert [line["event"] for line in json_lines(first)] == ["one"]
    assert [line["event"] for line in json_lines(second)] == ["two"]


def test_exceptions_are_rendered_as_text_in_json() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)

    try:
        raise RuntimeError("relay stuck")
    except RuntimeError:
        structlog.get_logger("gateway.controllers.lane").exception("barrier.failed")

    (line,) = json_lines(out)
    assert line["level"] == "error"
    assert "Traceback" in line["exception"]
    assert "RuntimeError: relay stuck" in line["exception"]


def test_console_tracebacks_do_not_show_locals() -> None:
    out = Terminal()
    configure_logging("info", "console", out)

    def connect() -> None:
        password = SECRET  # a local no key names: only hiding locals keeps it out
        raise ConnectionError(f"broker refused user gw ({len(password)} character password)")

    try:
        connect()
    except ConnectionError:
        structlog.get_logger("gateway.sync").exception("mqtt.failed")

    text = out.getvalue()
    assert "ConnectionError" in text
    assert SECRET not in text


# --- redaction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["password", "mqtt_password", "token", "http_token", "secret", "client_secret", "hmac",
     "hmac_key", "command_hmac_key", "api_key", "apiKey", "commandHmacKey", "x-api-key",
     "authorization", "credentials", "session_cookie", "PASSWORD"],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["bay_id", "key", "primary_key", "public_key", "routing_key", "password_file", "token_file",
     "keepalive_s", "monkey", "tokenizer", "secretary", "unit_id", "keys"],
)
def test_keys_that_are_not_secrets(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_are_redacted_in_every_format(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("info", "json" if fmt == "json" else "console", out)

    structlog.get_logger("gateway.sync").info(
        "mqtt.connecting",
        host="broker.test",
        password=SECRET,
        hmac_key=SECRET,
        settings={"mqtt": {"username": "gw", "password": SECRET}, "tokens": [SecretStr(SECRET)]},
        anything=SecretStr(SECRET),
        password_file="/etc/parking-gateway/mqtt-password",
    )

    text = out.getvalue()
    assert SECRET not in text
    assert REDACTED in text
    assert "broker.test" in text
    assert "/etc/parking-gateway/mqtt-password" in text


def test_redaction_keeps_the_shape_and_an_unset_secret() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)

    structlog.get_logger("gateway.sync").info(
        "config.loaded",
        token=None,
        bay_id="A-01",
        sync={"mqtt": {"username": "gw", "password": SECRET, "port": 8883}},
        keys=[SecretStr(SECRET), "visible"],
    )

    (line,) = json_lines(out)
    assert line["token"] is None  # "unset" gives nothing away
    assert line["bay_id"] == "A-01"
    assert line["sync"] == {"mqtt": {"username": "gw", "password": REDACTED, "port": 8883}}
    assert line["keys"] == [REDACTED, "visible"]
