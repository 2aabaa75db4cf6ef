"""A full disk under the data directory and under the cache directory (a real, small tmpfs).

Uploads are refused with 507 "no space left", control commands say so too, the index keeps
serving every file it had, nothing partial is listed, and all works again once space is freed.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.faults.places import JSON, fill, http_server, json_page, send_body, tmpfs
from tests.support import Daemon, make_wheel, run_ctl, wheel_filename


def ctl(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return run_ctl(daemon, *args, timeout=30)


def upload(daemon: Daemon, version: str, size: int) -> tuple[int, str, str]:
    """Upload a wheel of about `size` random bytes; (status, body, its sha256)."""
    content = make_wheel(
        "filling", version, hashlib.sha512(version.encode()).digest() * (size // 64)
    )
    path = daemon.home / wheel_filename("filling", version)
    path.write_bytes(content)
    response = daemon.upload(path)
    path.unlink()
    return response.status_code, response.text, hashlib.sha256(content).hexdigest()


def served(daemon: Daemon) -> dict[str, str]:
    """Every file the index lists for `filling`, fetched: filename -> sha256 of the bytes."""
    with daemon.client() as client:
        page = client.get("/simple/filling/", headers={"Accept": JSON})
        assert page.status_code == 200
        result = {}
        for entry in page.json()["files"]:
            body = client.get(f"/files/filling/{entry['filename']}").content
            assert hashlib.sha256(body).hexdigest() == entry["hashes"]["sha256"]
            result[entry["filename"]] = entry["hashes"]["sha256"]
        return result


@pytest.fixture
def full_data(tmp_path: Path) -> Iterator[Daemon]:
    # The daemon's data directory is home/data/insiders: the tmpfs is home/data.
    with tmpfs(tmp_path / "d" / "data", "3m"):
        daemon = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
        try:
            yield daemon
        finally:
            if daemon.proc and daemon.proc.poll() is None:
                daemon.stop()


def test_a_full_data_disk(full_data: Daemon, tmp_path: Path) -> None:
    daemon = full_data
    published: dict[str, str] = {}
    refusal = None
    for n in range(40):
        status, body, sha256 = upload(daemon, f"1.{n}", 256 << 10)
        if status == 200:
            published[wheel_filename("filling", f"1.{n}")] = sha256
            continue
        refusal = (status, body)
        break
    assert refusal is not None, "the disk never filled"
    assert refusal[0] == 507, refusal
    assert "no space left" in refusal[1]
    # Whatever space is left goes to a filler, so that the smallest write fails too.
    filler = fill(daemon.data_dir / "filler")
    status, body, _ = upload(daemon, "2.0", 1 << 10)
    assert (status, "no space left" in body) == (507, True)
    # The control plane says what is wrong rather than "this is a bug".
    created = ctl(daemon, "tokens", "create", "while-full")
    assert created.returncode != 0
    assert "no space left" in created.stdout + created.stderr
    assert "bug" not in created.stdout + created.stderr
    # The index keeps serving everything it acknowledged, and lists nothing partial.
    assert served(daemon) == published
    assert list((daemon.data_dir / "incoming").iterdir()) == []
    # Space again: uploads and commands work.
    filler.unlink()
    status, body, sha256 = upload(daemon, "3.0", 1 << 10)
    assert status == 200, body
    published[wheel_filename("filling", "3.0")] = sha256
    assert served(daemon) == published
    assert ctl(daemon, "tokens", "create", "after").returncode == 0
    assert daemon.proc is not None
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.log()


def upstream_page(handler: BaseHTTPRequestHandler) -> None:
    name = handler.path.strip("/").split("/")[-1]
    wheel = f"{name.replace('-', '_')}-1.0-py3-none-any.whl"
    send_body(handler, json_page(name, [(wheel, f"/files/{name}-1.0-py3-none-any.whl", "0" * 64)]))


def test_a_full_cache_disk(tmp_path: Path) -> None:
    with (
        tmpfs(tmp_path / "d" / "cache", "1m") as cachefs,
        http_server(upstream_page) as upstream,
    ):
        daemon = Daemon(
            tmp_path / "d",
            [
                "--upstream-mode",
                "proxy",
                "--upstream",
                f"{upstream}/simple/",
            ],
        ).start()
        try:
            status, body, _ = upload(daemon, "1.0", 1 << 10)
            assert status == 200, body
            fill(cachefs / "filler")
            with daemon.client() as client:
                # Proxied pages are served although no copy of them can be kept.
                for name in ("one", "two", "three"):
                    page = client.get(f"/simple/{name}/", headers={"Accept": JSON})
                    assert page.status_code == 200, page.text
                    assert page.json()["name"] == name
            assert set(served(daemon)) == {wheel_filename("filling", "1.0")}
            assert "cannot keep a copy" in daemon.log()
            assert daemon.proc is not None
            assert daemon.proc.poll() is None
            assert "Traceback" not in daemon.log()
        finally:
            daemon.stop()
