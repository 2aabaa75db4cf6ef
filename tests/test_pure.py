"""Table tests for the pure core: names, filenames, negotiation, rendering, upstream parsing."""

from __future__ import annotations

import json

import msgspec
import pytest
from packaging.version import Version

from insiders.config import PathSettings, resolve_directories
from insiders.documents import render
from insiders.documents.model import hosted_page
from insiders.documents.negotiate import Format, from_query, negotiate
from insiders.documents.parse import parse_html_page, parse_json_page
from insiders.errors import InvalidFilename
from insiders.index.upstream import points_at
from insiders.names import is_valid_name, normalize, parse_dist_filename
from insiders.store import Project, StoredFile


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("Demo_Pkg", "demo-pkg"),
        ("demo.pkg", "demo-pkg"),
        ("DEMO--._pkg", "demo-pkg"),
        ("mkdocs-material", "mkdocs-material"),
        ("A", "a"),
    ],
)
def test_normalize(name: str, normalized: str) -> None:
    assert normalize(name) == normalized


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("demo", True),
        ("demo-pkg.x_y", True),
        ("-demo", False),
        ("demo-", False),
        ("de mo", False),
        ("", False),
        ("d", True),
        ("démo", False),
    ],
)
def test_valid_names(name: str, valid: bool) -> None:
    assert is_valid_name(name) is valid


@pytest.mark.parametrize(
    ("filename", "name", "version", "kind"),
    [
        ("demo_pkg-1.0.0-py3-none-any.whl", "demo-pkg", "1.0.0", "wheel"),
        (
            "Demo_Pkg-1.0.0rc1-1-cp311-cp311-manylinux_2_17_x86_64.whl",
            "demo-pkg",
            "1.0.0rc1",
            "wheel",
        ),
        ("demo_pkg-2!1.0.post1.tar.gz", "demo-pkg", "2!1.0.post1", "sdist"),
        ("demo-pkg-1.0.zip", "demo-pkg", "1.0", "sdist"),
        (
            "mkdocs_material-9.5.0+insiders.4.53.0.tar.gz",
            "mkdocs-material",
            "9.5.0+insiders.4.53.0",
            "sdist",
        ),
    ],
)
def test_parse_dist_filename(filename: str, name: str, version: str, kind: str) -> None:
    parsed = parse_dist_filename(filename)
    assert (parsed.name, parsed.version, parsed.kind) == (name, Version(version), kind)
    assert parsed.has_core_metadata is (kind == "wheel")


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        ("demo.exe", "neither a wheel"),
        ("demo-1.0.whl", "demo-1.0.whl"),
        ("demo-notaversion.tar.gz", "demo-notaversion.tar.gz"),
        ("../demo-1.0.tar.gz", "not a plain file name"),
        (".demo-1.0.tar.gz", "not a plain file name"),
        ("", "not a plain file name"),
        # packaging parses these; their names are no project names (found by the fuzz test).
        ("1!2-1.0.tar.gz", "'1!2' is not a project name"),
        ("demo_-1.0-py3-none-any.whl", "'demo-' is not a project name"),
    ],
)
def test_parse_dist_filename_refusals(filename: str, message: str) -> None:
    with pytest.raises(InvalidFilename, match=message.replace(".", r"\.")):
        parse_dist_filename(filename)


J, H, L = Format.JSON, Format.HTML, Format.LEGACY_HTML


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, L),
        ("", L),
        ("text/html", L),
        ("application/vnd.pypi.simple.v1+json", J),
        ("application/vnd.pypi.simple.v1+html", H),
        ("application/vnd.pypi.simple.latest+json", J),
        ("*/*", L),
        ("text/*", L),
        ("application/*", H),
        # pip's header.
        (
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
            "text/html; q=0.01",
            J,
        ),
        # uv's header.
        (
            "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
            "text/html;q=0.01",
            J,
        ),
        ("text/html;q=0.9, application/vnd.pypi.simple.v1+json;q=0.5", L),
        ("application/vnd.pypi.simple.v1+json;q=0, text/html;q=0.1", L),
        ("APPLICATION/VND.PYPI.SIMPLE.V1+JSON", J),
        ("image/png", None),
        ("application/vnd.pypi.simple.v2+json", None),
        ("text/html;q=0", None),
        ("text/html;q=bogus", None),
    ],
)
def test_negotiate(accept: str | None, expected: Format | None) -> None:
    assert negotiate(accept) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/vnd.pypi.simple.v1+json", J),
        ("application/vnd.pypi.simple.v1 json", J),
        ("text/html", L),
        ("application/vnd.pypi.simple.v1+html", H),
        ("xml", None),
    ],
)
def test_format_query(value: str, expected: Format | None) -> None:
    assert from_query(value) is expected


def stored(filename: str, version: str, **kw: object) -> StoredFile:
    return StoredFile(
        filename=filename, version=version, size=10, sha256="ab" * 32, upload_time=0.5, **kw
    )  # type: ignore[arg-type]


PROJECT = Project(
    name="Demo_Pkg",
    files=(
        stored("demo_pkg-1.0.tar.gz", "1.0", requires_python="<4,>=3.8"),
        stored("demo_pkg-1.0-py3-none-any.whl", "1.0", metadata_sha256="cd" * 32),
        stored("demo_pkg-2.0-py3-none-any.whl", "2.0", yanked=True, yanked_reason='<b>"bad"</b>'),
        stored("demo_pkg-3.0-py3-none-any.whl", "3.0", yanked=True),
    ),
)


