"""Socket activation under a real systemd: insiders.socket and insiders-control.socket hold the
listening sockets, so the daemon starts on the first connection and a restart loses none."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import free_port
from tests.systemd.helpers import journal
from tests.systemd.nspawn_harness import Container

pytestmark = pytest.mark.systemd

SERVICE = "insiders.service"
SOCKETS = ["insiders.socket", "insiders-control.socket"]


class Activated:
    def __init__(self, container: Container, port: int, config_port: int) -> None:
        self.c = container
        self.port = port
        self.config_port = config_port
        self.url = f"http://127.0.0.1:{port}"

    def state(self, unit: str = SERVICE) -> str:
        return self.c.show(unit, "ActiveState")["ActiveState"]

    def journal(self) -> str:
        return journal(self.c, "-u", SERVICE, "-n", "60")


@pytest.fixture(scope="module")
def activated(container: Container) -> Iterator[Activated]:
    port, config_port = free_port(), free_port()
    container.run(["systemctl", "stop", SERVICE], check=False)
    container.run(["mkdir", "-p", "/etc/insiders", "/run/systemd/system/insiders.socket.d"])
    # The daemon's own idea of its port must not matter: the socket unit's port is the one used.
    container.path("/etc/insiders/config.toml").write_text(
        f'[server]\nport = {config_port}\n\n[upstream]\nmode = "none"\n'
    )
    container.path("/run/systemd/system/insiders.socket.d/port.conf").write_text(
        f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"
    )
    container.run(["systemctl", "daemon-reload"])
    container.run(["systemctl", "start", *SOCKETS])
    yield Activated(container, port, config_port)
    container.run(["systemctl", "stop", SERVICE, *SOCKETS], check=False)
    container.run(["rm", "-rf", "/run/systemd/system/insiders.socket.d"])
    container.run(["systemctl", "daemon-reload"])


def test_the_first_connection_starts_the_daemon(activated: Activated) -> None:
    assert [activated.state(unit) for unit in SOCKETS] == ["active", "active"]
    assert activated.state() == "inactive"
    response = httpx.get(f"{activated.url}/simple/", timeout=60)
    assert response.status_code == 200
    assert activated.state() == "active"
    # It serves on the sockets it was handed, and bound nothing of its own.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{activated.config_port}/simple/", timeout=5)
    assert activated.c.show(SERVICE, "NRestarts")["NRestarts"] == "0"


def test_the_control_socket_starts_the_daemon(activated: Activated) -> None:
    activated.c.run(["systemctl", "stop", SERVICE])
    assert activated.state("insiders-control.socket") == "active"
    result = activated.c.run(["insidersctl", "status"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr + activated.journal()
    assert activated.state() == "active"


def test_a_restart_under_a_stream_of_requests_loses_none(activated: Activated) -> None:
    wait_active = time.monotonic() + 60
    while httpx.get(f"{activated.url}/simple/", timeout=60).status_code != 200:
        assert time.monotonic() < wait_active
    stop = threading.Event()
    results: list[int | str] = []
    lock = threading.Lock()

    def client() -> None:
        # A new connection for every request (no keep-alive), bounded in number and time.
        deadline = time.monotonic() + 60
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=activated.url, limits=limits, timeout=30) as http:
            for _ in range(5000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    outcome: int | str = http.get("/simple/").status_code
                except httpx.HTTPError as error:
                    outcome = f"{type(error).__name__}: {error}"
                with lock:
                    results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        pids = []
        for _ in range(2):
            time.sleep(1)
            activated.c.run(["systemctl", "restart", SERVICE])
            pids.append(activated.c.show(SERVICE, "MainPID")["MainPID"])
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    failures = [r for r in results if r != 200]
    print(f"\n{len(results)} requests across 2 restarts, {len(failures)} failed")
    assert len(set(pids)) == 2
    assert len(results) > 30
    assert failures == [], failures[:5]
