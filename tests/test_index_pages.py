"""What the index serves, checked against PEP 503, 592, 629, 658/714, 691 and 700."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import trio

from insiders.names import normalize
from insiders.store import Store
from tests.support import Daemon, installed_version, pip_install

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"


@pytest.fixture
def hosted(daemon: Daemon, dists: dict[str, list[Path]]) -> Daemon:
    for path in dists["demo-1.0"] + dists["demo-1.1"]:
        assert daemon.upload(path).status_code == 200
    return daemon


class Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))
        if tag == "meta":
            values = dict(attrs)
            self.meta[values.get("name") or ""] = values.get("content")


def test_project_page_json(hosted: Daemon, dists: dict[str, list[Path]]) -> None:
    with hosted.client() as client:
        response = client.get("/simple/demo-pkg/", headers={"Accept": JSON})
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert response.headers["vary"] == "Accept, Accept-Encoding"
    page = response.json()
    assert page["meta"]["api-version"] == "1.4"  # PEP 792 status markers
    assert page["project-status"] == {"status": "active"}
    assert page["name"] == "demo-pkg"
    assert page["versions"] == ["1.0.0", "1.1.0"]
    by_name = {f["filename"]: f for f in page["files"]}
    for path in dists["demo-1.0"] + dists["demo-1.1"]:
        entry = by_name[path.name]
        assert entry["hashes"] == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        assert entry["size"] == path.stat().st_size
        assert entry["requires-python"] == "<4,>=3.8"
        assert entry["yanked"] is False
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", entry["upload-time"])
        if path.suffix == ".whl":
            assert set(entry["core-metadata"]) == {"sha256"}
            # PEP 714: the old key is HTML-only; pip 22.3-23.1 crash on it in JSON.
            assert "dist-info-metadata" not in entry
        else:
            assert "core-metadata" not in entry


def test_project_page_html(hosted: Daemon, dists: dict[str, list[Path]]) -> None:
    with hosted.client() as client:
        response = client.get("/simple/demo-pkg/", headers={"Accept": "text/html"})
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "&lt;4,&gt;=3.8" in response.text  # escaped in the attribute (PEP 503)
    parser = Anchors()
    parser.feed(response.text)
    assert parser.meta["pypi:repository-version"] == "1.4"
    assert parser.meta["pypi:project-status"] == "active"
    assert len(parser.anchors) == 4
    for anchor in parser.anchors:
        href = anchor["href"] or ""
        assert re.fullmatch(r"\.\./\.\./files/demo-pkg/[^#]+#sha256=[0-9a-f]{64}", href)
        assert anchor["data-requires-python"] == "<4,>=3.8"
        if href.split("#")[0].endswith(".whl"):
            assert anchor["data-core-metadata"] == anchor["data-dist-info-metadata"]
            assert (anchor["data-core-metadata"] or "").startswith("sha256=")


def test_core_metadata_file_matches_its_hash(hosted: Daemon) -> None:
    with hosted.client() as client:
        page = client.get("/simple/demo-pkg/", headers={"Accept": JSON}).json()
        wheel = next(f for f in page["files"] if f["filename"].endswith(".whl"))
        url = "/files/demo-pkg/" + wheel["filename"] + ".metadata"
        metadata = client.get(url)
        sdist = next(f for f in page["files"] if f["filename"].endswith(".tar.gz"))
        no_metadata = client.get("/files/demo-pkg/" + sdist["filename"] + ".metadata")
    assert metadata.status_code == 200
    assert hashlib.sha256(metadata.content).hexdigest() == wheel["core-metadata"]["sha256"]
    assert b"Name: Demo_Pkg" in metadata.content
    assert no_metadata.status_code == 404


@pytest.mark.parametrize(
    ("accept", "query", "expected"),
    [
        (JSON, "", JSON),
        (HTML, "", HTML),
        ("text/html", "", "text/html; charset=utf-8"),
        (f"{HTML};q=0.5, {JSON};q=0.9", "", JSON),
        (f"{JSON};q=0.1, text/html", "", "text/html; charset=utf-8"),
        ("*/*", "", "text/html; charset=utf-8"),
        ("text/html", f"?format={JSON}", JSON),
        ("application/vnd.pypi.simple.latest+json", "", JSON),
    ],
)
def test_content_negotiation(hosted: Daemon, accept: str, query: str, expected: str) -> None:
    with hosted.client() as client:
        for path in ("/simple/", "/simple/demo-pkg/"):
            response = client.get(path + query, headers={"Accept": accept})
            assert response.status_code == 200
            assert response.headers["content-type"] == expected
            assert response.headers["vary"] == "Accept, Accept-Encoding"


def test_unacceptable_accept_is_406(hosted: Daemon) -> None:
    with hosted.client() as client:
        response = client.get("/simple/demo-pkg/", headers={"Accept": "image/png"})
    assert response.status_code == 406
    assert "application/vnd.pypi.simple.v1+json" in response.text


def test_root_lists_hosted_projects(hosted: Daemon) -> None:
    with hosted.client() as client:
        root = client.get("/simple/", headers={"Accept": JSON}).json()
        html = client.get("/simple/").text
    assert root == {"meta": {"api-version": "1.4"}, "projects": [{"name": "Demo_Pkg"}]}
    assert '<a href="demo-pkg/">Demo_Pkg</a>' in html


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/simple/Demo_Pkg/", "/simple/demo-pkg/"),
        ("/simple/demo.pkg", "/simple/demo-pkg/"),
        ("/simple/demo-pkg", "/simple/demo-pkg/"),
        ("/simple", "/simple/"),
        ("/simple/DEMO--pkg/?format=text/html", "/simple/demo-pkg/?format=text/html"),
    ],
)
def test_non_normalised_names_redirect(hosted: Daemon, path: str, location: str) -> None:
    with hosted.client() as client:
        response = client.get(path)
    assert response.status_code == 301
    assert response.headers["location"] == location


def test_file_download_and_head(hosted: Daemon, dists: dict[str, list[Path]]) -> None:
    wheel = next(p for p in dists["demo-1.0"] if p.suffix == ".whl")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with hosted.client() as client:
        get = client.get(f"/files/demo-pkg/{wheel.name}")
        head = client.head(f"/files/demo-pkg/{wheel.name}")
        cached = client.get(
            f"/files/demo-pkg/{wheel.name}", headers={"If-None-Match": f'"{digest}"'}
        )
        missing = client.get("/files/demo-pkg/demo_pkg-9.9-py3-none-any.whl")
        traversal = client.get("/files/demo-pkg/..%2F.project.json")
        manifest = client.get("/files/demo-pkg/.project.json")
    assert get.content == wheel.read_bytes()
    assert get.headers["content-length"] == str(wheel.stat().st_size)
    assert get.headers["etag"] == f'"{digest}"'
    assert get.headers["content-type"] == "application/octet-stream"
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(wheel.stat().st_size)
    assert cached.status_code == 304
    assert missing.status_code == 404
    assert traversal.status_code == 404
    assert manifest.status_code == 404


def test_pages_revalidate_with_etag(hosted: Daemon, dists: dict[str, list[Path]]) -> None:
    with hosted.client() as client:
        first = client.get("/simple/demo-pkg/")
        again = client.get("/simple/demo-pkg/", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        # A change to the project gives a new page and a new ETag.
        assert hosted.upload(dists["other-0.1"][0]).status_code == 200
        root_before = first.headers["etag"]
        assert client.get("/simple/demo-pkg/").headers["etag"] == root_before


def test_json_api(hosted: Daemon) -> None:
    with hosted.client() as client:
        project = client.get("/pypi/Demo_Pkg/json").json()
        release = client.get("/pypi/demo-pkg/1.0.0/json").json()
        missing = client.get("/pypi/nothing/json")
    assert project["info"]["name"] == "Demo_Pkg"
    assert project["info"]["version"] == "1.1.0"
    assert project["info"]["summary"] == "A test package"
    assert project["info"]["requires_python"] == "<4,>=3.8"
    assert sorted(project["releases"]) == ["1.0.0", "1.1.0"]
    assert {u["packagetype"] for u in project["urls"]} == {"bdist_wheel", "sdist"}
    assert all(len(u["digests"]["sha256"]) == 64 for u in project["urls"])
    assert release["info"]["version"] == "1.0.0"
    assert "releases" not in release
    assert missing.status_code == 404


def test_yanked_release(tmp_path: Path, dists: dict[str, list[Path]]) -> None:
    """PEP 592: a yanked version is shown with its reason and pip skips it unless pinned."""
    daemon = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
    for path in dists["demo-1.0"] + dists["demo-1.1"]:
        assert daemon.upload(path).status_code == 200
    assert daemon.stop() == 0

    async def yank() -> None:
        store = await trio.to_thread.run_sync(Store.open, daemon.data_dir)
        changed = await store.set_yanked(normalize("demo-pkg"), "1.1.0", True, 'broken "build"')
        assert changed == 2

    trio.run(yank)
    daemon.start()
    try:
        with daemon.client() as client:
            page = client.get("/simple/demo-pkg/", headers={"Accept": JSON}).json()
            html = client.get("/simple/demo-pkg/").text
        yanked = {f["filename"]: f["yanked"] for f in page["files"]}
        assert yanked["demo_pkg-1.1.0.tar.gz"] == 'broken "build"'
        assert yanked["demo_pkg-1.0.0.tar.gz"] is False
        assert 'data-yanked="broken &quot;build&quot;"' in html
        pip_install(daemon.index, tmp_path / "a", "demo-pkg")
        assert installed_version(tmp_path / "a", "demo_pkg") == "1.0.0"
        pinned = pip_install(daemon.index, tmp_path / "b", "demo-pkg==1.1.0")
        assert "yanked" in pinned.stderr.lower()
        assert installed_version(tmp_path / "b", "demo_pkg") == "1.1.0"
    finally:
        daemon.stop()


def test_pages_gzipped_for_clients_that_accept_it(hosted: Daemon) -> None:
    with hosted.client() as client:
        plain = client.get("/simple/demo-pkg/", headers={"Accept-Encoding": "identity"})
        zipped = client.get("/simple/demo-pkg/", headers={"Accept-Encoding": "br, gzip"})
        refused = client.get("/simple/demo-pkg/", headers={"Accept-Encoding": "gzip;q=0"})
        again = client.get(
            "/simple/demo-pkg/",
            headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["etag"]},
        )
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(plain.content)
    assert zipped.content == plain.content  # httpx decodes it: the same page
    assert zipped.headers["etag"] != plain.headers["etag"]  # one ETag per representation
    assert "content-encoding" not in refused.headers
    assert again.status_code == 304
