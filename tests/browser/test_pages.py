"""The web pages in a real browser: each page loads without a console error, search works with
and without the script, a project and its versions read well, a yanked version says so, the
builds page shows the watcher's work, a 404 helps, and a hostile description runs nothing."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import ARTIFACTS, HERE, Site

pytestmark = pytest.mark.browser

# The screenshots the README shows, kept in the repository as NAME.png.
README_SCREENSHOTS = ("home", "project", "project-phone", "builds")


def console_errors(driver: Any, allowed: tuple[str, ...] = ()) -> list[str]:
    """What the page logged at SEVERE level (errors, CSP refusals), less the expected lines."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not any(a in entry["message"] for a in allowed)
    ]


def screenshot(driver: Any, name: str) -> Path:
    """Save the whole page (its full height, up to 4,000 pixels) under artifacts/, and for the
    README when asked. Chromium's own capture beyond the viewport: no window resizing."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000)}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": {**clip, "scale": 1}},
    )
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("INSIDERS_UPDATE_SCREENSHOTS") == "1" and name in README_SCREENSHOTS:
        shutil.copyfile(path, HERE / "screenshots" / f"{name}.png")
    return path


def load(driver: Any, site: Site, path: str) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(f"{site.daemon.url}{path}")


def phone_fits(driver: Any, name: str) -> None:
    """At a phone's width the page needs no sideways scrolling (wide tables scroll inside)."""
    driver.set_window_size(390, 844)
    try:
        screenshot(driver, name)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 390
    finally:
        driver.set_window_size(1280, 900)


def arrived(driver: Any, url: str) -> None:
    """Wait for a navigation a click or a submit started, and for its page to be loaded."""
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, 30).until(
        lambda d: (
            d.current_url == url and d.execute_script("return document.readyState") == "complete"
        )
    )


def texts(driver: Any, selector: str) -> list[str]:
    return [e.text for e in driver.find_elements("css selector", selector)]


def test_home(browser: Any, site: Site) -> None:
    load(browser, site, "/")
    assert browser.title == "Package index · insiders"
    names = texts(browser, ".projects .name")
    # Newest uploads first: the watcher published wrecked-build 0.4.0, lumen-build after the
    # uploads.
    assert names[:5] == [
        "wrecked-build",
        "lumen-build",
        "tracked-readme",
        "hostile-readme",
        "aurora-tools",
    ]
    body = browser.find_element("tag name", "main").text
    assert f"{site.daemon.url}/simple/" in body
    assert f"twine upload --repository-url {site.daemon.url}/legacy/" in body
    assert "redirected to the upstream index" in body
    assert "upload-token" in body
    assert console_errors(browser) == []
    screenshot(browser, "home")
    phone_fits(browser, "home-phone")
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    try:
        load(browser, site, "/")
        background = browser.execute_script(
            "return getComputedStyle(document.body).backgroundColor"
        )
        assert background == "rgb(15, 18, 24)"
        screenshot(browser, "home-dark")
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_filter_as_one_types_and_search_form(browser: Any, site: Site) -> None:
    load(browser, site, "/")
    box = browser.find_element("id", "filter")
    box.send_keys("aurora")
    names = browser.find_elements("css selector", ".projects .name")
    visible = [e.text for e in names if e.is_displayed()]
    assert visible == ["aurora-tools"]
    box.send_keys(" pipeline")
    box.submit()
    arrived(browser, f"{site.daemon.url}/search?q=aurora+pipeline")
    assert texts(browser, ".projects .name") == ["aurora-tools"]
    assert console_errors(browser) == []
    screenshot(browser, "search")
    # The form works without the script: the server filters by name and summary.
    with httpx.Client(base_url=site.daemon.url) as client:
        by_summary = client.get("/search", params={"q": "markup"}).text
        none = client.get("/search", params={"q": "zzz-nothing"}).text
    assert "hostile-readme" in by_summary
    assert "aurora-tools" not in by_summary
    assert "No hosted project matches" in none


def test_project_then_a_yanked_version(browser: Any, site: Site) -> None:
    load(browser, site, "/")
    browser.find_element("css selector", 'a.card[href="/project/aurora-tools/"]').click()
    arrived(browser, f"{site.daemon.url}/project/aurora-tools/")
    assert texts(browser, ".project-head h1") == ["aurora-tools 2.0.0"]
    readme = browser.find_element("css selector", ".readme")
    assert readme.find_element("css selector", "table").text.startswith("option")
    assert "print(VERSION)" in readme.find_element("css selector", "pre[data-lang=python]").text
    versions = texts(browser, ".versions .v")
    assert versions == ["2.0.0", "1.1.0", "1.0.0"]
    files = browser.find_element("css selector", "table.files").text
    assert "aurora_tools-2.0.0-py3-none-any.whl" in files
    assert "aurora_tools-2.0.0.tar.gz" in files
    hashes = texts(browser, ".hash code")
    assert len(hashes) == 2
    assert all(len(h) == 64 for h in hashes)
    side = browser.find_element("css selector", ".project-side").text
    assert "Homepage" in side
    assert "Evil" not in side  # a javascript: project URL is not a link anyone can click
    assert console_errors(browser) == []
    screenshot(browser, "project")
    phone_fits(browser, "project-phone")

    browser.find_element("css selector", '.versions a[href="/project/aurora-tools/1.1.0/"]').click()
    arrived(browser, f"{site.daemon.url}/project/aurora-tools/1.1.0/")
    assert texts(browser, ".project-head h1") == ["aurora-tools 1.1.0"]
    notice = browser.find_element("css selector", ".notice.warn").text
    assert "This version is yanked" in notice
    assert "<b>broken</b> entry point" in notice  # the reason is text, not markup
    current = browser.find_element("css selector", ".versions li.current").text
    assert "yanked" in current
    assert browser.find_element("css selector", ".install code").text.endswith(
        " aurora-tools==1.1.0"
    )
    assert console_errors(browser) == []
    screenshot(browser, "project-yanked-version")


