"""Property-based fuzz (hypothesis) of distribution filenames and of the upload endpoint.

Bounded: a fixed number of examples, no per-example deadline (a real daemon answers), so the
fault suite stays within a few minutes.
"""

from __future__ import annotations

import base64
import hashlib
import string
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insiders.errors import InvalidFilename
from insiders.names import MAX_FILENAME, check_normalized, is_valid_name, parse_dist_filename
from tests.support import Daemon, make_wheel

# Pieces real filenames are made of, and the characters that broke things before.
pieces = st.sampled_from(
    ["foo", "Foo", "FOO.BAR", "foo_bar", "foo-bar", "1.0", "01.0", "1.0.0", "1!2", "1.0+local",
     "1", "py3", "none", "any", "cp311", "manylinux_2_17_x86_64", "py2.py3", ".whl", ".tar.gz",
     ".zip", "-", "_", ".", "#", "?", "%", " ", "<", "\x7f", "\x00", "\u202e", "\u212a", "\u017f",
     "/", "\\", "é", "\n"]
)  # fmt: skip
filenames = st.lists(pieces, min_size=1, max_size=12).map("".join) | st.text(max_size=60)


@settings(max_examples=3000, deadline=None)
@given(filenames)
def test_filenames_accepted_are_safe_to_list_and_fetch(filename: str) -> None:
    try:
        dist = parse_dist_filename(filename)
    except InvalidFilename:
        return  # the only way to refuse
    assert filename.isascii()
    assert len(filename) <= MAX_FILENAME
    assert quote(filename, safe="+!") == filename  # a URL path segment as it is
    assert filename[0] in string.ascii_letters + string.digits
    assert is_valid_name(dist.name)
    stem = f"{dist.name.replace('-', '_')}-{dist.version}"
    if filename.startswith((f"{stem}-", f"{stem}.")):
        check_normalized(dist)
    else:
        with pytest.raises(InvalidFilename, match="name it"):
            check_normalized(dist)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("fuzz")
    (home / "config.toml").write_text("[server]\nmax-upload-size = 200000\nbody-timeout = 5\n")
    daemon = Daemon(
        home / "d", ["--config", str(home / "config.toml"), "--upstream-mode", "none"]
    ).start()
    yield daemon
    daemon.stop()


field_values = st.text(max_size=40) | st.sampled_from(["file_upload", "foo", "1.0", "bdist_wheel"])
forms = st.dictionaries(
    st.sampled_from([":action", "name", "version", "filetype", "sha256_digest", "md5_digest",
                     "protocol_version", "metadata_version", "summary", "x"]),
    field_values,
    max_size=8,
)  # fmt: skip
names = st.sampled_from(
    ["foo", "foo_bar", "Foo", "FOO.BAR", "foo-bar", "\u212aelvin", "kelvin", "\u017foo", "a" * 130]
)
versions = st.sampled_from(["1.0", "01.0", "1.0.0", "2", "1!2.0", "1.0+local", "1" * 300, "x"])
tags = st.sampled_from(
    ["py3-none-any", "PY3-none-any", "py2.py3-none-any", "1-py3-none-any", "py3-none-an#y",
     "py3-none-an?y", "py3-none-an y", "py3-none-an\x7fy", "py3-none-an\x00y", "py3-none-an<y",
     "py3-none-\u202eany", "py3-none-an/y"]
)  # fmt: skip


@st.composite
def uploads(draw: st.DrawFn) -> tuple[dict[str, str], str, bytes]:
    """Mostly plausible uploads (a real wheel, a matching form) with one thing wrong, or not."""
    name, version = draw(names), draw(versions)
    if draw(st.booleans()):
        filename = f"{name.replace('-', '_')}-{version}-{draw(tags)}.whl"
    else:
        filename = draw(filenames)
    content = (
        make_wheel(name, version) if draw(st.integers(0, 3)) else draw(st.binary(max_size=500))
    )
    form = {":action": "file_upload", "name": name, "version": version, **draw(forms)}
    if draw(st.booleans()):
        form = {":action": "file_upload", "name": name, "version": version}
    return form, filename, content


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(upload=uploads(), chunked=st.booleans())
def test_the_upload_endpoint_never_fails(
    fuzzed: Daemon, upload: tuple[dict[str, str], str, bytes], chunked: bool
) -> None:
    form, filename, content = upload
    form = {
        **form,
        "sha256_digest": form.get("sha256_digest") or hashlib.sha256(content).hexdigest(),
    }
    request = httpx.Request(
        "POST", f"{fuzzed.url}/legacy/", data=form, files={"content": (filename, content)}
    )
    body = request.read()
    headers = dict(request.headers)
    basic = base64.b64encode(f"__token__:{fuzzed.token}".encode()).decode()
    headers["authorization"] = f"Basic {basic}"
    if chunked:
        headers.pop("content-length", None)
        stream: bytes | Iterator[bytes] = iter([body[: len(body) // 2], body[len(body) // 2 :]])
    else:
        stream = body
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{fuzzed.url}/legacy/", content=stream, headers=headers)
    assert response.status_code < 500 or response.status_code == 507, response.text
    assert response.status_code != 200 or response.text.startswith("OK")


def test_after_the_fuzz(fuzzed: Daemon) -> None:
    """Runs after the fuzz in this module: the daemon is up, no upload is left half-done."""
    assert fuzzed.proc is not None
    assert fuzzed.proc.poll() is None
    assert list((fuzzed.data_dir / "incoming").iterdir()) == []
    with fuzzed.client() as client:
        assert client.get("/simple/").status_code == 200
    assert "Traceback" not in fuzzed.log()


def test_accepted_files_are_listed_with_safe_names(fuzzed: Daemon, tmp_path: Path) -> None:
    with httpx.Client(base_url=fuzzed.url, timeout=30, follow_redirects=True) as client:
        root = client.get("/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        for project in root.json()["projects"]:
            page = client.get(
                f"/simple/{project['name']}/",
                headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            )
            for entry in page.json()["files"]:
                assert quote(entry["filename"], safe="+!") == entry["filename"]
                # As installers do: the file's URL is relative to the page that lists it (the
                # root lists display names; /files/ takes the normalised one).
                assert client.get(page.url.join(entry["url"])).status_code == 200
