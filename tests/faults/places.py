"""Real places for faults to happen in: a small tmpfs that fills up, a real HTTP server that is
down, slow or talks garbage, and a TCP server that accepts and says nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (like "4m") mounted at `path` for the test: a disk that fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write zeros to `path` until its file system is full; the file is the space to free."""
    with path.open("wb", buffering=0) as filler:  # unbuffered: close has nothing to flush
        try:
            while True:
                filler.write(b"\0" * (4 << 10))
        except OSError:
            pass
    return path


Behaviour = Callable[[BaseHTTPRequestHandler], None]
JSON = "application/vnd.pypi.simple.v1+json"


def send_body(handler: BaseHTTPRequestHandler, body: bytes, content_type: str = JSON) -> None:
    """A 200 answer of `body`, its length said (an upstream that behaves, at the HTTP level)."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def json_page(name: str, files: list[tuple[str, str, str]]) -> bytes:
    """A project's page in the JSON API (PEP 691): `files` as (filename, url, sha256)."""
    listed = [
        {"filename": filename, "url": url, "hashes": {"sha256": sha256}}
        for filename, url, sha256 in files
    ]
    return json.dumps({"meta": {"api-version": "1.0"}, "name": name, "files": listed}).encode()


@contextmanager
def http_server(behave: Behaviour) -> Iterator[str]:
    """A real HTTP server on loopback whose GET handler is `behave`; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            behave(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A TCP server that accepts every connection and never says a word (a hung host)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        listener.close()
        for connection in accepted:
            connection.close()


def closed_port() -> str:
    """A loopback URL where nothing listens (the port was just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
