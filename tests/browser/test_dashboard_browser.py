"""The dashboard and the marketplace in Debian's Chromium, driven through chromium-driver, against ``sos serve``.

The server runs as its own process over a seeded SQLite file; every page is visited as a user would, its numbers
checked against the JSON API, and a screenshot of each saved under ``artifacts/screenshots/``. No token may appear
in any page's source or in any URL the browser went to.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

import sos_kernel
from sos_kernel.server.ui import parse_micros

from ..ui.seed import Seeded, seed

CHROMIUM = os.environ.get("SOS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SOS_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("SOS_ARTIFACTS", "artifacts")) / "screenshots"
SERVER_START_S = 120.0
WAIT_S = 15.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
PAGES = {
    "overview": "/ui/",
    "agents": "/ui/agents",
    "agent": "/ui/agents/alice",
    "money": "/ui/money",
    "skills": "/ui/skills",
    "tasks": "/ui/tasks",
    "dead-letters": "/ui/dead-letters",
}
NAV = ("/ui/", "/ui/agents", "/ui/money", "/ui/skills", "/ui/tasks", "/ui/dead-letters", "/marketplace")


@dataclass
class Deployment:
    base_url: str
    acme: Seeded
    rival: Seeded
    secrets: list[str] = field(default_factory=list)

    def api(self, path: str, token: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        response = httpx.get(f"{self.base_url}{path}", params=params, headers=headers, timeout=WAIT_S)
        response.raise_for_status()
        return response.json()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _seed(url: str) -> tuple[Seeded, Seeded]:
    async with sos_kernel.open(url) as kernel:
        acme = await seed(kernel, "acme", ("alice", "bob"), prefix="a-")
        return acme, await seed(kernel, "rival", ("zed",), prefix="r-")


def _wait_healthy(base_url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sos serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"sos serve did not answer within {SERVER_START_S} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{workdir}/sos.db"
    acme, rival = anyio.run(_seed, url)
    port = _free_port()
    log = workdir / "serve.log"
    command = [sys.executable, "-m", "sos_kernel", "serve", "--url", url, "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, proc, log)
        secrets = [t for s in (acme, rival) for t in (s.admin_token, *s.tokens.values())]
        yield Deployment(base_url, acme, rival, secrets)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(exe) is None:
            pytest.fail(f"{exe} is missing: apt-get install chromium chromium-driver (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


class Visit:
    """Goes to pages, keeps every URL it saw, and checks each page for tokens and console errors."""

    def __init__(self, driver: webdriver.Chrome, deployment: Deployment) -> None:
        self.driver = driver
        self.deployment = deployment
        self.urls: list[str] = []

    def check(self) -> str:
        source = self.driver.page_source
        self.urls.append(self.driver.current_url)
        for secret in self.deployment.secrets:
            assert secret not in source, self.driver.current_url
            assert secret not in self.driver.current_url
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE" and "404" not in e["message"]]
        assert errors == [], errors  # a CSP violation (an inline script or style) would show here
        return source

    def go(self, path: str) -> str:
        self.driver.get(self.deployment.base_url + path)
        return self.check()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))

    def sign_in(self, token: str) -> None:
        self.go("/ui/")
        assert self.driver.current_url.endswith("/ui/signin")
        field = self.driver.find_element(By.ID, "token")
        field.send_keys(token)
        field.send_keys(Keys.ENTER)
        WebDriverWait(self.driver, WAIT_S).until(expected_conditions.url_to_be(self.deployment.base_url + "/ui/"))
        self.check()

    def sign_out(self) -> None:
        self.driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
        WebDriverWait(self.driver, WAIT_S).until(expected_conditions.url_contains("/ui/signin"))
        self.check()


def _text(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def test_sign_in_visit_every_page_check_numbers_replay_and_sign_out(
    browser: webdriver.Chrome, deployment: Deployment
) -> None:
    visit = Visit(browser, deployment)
    admin = deployment.acme.admin_token
    visit.go("/ui/")
    visit.shot("signin")
    visit.sign_in(admin)
    for name, path in PAGES.items():
        visit.go(path)
        assert browser.find_element(By.TAG_NAME, "h1").text, name
        visit.shot(name)
    # the overview's numbers are the API's
    visit.go("/ui/")
    agents = deployment.api("/v1/registry/find", admin)
    online = sum(1 for a in agents if a["status"] == "online")
    assert _text(browser, "agents-online") == str(online)
    dead = deployment.api("/v1/bus/dead_letters", admin, address="agent:alice")
    assert _text(browser, "dead-count") == str(len(dead)) == "1"
    for agent in agents:
        assert browser.find_element(By.LINK_TEXT, agent["card"]["name"])
    lag = browser.find_elements(By.CSS_SELECTOR, "#pending td[data-address]")
    assert lag
    for cell in lag:
        address, group = cell.get_attribute("data-address"), cell.get_attribute("data-group")
        assert cell.text == str(deployment.api("/v1/bus/pending", admin, address=address, group=group)), address
    assert _text(browser, "pending-total") == str(sum(int(c.text) for c in lag))
    visit.go("/ui/skills")
    for cell in browser.find_elements(By.CSS_SELECTOR, "td.split"):
        price = browser.find_element(By.CSS_SELECTOR, f'td.price[data-skill="{cell.get_attribute("data-skill")}"]')
        parts = [parse_micros(p.text.replace(",", "")) for p in cell.find_elements(By.TAG_NAME, "span")]
        assert sum(parts) == parse_micros(price.text.split()[0].replace(",", ""))
    visit.go("/ui/money")
    balances = deployment.api("/v1/ledger/balances", admin)
    shown = {
        row.find_elements(By.TAG_NAME, "td")[0].text: row.find_element(By.CSS_SELECTOR, "td[data-micros]")
        for row in browser.find_elements(By.CSS_SELECTOR, "#balances tbody tr")
    }
    for balance in balances:
        cell = shown[balance["owner"]]
        assert int(cell.get_attribute("data-micros")) == balance["credits_posted"] - balance["debits_posted"]
    assert shown["agent:alice"].text == "10.345678"  # 12.345678 in, a 2.00 bounty into escrow
    assert "passed" in _text(browser, "ledger-check")
    # replay the dead letter from its page
    visit.go("/ui/dead-letters")
    browser.find_element(By.CSS_SELECTOR, "#dead-letters form button").click()
    WebDriverWait(browser, WAIT_S).until(expected_conditions.alert_is_present()).accept()
    WebDriverWait(browser, WAIT_S).until(expected_conditions.url_contains("replayed="))
    source = visit.check()
    assert "Replayed dead letter" in source
    visit.shot("dead-letters-replayed")
    assert deployment.api("/v1/bus/dead_letters", admin, address="agent:alice") == []
    visit.sign_out()
    visit.go("/ui/money")
    assert browser.current_url.endswith("/ui/signin")
    assert len(visit.urls) > len(PAGES)
    assert all("sk-" not in u for u in visit.urls)


def test_another_tenants_admin_sees_none_of_this_tenants_data(
    browser: webdriver.Chrome, deployment: Deployment
) -> None:
    visit = Visit(browser, deployment)
    visit.sign_in(deployment.rival.admin_token)
    for name, path in PAGES.items():
        if name == "agent":
            continue
        source = visit.go(path)
        for acme_text in ("alice", "bob", "a-listed-skill", "a-task-1", "a-prov"):
            assert acme_text not in source, (path, acme_text)
    assert "zed" in visit.go("/ui/agents")
    visit.go("/ui/agents/alice")
    assert browser.find_element(By.TAG_NAME, "h1").text == "SOS-6002"  # no such agent in this tenant
    visit.shot("other-tenant")
    visit.sign_out()


def test_marketplace_shows_listed_cards_only(browser: webdriver.Chrome, deployment: Deployment) -> None:
    visit = Visit(browser, deployment)
    source = visit.go("/marketplace")
    titles = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card h2")]
    assert len(titles) == 2
    assert all("Listed" in t for t in titles)
    assert "Private skill" not in source
    assert '<script>alert("x")</script>' in titles[0]  # shown as text, never run
    visit.shot("marketplace")
    browser.find_element(By.CSS_SELECTOR, ".card h2 a").click()
    WebDriverWait(browser, WAIT_S).until(expected_conditions.url_contains("/marketplace/"))
    visit.check()
    visit.shot("marketplace-card")
    visit.go("/marketplace/acme/a-private-skill")
    assert "SOS-4040" in browser.find_element(By.TAG_NAME, "h1").text
    visit.go("/marketplace?q=zzz-none")
    assert browser.find_elements(By.CSS_SELECTOR, ".card") == []


def test_keyboard_reaches_the_sign_in_form_and_every_nav_link(
    browser: webdriver.Chrome, deployment: Deployment
) -> None:
    visit = Visit(browser, deployment)
    visit.go("/ui/signin")

    def tab_stops(count: int) -> list[str]:
        browser.find_element(By.TAG_NAME, "body").click()
        seen = []
        for _ in range(count):
            webdriver.ActionChains(browser).send_keys(Keys.TAB).perform()
            active = browser.switch_to.active_element
            seen.append(active.get_attribute("id") or active.get_attribute("href") or active.tag_name)
        return seen

    stops = tab_stops(8)
    assert "token" in stops
    assert "button" in stops
    browser.find_element(By.ID, "token").send_keys(deployment.acme.admin_token, Keys.ENTER)
    WebDriverWait(browser, WAIT_S).until(expected_conditions.url_to_be(deployment.base_url + "/ui/"))
    visit.check()
    stops = tab_stops(12)
    for href in NAV:
        assert deployment.base_url + href in stops, href
    focused = browser.switch_to.active_element
    outline = browser.execute_script("return getComputedStyle(arguments[0]).outlineStyle", focused)
    assert outline != "none"  # the focus ring is visible
    visit.sign_out()
