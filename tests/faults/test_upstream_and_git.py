"""The outside world failing: an upstream index down, slow or talking garbage, a git host that
accepts and never answers. The index keeps serving what it hosts, and says what went wrong.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from tests.faults.places import JSON, closed_port, http_server, send_body, silent_server
from tests.support import Daemon, make_wheel, run_ctl, wheel_filename


def start(home: Path, upstream: str, config: str = "") -> Daemon:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f"[upstream]\ntimeout = 1.0\n{config}")
    daemon = Daemon(
        home,
        ["--config", str(home / "config.toml"), "--upstream-mode", "proxy", "--upstream", upstream],
    ).start()
    wheel = home / wheel_filename("hosted", "1.0")
    wheel.write_bytes(make_wheel("hosted", "1.0", b"hosted bytes"))
    assert daemon.upload(wheel).status_code == 200
    return daemon


def hosted_still_served(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.get("/simple/hosted/").status_code == 200
        body = client.get(f"/files/hosted/{wheel_filename('hosted', '1.0')}").content
        assert b"hosted bytes" in body
    assert daemon.proc is not None
    assert daemon.proc.poll() is None


@pytest.fixture
def stop_after() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    yield daemons
    for daemon in daemons:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.stop()


def test_upstream_down(tmp_path: Path, stop_after: list[Daemon]) -> None:
    daemon = start(tmp_path / "d", f"{closed_port()}/simple/")
    stop_after.append(daemon)
    with daemon.client() as client:
        response = client.get("/simple/elsewhere/", headers={"Accept": JSON})
    assert response.status_code == 502
    assert "upstream" in response.text
    hosted_still_served(daemon)


def test_upstream_slow(tmp_path: Path, stop_after: list[Daemon]) -> None:
    """A fetch that hangs upstream neither blocks hosted pages nor outlives the timeout."""
    release = threading.Event()
    asked = threading.Event()

    def hang(handler: BaseHTTPRequestHandler) -> None:
        asked.set()
        release.wait(30)

    with http_server(hang) as upstream:
        daemon = start(tmp_path / "d", f"{upstream}/simple/")
        stop_after.append(daemon)
        outcome: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: outcome.append(
                httpx.get(f"{daemon.url}/simple/elsewhere/", headers={"Accept": JSON}, timeout=30)
            )
        )
        waiting.start()
        assert asked.wait(10)
        # While the daemon waits for the upstream, what it hosts is served.
        hosted_still_served(daemon)
        waiting.join(30)
        release.set()
    assert outcome[0].status_code == 502
    assert "upstream" in outcome[0].text


def garbage_http(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"\x00\xffnot http at all\r\n\r\n")


def garbage_json(handler: BaseHTTPRequestHandler) -> None:
    body = b'{"meta": {"api-version": "1.0"}, "files": [{"url": 3}], "name": ["x"'
    send_body(handler, body)


def garbage_html(handler: BaseHTTPRequestHandler) -> None:
    body = b"<html><a href='javascript:alert(1)'>x</a><a href=\"\x00\xff#sha256=zz\">" * 50
    send_body(handler, body, "text/html")


def wrong_length(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", JSON)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b'{"meta"')


@pytest.mark.parametrize(
    "behave", [garbage_http, garbage_json, garbage_html, wrong_length], ids=lambda f: f.__name__
)
def test_upstream_garbage(tmp_path: Path, stop_after: list[Daemon], behave: object) -> None:
    with http_server(behave) as upstream:  # type: ignore[arg-type]
        daemon = start(tmp_path / "d", f"{upstream}/simple/")
        stop_after.append(daemon)
        with daemon.client() as client:
            for accept in (JSON, "text/html"):
                response = client.get("/simple/elsewhere/", headers={"Accept": accept})
                # Refused as the upstream's fault, or a page with no usable link: never a 500.
                assert response.status_code in (200, 502), response.text
                if response.status_code == 200:
                    assert "javascript:" not in response.text
        hosted_still_served(daemon)
    assert "Traceback" not in daemon.log()


def test_a_git_host_that_hangs(tmp_path: Path, stop_after: list[Daemon]) -> None:
    """A repository on a host that accepts and says nothing: the check gives up, the index
    serves throughout, and insidersctl says what happened."""
    with silent_server() as (url, accepted):
        daemon = start(tmp_path / "d", f"{closed_port()}/simple/", "[watcher]\ngit-timeout = 2\n")
        stop_after.append(daemon)

        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            return run_ctl(daemon, *args, timeout=60)

        added = ctl("repos", "add", f"{url}/hung.git:hung")
        assert added.returncode == 0, added.stdout + added.stderr
        outcome: list[subprocess.CompletedProcess[str]] = []
        updating = threading.Thread(target=lambda: outcome.append(ctl("update")))
        updating.start()
        hosted_still_served(daemon)
        updating.join(60)
        assert accepted, "git never connected to the hung host"
        [update] = outcome
        assert update.returncode != 0
        assert "hung" in update.stdout + update.stderr
        assert "bug" not in update.stdout + update.stderr
        hosted_still_served(daemon)
