"""The load check: a crowd of clients installing while uploads run, errors counted.

Each client does what an installer does for one requirement, over its own keep-alive
connection: the project page (PEP 691 JSON), the wheel's core metadata (PEP 658), the wheel,
whose sha256 it checks against the page. 200 real pip processes would measure pip on two cores;
this measures the index. Meanwhile one uploader publishes new versions of a project of its own
with the legacy API (as twine does), so pages change under the crowd's feet.

Reported: installs done, errors of any kind (target 0), the p50 and p99 of an install and of a
single request, uploads done and their errors, and the daemon's resident memory before and at
its peak.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import trio

from .dataset import make_wheel
from .procs import Server

ACCEPT_JSON = "application/vnd.pypi.simple.v1+json"
CROWD_PROJECT = "benchpkg-crowd"
# What a failed install looks like from here: counted, and the connection started afresh.
_INSTALL_ERRORS = (OSError, ValueError, KeyError, StopIteration, trio.BrokenResourceError)


@dataclass
class CrowdResult:
    clients: int
    seconds: float
    installs: int = 0
    errors: int = 0
    install_ms: list[float] = field(default_factory=list)
    request_ms: list[float] = field(default_factory=list)
    uploads: int = 0
    upload_errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what)

    def as_dict(self) -> dict[str, Any]:
        return {
            "clients": self.clients,
            "seconds": round(self.seconds, 1),
            "installs": self.installs,
            "errors": self.errors,
            "install_p50_ms": _percentile(self.install_ms, 50),
            "install_p99_ms": _percentile(self.install_ms, 99),
            "request_p99_ms": _percentile(self.request_ms, 99),
            "uploads": self.uploads,
            "upload_errors": self.upload_errors,
            "first_errors": self.first_errors,
            "rss_before_mb": round(self.rss_before_mb, 1),
            "rss_peak_mb": round(self.rss_peak_mb, 1),
        }


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


class _Connection:
    """One keep-alive HTTP/1.1 connection; the index always sends Content-Length."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buffer = b""

    async def get(self, path: str, accept: str = "*/*") -> tuple[int, bytes]:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            self.buffer = b""
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n".encode()
        await self.stream.send_all(request)
        while b"\r\n\r\n" not in self.buffer:
            await self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = (line.partition(":") for line in lines[1:])
        headers = {key.strip().lower(): value.strip() for key, _, value in fields}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return status, body

    async def _more(self) -> None:
        assert self.stream is not None
        chunk = await self.stream.receive_some(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


async def _install_once(
    connection: _Connection, project: str, result: CrowdResult, index_path: str
) -> None:
    began = trio.current_time()

    async def get(path: str, accept: str = "*/*") -> bytes:
        sent = trio.current_time()
        status, body = await connection.get(path, accept)
        result.request_ms.append((trio.current_time() - sent) * 1e3)
        if status != 200:
            raise ValueError(f"{path}: {status}")
        return body

    page_path = f"{index_path}{project}/"
    page = json.loads(await get(page_path, ACCEPT_JSON))
    wheel = next(f for f in reversed(page["files"]) if f["filename"].endswith(".whl"))
    path = urlsplit(urljoin(page_path, wheel["url"])).path
    if wheel.get("core-metadata"):
        metadata = await get(path + ".metadata")
        expected = wheel["core-metadata"]["sha256"]
        if hashlib.sha256(metadata).hexdigest() != expected:
            raise ValueError(f"{path}.metadata: hash mismatch")
    content = await get(path)
    if hashlib.sha256(content).hexdigest() != wheel["hashes"]["sha256"]:
        raise ValueError(f"{path}: hash mismatch")
    result.installs += 1
    result.install_ms.append((trio.current_time() - began) * 1e3)


async def _client(
    port: int, projects: list[str], index_path: str, until: float, result: CrowdResult, seed: int
) -> None:
    rng = random.Random(seed)
    connection = _Connection(port)
    try:
        while trio.current_time() < until:
            try:
                await _install_once(connection, rng.choice(projects), result, index_path)
            except _INSTALL_ERRORS as error:
                result.fail(f"{type(error).__name__}: {error}")
                await connection.aclose()
    finally:
        await connection.aclose()


def _upload_while(port: int, token: str, stop: threading.Event, result: CrowdResult) -> None:
    """Publish new versions of a project of its own until told to stop (legacy API, as twine)."""
    auth = "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        n = 0
        while not stop.is_set():
            n += 1
            version = f"{int(time.time())}.{n}"
            filename, content = make_wheel(CROWD_PROJECT, version)
            response = client.post(
                "/legacy/",
                data={
                    ":action": "file_upload",
                    "protocol_version": "1",
                    "name": CROWD_PROJECT,
                    "version": version,
                    "filetype": "bdist_wheel",
                    "sha256_digest": hashlib.sha256(content).hexdigest(),
                },
                files={"content": (filename, content)},
                headers={"Authorization": auth},
            )
            if response.status_code == 200:
                result.uploads += 1
            else:
                result.upload_errors += 1
                if len(result.first_errors) < 5:
                    result.first_errors.append(f"upload {response.status_code}: {response.text}")


def run_crowd(
    server: Server,
    port: int,
    index_path: str,
    projects: list[str],
    token: str,
    *,
    clients: int = 200,
    seconds: float = 20.0,
) -> CrowdResult:
    """`clients` installers for `seconds` while one uploader publishes; blocking."""
    result = CrowdResult(clients=clients, seconds=seconds)
    result.rss_before_mb = server.rss_kb() / 1024
    stop = threading.Event()
    peak = [server.rss_kb()]

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], server.rss_kb())

    threads = [
        threading.Thread(target=_upload_while, args=(port, token, stop, result)),
        threading.Thread(target=sample),
    ]
    for thread in threads:
        thread.start()
    try:

        async def crowd() -> None:
            until = trio.current_time() + seconds
            async with trio.open_nursery() as nursery:
                for seed in range(clients):
                    nursery.start_soon(_client, port, projects, index_path, until, result, seed)

        trio.run(crowd)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    result.rss_peak_mb = max(peak[0], server.rss_kb()) / 1024
    return result
