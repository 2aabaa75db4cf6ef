"""The web pages and the JSON API's links through a real daemon, and their pure parts by tables.

The browser's view of the same pages is in tests/browser/.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import msgspec
import pytest
import trio

from insiders.http.public_url import public_base_url
from insiders.index.ui import WebPages, build_logs, release, views
from insiders.index.ui.describe import render_description
from insiders.index.upstream import Upstream
from insiders.ingest import publish_file
from insiders.names import normalize
from insiders.repos.registry import Repos, RepoState, VersionRecord, make_repo
from insiders.repos.spec import parse_spec
from insiders.store import Project, Store, StoredFile
from tests.support import BIN, Daemon, isolated_env, make_wheel, wheel_filename

ROOT = Path(__file__).parent.parent


def stored(version: str, *, yanked: bool = False) -> StoredFile:
    return StoredFile(
        filename=f"demo-{version}-py3-none-any.whl",
        version=version,
        size=1,
        sha256="0" * 64,
        yanked=yanked,
    )


@pytest.mark.parametrize(
    ("files", "latest"),
    [
        ([stored("1.0"), stored("2.0")], "2.0"),
        # A pre-release above the newest final release is not "the latest" (the old rule of
        # `insidersctl projects list` said 2.1rc1).
        ([stored("1.0"), stored("2.1rc1")], "1.0"),
        ([stored("1.0"), stored("2.0", yanked=True)], "1.0"),
        ([stored("1.0", yanked=True), stored("1.1rc1")], "1.1rc1"),
        ([stored("1.0", yanked=True), stored("2.0", yanked=True)], "2.0"),
        ([stored("1.0rc1"), stored("1.0rc2")], "1.0rc2"),
        ([stored("1.10"), stored("1.9")], "1.10"),
        ([], None),
    ],
)
def test_latest_is_the_public_index_rule(files: list[StoredFile], latest: str | None) -> None:
    assert Project(name="demo", files=tuple(files)).latest() == latest


@pytest.mark.parametrize(
    ("configured", "listening", "expected"),
    [
        (None, ["http://127.0.0.1:31411"], "http://127.0.0.1:31411/"),
        (None, ["http://[::1]:8080"], "http://[::1]:8080/"),
        ("https://pkgs.example/", ["http://127.0.0.1:31411"], "https://pkgs.example/"),
        ("https://pkgs.example/index", [], "https://pkgs.example/index/"),
        (None, [], "http://127.0.0.1:31411/"),
    ],
)
def test_public_base_url(configured: str | None, listening: list[str], expected: str) -> None:
    assert public_base_url(configured, listening, "http://127.0.0.1:31411") == expected


def test_public_base_url_names_the_host_for_every_interface() -> None:
    url = public_base_url(None, ["http://0.0.0.0:31411"], "")
    assert url.endswith(":31411/")
    assert "0.0.0.0" not in url


@pytest.mark.parametrize(
    ("text", "content_type", "has", "has_not"),
    [
        # A description's headings sit below the page's own title, its only h1.
        ("# Title\n\n*em*", "text/markdown", ["<h2", "<em>em</em>"], ["<h1"]),
        ("Title\n=====\n\n*em*", None, ["<h2", "<em>em</em>"], ["<h1"]),
        ("Title\n=====\n\n*em*", "text/x-rst; charset=UTF-8", ["<h2", "<em>em</em>"], ["<h1"]),
        ("# not a heading\n<b>", "text/plain", ["# not a heading", "&lt;b&gt;"], ["<h1", "<h2"]),
        (
            '<script>alert(1)</script>\n\n<img src=x onerror="alert(1)">\n\n'
            "[a](javascript:alert(1))",
            "text/markdown",
            ["<img", ">a</a>"],
            ["<script", "onerror", 'href="javascript:'],
        ),
        # reStructuredText that does not parse (raw HTML is refused) falls back to plain text.
        (".. raw:: html\n\n   <script>alert(1)</script>\n", None, ["&lt;script&gt;"], ["<script"]),
    ],
)
def test_descriptions_render_as_the_public_index(
    text: str, content_type: str | None, has: list[str], has_not: list[str]
) -> None:
    html = str(render_description(text, content_type))
    for part in has:
        assert part in html
    for part in has_not:
        assert part not in html


def test_no_description() -> None:
    assert render_description("", None) is None
    assert render_description("  \n", "text/markdown") is None


def test_search_ranks_names_before_summaries() -> None:
    def item(name: str, summary: str) -> views.Listing:
        return views.Listing(
            name=name,
            normalized=name.lower(),  # type: ignore[arg-type]
            latest="1",
            summary=summary,
            last_upload=0,
            versions=1,
        )

    listings = [
        item("tools-extra", "more"),
        item("other", "handy tools for you"),
        item("tools", "the tools"),
        item("unrelated", "nothing"),
    ]
    assert [i.name for i in views.search(listings, "tools")] == ["tools", "tools-extra", "other"]
    assert [i.name for i in views.search(listings, "handy TOOLS")] == ["other"]


def test_safe_links_drop_other_schemes() -> None:
    fields = {
        "home_page": "javascript:alert(1)",
        "project_urls": {
            "Docs": "https://docs.example/",
            "Bad": "data:text/html,x",
            "X": "ftp://a",
        },
    }
    assert views.safe_links(fields) == [views.Link("Docs", "https://docs.example/")]


# -- through the daemon ------------------------------------------------------------------------


def upload(daemon: Daemon, tmp_path: Path, name: str, version: str) -> None:
    path = tmp_path / wheel_filename(name, version)
    path.write_bytes(make_wheel(name, version))
    response = daemon.upload(path)
    assert response.status_code == 200, response.text


def test_json_api_links_are_pages_and_ignore_the_host_header(
    daemon: Daemon, tmp_path: Path
) -> None:
    upload(daemon, tmp_path, "Web_Demo", "1.0")
    # Another name of this index (a foreign one is refused: tests/test_browser_boundary.py).
    other = {"Host": "localhost:1"}
    with daemon.client() as client:
        info = client.get("/pypi/web-demo/json", headers=other).json()
        release = client.get("/pypi/web-demo/1.0/json", headers=other)
        urls = [info["info"][k] for k in ("package_url", "project_url", "release_url")]
        urls += [u["url"] for u in info["urls"]] + [release.json()["info"]["release_url"]]
        assert all(url.startswith(f"{daemon.url}/") for url in urls), urls
        assert info["info"]["release_url"] == f"{daemon.url}/project/web-demo/1.0/"
        for url in urls:
            assert client.get(url.removeprefix(daemon.url)).status_code == 200, url


def test_public_url_setting(tmp_path: Path) -> None:
    config = tmp_path / "d" / "config" / "insiders"
    config.mkdir(parents=True)
    (config / "config.toml").write_text('[server]\npublic-url = "https://pkgs.example/team"\n')
    daemon = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
    try:
        upload(daemon, tmp_path, "web-demo", "1.0")
        with daemon.client() as client:
            info = client.get("/pypi/web-demo/json").json()["info"]
            home = client.get("/").text
        assert info["project_url"] == "https://pkgs.example/team/project/web-demo/"
        assert "https://pkgs.example/team/simple/" in home
    finally:
        daemon.stop()


def test_a_bad_public_url_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "d" / "config" / "insiders"
    config.mkdir(parents=True)
    (config / "config.toml").write_text('[server]\npublic-url = "pkgs.example"\n')
    result = subprocess.run(
        [str(BIN / "insidersd"), "--port", "0"],
        env=isolated_env(tmp_path / "d"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "server.public-url" in result.stderr


def test_latest_agrees_between_json_api_and_insidersctl(daemon: Daemon, tmp_path: Path) -> None:
    for version in ("1.0", "2.0rc1"):
        upload(daemon, tmp_path, "web-demo", version)
    with daemon.client() as client:
        assert client.get("/pypi/web-demo/json").json()["info"]["version"] == "1.0"
        page = client.get("/project/web-demo/").text
    listing = subprocess.run(
        [str(BIN / "insidersctl"), "projects", "list", "--json"],
        env=isolated_env(daemon.home),
        capture_output=True,
        check=True,
    ).stdout
    [project] = msgspec.json.decode(listing)["projects"]
    assert project["latest"] == "1.0"
    assert 'web-demo</span> <span class="version">1.0</span>' in page


def test_pages_change_with_the_store_and_revalidate(daemon: Daemon, tmp_path: Path) -> None:
    upload(daemon, tmp_path, "web-demo", "1.0")
    with daemon.client() as client:
        home = client.get("/")
        page = client.get("/project/web-demo/")
        assert page.headers["cache-control"] == "no-cache"
        again = client.get("/project/web-demo/", headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304
        zipped = client.get("/project/web-demo/", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.text == page.text
        found = client.get("/search", params={"q": "second"}).text
        assert "No hosted project matches" in found
        upload(daemon, tmp_path, "web-demo", "1.1")
        upload(daemon, tmp_path, "second-project", "0.1")
        changed = client.get("/project/web-demo/")
        assert changed.headers["etag"] != page.headers["etag"]
        assert ">1.1</span>" in changed.text
        assert "second-project" in client.get("/").text
        assert "second-project" not in home.text
        assert "second-project" in client.get("/search", params={"q": "second"}).text
        # Every HTML page says where scripts may come from; the stylesheet is kept for good.
        for path in (
            "/",
            "/search?q=web",
            "/project/web-demo/",
            "/project/web-demo/1.0/",
            "/builds/",
        ):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "script-src 'self'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
        style = client.get("/static/style.css")
        assert style.headers["content-type"] == "text/css; charset=utf-8"
        link = next(line for line in home.text.splitlines() if "style.css" in line)
        versioned = link.split('href="')[1].split('"')[0]
        assert "immutable" in client.get(versioned).headers["cache-control"]


def test_project_urls_redirect_to_their_normal_form(daemon: Daemon, tmp_path: Path) -> None:
    upload(daemon, tmp_path, "web-demo", "1.0")
    with daemon.client() as client:
        name = client.get("/project/Web_Demo/")
        version = client.get("/project/web-demo/1.0.0/")
        missing = client.get("/project/web-demo/9.9/")
        slash = client.get("/project/web-demo")
        builds = client.get("/builds")
    assert (name.status_code, name.headers["location"]) == (301, "/project/web-demo/")
    assert (version.status_code, version.headers["location"]) == (301, "/project/web-demo/1.0/")
    assert (slash.status_code, slash.headers["location"]) == (301, "/project/web-demo/")
    assert (builds.status_code, builds.headers["location"]) == (301, "/builds/")
    assert missing.status_code == 404
    assert "web-demo" in missing.text


def test_the_wheel_ships_the_templates_and_static_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("insiders-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for part in (
        "templates/base.html",
        "templates/project.html",
        "static/style.css",
        "static/app.js",
    ):
        assert f"insiders/index/ui/{part}" in names


# -- the page store, without HTTP ---------------------------------------------------------------


async def test_pages_follow_the_store_and_the_watched_state(tmp_path: Path) -> None:
    """Rendered once, served as stored bytes, and rendered again after each change it shows."""
    store = await trio.to_thread.run_sync(Store.open, tmp_path / "data")
    repos = await trio.to_thread.run_sync(Repos.open, tmp_path / "data")
    site = views.Site(
        base_url="http://127.0.0.1:31411/", version="0", upstream_mode="none", upstream_url=None
    )
    upstream = Upstream(None, "none", ttl=1, timeout=1, cache_dir=tmp_path / "cache")
    pages = WebPages(store, repos, tmp_path / "data" / "logs", lambda: site, upstream)
    wheel = tmp_path / wheel_filename("watched-demo", "1.0")
    wheel.write_bytes(make_wheel("watched-demo", "1.0"))
    await publish_file(store, wheel)
    name = normalize("watched-demo")

    first = await pages.project(name, None)
    assert first is not None
    assert await pages.project(name, None) is first  # kept: no second render
    home = await pages.home()
    assert b"watched-demo" in home.body

    source = tmp_path / "src"
    source.mkdir()
    await repos.add(make_repo(parse_spec(str(source)), "watched-demo"))
    watched = await pages.project(name, None)
    assert watched is not None
    assert b"Built from git" in watched.body

    def failed(state: RepoState) -> RepoState:
        return msgspec.structs.replace(
            state, last_check=1.0, last_error="v2.0: python -m build failed", last_error_at=1.0
        )

    await repos.update_state(name, failed)
    failing = await pages.project(name, None)
    assert failing is not None
    assert b"python -m build failed" in failing.body
    assert b"python -m build failed" in (await pages.builds()).body

    newer = tmp_path / wheel_filename("watched-demo", "1.1")
    newer.write_bytes(make_wheel("watched-demo", "1.1"))
    await publish_file(store, newer)
    latest = await pages.project(name, None)
    assert latest is not None
    assert b'<span class="version">1.1</span>' in latest.body
    assert (await pages.home()) is not home
    await upstream.aclose()


def test_failed_versions_newest_first_else_the_checks_own_error() -> None:
    """Each failed version with its message, newest first; with none, the check's own error
    (listing or fetching failed before any version was tried)."""
    versions = {
        "1.9": VersionRecord(status="failed", at=3.0, message="tests failed"),
        "2.0": VersionRecord(status="failed", at=5.0, message="build failed"),
        "1.8": VersionRecord(status="published", at=1.0),
    }
    repo = msgspec.structs.replace(
        make_repo(parse_spec("/srv/demo"), "demo", now=0.0),
        state=RepoState(last_error="2.0: build failed", last_error_at=5.0, versions=versions),
    )
    assert views.failed_versions(repo) == (
        views.Failure(version="2.0", error="build failed", at=5.0),
        views.Failure(version="1.9", error="tests failed", at=3.0),
    )
    unreachable = msgspec.structs.replace(
        repo, state=RepoState(last_error="git ls-remote failed", last_error_at=7.0)
    )
    assert views.failed_versions(unreachable) == (
        views.Failure(version=None, error="git ls-remote failed", at=7.0),
    )


# -- what a page answers first (issue 25), by tables ---------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "sources", "has", "has_not"),
    [
        # The empty permalink in every heading is a Tab stop that says nothing: dropped.
        ("## Install\n", (), ['<h3 id="user-content-install">Install</h3>'], ["<a"]),
        # A link a heading really holds stays.
        ("## See [docs](#use)\n", (), ['<a href="#user-content-use"'], []),
        # `lang` is a human language: a code block's language name goes to data-lang.
        ("```python\nx = 1\n```\n", (), ['data-lang="python"', 'tabindex="0"'], [" lang="]),
        # A picture from another host is a link to it, not a request from the reader's browser.
        (
            "![a pixel](https://pics.example/p.png)\n",
            (),
            ['href="https://pics.example/p.png"', "a pixel (a picture from pics.example)"],
            ["<img"],
        ),
        # ... inside a link (a badge), its name only: links do not nest.
        (
            "[![build](https://ci.example/b.svg)](https://ci.example/)\n",
            (),
            ['<span class="picture-elsewhere">build (a picture from ci.example)</span>'],
            ["<img", 'href="https://ci.example/b.svg"'],
        ),
        # server.image-sources lets them through, in the CSP's own syntax.
        ("![p](https://pics.example/p.png)\n", ("https:",), ['<img src="https://pics.example'], []),
        ("![p](https://pics.example/p.png)\n", ("*.example",), ["<img"], []),
        ("![p](https://pics.example/p.png)\n", ("https://other.example",), [], ["<img"]),
        # Form fields go (a task list's checkboxes stay, named).
        ('<form><input name="x"></form>\n', (), [], ["<input"]),
        ("- [x] done\n", (), ['aria-label="done"'], []),
        # A picture of the index's own without alternative text is named by its file.
        ('<img src="docs/shot.png">\n', (), ['alt="shot.png"'], []),
    ],
)
def test_descriptions_fit_the_page(
    markdown: str, sources: tuple[str, ...], has: list[str], has_not: list[str]
) -> None:
    html = str(render_description(markdown, "text/markdown", sources))
    for part in has:
        assert part in html, html
    for part in has_not:
        assert part not in html, html


def site(**overrides: object) -> views.Site:
    settings: dict[str, object] = {
        "base_url": "http://127.0.0.1:31411/",
        "version": "1",
        "upstream_mode": "redirect",
        "upstream_url": "https://upstream.example/simple/",
    }
    return views.Site(**{**settings, **overrides})  # type: ignore[arg-type]


def test_install_lines_name_the_index() -> None:
    lines = {line.tool: line.command for line in release.install_lines(site(), "demo", None)}
    assert lines == {
        "pip": "pip install --index-url http://127.0.0.1:31411/simple/ demo",
        "uv": "UV_DEFAULT_INDEX=http://127.0.0.1:31411/simple/ uv pip install demo",
    }
    pinned = release.install_lines(site(read_access="token"), "demo", "1.0")
    assert pinned[0].command == (
        'pip install --index-url "http://__token__:${INSIDERS_TOKEN}@127.0.0.1:31411/simple/"'
        " demo==1.0"
    )


def test_upstream_project_pages() -> None:
    assert site().upstream_project_url == "https://upstream.example/project/"
    assert site(upstream_url="https://mirror.example/pypi/").upstream_project_url is None


@pytest.mark.parametrize(
    ("requires", "extras", "expected"),
    [
        (["httpx>=0.27"], [], [(None, ("httpx>=0.27",))]),
        (
            ['socksio==1.*; extra == "socks"', 'rich; python_version >= "3.9" and extra == "cli"'],
            ["socks", "cli", "empty"],
            [
                ("socks", ("socksio==1.*",)),
                ("cli", ('rich; python_version >= "3.9"',)),
                ("empty", ()),
            ],
        ),
        # A marker that joins the extra with `or` is not one extra's: kept whole.
        (
            ['a; extra == "x" or os_name == "nt"'],
            [],
            [(None, ('a; extra == "x" or os_name == "nt"',))],
        ),
        (["not a requirement ("], [], [(None, ("not a requirement (",))]),
    ],
)
def test_requirements_with_extras_and_markers(
    requires: list[str], extras: list[str], expected: list[tuple[str | None, tuple[str, ...]]]
) -> None:
    groups = release.requirements({"requires_dist": requires, "provides_extra": extras})
    assert [(g.extra, g.items) for g in groups] == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"license_expression": "MIT", "license": "BSD"}, "MIT"),
        ({"license": "Apache 2.0\n\nThe whole text..."}, "Apache 2.0"),
        (
            {"classifiers": ["License :: OSI Approved :: MIT License", "Framework :: Trio"]},
            "MIT License",
        ),
        ({"classifiers": ["Framework :: Trio"]}, None),
    ],
)
def test_the_license_from_either_place(fields: dict[str, object], expected: str | None) -> None:
    assert release.license_of(fields) == expected


def test_authors_parsed() -> None:
    people = release.people(None, "Ada Lovelace <ada@example.org>, bob@example.org")
    assert [(p.name, p.email) for p in people] == [
        ("Ada Lovelace", "ada@example.org"),
        ("bob@example.org", "bob@example.org"),
    ]
    assert [(p.name, p.email) for p in release.people("Aurora team", None)] == [
        ("Aurora team", None)
    ]


def test_search_compares_names_the_pep_503_way() -> None:
    def item(name: str, summary: str = "") -> views.Listing:
        return views.Listing(
            name=name,
            normalized=normalize(name),
            latest="1",
            summary=summary,
            last_upload=0,
            versions=1,
        )

    listings = [item("mkdocs-material"), item("Zope.Interface"), item("requests")]
    for query in ("mkdocs_material", "MkDocs.Material", "mkdocs material"):
        assert [i.name for i in views.search(listings, query)] == ["mkdocs-material"], query
    assert [i.name for i in views.search(listings, "zope_interface")] == ["Zope.Interface"]
    assert [i.name for i in views.close_names(listings, "reqests")] == ["requests"]
    assert views.close_names(listings, "zzz") == []


def test_build_logs_say_why_and_keep_the_servers_paths() -> None:
    log = (
        "insiders: tag: v0.3.0, commit eb7185172df3bf3adc28389e3147c1468b299e38, X=1\n"
        '  File "/srv/cache/builds/tmpab12/tmp/env/hatchling/core.py", line 1\n'
        "ValueError: Dependency #1 is invalid\n"
        "    not a spec\n"
        "        ^\n"
        "\n"
        "TIP pass --env-dir\n"
        "ERROR Backend subprocess exited\n"
    )
    assert build_logs.provenance(log) == build_logs.Provenance(
        "v0.3.0", "eb7185172df3bf3adc28389e3147c1468b299e38"
    )
    assert build_logs.error_lines(log) == (
        "ValueError: Dependency #1 is invalid",
        "    not a spec",
        "        ^",
        "ERROR Backend subprocess exited",
    )
    assert build_logs.error_lines("a\nb\nexit status 1\n") == ("a", "b", "exit status 1")
    cuts = build_logs.server_paths(Path("/srv/data"), Path("/srv/cache"))
    assert build_logs.cut_paths(log, cuts).splitlines()[1] == (
        '  File "$SCRATCH/tmp/env/hatchling/core.py", line 1'
    )
    assert build_logs.cut_paths("/srv/data/logs and /srv/database", cuts) == (
        "$DATA/logs and /srv/database"
    )
