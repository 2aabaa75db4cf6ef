"""Control clients that hold every slot and say nothing must not lock insidersctl out."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from insiders.control.server import Limits
from insidersctl import protocol as p
from tests.control_fixtures import RawClient
from tests.support import BIN, Daemon, isolated_env


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
    yield running
    if running.proc and running.proc.poll() is None:
        running.stop()


def test_idle_clients_in_every_slot(daemon: Daemon) -> None:
    socket_path = daemon.home / "run" / "insiders" / "control.sock"
    with ExitStack() as stack:
        idle = [stack.enter_context(RawClient(socket_path)) for _ in range(Limits().connections)]
        for client in idle:
            assert isinstance(client.hello(), p.Welcome)
        # Every slot is held by a client that greeted and then idles: status still answers.
        result = subprocess.run(
            [str(BIN / "insidersctl"), "status"],
            env=isolated_env(daemon.home),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "busy" not in result.stdout + result.stderr
        # The client idle the longest gave its slot up, and was told why.
        [reply] = idle[0].drain()
        assert isinstance(reply, p.Error)
        assert "idle" in reply.message
    assert daemon.proc is not None
    assert daemon.proc.poll() is None
