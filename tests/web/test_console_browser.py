"""The console in a real browser: Debian's chromium, headless, driven through selenium by
Debian's chromedriver (apt packages chromium and chromium-driver; nothing is downloaded).

During a simulated run (`parking-gateway demo`: the real daemon on the simulated lot) the page
shows each bay change the lot makes, within a second of the API having it; a viewer has no gate
button, and the API refuses the viewer's try anyway; a technician logs in and opens a gate,
which the journal audits as `http:<account>`. The screenshot is kept for a person to look at:
in the test's temporary folder, and also at $PARKING_GATEWAY_CONSOLE_SCREENSHOT when that is set.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import ACCOUNTS, PASSWORDS
from tests.web.test_console_demo import demo_running, fetch

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_COPY = "PARKING_GATEWAY_CONSOLE_SCREENSHOT"  # where else to keep the screenshot
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,3200")
REASON = "browser test: ticket jammed"
# The page's own fetch, as a viewer's script could make it: the status it got.
POST_FROM_PAGE = """
const [path, body, done] = arguments;
fetch(path, {method: "POST", credentials: "same-origin", body: JSON.stringify(body),
             headers: {"Content-Type": "application/json"}})
  .then((response) => done(response.status), (error) => done(String(error)));
"""
CELLS = """
return Object.fromEntries([...document.querySelectorAll("li.bay[data-bay]")]
  .map((cell) => [cell.dataset.bay, cell.dataset.state || null]));
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):  # a new, empty profile
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


def api_cells(url: str) -> dict[str, str]:
    """Each sensed bay's state as the API has it now, as the page shows it (`out` of service)."""
    with urllib.request.urlopen(f"{url}api/v1/bays", timeout=5) as response:
        doc = json.load(response)
    return {b["bayId"]: b["state"] if b["inService"] else "out" for b in doc["bays"]}


def bay_changes(browser: Any, url: str, cars: int = 3, timeout_s: float = 90.0
                ) -> list[tuple[str, str, str, float]]:
    """Watch the page and the API, from a moment they agree, until the page has shown `cars`
    cars come to a bay or leave it: each change the page showed meanwhile (the bay, the state
    before and after) with how long after the API first had it the page showed it."""
    deadline = time.monotonic() + timeout_s
    while (shown := browser.execute_script(CELLS)) != api_cells(url):
        assert time.monotonic() < deadline, "the page never agreed with the API"
        time.sleep(0.02)
    since = {bay: (state, time.monotonic()) for bay, state in shown.items()}
    changes: list[tuple[str, str, str, float]] = []
    while sum({before, after} == {"free", "occupied"} for _, before, after, _ in changes) < cars:
        assert time.monotonic() < deadline, f"only these changes in {timeout_s:g} s: {changes}"
        polled = time.monotonic()
        for bay, state in api_cells(url).items():
            if since[bay][0] != state:
                since[bay] = (state, polled)
        cells = browser.execute_script(CELLS)
        seen = time.monotonic()
        for bay, state in cells.items():
            if state != shown[bay]:
                if since[bay][0] == state:  # not a state the API has already left
                    changes.append((bay, shown[bay], state, seen - since[bay][1]))
                shown[bay] = state
        time.sleep(0.02)
    return changes


def test_the_console_in_a_browser(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    accounts = {name: a.model_dump(exclude_none=True) for name, a in ACCOUNTS.items()}
    env = {"PARKING_GATEWAY__HTTP__ACCOUNTS": json.dumps(accounts)}
    wait = WebDriverWait(browser, 30)
    with demo_running(tmp_path / "demo", env) as demo:
        url = demo.console()[1]
        browser.get(url)
        # An anonymous viewer (the demo's default) sees the lot and its bays.
        wait.until(lambda d: d.execute_script(CELLS) and all(d.execute_script(CELLS).values()))
        assert browser.find_element(By.ID, "lot-name").text == "demo-lot"
        changes = bay_changes(browser, url)
        assert max(lag for *_, lag in changes) < 1.0, changes

        # A viewer has no gate button, and the API refuses the viewer's request anyway.
        assert not browser.find_element(By.ID, "lanes").is_displayed()
        assert browser.find_elements(By.CSS_SELECTOR, "button.open-gate") == []
        assert browser.execute_async_script(
            POST_FROM_PAGE, "/api/v1/lanes/entry-a/open", {"reason": "a viewer tries"}) == 403
        assert fetch(f"{url}api/v1/lanes/entry-a/open", {"reason": "a viewer tries"})[0] == 403

        # A technician logs in with the keyboard and opens a gate.
        browser.find_element(By.ID, "login-open").click()
        browser.find_element(By.ID, "login-user").send_keys("tech")
        browser.find_element(By.ID, "login-password").send_keys(PASSWORDS["tech"], Keys.ENTER)
        lane = '[data-lane="entry-a"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{lane} button.open-gate"))
        card = browser.find_element(By.CSS_SELECTOR, lane)
        card.find_element(By.CSS_SELECTOR, "button.open-gate").click()
        card.find_element(By.NAME, "reason").send_keys(REASON, Keys.ENTER)
        wait.until(lambda _: "Gate opened" in card.find_element(
            By.CSS_SELECTOR, "p[role=status]").text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-occupancy rect"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#alarm-list li"))
        time.sleep(1)  # the lanes' next poll shows the barrier up
        shot = tmp_path / "console.png"
        assert browser.save_screenshot(str(shot))
        if copy := os.environ.get(SCREENSHOT_COPY):
            Path(copy).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, copy)
        problems = [entry["message"] for entry in browser.get_log("browser")
                    if entry["level"] == "SEVERE" and "entry-a/open" not in entry["message"]]
        assert problems == []  # no script error, no refused request, no policy violation
    with sqlite3.connect(f"file:{tmp_path / 'demo' / 'journal.db'}?mode=ro", uri=True) as db:
        audit = db.execute("SELECT actor, subject, reason FROM audit WHERE action = 'gate.open'"
                           ).fetchall()
    assert audit == [("http:tech", "entry-a", REASON)]
