"""PEP 792 project status markers: set with insidersctl, honoured by uploads, the watcher's
publications, the pages, /files/ and the JSON API."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from insiders.errors import ProjectClosed
from insiders.ingest import publish_file
from insiders.store import Store
from tests.support import Daemon, git_project, make_wheel, pip_install, tag_release, wheel_filename
from tests.test_ctl import ctl, ok
from tests.test_watcher import ctl as watcher_ctl
from tests.test_watcher import start, wheelhouse

__all__ = ["wheelhouse"]
from tests.test_index_pages import JSON, Anchors


def wheel(tmp_path: Path, version: str) -> Path:
    path = tmp_path / wheel_filename("demo", version)
    path.write_bytes(make_wheel("demo", version))
    return path


def pages(daemon: Daemon) -> tuple[dict[str, object], Anchors]:
    with daemon.client() as client:
        page = client.get("/simple/demo/", headers={"Accept": JSON}).json()
        html = Anchors()
        html.feed(client.get("/simple/demo/", headers={"Accept": "text/html"}).text)
    return page, html


def test_a_quarantined_project_shows_no_file_on_any_page(daemon: Daemon, tmp_path: Path) -> None:
    """Its pages say it is quarantined; no filename, hash or download link is left on them."""
    first = wheel(tmp_path, "1.0")
    assert daemon.upload(first).status_code == 200
    sha256 = hashlib.sha256(first.read_bytes()).hexdigest()
    paths = ("/", "/project/demo/", "/project/demo/1.0/", "/search?q=demo", "/builds/")
    with daemon.client() as client:
        assert first.name in client.get("/project/demo/").text  # shown while active
        ok(daemon, "projects", "status", "demo", "quarantined", "--reason", "malware")
        for path in paths:
            page = client.get(path)
            assert page.status_code == 200, path
            for leak in (first.name, sha256, "/files/demo/"):
                assert leak not in page.text, (path, leak)
        quarantined = client.get("/project/demo/").text
        assert "This project is quarantined." in quarantined
        assert "malware" in quarantined
        assert client.get("/pypi/demo/json").status_code == 404
        assert client.get("/pypi/demo/1.0/json").status_code == 404


def test_a_quarantined_project_s_build_logs_are_not_shown(
    tmp_path: Path, wheelhouse: Daemon
) -> None:
    """A build log names the files it made: the builds page keeps it to insidersctl."""
    source = git_project(tmp_path / "src", "built-here")
    tag_release(source, "1.0")
    daemon = start(tmp_path / "d", wheelhouse)
    try:
        watcher_ctl(daemon, "repos", "add", f"{source}:built-here")
        watcher_ctl(daemon, "update", "--wait")
        with daemon.client() as client:
            assert "built_here-1.0-py" in client.get("/builds/").text  # the log says so
            watcher_ctl(daemon, "projects", "status", "built-here", "quarantined")
            for path in ("/builds/", "/project/built-here/"):
                page = client.get(path).text
                assert "built_here-1.0" not in page, path
                assert "is quarantined" in page, path
        assert "built_here-1.0" in watcher_ctl(daemon, "logs", "--build", "built-here").stdout
    finally:
        daemon.stop()


def test_status_markers(daemon: Daemon, tmp_path: Path) -> None:
    first = wheel(tmp_path, "1.0")
    assert daemon.upload(first).status_code == 200
    file_url = f"/files/demo/{first.name}"

    said = ok(daemon, "projects", "status", "Demo", "archived", "--reason", "moved to demo2")
    assert said.strip() == "demo is archived: moved to demo2"
    refused = daemon.upload(wheel(tmp_path, "1.1"))
    assert refused.status_code == 403
    message = (
        "Project demo is archived (moved to demo2): it takes no new files "
        "(insidersctl projects status demo active reopens it)"
    )
    assert refused.reason_phrase == message
    page, html = pages(daemon)
    assert page["meta"] == {"api-version": "1.4"}
    assert page["project-status"] == {"status": "archived", "reason": "moved to demo2"}
    assert [f["filename"] for f in page["files"]] == [first.name]  # type: ignore[attr-defined]
    assert html.meta["pypi:project-status"] == "archived"
    assert html.meta["pypi:project-status-reason"] == "moved to demo2"
    assert html.meta["pypi:repository-version"] == "1.4"
    with daemon.client() as client:
        assert client.get(file_url).content == first.read_bytes()
    pip_install(daemon.index, tmp_path / "archived", "demo")  # still installable
    assert "demo (archived)" in ok(daemon, "projects", "list")

    ok(daemon, "projects", "status", "demo", "quarantined", "--reason", "malware")
    page, html = pages(daemon)
    assert page["files"] == []
    assert page["versions"] == []
    assert page["project-status"] == {"status": "quarantined", "reason": "malware"}
    assert html.anchors == []
    with daemon.client() as client:
        assert client.get(file_url).status_code == 404
        assert client.get(f"{file_url}.metadata").status_code == 404
        assert client.get("/pypi/demo/json").status_code == 404
    refused = daemon.upload(wheel(tmp_path, "1.1"))
    assert refused.status_code == 403
    assert refused.reason_phrase.startswith("Project demo is quarantined (malware): it takes no")
    ok(daemon, "projects", "status", "demo", "deprecated")
    assert daemon.upload(wheel(tmp_path, "1.1")).status_code == 200
    page, html = pages(daemon)
    assert page["project-status"] == {"status": "deprecated"}
    assert "pypi:project-status-reason" not in html.meta
    assert len(page["files"]) == 2  # type: ignore[arg-type]
    ok(daemon, "projects", "status", "demo", "active")
    assert pages(daemon)[0]["project-status"] == {"status": "active"}

    unknown = ctl(daemon, "projects", "status", "nothing-here", "archived")
    assert unknown.returncode == 1
    assert "no project nothing-here is hosted here" in unknown.stderr
    # The status survives a restart: it is in the project's manifest.
    ok(daemon, "projects", "status", "demo", "archived")
    daemon.stop()
    daemon.start()
    assert pages(daemon)[0]["project-status"] == {"status": "archived"}


@pytest.mark.trio
async def test_archived_project_refuses_the_watchers_publications(tmp_path: Path) -> None:
    """publish_file is how the watcher publishes a build: the same refusal as an upload."""
    store = Store.open(tmp_path / "data")
    assert await publish_file(store, wheel(tmp_path, "1.0"))
    await store.set_status(store.get("demo").normalized, "archived")  # type: ignore[union-attr]
    with pytest.raises(ProjectClosed, match="Project demo is archived: it takes no new files"):
        await publish_file(store, wheel(tmp_path, "1.1"))
    assert [f.filename for f in store.get("demo").files] == [wheel_filename("demo", "1.0")]  # type: ignore[union-attr]
    assert list((tmp_path / "data" / "incoming").iterdir()) == []