def test_render_project_html() -> None:
    html = render.project_html(hosted_page(PROJECT)).decode()
    assert '<meta name="pypi:repository-version" content="1.4">' in html
    assert '<meta name="pypi:project-status" content="active">' in html
    assert (
        '<a href="../../files/demo-pkg/demo_pkg-1.0.tar.gz#sha256=' + "ab" * 32 + '" '
        'data-requires-python="&lt;4,&gt;=3.8">demo_pkg-1.0.tar.gz</a>'
    ) in html
    metadata = (
        f'data-dist-info-metadata="sha256={"cd" * 32}" data-core-metadata="sha256={"cd" * 32}"'
    )
    assert metadata in html
    assert 'data-yanked="&lt;b&gt;&quot;bad&quot;&lt;/b&gt;"' in html
    assert 'data-yanked=""' in html


def test_render_project_json() -> None:
    page = json.loads(render.project_json(hosted_page(PROJECT)))
    assert page["meta"] == {"api-version": "1.4"}
    assert page["project-status"] == {"status": "active"}
    assert page["name"] == "demo-pkg"
    assert page["versions"] == ["1.0", "2.0", "3.0"]
    first, wheel, yanked_reason, yanked = page["files"]
    assert first["upload-time"] == "1970-01-01T00:00:00.500000Z"
    assert first["requires-python"] == "<4,>=3.8"
    assert "core-metadata" not in first
    assert wheel["core-metadata"] == {"sha256": "cd" * 32}
    assert "dist-info-metadata" not in wheel  # PEP 714
    assert yanked_reason["yanked"] == '<b>"bad"</b>'
    assert yanked["yanked"] is True


@pytest.mark.parametrize(
    ("status", "reason", "files", "meta"),
    [
        ("archived", "moved", 4, '<meta name="pypi:project-status-reason" content="moved">'),
        ("quarantined", '<i>"x"</i>', 0, 'content="&lt;i&gt;&quot;x&quot;&lt;/i&gt;"'),
        ("deprecated", None, 4, '<meta name="pypi:project-status" content="deprecated">'),
    ],
)
def test_render_project_status(status: str, reason: str | None, files: int, meta: str) -> None:
    """PEP 792: the status in both formats; a quarantined project lists no file."""
    project = msgspec.structs.replace(PROJECT, status=status, status_reason=reason)
    model = hosted_page(project)
    page = json.loads(render.project_json(model))
    assert page["project-status"] == {"status": status, **({"reason": reason} if reason else {})}
    assert len(page["files"]) == files
    html = render.project_html(model).decode()
    assert f'<meta name="pypi:project-status" content="{status}">' in html
    assert meta in html
    assert html.count("<a ") == files


def test_render_root() -> None:
    assert json.loads(render.root_json(["Demo_Pkg"])) == {
        "meta": {"api-version": "1.4"},
        "projects": [{"name": "Demo_Pkg"}],
    }
    assert b'<a href="demo-pkg/">Demo_Pkg</a>' in render.root_html(["Demo_Pkg"])


def test_upstream_pages_parse_to_the_same_model() -> None:
    """An upstream's HTML and JSON pages become the same links, with absolute URLs."""
    hosted = hosted_page(PROJECT)
    base = "https://index.example/simple/demo-pkg/"
    from_json = parse_json_page(render.project_json(hosted), base, "demo-pkg")
    from_html = parse_html_page(render.project_html(hosted), base, "demo-pkg")
    for parsed in (from_json, from_html):
        assert [f.filename for f in parsed.files] == [f.filename for f in PROJECT.files]
        assert parsed.files[0].url == "https://index.example/files/demo-pkg/demo_pkg-1.0.tar.gz"
        assert parsed.files[0].hashes == {"sha256": "ab" * 32}
        assert parsed.files[0].requires_python == "<4,>=3.8"
        assert parsed.files[1].core_metadata == {"sha256": "cd" * 32}
        assert parsed.files[2].yanked == '<b>"bad"</b>'
        assert parsed.files[3].yanked is True
    assert from_json.files[0].size == 10


@pytest.mark.parametrize(
    ("url", "host", "port", "loop"),
    [
        ("http://127.0.0.1:31411/simple/", "127.0.0.1", 31411, True),
        ("http://localhost:31411/simple/", "127.0.0.1", 31411, True),
        ("http://[::1]:31411/simple/", "127.0.0.1", 31411, True),
        ("http://127.0.0.1:31411/simple/", "0.0.0.0", 31411, True),
        ("http://127.0.0.1:31412/simple/", "127.0.0.1", 31411, False),
        ("https://index.example/simple/", "127.0.0.1", 443, False),
        ("http://index.example:31411/simple/", "index.example", 31411, True),
        ("file:///srv/simple/", "127.0.0.1", 31411, False),
    ],
)
def test_upstream_loop_detection(url: str, host: str, port: int, loop: bool) -> None:
    assert points_at(url, host, port) is loop


def test_directories_precedence() -> None:
    env = {
        "HOME": "/home/u",
        "XDG_DATA_HOME": "/x/data",
        "STATE_DIRECTORY": "/var/lib/insiders",
        "XDG_RUNTIME_DIR": "/run/user/1000",
    }
    dirs = resolve_directories(PathSettings(cache_dir="/c"), env)
    assert dirs.data.as_posix() == "/var/lib/insiders"  # systemd's over XDG
    assert dirs.cache.as_posix() == "/c"  # the setting over everything
    assert dirs.runtime.as_posix() == "/run/user/1000/insiders"
    plain = resolve_directories(PathSettings(), {"HOME": "/home/u", "XDG_DATA_HOME": "rel"})
    assert plain.data.as_posix() == "/home/u/.local/share/insiders"  # relative XDG is ignored


def test_remember_keeps_the_newest() -> None:
    from insiders.index.upstream import remember

    cache: dict[str, int] = {}
    for n, key in enumerate(["a", "b", "c", "a", "d"]):
        remember(cache, key, n, 3)
    assert cache == {"c": 2, "a": 3, "d": 4}
