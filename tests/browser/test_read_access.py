"""The web pages with `read-access = "token"`: without a token every page is a 401 challenge;
with a read token (sent by the browser on every request, the page's stylesheet and script
included) each page reads as it does with open reads, with no console error."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Daemon, isolated_env, make_wheel, run_ctl, wheel_filename, write_config

from .test_pages import console_errors, screenshot

pytestmark = pytest.mark.browser

PAGES = {
    "/": "Package index · insiders",
    "/search?q=private": "private-tools",
    "/project/private-tools/": "private-tools",
    "/project/private-tools/1.0/": "private-tools",
    "/builds/": "Builds",
}


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    home = tmp_path_factory.mktemp("private")
    write_config(home, '[server]\nread-access = "token"\n')
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    try:
        wheel = home / wheel_filename("private-tools", "1.0")
        wheel.write_bytes(make_wheel("private-tools", "1.0"))
        assert daemon.upload(wheel).status_code == 200
        created = run_ctl(daemon, "tokens", "create", "browser", "--scope", "read", check=True)
        token = created.stdout.strip()
        yield daemon, token
    finally:
        daemon.stop()


@contextlib.contextmanager
def sending_token(browser: Any, token: str) -> Iterator[None]:
    """Every request the browser makes carries `token` (HTTP Basic, as pip sends it)."""
    basic = base64.b64encode(f"__token__:{token}".encode()).decode()
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}}
    )
    try:
        yield
    finally:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
        browser.execute_cdp_cmd("Network.disable", {})


def test_every_page_asks_for_a_token(private: tuple[Daemon, str]) -> None:
    daemon, _ = private
    for path in [*PAGES, "/static/style.css", "/project/nothing-here/"]:
        response = httpx.get(f"{daemon.url}{path}")
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == 'Basic realm="insiders"'
        assert "private-tools" not in response.text


def test_every_page_reads_with_a_read_token(browser: Any, private: tuple[Daemon, str]) -> None:
    daemon, token = private
    with sending_token(browser, token):
        for path, expected in PAGES.items():
            browser.get_log("browser")
            browser.get(f"{daemon.url}{path}")
            assert expected in browser.title + browser.find_element("tag name", "main").text, path
            # The stylesheet arrived too (it is behind the gate like everything else): without
            # it the body keeps the browser's default margin of 8 pixels.
            margin = browser.execute_script("return getComputedStyle(document.body).margin")
            assert margin != "8px", path
            assert console_errors(browser) == [], path
            name = "read-token" + path.replace("/", "-").replace("?", "-").rstrip("-")
            assert screenshot(browser, name).stat().st_size > 0


def test_no_page_needs_a_file_from_elsewhere(private: tuple[Daemon, str]) -> None:
    """With a token, pages and their assets come from the daemon itself: one origin to protect."""
    daemon, token = private
    page = httpx.get(f"{daemon.url}/", auth=("__token__", token))
    assert page.status_code == 200
    assert "https://" not in page.text.split("<main", 1)[0]


def test_the_install_line_carries_the_token_and_works_as_copied(
    browser: Any, private: tuple[Daemon, str], tmp_path: Path
) -> None:
    """With reads behind a token, the copied line takes it from INSIDERS_TOKEN: run as it stands
    by a shell with that variable set, real pip installs from the index."""
    daemon, token = private
    with sending_token(browser, token):
        browser.get(f"{daemon.url}/project/private-tools/")
        lines = [e.text for e in browser.find_elements("css selector", ".install .copy code")]
        hint = browser.find_element("css selector", ".install .hint").text
    url = daemon.url.replace("://", "://__token__:${INSIDERS_TOKEN}@", 1)
    assert lines == [
        f'pip install --index-url "{url}/simple/" private-tools',
        f'UV_DEFAULT_INDEX="{url}/simple/" uv pip install private-tools',
    ]
    assert "INSIDERS_TOKEN" in hint
    assert token not in browser.page_source
    target = tmp_path / "t"
    result = subprocess.run(
        ["sh", "-c", f'{sys.executable} -m {lines[0]} --no-deps --target "{target}"'],
        env=isolated_env(tmp_path, INSIDERS_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (target / "private_tools").is_dir()
