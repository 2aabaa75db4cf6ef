"""Issue 25's web pages, in a real browser: each page answers the person's next question first.

The install line names the index; files, versions and dependencies are one click away above a
long description; nothing is fetched from another host; a failed build shows why, with
permalinks and none of this server's paths; search compares names as the index does and
suggests close ones; search and 404 pages are stored pages like the others; a phone keeps the
hash's Copy button on screen.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import isolated_env

from .conftest import ARTIFACTS, Site, commit_of
from .test_pages import arrived, console_errors, load, screenshot, texts

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parent.parent.parent


def test_the_install_line_names_the_index_and_works_as_copied(
    browser: Any, site: Site, tmp_path: Path
) -> None:
    load(browser, site, "/project/aurora-tools/")
    lines = texts(browser, ".install .copy code")
    simple = f"{site.daemon.url}/simple/"
    assert lines == [
        f"pip install --index-url {simple} aurora-tools",
        f"UV_DEFAULT_INDEX={simple} uv pip install aurora-tools",
    ]
    # The pip line as copied, run by real pip on a machine pointed nowhere: it installs from here.
    args = shlex.split(lines[0])
    assert args[:2] == ["pip", "install"]
    result = subprocess.run(
        [sys.executable, "-m", *args, "--target", str(tmp_path / "t"), "--no-deps"],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t" / "aurora_tools" / "__init__.py").read_text() == 'VERSION = "2.0.0"\n'
    load(browser, site, "/project/aurora-tools/1.0.0/")
    assert texts(browser, ".install .copy code")[0].endswith(" aurora-tools==1.0.0")
    load(browser, site, "/")
    howto = browser.find_element("css selector", ".howto").text
    assert "UV_DEFAULT_INDEX" in howto
    assert "UV_INDEX_URL" not in howto


@contextlib.contextmanager
def script_off(browser: Any) -> Iterator[None]:
    """The page's own scripts do not run (as with JavaScript turned off); selenium's still do."""
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        yield
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_files_versions_and_dependencies_at_once(browser: Any, site: Site) -> None:
    """On a phone, above a description 100,000 pixels long: one tap to each, with no script."""
    browser.set_window_size(390, 844)
    with script_off(browser):
        try:
            load(browser, site, "/project/meta-demo/")
            assert browser.execute_script("return document.documentElement.scrollHeight") > 20000
            # app.js did not run: it would have shown the Copy buttons.
            assert not browser.find_element("css selector", ".copy-button").is_displayed()
            for name in ("Files", "Versions", "Dependencies"):
                load(browser, site, "/project/meta-demo/")
                link = browser.find_element("css selector", "nav.jump").find_element(
                    "partial link text", name
                )
                assert link.rect["y"] + link.rect["height"] <= 844, name  # on the first screen
                link.click()
                target = browser.find_element("id", f"{name.lower()}-title")
                top = browser.execute_script(
                    "return arguments[0].getBoundingClientRect().top", target
                )
                assert 0 <= top < 844, name
            screenshot(browser, "project-meta-phone")
        finally:
            browser.set_window_size(1280, 900)
    load(browser, site, "/project/meta-demo/")
    deps = browser.find_element("css selector", "section[aria-labelledby=dependencies-title]").text
    assert "httpx>=0.27" in deps
    assert 'tomli>=1.1; python_version < "3.11"' in deps
    assert "With the extra socks\nsocksio==1.*" in deps
    assert 'With the extra cli\nrich>=13; python_version >= "3.9"' in deps
    assert "extra ==" not in deps
    classifiers = browser.find_element("css selector", ".classifiers").text
    assert "Framework\nTrio" in classifiers
    facts = browser.find_element("css selector", ".facts").text
    assert "License\nMIT License" in facts  # given only as a classifier
    assert "Author\nAda Lovelace" in facts
    assert "<" not in facts
    author = browser.find_element("link text", "Ada Lovelace")
    assert author.get_attribute("href") == "mailto:ada@example.org"
    assert console_errors(browser) == []
    browser.set_window_size(1280, 1300)
    try:
        browser.save_screenshot(str(ARTIFACTS / "project-meta-top.png"))  # the first screen
    finally:
        browser.set_window_size(1280, 900)
    # A watched project's files: the tag and commit they were built from.
    load(browser, site, "/project/lumen-build/")
    built = browser.find_element("css selector", ".built-from").text
    commit = commit_of(site.repos["lumen-build"], "v1.0.0")
    assert built == f"Built by the watcher from tag v1.0.0, commit {commit[:12]}."


def test_a_picture_from_another_host_is_a_link_to_it(browser: Any, site: Site) -> None:
    """Nothing is fetched from another host: the picture is a link a click may follow, so the
    page asks nothing the Content-Security-Policy must refuse (no console error either)."""
    load(browser, site, "/project/tracked-readme/")
    readme = browser.find_element("css selector", ".readme")
    assert readme.find_elements("tag name", "img") == []
    link = readme.find_element("css selector", "a.picture-elsewhere")
    assert link.get_attribute("href") == f"{site.tracker.url}/pixel.png"
    assert link.text == f"a pixel (a picture from {site.tracker.url.removeprefix('https://')})"
    assert console_errors(browser) == []
    assert site.tracker.connections == 0


def server_paths(site: Site) -> list[str]:
    """Paths of this machine that a page must not show: the test's directory (the daemon's own,
    the sources' and repositories'), the worktree and the Python insiders runs from."""
    return [str(site.daemon.home.parent), str(ROOT), sys.prefix]


def test_builds_show_a_failure_first_and_why(browser: Any, site: Site) -> None:
    load(browser, site, "/builds/")
    first = browser.find_element("css selector", "table.builds tbody tr th").text
    assert first.startswith("wrecked-build")  # a repository with a failed version comes first
    section = browser.find_element("id", "repo-wrecked-build")
    # The summary says why, not only "exit status 1".
    notice = section.find_element("css selector", ".notice").text
    assert "ValueError: Dependency #1 of field `project.dependencies` is invalid" in notice
    assert "ERROR Backend subprocess exited" in notice
    # The failed version's log is the open one, although 0.4.0 built after it, and its end (the
    # error) is what shows.
    opened = section.find_element("css selector", "details[open] summary").text
    assert opened.startswith("Build log of 0.3.0")
    assert end_in_view(browser, section.find_element("css selector", "details[open] pre"))
    screenshot(browser, "builds-failures")


def test_builds_have_permalinks(browser: Any, site: Site) -> None:
    load(browser, site, "/builds/")
    failed = browser.find_element("css selector", "table.builds").find_element("link text", "0.3.0")
    assert failed.get_attribute("href") == f"{site.daemon.url}/builds/wrecked-build/0.3.0/"
    load(browser, site, "/builds/wrecked-build/")
    assert texts(browser, "h1")[0].startswith("Builds of wrecked-build")
    browser.find_element(
        "css selector", "details[open] a[href='/builds/wrecked-build/0.3.0/']"
    ).click()
    arrived(browser, f"{site.daemon.url}/builds/wrecked-build/0.3.0/")
    assert "ERROR Backend subprocess exited" in browser.find_element("css selector", ".notice").text
    assert console_errors(browser) == []
    screenshot(browser, "build-log")
    with script_off(browser):  # the end is in view by the stylesheet alone
        load(browser, site, "/builds/wrecked-build/0.3.0/")
        assert end_in_view(browser, browser.find_element("css selector", "main .log-box pre"))
    load(browser, site, "/project/wrecked-build/")
    link = browser.find_element("link text", "Build logs")
    assert link.get_attribute("href") == f"{site.daemon.url}/builds/wrecked-build/"
    with httpx.Client(base_url=site.daemon.url) as client:
        assert client.get("/builds/wrecked-build/9.9.9/").status_code == 404
        assert client.get("/builds/nothing-here/").status_code == 404
        moved = client.get("/builds/Wrecked_Build/")
        assert (moved.status_code, moved.headers["location"]) == (301, "/builds/wrecked-build/")


@pytest.mark.parametrize(
    "path", ["/builds/", "/builds/wrecked-build/", "/builds/wrecked-build/0.3.0/"]
)
def test_build_logs_show_no_server_paths(browser: Any, site: Site, path: str) -> None:
    load(browser, site, path)
    source = browser.page_source
    assert "not a spec" in source
    for where in server_paths(site):
        assert where not in source
    assert "$SCRATCH/tmp/build-env-" in source  # the paths a reader may need, relative
    assert console_errors(browser) == []


def end_in_view(browser: Any, pre: Any) -> bool:
    """Whether a log's last line shows without scrolling: in the box that scrolls (the log
    itself, or a box around it), the log's bottom is within view."""
    return bool(
        browser.execute_script(
            "const pre = arguments[0];"
            "let box = pre;"
            "while (box && box.scrollHeight <= box.clientHeight + 1) box = box.parentElement;"
            "if (!box || box === document.documentElement) return false;"
            "if (box === pre) return box.scrollTop + box.clientHeight >= box.scrollHeight - 1;"
            "return pre.getBoundingClientRect().bottom <= box.getBoundingClientRect().bottom + 1;",
            pre,
        )
    )


