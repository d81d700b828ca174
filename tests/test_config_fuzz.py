"""Fuzzing the config parser: whatever a config file or an environment variable holds, loading
it gives Settings or a ConfigError listing problems, never another exception, and a value the
bounds refuse never reaches the daemon."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, Settings, load_settings
from tests.conftest import EXAMPLE
from tests.fuzz import FUZZ

TEXT = EXAMPLE.read_text()
# `key = value` lines of the example whose value is a bare number or boolean.
SETTINGS = list(re.finditer(r"^(\w+) = (-?[0-9.]+|true|false)$", TEXT, re.MULTILINE))
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str), st.floats(allow_nan=True).map(
        lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(f), repr(f))),
    st.sampled_from(["true", "false", '"512"', '""', "[]", "{}", "1e400", "0x10", "[1, 2]",
                     '"\\u0000"', "1979-05-27T07:32:00Z"]))


def _load(text: str, env: dict[str, str] | None = None) -> Settings | ConfigError:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.toml"
        path.write_text(text)
        try:
            return load_settings(path, env=env or {})
        except ConfigError as e:
            return e


def _check(result: Settings | ConfigError) -> None:
    if isinstance(result, ConfigError):
        assert result.problems
        assert all(str(p) for p in result.problems)


@FUZZ
@given(index=st.integers(0, len(SETTINGS) - 1), value=VALUES)
def test_any_value_for_any_setting_loads_or_is_a_config_error(index: int, value: str) -> None:
    m = SETTINGS[index]
    text = TEXT[:m.start(2)] + value + TEXT[m.end(2):]
    result = _load(text)
    _check(result)
    if isinstance(result, Settings) and value in ("nan", "inf", "-inf", "1e400"):
        raise AssertionError(f"{m.group(1)} = {value} was taken")


@FUZZ
@given(st.text(max_size=400))
def test_any_text_loads_or_is_a_config_error(text: str) -> None:
    _check(_load(text))


@FUZZ
@given(name=st.sampled_from(["JOURNAL__RETENTION_DAYS", "SYNC__MQTT__PORT", "BUS__BAUDRATE",
                             "JOURNAL__MAX_BATCH", "LOT__OFFLINE_AFTER_S", "NOPE", "JOURNAL",
                             "JOURNAL__PATH", "GPIO__LOT_FULL_LAMP"]),
       value=st.text(max_size=30))
def test_any_environment_override_loads_or_is_a_config_error(name: str, value: str) -> None:
    _check(_load(TEXT, {f"PARKING_GATEWAY__{name}": value}))