def test_builds(browser: Any, site: Site) -> None:
    load(browser, site, "/builds/")
    table = browser.find_element("css selector", "table.builds").text
    assert "lumen-build" in table
    assert "wrecked-build" in table
    rows = {
        row.find_element("css selector", "th").text.split("\n")[0]: row.text
        for row in browser.find_elements("css selector", "table.builds tbody tr")
    }
    assert "ok" in rows["lumen-build"]
    assert "1.0.0" in rows["lumen-build"]
    assert "failing" in rows["wrecked-build"]
    assert "0.3.0" in rows["wrecked-build"]
    failed = browser.find_element("id", "repo-wrecked-build")
    assert "0.3.0 failed" in failed.text
    log = failed.find_element("css selector", "details.log pre").text
    assert "not a spec" in log or "dependencies" in log
    assert browser.find_element("css selector", "#repo-lumen-build details.log pre").text
    assert console_errors(browser) == []
    screenshot(browser, "builds")
    # The watched project's page names its repository and latest build.
    load(browser, site, "/project/lumen-build/")
    side = browser.find_element("css selector", ".project-side").text
    assert "Built from git" in side
    assert "lumen-build" in side
    assert console_errors(browser) == []


def test_not_found_pages(browser: Any, site: Site) -> None:
    load(browser, site, "/project/HatchLing/")
    text = browser.find_element("tag name", "main").text
    assert "no project hatchling (the normalised form of “HatchLing”)" in text
    assert "The upstream index" in text
    assert "has hatchling" in text
    search = browser.find_element("partial link text", "Search the hosted projects")
    assert search.get_attribute("href").endswith("/search?q=hatchling")
    # The page's own status is the one line the browser logs.
    assert console_errors(browser, allowed=("/project/HatchLing/ - Failed to load resource",)) == []
    screenshot(browser, "not-found")
    load(browser, site, "/project/surely-absent/")
    assert "has no project surely-absent either" in browser.find_element("tag name", "main").text
    with httpx.Client(base_url=site.daemon.url) as client:
        assert client.get("/project/surely-absent/").status_code == 404
        assert client.get("/no/such/page").status_code == 404


def test_hostile_description_runs_nothing(browser: Any, site: Site) -> None:
    load(browser, site, "/project/hostile-readme/")
    assert browser.execute_script("return window.__pwned === undefined")
    readme = browser.find_element("css selector", ".readme")
    dangerous = "script, iframe, form, svg, [onerror], [onclick], [style]"
    assert not readme.find_elements("css selector", dangerous)
    assert all(
        not (a.get_attribute("href") or "").lower().startswith("javascript:")
        for a in browser.find_elements("css selector", "a")
    )
    # Still reads well: the heading and the last paragraph are there, as text.
    assert readme.find_element("css selector", "h2").text == "Hostile readme"
    assert "Still a readable paragraph after all that." in readme.text
    summary = browser.find_element("css selector", ".project-head .lead").text
    assert summary.startswith("<script>")  # shown as text
    # The only complaint is the broken picture (a 404): no script was even attempted, so the
    # Content-Security-Policy had nothing to refuse.
    errors = console_errors(browser, allowed=("missing-picture.png",))
    assert errors == []
    screenshot(browser, "hostile")
    with httpx.Client(base_url=site.daemon.url) as client:
        policy = client.get("/project/hostile-readme/").headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy


def test_the_readme_shows_the_screenshots_a_run_refreshes() -> None:
    """Every picture the README shows from screenshots/ is one a run writes (the phone's among
    them), so INSIDERS_UPDATE_SCREENSHOTS=1 refreshes all of them."""
    readme = (HERE.parent.parent / "README.md").read_text()
    shown = set(re.findall(r"\]\(tests/browser/screenshots/([^)]+)\)", readme))
    assert shown == {f"{name}.png" for name in README_SCREENSHOTS}
    assert "project-phone.png" in shown
    assert all((HERE / "screenshots" / name).stat().st_size > 0 for name in shown)
