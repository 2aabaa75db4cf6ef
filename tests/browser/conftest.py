"""A real Chromium (Debian's, driven through its own chromedriver) and a daemon with content.

`make browser-host-tools` installs chromium and chromium-driver from Debian's archive. Screenshots
of every page go to tests/browser/artifacts/ (not committed); with INSIDERS_UPDATE_SCREENSHOTS=1
the ones the README shows (test_pages.README_SCREENSHOTS) are written to
tests/browser/screenshots/ as well.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.projects import any_backend_pyproject, write_hatchling_project
from tests.support import (
    BIN,
    Daemon,
    build,
    git,
    git_project,
    isolated_env,
    make_wheel,
    run_ctl,
    serve_wheelhouse,
    tag_release,
    wheel_filename,
)

CHROMEDRIVER = Path("/usr/bin/chromedriver")
HERE = Path(__file__).parent
ARTIFACTS = HERE / "artifacts"

# The description of a package that tries everything a description can try in a browser.
HOSTILE_README = """\
# Hostile readme

<script>window.__pwned = "script";</script>

<img src="missing-picture.png" onerror="window.__pwned = 'onerror'">

[click me](javascript:window.__pwned='link') and
<a href="javascript:window.__pwned='a'">raw link</a>

<div style="position:fixed;top:0;left:0;width:100%;height:100%;background:red"
     onclick="window.__pwned='div'">raw HTML block</div>

<iframe src="javascript:window.__pwned='iframe'"></iframe>
<svg><script>window.__pwned = "svg"</script></svg>
<form action="https://attacker.invalid/"><input name="x"></form>

Still a readable paragraph after all that.
"""

AURORA_README = """\
# aurora-tools

