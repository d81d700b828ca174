"""Accounts: scrypt hashes, API tokens, and `parking-gateway user add`, whose table pasted into a
config lets its account in."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from gateway.cli.main import cli
from gateway.config import ConfigError, load_settings
from gateway.web.accounts import (
    SCRYPT_N,
    BadHash,
    hash_secret,
    new_token,
    token_account,
    verify_secret,
)
from gateway.web.live import AvailabilityFeed
from tests.conftest import EXAMPLE
from tests.web.conftest import FakeLot, serving


def test_a_hash_checks_its_secret_and_no_other() -> None:
    hashed = hash_secret("correct horse battery", n=1024)
    assert hashed.startswith("scrypt:1024:8:1$")
    assert verify_secret("correct horse battery", hashed)
    assert not verify_secret("correct horse batterY", hashed)
    assert hash_secret("correct horse battery", n=1024) != hashed  # salted
    assert hash_secret("x").startswith(f"scrypt:{SCRYPT_N}:8:1$")
    with pytest.raises(BadHash):
        verify_secret("x", "md5$abc")
    with pytest.raises(BadHash):
        verify_secret("x", "scrypt:1000:8:1$AAAA$AAAA")  # N not a power of two


def test_a_token_names_its_account() -> None:
    token = new_token("pay-1")
    assert token_account(token) == "pay-1"
    assert len(token) > 40
    assert token_account("no-dot") is None
    assert token_account(".secret") is None
    assert token_account("pay-1.") is None


def user_add(*args: str, password: str | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    stdin = None if password is None else f"{password}\n{password}\n"
    result = runner.invoke(cli, ["user", "add", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


async def test_user_add_prints_a_table_that_lets_the_account_in(tmp_path: Path) -> None:
    code, out, err = user_add("ana", "--role", "technician", "--password", "--token",
                              password="a long password")
    assert code == 0, err
    assert "a long password" not in out + err  # never echoed
    token = err.strip().splitlines()[-1]
    assert token.startswith("ana.")
    assert token not in out
    config = tmp_path / "gateway.toml"
    config.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n" + out)
    settings = load_settings(config, env={"PARKING_GATEWAY__HTTP__ENABLED": "true",
                                          "PARKING_GATEWAY__HTTP__LISTEN": "127.0.0.1:0"})
    assert settings.http.accounts["ana"].role == "technician"
    lot = FakeLot()
    feed = AvailabilityFeed(lot.availability)
    feed.refresh()
    async with (serving(lot, feed, settings.http) as server,
                aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as client):
        async with client.get("/api/v1/lanes",
                              headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
        async with client.post("/api/v1/login", json={"user": "ana",
                                                      "password": "a long password"}) as r:
            assert (r.status, (await r.json())["role"]) == (200, "technician")


def test_user_add_with_a_token_only_asks_for_no_password() -> None:
    code, out, err = user_add("pay-1", "--role", "device", "--token", "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["token"].startswith("pay-1.")
    table = tomllib.loads(answer["toml"])["http"]["accounts"]["pay-1"]
    assert set(table) == {"role", "token_hash"}
    assert verify_secret(answer["token"], table["token_hash"])


@pytest.mark.parametrize(("args", "password", "message"), [
    (("Ana", "--role", "viewer"), "a long password", "lowercase"),
    (("ana", "--role", "viewer"), "short", "at least 10 characters"),
    (("ana", "--role", "admin"), None, "'admin' is not one of"),
])
def test_user_add_refuses_what_the_daemon_would(args: tuple[str, ...], password: str | None,
                                                message: str) -> None:
    code, out, err = user_add(*args, password=password)
    assert code == 2
    assert message in err
    assert "scrypt" not in out


def test_the_config_refuses_an_account_it_could_not_check(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(EXAMPLE.read_text(encoding="utf-8") + "\n[http.accounts.bob]\n"
                      'role = "technician"\npassword_hash = "plain-text"\n'
                      "[http.accounts.eve]\nrole = \"viewer\"\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    problems = {p.path: p.message for p in caught.value.problems}
    assert "user add" in problems["http.accounts.bob.password_hash"]
    assert "needs a password_hash, a token_hash or both" in problems[
        "http.accounts.eve.password_hash"]
