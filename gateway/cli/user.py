"""`parking-gateway user add`: an account of the local HTTP API, as TOML to paste.

The command writes no file: it prints the `[http.accounts.<name>]` table, with the scrypt
hashes of the password (asked twice, never echoed) and of a new API token, for the technician
to paste into the config (a comment-keeping TOML editor is not in the standard library, and
the config is theirs). The token itself is printed once, on stderr, and kept nowhere.
"""

from __future__ import annotations

import json

import click
from pydantic import ValidationError

from gateway.cli.common import InvalidInput, json_option, print_json
from gateway.config import HttpAccount, HttpServerConfig
from gateway.web.accounts import MIN_PASSWORD_CHARS, hash_secret, new_token

ROLES = ("viewer", "technician", "device")


@click.group()
def user() -> None:
    """Accounts of the local HTTP API (docs/http.md)."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="viewer: availability only; technician: everything, and the actions;"
                   " device: a pay station or another lane device.")
@click.option("--password", "with_password", is_flag=True,
              help="Ask for a password, for the browser's login (the default when --token is"
                   " not given).")
@click.option("--token", "with_token", is_flag=True,
              help="Make an API token, for `Authorization: Bearer` (scripts, devices,"
                   " Prometheus); printed once on stderr.")
@json_option
def user_add(name: str, role: str, with_password: bool, with_token: bool,
             as_json: bool) -> None:
    """Print the config table of a new account NAME (1 to 63 lowercase letters, digits or
    '-'), to paste into the gateway's config; restart the daemon to use it."""
    if not with_token:
        with_password = True
    password_hash = _password_hash() if with_password else None
    token = new_token(name) if with_token else None
    entry = {"role": role, "password_hash": password_hash,
             "token_hash": None if token is None else hash_secret(token)}
    try:  # checked as the daemon will check it: the name, the hashes' form
        HttpServerConfig(accounts={name: HttpAccount.model_validate(entry)})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors(include_url=False, include_input=False))
        raise InvalidInput(f"cannot add account {name!r}: {problems}") from None
    toml = _toml(name, entry)
    if as_json:
        print_json({"account": name, "role": role, "toml": toml, "token": token})
        return
    click.echo(f"# Paste into the gateway's config ([http] in docs/http.md):\n{toml}", nl=False)
    if token is not None:
        click.echo(f"API token of {name} (shown only now; give it to the client and keep it"
                   f" secret):\n{token}", err=True)


def _password_hash() -> str:
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                 err=True)  # stdout holds the table alone
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"a password has at least {MIN_PASSWORD_CHARS} characters")
    return hash_secret(password)


def _toml(name: str, entry: dict[str, str | None]) -> str:
    lines = [f"[http.accounts.{name}]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items() if value is not None]
    return "\n".join(lines) + "\n"
