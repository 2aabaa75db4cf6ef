"""Clients and daemons that vanish: downloads cut off half-way, and kill -9 while uploads of
every speed are in flight. Nothing stored is lost, nothing partial is listed.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import struct
import threading
from pathlib import Path

from tests.faults.slowclients import upload_head
from tests.support import Daemon, make_wheel, wheel_filename
from tests.test_crash_safety import check_store, upload_forever


def test_downloads_cut_off_half_way(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
    try:
        content = make_wheel("big", "1.0", os.urandom(6 << 20))
        path = tmp_path / wheel_filename("big", "1.0")
        path.write_bytes(content)
        assert daemon.upload(path).status_code == 200
        assert daemon.proc is not None
        baseline = len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))
        host, port = daemon.url.split("//")[1].rsplit(":", 1)
        request = f"GET /files/big/{path.name} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        for n in range(60):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(request)
                sock.recv(1 + n * 997)
                if n % 2:  # a reset rather than a close
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with daemon.client() as client:
            whole = client.get(f"/files/big/{path.name}").content
        assert hashlib.sha256(whole).hexdigest() == hashlib.sha256(content).hexdigest()
        # Every cut-off download let its socket and its file go.
        deadline = 100
        while len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) > baseline + 2 and deadline:
            threading.Event().wait(0.1)
            deadline -= 1
        assert len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) <= baseline + 2
        assert daemon.proc.poll() is None
        assert "Traceback" not in daemon.log()
    finally:
        daemon.stop()


def trickle_until_gone(daemon: Daemon, stop: threading.Event) -> None:
    """An upload that is still arriving when the daemon dies."""
    host, port = daemon.url.split("//")[1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(upload_head(daemon.token))
            while not stop.wait(0.05):
                sock.sendall(os.urandom(512))
    except OSError:
        pass


def collect(into: list[str], daemon: Daemon, token: str, stop: threading.Event, start: int) -> None:
    into.extend(upload_forever(daemon, token, stop, start))


def test_kill_during_concurrent_uploads(tmp_path: Path) -> None:
    """Three fast uploaders and a slow one; kill -9 at a random instant, three times."""
    daemon = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
    rng = random.Random(15)
    acknowledged: set[str] = set()
    for round_ in range(3):
        stop = threading.Event()
        results: list[list[str]] = [[] for _ in range(3)]
        token = daemon.token
        workers = [
            threading.Thread(
                target=collect, args=(result, daemon, token, stop, round_ * 30_000 + n)
            )
            for n, result in zip((0, 10_000, 20_000), results, strict=True)
        ]
        workers.append(threading.Thread(target=trickle_until_gone, args=(daemon, stop)))
        for worker in workers:
            worker.start()
        stop.wait(rng.uniform(0.5, 1.5))
        daemon.kill()
        stop.set()
        for worker in workers:
            worker.join()
        for result in results:
            acknowledged.update(result)
        daemon.start()
        listed = check_store(daemon)
        assert acknowledged <= listed
        assert list((daemon.data_dir / "incoming").iterdir()) == []
    assert acknowledged
    daemon.stop()