def test_search_compares_names_as_the_index_does(browser: Any, site: Site) -> None:
    load(browser, site, "/search?q=aurora_tools")
    assert texts(browser, ".projects .name") == ["aurora-tools"]
    load(browser, site, "/")
    browser.find_element("id", "filter").send_keys("Aurora_Tools")
    names = browser.find_elements("css selector", ".projects .name")
    assert [e.text for e in names if e.is_displayed()] == ["aurora-tools"]
    load(browser, site, "/search?q=auror-tols")
    suggestion = browser.find_element("css selector", ".suggest a")
    assert suggestion.text == "aurora-tools"
    suggestion.click()
    arrived(browser, f"{site.daemon.url}/project/aurora-tools/")
    assert console_errors(browser) == []
    # A typo in a project's URL: its 404 suggests the same.
    load(browser, site, "/project/auror-tools/")
    suggestion = browser.find_element("css selector", ".suggest a")
    assert suggestion.get_attribute("href") == f"{site.daemon.url}/project/aurora-tools/"


@pytest.mark.parametrize("path", ["/", "/search?q=thing"])
def test_every_status_has_a_badge_in_lists(browser: Any, site: Site, path: str) -> None:
    load(browser, site, path)
    badges = {
        card.find_element("css selector", ".name").text: card.find_element(
            "css selector", ".badge"
        ).text
        for card in browser.find_elements("css selector", ".projects .card")
        if card.find_elements("css selector", ".badge")
    }
    assert badges == {
        "old-thing": "archived",
        "dusty-thing": "deprecated",
        "bad-thing": "quarantined",
    }


