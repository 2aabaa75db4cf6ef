"""`server.image-sources` lets a description's pictures from the hosts it names into the page:
the picture is an image again (not a link to it), and the browser asks that host for it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Daemon, build, write_config

from .conftest import TRACKED_README, Tracker, _readme_project
from .test_pages import console_errors

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Tracker]]:
    home = tmp_path_factory.mktemp("images")
    write_config(home, '[server]\nimage-sources = ["https:"]\n')
    tracker = Tracker()
    daemon = Daemon(home, ["--upstream-mode", "none"]).start()
    try:
        readme = TRACKED_README.format(url=tracker.url)
        project = _readme_project(Path(home), "tracked-readme", "0.1", "Pictures", readme)
        for path in build(project, home / "dist"):
            assert daemon.upload(path).status_code == 200
        yield daemon, tracker
    finally:
        daemon.stop()
        tracker.close()


def test_named_sources_are_shown(browser: Any, shown: tuple[Daemon, Tracker]) -> None:
    daemon, tracker = shown
    browser.get_log("browser")
    browser.get(f"{daemon.url}/project/tracked-readme/")
    readme = browser.find_element("css selector", ".readme")
    assert readme.find_elements("css selector", "a.picture-elsewhere") == []
    picture = readme.find_element("tag name", "img")
    assert picture.get_attribute("src") == f"{tracker.url}/pixel.png"
    assert picture.get_attribute("alt") == "a pixel"
    deadline = time.monotonic() + 10
    while tracker.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tracker.connections > 0  # the setting let the browser ask that host
    # The only complaint is the picture itself (its host closes the connection): no CSP refusal.
    assert all("Content Security Policy" not in e for e in console_errors(browser))
