"""Every upload refusal: a clear 4xx, and nothing stored."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support import Daemon, make_wheel, wheel_filename


def listed(daemon: Daemon) -> list[str]:
    with daemon.client() as client:
        root = client.get("/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    return [p["name"] for p in root.json()["projects"]]


def post(daemon: Daemon, filename: str, content: bytes, **fields: str) -> httpx.Response:
    form = {":action": "file_upload", "protocol_version": "1", **fields}
    auth = fields.pop("auth", None)
    with daemon.client() as client:
        return client.post(
            "/legacy/",
            data={k: v for k, v in form.items() if k != "auth"},
            files={"content": (filename, content)},
            auth=("__token__", daemon.token) if auth is None else tuple(auth.split(":", 1)),
        )


def wheel_form(name: str = "good", version: str = "1.0", **overrides: str) -> dict[str, str]:
    return {"name": name, "version": version, **overrides}


# The valid wheel good-1.0 sent with a form that is wrong: {test id: (form, status, message)}.
BAD_FORMS = {
    "wrong-sha256": (wheel_form(sha256_digest="0" * 64), 400, "sha256_digest does not match"),
    "wrong-md5": (wheel_form(md5_digest="0" * 32), 400, "md5_digest does not match"),
    "name-mismatch": (wheel_form(name="other"), 400, "does not match the form's project"),
    "version-mismatch": (wheel_form(version="2.0"), 400, "does not match the form's project"),
    "bad-action": (wheel_form(**{":action": "submit"}), 400, "Unsupported :action"),
    "bad-name": (wheel_form(name="bad name!"), 400, "Invalid project name"),
    "bad-version": (wheel_form(version="one"), 400, "Invalid version"),
    "not-token-user": (wheel_form(auth="alice:secret"), 403, "user name __token__"),
    "wrong-token": (wheel_form(auth="__token__:insiders-wrong"), 403, "Invalid token"),
}
# A file that is not what it says, sent with the right form: {test id: (filename, content,
# message)}; each is a 400.
BAD_FILES = {
    "not-a-dist": ("good-1.0.exe", b"MZ", "neither a wheel"),
    "not-a-zip": ("good-1.0-py3-none-any.whl", b"not a zip", "not a readable zip archive"),
    "metadata-name": (
        wheel_filename("good", "1.0"),
        make_wheel("good", "1.0", meta_name="evil"),
        "metadata names the project 'evil'",
    ),
    "metadata-version": (
        wheel_filename("good", "1.0"),
        make_wheel("good", "1.1"),
        "expected one good-1.0.dist-info/METADATA",
    ),
    "broken-sdist": ("good-1.0.tar.gz", b"\x1f\x8b garbage", "not a readable .tar.gz"),
}


def assert_refused(daemon: Daemon, response: httpx.Response, status: int, message: str) -> None:
    """A refusal that says why, in the body and in the status line, and stored nothing."""
    assert response.status_code == status, response.text
    assert message in response.text
    # The message is in the status line too (http/reason.py), as the public index does it.
    assert response.reason_phrase == response.text.strip().splitlines()[0]
    assert listed(daemon) == []
    assert list((daemon.data_dir / "incoming").iterdir()) == []


@pytest.mark.parametrize(("fields", "status", "message"), BAD_FORMS.values(), ids=BAD_FORMS)
def test_refused_form(daemon: Daemon, fields: dict[str, str], status: int, message: str) -> None:
    response = post(daemon, wheel_filename("good", "1.0"), make_wheel("good", "1.0"), **fields)
    assert_refused(daemon, response, status, message)


@pytest.mark.parametrize(("filename", "content", "message"), BAD_FILES.values(), ids=BAD_FILES)
def test_refused_file(daemon: Daemon, filename: str, content: bytes, message: str) -> None:
    response = post(daemon, filename, content, **wheel_form())
    assert_refused(daemon, response, 400, message)


def test_sdist_without_pkg_info(daemon: Daemon) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"print('hi')\n"
        info = tarfile.TarInfo("good-1.0/setup.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    response = post(daemon, "good-1.0.tar.gz", buffer.getvalue(), **wheel_form())
    assert response.status_code == 400
    assert "has no top-level PKG-INFO" in response.text


def test_missing_credentials(daemon: Daemon) -> None:
    with daemon.client() as client:
        response = client.post(
            "/legacy/",
            data={":action": "file_upload", "name": "good", "version": "1.0"},
            files={"content": (wheel_filename("good", "1.0"), make_wheel("good", "1.0"))},
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="insiders"'
    assert "__token__" in response.text
    assert listed(daemon) == []


def test_not_multipart(daemon: Daemon) -> None:
    with daemon.client() as client:
        response = client.post("/legacy/", content=b"{}", auth=("__token__", daemon.token))
    assert response.status_code == 400
    assert "multipart/form-data" in response.text


def test_truncated_body_stores_nothing(daemon: Daemon) -> None:
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="content"; '
        b'filename="good-1.0-py3-none-any.whl"\r\n\r\n' + make_wheel("good", "1.0")
    )
    with daemon.client() as client:
        response = client.post(
            "/legacy/",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
            auth=("__token__", daemon.token),
        )
    assert response.status_code == 400
    assert "ended before its closing boundary" in response.text
    assert listed(daemon) == []


def test_existing_file(daemon: Daemon) -> None:
    first = make_wheel("good", "1.0", b"one")
    assert post(daemon, wheel_filename("good", "1.0"), first, **wheel_form()).status_code == 200
    same = post(daemon, wheel_filename("good", "1.0"), first, **wheel_form())
    assert same.status_code == 200
    assert "same content" in same.text
    other = post(
        daemon, wheel_filename("good", "1.0"), make_wheel("good", "1.0", b"two"), **wheel_form()
    )
    assert other.status_code == 409
    assert "File already exists" in other.text
    with daemon.client() as client:
        stored = client.get(f"/files/good/{wheel_filename('good', '1.0')}").content
    assert stored == first


def test_size_limit(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[server]\nmax-upload-size = 100000\n")
    daemon = Daemon(tmp_path / "d", ["--config", str(config), "--upstream-mode", "none"]).start()
    try:
        big = make_wheel("good", "1.0", hashlib.sha512(b"x").digest() * 4000)
        response = post(daemon, wheel_filename("good", "1.0"), big, **wheel_form())
        assert response.status_code == 413
        assert "the limit is 100000 bytes" in response.text
        assert listed(daemon) == []
    finally:
        daemon.stop()


def test_zip_bomb_metadata_is_bounded(daemon: Daemon) -> None:
    """A METADATA that inflates past the limit is refused without reading it all."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "good-1.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: good\nVersion: 1.0\n\n" + b"\0" * (20 << 20),
        )
    response = post(daemon, wheel_filename("good", "1.0"), buffer.getvalue(), **wheel_form())
    assert response.status_code == 400
    assert "larger than 8 MiB" in response.text
