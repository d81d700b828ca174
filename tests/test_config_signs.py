"""`[[signs]]`: the example's signs load; a sign's mistakes are named with their path."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, Settings, SignConfig, load_settings
from tests.conftest import EXAMPLE

BASE = """
[gateway]
lot_id = "lot"
gateway_id = "gw"
timezone = "UTC"
default_tariff = "standard"

[tariffs.standard]
currency = "EUR"
lines = [{ flat_minor = 100 }]

[bus]
port = "/dev/ttyUSB0"

[[bays]]
id = "A-1"
floor = "0"
zone = "A"
type = "ev"
sensor = { kind = "modbus", unit_id = 1 }
"""


def settings_with(*signs: dict[str, Any]) -> Settings:
    """The lot with `signs`, loaded from a file as the daemon loads it."""
    path = Path(tempfile.mkdtemp(prefix="signs-")) / "gateway.toml"
    path.write_text(BASE + "".join(
        "\n[[signs]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in s.items()
                                  if v is not None) for s in signs))
    return load_settings(path, env={})


def sign(**kw: Any) -> dict[str, Any]:
    return {"id": "entrance", "kind": "ascii", "port": "/dev/ttyUSB1", "address": 1, **kw}


def test_the_example_has_an_entrance_a_level_and_a_modbus_sign() -> None:
    signs = load_settings(EXAMPLE, env={}).signs
    assert [(s.id, s.kind, s.shows) for s in signs] == [
        ("entrance", "ascii", "lot"), ("level-1", "ascii", "floor:1"),
        ("ev-bays", "modbus", "type:ev")]
    assert signs[0].line.parity == "N"
    assert signs[2].line.parity == "E"
    assert signs[0].port == signs[1].port  # two signs on one line


@pytest.mark.parametrize(("signs", "where", "says"), [
    ([sign(shows="floor:9")], "signs.0.shows", "no bay has floor '9'"),
    ([sign(shows="level:0")], "signs.0.shows", "not a scope"),
    ([sign(port="/dev/ttyUSB0")], "signs.0.port", "detector bus"),
    ([sign(), sign(address=2)], "signs.1.id", "duplicate sign id"),
    ([sign(), sign(id="b")], "signs.1.address", "address already used"),
    ([sign(), sign(id="b", address=2, baudrate=19200)], "signs.1.port", "line settings"),
    ([sign(address=None)], "signs.0.address", "needs its address"),
    ([sign(kind="modbus", address=None, unit_id=300)], "signs.0.unit_id", "247"),
    ([sign(offset=-1)], "signs.0.offset", "0"),
    ([sign(brightness=101)], "signs.0.brightness", "100"),
])
def test_a_signs_mistakes_are_named(signs: list[dict[str, Any]], where: str,
                                    says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_with(*signs)
    assert [p.path for p in caught.value.problems if says in p.message] == [where]


def test_the_scope_names_the_floor_zone_or_type_of_a_bay() -> None:
    ok = settings_with(sign(shows="zone:A"), sign(id="b", address=2, shows="type:ev"))
    assert [s.scope.name for s in ok.signs] == ["A", "ev"]
    assert SignConfig(**sign()).station == 1