Small **tools** for the aurora pipeline, with a [changelog](https://example.org/changelog).

## Install

```sh
pip install aurora-tools
```

## Use

```python
from aurora_tools import VERSION
print(VERSION)
```

| option | meaning |
| --- | --- |
| `--fast` | skip the slow checks |
| `--json` | print JSON |

> Built from the private fork: sponsors get it first.
"""


def _readme_project(where: Path, name: str, version: str, summary: str, readme: str) -> Path:
    return write_hatchling_project(
        where / f"{name.replace('-', '_')}-{version}",
        name,
        version,
        description=summary,
        project=textwrap.dedent(
            """\
            readme = "README.md"
            requires-python = ">=3.9"
            license = "MIT"
            authors = [{ name = "Aurora team" }]
            """
        ),
        tail=textwrap.dedent(
            """\
            [project.urls]
            Homepage = "https://example.org/aurora"
            Evil = "javascript:window.__pwned='project-url'"

            [tool.hatch.build.targets.wheel]
            core-metadata-version = "2.4"
            """
        ),
        files={"README.md": readme},
    )


# A release whose metadata says much (dependencies with extras and markers, classifiers, a license
# given only as a classifier, an author with an email) under a description long enough that its
# files would be far below it.
META_PYPROJECT = any_backend_pyproject(
    "meta-demo",
    "3.1.0",
    project="""\
description = "A release that says much about itself"
readme = "README.md"
requires-python = ">=3.9"
authors = [{ name = "Ada Lovelace", email = "ada@example.org" }]
dependencies = ["httpx>=0.27", 'tomli>=1.1; python_version < "3.11"']
classifiers = [
    "License :: OSI Approved :: MIT License",
    "Framework :: Trio",
    "Programming Language :: Python :: 3",
]

[project.optional-dependencies]
socks = ["socksio==1.*"]
cli = ['rich>=13; python_version >= "3.9"']

[tool.hatch.build.targets.wheel]
packages = ["src/meta_demo"]
core-metadata-version = "2.4"
""",
)
LONG_README = "# meta-demo\n\n" + "".join(
    f"## Part {n}\n\n" + "A paragraph that goes on for a while. " * 12 + "\n\n" for n in range(120)
)


def _meta_project(where: Path) -> Path:
    project = where / "meta_demo-3.1.0"
    (project / "src" / "meta_demo").mkdir(parents=True)
    (project / "src" / "meta_demo" / "__init__.py").write_text('VERSION = "3.1.0"\n')
    (project / "README.md").write_text(LONG_README)
    (project / "pyproject.toml").write_text(META_PYPROJECT)
    return project


# Projects with a PEP 792 status, so that lists show every status's badge.
STATUSES = {"old-thing": "archived", "dusty-thing": "deprecated", "bad-thing": "quarantined"}


def ctl(daemon: Daemon, *args: str) -> str:
    return run_ctl(daemon, *args, check=True).stdout


# A description that shows a picture from another host: reading the page would tell that host
# who reads which project, and when.
TRACKED_README = """\
# Tracked readme

![a pixel]({url}/pixel.png)

The picture above comes from another host.
"""


class Tracker:
    """The other host of TRACKED_README's picture: a listener that counts the connections made
    to it (each is a request a page made) and closes them at once. Its URL is https, the scheme
    the old policy let images come from."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.sock.close()
        self.thread.join(10)


@dataclass
class Site:
    daemon: Daemon
    upstream: Daemon
    tracker: Tracker
    repos: dict[str, Path]  # the watched repositories, by project name
    src: Path  # where the projects and repositories were written (a path of this machine)


@pytest.fixture(scope="package")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A daemon with real uploads (a yanked version, a hostile description) and two watched
    repositories (one builds, one fails), its upstream a second daemon with the build backends."""
    upstream = Daemon(tmp_path_factory.mktemp("upstream"), ["--upstream-mode", "none"]).start()
    serve_wheelhouse(upstream)
    daemon = Daemon(tmp_path_factory.mktemp("site"), ["--upstream", upstream.index]).start()
    tracker = Tracker()
    try:
        src = tmp_path_factory.mktemp("src")
        out = tmp_path_factory.mktemp("dist")
        for name, status in STATUSES.items():
            wheel = out / wheel_filename(name, "1.0")
            wheel.write_bytes(make_wheel(name, "1.0"))
            assert daemon.upload(wheel).status_code == 200
            ctl(daemon, "projects", "status", name, status, "--reason", f"{status} for the test")
        for path in build(_meta_project(src), out / "meta-demo"):
            assert daemon.upload(path).status_code == 200
        uploads = [
            ("aurora-tools", version, "Small tools for the aurora pipeline", AURORA_README)
            for version in ("1.0.0", "1.1.0", "2.0.0")
        ]
        uploads.append(
            (
                "hostile-readme",
                "0.1",
                "<script>window.__pwned='summary'</script> a summary with markup",
                HOSTILE_README,
            )
        )
        uploads.append(
            ("tracked-readme", "0.1", "A picture elsewhere", TRACKED_README.format(url=tracker.url))
        )
        for name, version, summary, readme in uploads:
            project = _readme_project(src, name, version, summary, readme)
            for path in build(project, out / f"{name}-{version}"):
                response = daemon.upload(path)
                assert response.status_code == 200, response.text
        ctl(daemon, "yank", "aurora-tools", "1.1.0", "--reason", "<b>broken</b> entry point")

        good = git_project(src / "repos", "lumen-build")
        tag_release(good, "1.0.0")
        bad = git_project(
            src / "repos",
            "wrecked-build",
            pyproject=(
                '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
                '[project]\nname = "wrecked-build"\nversion = "0.0.0"\n'
                'dependencies = ["not a spec"]\n'
            ),
        )
        tag_release(bad, "0.3.0")
        ctl(daemon, "repos", "add", f"{good}:lumen-build")
        ctl(daemon, "repos", "add", f"{bad}:wrecked-build")
        update(daemon)
        # Then a newer version builds: the failed 0.3.0 is now older than a success, which is
        # what a reader of the builds page must still see first.
        fixed = (bad / "pyproject.toml").read_text().replace('"not a spec"', '"packaging"')
        (bad / "pyproject.toml").write_text(fixed)
        tag_release(bad, "0.4.0")
        update(daemon, "wrecked-build", "--version", "0.4.0")  # 0.4.0 alone: 0.3.0 stays older
        yield Site(daemon, upstream, tracker, {"lumen-build": good, "wrecked-build": bad}, src)
    finally:
        daemon.stop()
        upstream.stop()
        tracker.close()


def update(daemon: Daemon, *args: str) -> None:
    subprocess.run(
        [str(BIN / "insidersctl"), "update", "--wait", *args],
        env=isolated_env(daemon.home),
        capture_output=True,
        timeout=600,
    )


def commit_of(repo: Path, tag: str) -> str:
    return git(repo, "rev-list", "-n", "1", tag).strip()


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    if not CHROMEDRIVER.exists() or not shutil.which("chromium"):
        pytest.fail("chromium and chromium-driver are missing: run `make browser-host-tools`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = ARTIFACTS / "profile"
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
        "--force-color-profile=srgb",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is Debian's: selenium's own manager would try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
