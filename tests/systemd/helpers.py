"""What the tests under a real systemd do from the host: ports, a tiny wheel, uploads, requests.

The container shares the host's network namespace, so the host reaches a daemon in the container
at 127.0.0.1 and a port that is free on the host is free inside too.
"""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import time
import zipfile
from pathlib import Path

import httpx

from tests.systemd.nspawn_harness import Container

PROBE = "insiders-systemd-probe"


def probe_wheel(where: Path, version: str = "1.0") -> Path:
    """A minimal valid wheel, written directly (no build backend needed)."""
    module = PROBE.replace("-", "_")
    dist = f"{module}-{version}"
    files = {
        f"{module}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {version}\n\n"
        ).encode(),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }

    def digest(data: bytes) -> str:
        raw = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"sha256={raw}"

    record = "".join(f"{path},{digest(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist}.dist-info/RECORD"] = (record + f"{dist}.dist-info/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    path = where / f"{dist}-py3-none-any.whl"
    path.write_bytes(buffer.getvalue())
    return path


def upload(url: str, wheel: Path, token: str) -> httpx.Response:
    """A legacy-API upload, the way twine sends it."""
    data = wheel.read_bytes()
    name, version = wheel.name.split("-")[:2]
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": name.replace("_", "-"),
        "version": version,
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "metadata_version": "2.1",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
    }
    return httpx.post(
        url,
        data=fields,
        files={"content": (wheel.name, data, "application/octet-stream")},
        auth=("__token__", token),
        timeout=30,
    )


def get(url: str, **kwargs: object) -> httpx.Response:
    return httpx.get(url, timeout=10, **kwargs)  # type: ignore[arg-type]


def wait_http(url: str, timeout: float = 30) -> httpx.Response:
    """GET until the daemon answers (after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get(url)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def accepts(path: Path) -> bool:
    """Whether something listens on the Unix socket at `path` (a file left behind does not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


def journal(container: Container, *args: str) -> str:
    return container.run(["journalctl", "--no-pager", "-o", "cat", *args], check=False).stdout


def pip_install(container: Container, index: str, *, user: str | None = None) -> str:
    """pip inside the container installs the probe through the index; returns its VERSION."""
    target = f"/tmp/pip-target-{user or 'root'}-{time.monotonic_ns()}"
    container.run(
        [
            "/opt/insiders/bin/python",
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--index-url",
            index,
            "--target",
            target,
            PROBE,
        ],
        user=user,
    )
    module = PROBE.replace("-", "_")
    return container.sh(
        f"cd {target} && /opt/insiders/bin/python -c 'import {module}; print({module}.VERSION)'",
        user=user,
    ).strip()
