"""axe-core's verdict on every page, in light and dark: no serious or critical violation.

axe-core is the accessibility engine browsers' own tools use; it comes from the npm registry
(`make axe-core`, which the fixture runs when it is missing), pinned, into .cache/, and is
injected into each page by selenium. Also what axe cannot see: one h1 a page, "Copied" said
aloud, every scrollable box reachable by keyboard.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Site
from .test_pages import load

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parent.parent.parent
AXE = ROOT / ".cache" / "axe-core" / "node_modules" / "axe-core" / "axe.min.js"

PAGES = [
    "/",
    "/search?q=aurora",
    "/search?q=auror-tols",
    "/project/aurora-tools/",
    "/project/aurora-tools/1.1.0/",
    "/project/meta-demo/",
    "/project/lumen-build/",
    "/project/tracked-readme/",
    "/project/hostile-readme/",
    "/project/bad-thing/",
    "/builds/",
    "/builds/wrecked-build/",
    "/builds/wrecked-build/0.3.0/",
    "/project/HatchLing/",
    "/no/such/page",
]


@pytest.fixture(scope="module")
def axe() -> str:
    if not AXE.exists():
        subprocess.run(["make", "axe-core"], cwd=ROOT, check=True, capture_output=True)
    return AXE.read_text()


@pytest.fixture(params=["light", "dark"])
def scheme(browser: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": request.param}]},
    )
    try:
        yield request.param
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def violations(browser: Any, axe: str) -> list[str]:
    browser.execute_script(axe)
    result = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then((r) => done(r.violations), (e) => done(String(e)));"
    )
    assert isinstance(result, list), result
    return [
        f"{v['id']} ({v['impact']}): {v['help']}: "
        + "; ".join(
            n["target"][0] + " " + n.get("failureSummary", "")[:160] for n in v["nodes"][:3]
        )
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("path", PAGES)
def test_axe_finds_nothing_serious(
    browser: Any, site: Site, axe: str, scheme: str, path: str
) -> None:
    load(browser, site, path)
    assert violations(browser, axe) == []


@pytest.fixture(params=[(1280, 900), (390, 844)], ids=["desktop", "phone"])
def width(browser: Any, request: pytest.FixtureRequest) -> Iterator[int]:
    browser.set_window_size(*request.param)
    try:
        yield request.param[0]
    finally:
        browser.set_window_size(1280, 900)


@pytest.mark.parametrize("path", PAGES)
def test_one_h1_and_every_scroll_box_reachable(
    browser: Any, site: Site, width: int, path: str
) -> None:
    """A box that scrolls is a Tab stop or holds one, at a desktop's width and a phone's."""
    load(browser, site, path)
    assert len(browser.find_elements("tag name", "h1")) == 1
    unreachable = browser.execute_script(
        """
        return Array.from(document.querySelectorAll('main *')).filter((e) => {
          const s = getComputedStyle(e);
          const scrolls = (/(auto|scroll)/.test(s.overflowX) && e.scrollWidth > e.clientWidth + 1)
            || (/(auto|scroll)/.test(s.overflowY) && e.scrollHeight > e.clientHeight + 1);
          return scrolls && e.tabIndex < 0 && !e.querySelector('a[href], button, [tabindex]');
        }).map((e) => `${e.tagName}.${e.className} ${e.scrollWidth}/${e.clientWidth} wide,`
          + ` ${e.scrollHeight}/${e.clientHeight} high: ${e.textContent.slice(0, 40)}`);
        """
    )
    assert unreachable == []


def test_copied_is_said_aloud(browser: Any, site: Site) -> None:
    load(browser, site, "/project/aurora-tools/")
    status = browser.find_element("css selector", "[role=status]")
    assert status.get_attribute("textContent") == ""
    browser.find_element("css selector", ".install .copy-button").click()
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(browser, 5).until(lambda _: status.get_attribute("textContent"))
    assert status.get_attribute("textContent") in ("Copied", "Selected: press Ctrl+C to copy")


@pytest.mark.parametrize("path", PAGES)
def test_axe_finds_nothing_serious_on_a_phone(
    browser: Any, site: Site, axe: str, path: str
) -> None:
    browser.set_window_size(390, 844)
    try:
        load(browser, site, path)
        assert violations(browser, axe) == []
    finally:
        browser.set_window_size(1280, 900)