@pytest.mark.parametrize("path", ["/search?q=aurora", "/project/surely-absent/", "/no/such/page"])
def test_search_and_404_pages_are_stored_pages(site: Site, path: str) -> None:
    with httpx.Client(base_url=site.daemon.url) as client:
        plain = client.get(path, headers={"accept-encoding": "identity"})
        zipped = client.get(path, headers={"accept-encoding": "gzip"})
    assert plain.status_code == zipped.status_code
    assert plain.headers["etag"]
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["etag"] != plain.headers["etag"]
    assert zipped.content == plain.content  # httpx took the gzip off
    if plain.status_code == 200:
        with httpx.Client(base_url=site.daemon.url) as client:
            again = client.get(
                path,
                headers={"if-none-match": plain.headers["etag"], "accept-encoding": "identity"},
            )
        assert again.status_code == 304


def test_the_404_of_an_upstream_name_links_its_project_page(browser: Any, site: Site) -> None:
    load(browser, site, "/project/HatchLing/")
    link = browser.find_element("link text", "hatchling")
    assert link.get_attribute("href") == f"{site.upstream.url}/project/hatchling/"
    link.click()
    arrived(browser, f"{site.upstream.url}/project/hatchling/")
    assert texts(browser, ".project-head h1")[0].startswith("hatchling ")


def test_on_a_phone_the_hash_copy_button_stays_on_screen(browser: Any, site: Site) -> None:
    browser.set_window_size(390, 844)
    try:
        load(browser, site, "/project/aurora-tools/")
        buttons = browser.find_elements("css selector", ".hash .copy-button")
        assert len(buttons) == 2
        for button in buttons:
            # Scrolled to as a reader would: the page up and down, the table where it starts.
            browser.execute_script(
                "window.scrollTo(0, arguments[0].getBoundingClientRect().top + scrollY - 300)",
                button,
            )
            assert browser.execute_script(
                "const r = arguments[0].getBoundingClientRect();"
                "const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
                "return r.right <= window.innerWidth && hit === arguments[0];",
                button,
            )
        screenshot(browser, "project-phone-hashes")
    finally:
        browser.set_window_size(1280, 900)
