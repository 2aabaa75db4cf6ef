"""Hostile uploads through the real daemon: one release per version, names that are safe to list,
precise refusals instead of 500s, bounded memory, and connections that never hang after a refusal.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import BIN, Daemon, isolated_env, make_wheel, pip_download, pip_install

SMALL_LIMIT = 100_000


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon with a small upload limit, so that the limits are quick to reach."""
    config = tmp_path / "config.toml"
    config.write_text(f"[server]\nmax-upload-size = {SMALL_LIMIT}\n")
    running = Daemon(tmp_path / "d", ["--config", str(config), "--upstream-mode", "none"]).start()
    yield running
    if running.proc and running.proc.poll() is None:
        running.stop()


def post(daemon: Daemon, filename: str, content: bytes, name: str, version: str) -> httpx.Response:
    with daemon.client() as client:
        return client.post(
            "/legacy/",
            data={
                ":action": "file_upload",
                "protocol_version": "1",
                "name": name,
                "version": version,
                "sha256_digest": hashlib.sha256(content).hexdigest(),
            },
            files={"content": (filename, content)},
            auth=("__token__", daemon.token),
        )


def listed_files(daemon: Daemon, project: str) -> list[str]:
    with daemon.client() as client:
        page = client.get(
            f"/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
    return [f["filename"] for f in page.json()["files"]] if page.status_code == 200 else []


def raw_exchange(daemon: Daemon, data: bytes, *, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout`): the whole answer."""
    host, port = daemon.url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def rss_kib(daemon: Daemon) -> int:
    assert daemon.proc is not None
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1))


# -- finding 4: a published version never gains other bytes ------------------------------------


def test_one_release_per_version(small: Daemon, tmp_path: Path) -> None:
    first = make_wheel("foo_bar", "1.0", b"the published bytes")
    assert post(small, "foo_bar-1.0-py3-none-any.whl", first, "foo-bar", "1.0").status_code == 200
    attempts = {
        # other spellings of the name: not the normalised filename the spec asks for
        "FOO.BAR-1.0-py3-none-any.whl": ("FOO.BAR", "1.0", 400, "foo_bar-1.0-py3-none-any.whl"),
        "Foo_Bar-1.0-py3-none-any.whl": ("Foo_Bar", "1.0", 400, "foo_bar-1.0-py3-none-any.whl"),
        # other spellings of the version
        "foo_bar-01.0-py3-none-any.whl": ("foo_bar", "01.0", 400, "foo_bar-1.0-py3-none-any.whl"),
        "foo_bar-1.0.0-py3-none-any.whl": ("foo_bar", "1.0.0", 409, "upload it as 1.0"),
    }
    for filename, (name, version, status, message) in attempts.items():
        other = make_wheel(name, version, b"other bytes for " + filename.encode())
        response = post(small, filename, other, name, version)
        assert response.status_code == status, (filename, response.text)
        assert message in response.text, (filename, response.text)
    assert listed_files(small, "foo-bar") == ["foo_bar-1.0-py3-none-any.whl"]
    # Real pip asking for the version gets the bytes published first.
    target = tmp_path / "downloaded"
    result = pip_download(small.index, target, "--no-deps", "foo-bar==1.0.0", home=tmp_path)
    assert result.returncode == 0, result.stderr
    [downloaded] = target.iterdir()
    assert downloaded.read_bytes() == first


def test_build_tags_and_one_sdist_per_release(small: Daemon) -> None:
    wheel = make_wheel("foo_bar", "1.0", b"first")
    assert post(small, "foo_bar-1.0-py3-none-any.whl", wheel, "foo_bar", "1.0").status_code == 200
    # A build tag is the spec's way to replace a broken wheel: it is a new file, accepted.
    rebuilt = make_wheel("foo_bar", "1.0", b"rebuilt")
    response = post(small, "foo_bar-1.0-1-py3-none-any.whl", rebuilt, "foo_bar", "1.0")
    assert response.status_code == 200, response.text
    # Upper-case tags are the same tags.
    again = make_wheel("foo_bar", "1.0", b"again")
    response = post(small, "foo_bar-1.0-PY3-none-any.whl", again, "foo_bar", "1.0")
    assert response.status_code == 409, response.text
    assert "same build tag and tags" in response.text
    assert sorted(listed_files(small, "foo-bar")) == [
        "foo_bar-1.0-1-py3-none-any.whl",
        "foo_bar-1.0-py3-none-any.whl",
    ]


# -- finding 5: only names that can be listed and fetched ---------------------------------------


@pytest.mark.parametrize(
    "tag",
    ["an#y", "an?y", "an\x7fy", "an y", "an<y", "an\u202ey", "an%23y", "an/y", "an\\y"],
    ids=["hash", "question", "del", "space", "lt", "rlo", "percent", "slash", "backslash"],
)
def test_unsafe_wheel_tags_are_refused(small: Daemon, tag: str) -> None:
    response = post(small, f"foo-1.0-py3-none-{tag}.whl", make_wheel("foo", "1.0"), "foo", "1.0")
    assert response.status_code == 400, response.text
    assert "Invalid filename" in response.text
    assert listed_files(small, "foo") == []


@pytest.mark.parametrize("letter", ["\u212a", "\u017f"], ids=["kelvin-sign", "long-s"])
def test_non_ascii_names_are_refused(small: Daemon, letter: str) -> None:
    name = f"{letter}elvin"
    # In the form and in the filename:
    response = post(small, f"{name}-1.0-py3-none-any.whl", make_wheel(name, "1.0"), name, "1.0")
    assert response.status_code == 400, response.text
    # In the metadata only, under an ASCII filename that it would normalise to:
    ascii_name = name.lower().replace("\u212a", "k").replace("\u017f", "s")
    content = make_wheel(ascii_name, "1.0", meta_name=name)
    response = post(small, f"{ascii_name}-1.0-py3-none-any.whl", content, ascii_name, "1.0")
    assert response.status_code == 400, response.text
    assert "not a valid project name" in response.text
    assert listed_files(small, ascii_name) == []


# -- finding 6: precise 4xx instead of 500 --------------------------------------------------------


def test_too_many_form_parts(small: Daemon) -> None:
    with small.client() as client:
        response = client.post(
            "/legacy/",
            data={f"field{n}": "x" for n in range(1100)},
            files={"content": ("foo-1.0-py3-none-any.whl", make_wheel("foo", "1.0"))},
            auth=("__token__", small.token),
        )
    assert response.status_code == 413
    assert "Too many parts" in response.text


def test_a_version_of_5000_digits(small: Daemon) -> None:
    digits = "1" * 5000
    response = post(small, "foo-1.0-py3-none-any.whl", make_wheel("foo", "1.0"), "foo", digits)
    assert response.status_code == 400
    assert "Invalid version" in response.text
    assert len(response.text) < 500
    wheel = make_wheel("foo", "1.0")
    assert post(small, "foo-1.0-py3-none-any.whl", wheel, "foo", "1.0").status_code == 200
    with small.client() as client:
        assert client.get(f"/pypi/foo/{digits}/json").status_code == 404
    yank = subprocess.run(
        [str(BIN / "insidersctl"), "yank", "foo", digits],
        env=isolated_env(small.home),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert yank.returncode != 0
    assert "bug" not in yank.stdout + yank.stderr
    assert "no version" in yank.stdout + yank.stderr


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("foo-1.0-py3-none-an\x00y.whl", "foo"),
        (f"{'a' * 300}-1.0-py3-none-any.whl", "a" * 300),
    ],
    ids=["nul", "name-over-255-bytes"],
)
def test_filenames_no_file_system_holds(small: Daemon, filename: str, name: str) -> None:
    response = post(small, filename, make_wheel(name, "1.0"), name, "1.0")
    assert response.status_code == 400, response.text
    assert small.proc is not None
    assert small.proc.poll() is None


def test_a_non_ascii_digest(small: Daemon) -> None:
    """Found by the fuzz: hmac.compare_digest raised TypeError on a non-ASCII str (a 500)."""
    content = make_wheel("foo", "1.0")
    with small.client() as client:
        response = client.post(
            "/legacy/",
            data={":action": "file_upload", "name": "foo", "version": "1.0", "md5_digest": "é"},
            files={"content": ("foo-1.0-py3-none-any.whl", content)},
            auth=("__token__", small.token),
        )
    assert response.status_code == 400, response.text
    assert "md5_digest does not match" in response.text


def test_a_binary_authorization_header(small: Daemon) -> None:
    answer = raw_exchange(
        small,
        b"POST /legacy/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic \xff\xfe\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"Malformed Authorization header" in answer


# -- finding 7: bounded memory whatever the framing ---------------------------------------------


def chunked(data: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_preamble_without_boundary_is_refused_early(small: Daemon) -> None:
    before = rss_kib(small)
    with small.client() as client:
        response = client.post(
            "/legacy/",
            content=chunked(b"x" * (64 << 20)),  # chunked: no length announced
            headers={"Content-Type": "multipart/form-data; boundary=never"},
            auth=("__token__", small.token),
        )
    assert response.status_code == 413, response.text
    assert "without a boundary" in response.text
    assert rss_kib(small) - before < 32 << 10


def test_chunked_bodies_have_a_cap(small: Daemon) -> None:
    """The file and fields limits hold for chunked bodies; so does one for everything else."""
    boundary = b"b0undary"
    big_part = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="attestations"; '
        b'filename="x"\r\n\r\n' + b"x" * (20 << 20) + b"\r\n"
    )
    with small.client() as client:
        response = client.post(
            "/legacy/",
            content=chunked(big_part + b"--" + boundary + b"--\r\n"),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"},
            auth=("__token__", small.token),
        )
    assert response.status_code == 413, response.text


# -- finding 8: no hang after a refusal on a kept-alive connection --------------------------------


@pytest.mark.parametrize("path", ["/legacy/", "/anything", "/pypi/foo/json"])
def test_the_next_request_after_a_refusal_never_hangs(small: Daemon, path: str) -> None:
    auth = base64.b64encode(f"__token__:{small.token}".encode())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"Authorization: Basic "
        + auth
        + b"\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {SMALL_LIMIT * 4}\r\n\r\n".encode()
        + b'--b\r\nContent-Disposition: form-data; name="content"; '
        + b'filename="foo-1.0-py3-none-any.whl"\r\n\r\n'
    )
    host, port = small.url.split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + b"x" * (SMALL_LIMIT * 2))  # past the limit, not to the end
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        status_head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert status_head.startswith((b"http/1.1 4",)), status_head
        assert b"connection: close" in status_head
        # The next request on the same connection: answered, or the connection closed.
        try:
            sock.sendall(b"GET /simple/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass  # closed with our unread bytes in its buffer: closed all the same
    assert small.proc is not None
    assert small.proc.poll() is None


def test_a_steady_upload_still_works(small: Daemon, tmp_path: Path) -> None:
    """After all that, an ordinary wheel goes in and pip installs it."""
    wheel = make_wheel("plain", "2.0")
    assert post(small, "plain-2.0-py3-none-any.whl", wheel, "plain", "2.0").status_code == 200
    pip_install(small.index, tmp_path / "target", "plain==2.0")
