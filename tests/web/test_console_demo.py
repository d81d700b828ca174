"""`parking-gateway demo` serves the console and prints where: on a free port unless one is
configured, to anonymous viewers, with a technician `demo` whose password it prints; each of
these as the config and the environment (`PARKING_GATEWAY__HTTP__...`) say when they do."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from parking_sim.demo import DEMO_ACCOUNT, DEMO_SCENARIO, demo_settings, run_demo
from parking_sim.scenario import load_scenario
from parking_sim.vtime import TimeWarpLoop
from rich.console import Console

from gateway.web.accounts import verify_secret
from tests.web.conftest import ACCOUNTS

LINE = re.compile(r"web console: (http://127\.0\.0\.1:\d+/)( \(technician: log in as (\S+),"
                  r" password (\S+)\))?")


def test_the_demo_serves_the_console_on_a_free_port(tmp_path: Path) -> None:
    settings = demo_settings(load_scenario(DEMO_SCENARIO), tmp_path, lpr=False, env={},
                             password="made-at-start-1")
    http = settings.http
    assert (http.enabled, http.listen, http.anonymous_viewer) == (True, "127.0.0.1:0", True)
    assert list(http.accounts) == [DEMO_ACCOUNT]
    account = http.accounts[DEMO_ACCOUNT]
    assert account.role == "technician"
    assert account.password_hash is not None
    assert verify_secret("made-at-start-1", account.password_hash)


def test_the_environment_has_the_last_word(tmp_path: Path) -> None:
    accounts = {name: a.model_dump(exclude_none=True) for name, a in ACCOUNTS.items()}
    scenario = load_scenario(DEMO_SCENARIO)
    settings = demo_settings(scenario, tmp_path, lpr=False, password="made-at-start-1", env={
        "PARKING_GATEWAY__HTTP__LISTEN": "127.0.0.1:18080",
        "PARKING_GATEWAY__HTTP__ANONYMOUS_VIEWER": "false",
        "PARKING_GATEWAY__HTTP__ACCOUNTS": json.dumps(accounts)})
    http = settings.http
    assert (http.enabled, http.listen, http.anonymous_viewer) == (True, "127.0.0.1:18080", False)
    assert set(http.accounts) == set(ACCOUNTS)  # no account of the demo's beside them
    off = demo_settings(scenario, tmp_path, lpr=False, password="made-at-start-1",
                        env={"PARKING_GATEWAY__HTTP__ENABLED": "false"})
    assert off.http.enabled is False


class DemoRun:
    """`parking-gateway demo` (its `run_demo`, virtual time paced at `pace`) in a thread of
    its own; what it prints is in `output`."""

    def __init__(self, state_dir: Path, env: Mapping[str, str], pace: float = 60.0) -> None:
        self.output = io.StringIO()
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, args=(state_dir, env, pace),
                                        daemon=True)
        self._thread.start()

    def _run(self, state_dir: Path, env: Mapping[str, str], pace: float) -> None:
        with asyncio.Runner(loop_factory=lambda: TimeWarpLoop(None, io_grace_s=0.0)) as runner:
            self._loop = runner.get_loop()
            try:
                self.summary = runner.run(run_demo(
                    600.0, pace, None, False, state_dir, Console(file=self.output, width=300),
                    env=env, stop=self._stop))
            except BaseException as e:  # the test thread reports it
                self.error = e

    def console(self, timeout_s: float = 60.0) -> re.Match[str]:
        """The line that says where the console is, once printed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._thread.is_alive():
            if found := LINE.search(self.output.getvalue()):
                return found
            time.sleep(0.05)
        raise AssertionError(f"no console line; the demo printed:\n{self.output.getvalue()}"
                             f"\n{self.error!r}")

    def stop(self) -> dict[str, Any]:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the demo did not stop"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


@contextmanager
def demo_running(state_dir: Path, env: Mapping[str, str] | None = None) -> Iterator[DemoRun]:
    run = DemoRun(state_dir, env or {})
    try:
        yield run
    finally:
        run.stop()


def fetch(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw, status, kind = response.read(), response.status, response.headers
    except urllib.error.HTTPError as e:
        raw, status, kind = e.read(), e.code, e.headers
    text = raw.decode()
    return status, json.loads(text) if kind.get_content_type() == "application/json" else text


@pytest.mark.slow
def test_the_demo_prints_the_console_address_and_serves_it(tmp_path: Path) -> None:
    with demo_running(tmp_path) as demo:
        found = demo.console()
        url, account, password = found[1], found[3], found[4]
        status, page = fetch(url)
        assert status == 200
        assert "<title>Parking gateway console</title>" in page
        status, doc = fetch(f"{url}api/v1/availability")  # anonymous: a viewer
        assert (status, doc["lotId"], doc["lot"]["total"]) == (200, "demo-lot", 301)
        assert fetch(f"{url}api/v1/lanes")[0] == 403
        status, who = fetch(f"{url}api/v1/login", {"user": account, "password": password})
        assert (status, who["account"], who["role"]) == (200, DEMO_ACCOUNT, "technician")
