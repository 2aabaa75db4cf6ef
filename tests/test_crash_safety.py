"""kill -9 at any instant leaves a store that lists only complete files whose hashes match."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import httpx

from tests.support import Daemon, make_wheel, wheel_filename

JSON = "application/vnd.pypi.simple.v1+json"


def upload_forever(daemon: Daemon, token: str, stop: threading.Event, start: int) -> list[str]:
    """Upload distinct ~1 MiB wheels until the daemon dies; returns those it acknowledged."""
    acknowledged = []
    rng = random.Random(start)
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        for n in range(start, start + 10_000):
            if stop.is_set():
                break
            version = f"1.{n}"
            wheel = make_wheel("crashy", version, rng.randbytes(1 << 20))
            try:
                response = client.post(
                    "/legacy/",
                    data={
                        ":action": "file_upload",
                        "name": "crashy",
                        "version": version,
                        "sha256_digest": hashlib.sha256(wheel).hexdigest(),
                    },
                    files={"content": (wheel_filename("crashy", version), wheel)},
                    auth=("__token__", token),
                )
            except httpx.HTTPError:
                break
            if response.status_code == 200:
                acknowledged.append(wheel_filename("crashy", version))
    return acknowledged


def check_store(daemon: Daemon) -> set[str]:
    """Every listed file downloads, has the listed size and hash, and so does its metadata."""
    with daemon.client() as client:
        response = client.get("/simple/crashy/", headers={"Accept": JSON})
        if response.status_code == 404:
            return set()
        files = response.json()["files"]
        for entry in files:
            body = client.get(f"/files/crashy/{entry['filename']}").content
            assert len(body) == entry["size"], entry["filename"]
            assert hashlib.sha256(body).hexdigest() == entry["hashes"]["sha256"]
            metadata = client.get(f"/files/crashy/{entry['filename']}.metadata").content
            assert hashlib.sha256(metadata).hexdigest() == entry["core-metadata"]["sha256"]
    return {entry["filename"] for entry in files}


def test_kill_during_uploads(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
    token = daemon.token
    rng = random.Random(1234)
    acknowledged: set[str] = set()
    start = 0
    for _round in range(8):
        stop = threading.Event()
        result: list[str] = []
        worker = threading.Thread(
            target=lambda r=result, e=stop, s=start: r.extend(upload_forever(daemon, token, e, s))
        )
        worker.start()
        # Let a few uploads land, then kill at an arbitrary instant, likely mid-upload.
        stop.wait(rng.uniform(0.3, 1.2))
        daemon.kill()
        stop.set()
        worker.join()
        acknowledged.update(result)
        start += 10_000
        daemon.start()
        listed = check_store(daemon)
        # Everything the daemon acknowledged survived; nothing half-written is listed.
        assert acknowledged <= listed
        assert list((daemon.data_dir / "incoming").iterdir()) == []
    assert len(acknowledged) > 8
    daemon.stop()
