"""Control clients that hold every slot and say nothing must not lock insidersctl out."""

from __future__ import annotations

import subprocess
import time
from contextlib import ExitStack

from insiders.control.server import Limits
from insidersctl import protocol as p
from tests.control_fixtures import RawClient
from tests.support import Daemon, run_ctl


def test_idle_clients_in_every_slot(daemon: Daemon) -> None:
    socket_path = daemon.home / "run" / "insiders" / "control.sock"
    with ExitStack() as stack:
        idle = [stack.enter_context(RawClient(socket_path)) for _ in range(Limits().connections)]
        for client in idle:
            assert isinstance(client.hello(), p.Welcome)
        # Every slot is held by a client that greeted and then idles: status still answers.
        result = run_ctl(daemon, "status", timeout=30, check=True)
        assert "busy" not in result.stdout + result.stderr
        # The client idle the longest gave its slot up, and was told why.
        [reply] = idle[0].drain()
        assert isinstance(reply, p.Error)
        assert "idle" in reply.message
    assert daemon.proc is not None
    assert daemon.proc.poll() is None


def status(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    return run_ctl(daemon, "status", timeout=90)


def half_frame() -> bytes:
    """The first bytes of a status request: its header says more is coming."""
    frame = p.encode_frame(p.Status())
    return frame[: len(frame) - 1]


def test_half_frames_in_every_slot(daemon: Daemon) -> None:
    """Clients that each send part of a frame and stall hold no slot against a newcomer (70 such
    clients made `status` wait 5 s and hear "busy", for as long as they stayed)."""
    socket_path = daemon.home / "run" / "insiders" / "control.sock"
    with ExitStack() as stack:
        stalled = []
        for _ in range(Limits().connections + 6):
            client = stack.enter_context(RawClient(socket_path, timeout=30))
            client.send(p.encode_frame(p.Hello(client="test")) + half_frame())
            stalled.append(client)
        started = time.monotonic()
        for _ in range(3):
            result = status(daemon)
            said = result.stdout + result.stderr
            assert result.returncode == 0, said
            assert "busy" not in said
        assert time.monotonic() - started < Limits().handshake
        # The stalled client waiting the longest was told why it lost its slot.
        first = stalled[0].drain()
        assert isinstance(first[-1], p.Error), first
        assert "slot" in first[-1].message or "frame" in first[-1].message
    assert daemon.proc is not None
    assert daemon.proc.poll() is None


def test_a_half_frame_has_a_deadline(daemon: Daemon) -> None:
    socket_path = daemon.home / "run" / "insiders" / "control.sock"
    with RawClient(socket_path, timeout=Limits().idle / 2) as client:
        assert isinstance(client.hello(), p.Welcome)
        client.send(half_frame())
        started = time.monotonic()
        [reply] = client.drain()  # the daemon answers, then closes
        assert isinstance(reply, p.Error)
        assert reply.code == p.TIMEOUT
        assert "frame" in reply.message
        assert time.monotonic() - started < Limits().frame + 2


def nested(depth: int) -> bytes:
    """A status request with an unknown field nested `depth` arrays deep (skipped unread by
    the typed decoder, recursively)."""
    body = b"\x82\xa4type\xa6status\xa5extra" + b"\x91" * depth + b"\xc0"
    return len(body).to_bytes(4, "big") + body


def test_a_deeply_nested_frame_is_answered(daemon: Daemon) -> None:
    socket_path = daemon.home / "run" / "insiders" / "control.sock"
    with RawClient(socket_path, timeout=10) as client:
        assert isinstance(client.hello(), p.Welcome)
        client.send(nested(60_000))
        reply = client.receive()
        assert isinstance(reply, p.Error), reply
        assert reply.code == p.BAD_REQUEST
        assert "nested" in reply.message
        # The connection goes on, and a shallow unknown field is still ignored (newer clients).
        client.send(nested(3))
        assert isinstance(client.receive(), p.StatusReport)
    with RawClient(socket_path, timeout=10) as client:
        hello = b"\x82\xa4type\xa5hello\xa5extra" + b"\x91" * 60_000 + b"\xc0"
        client.send(len(hello).to_bytes(4, "big") + hello)
        [reply] = client.drain()
        assert isinstance(reply, p.Error), reply
        assert "nested" in reply.message
    assert daemon.proc is not None
    assert daemon.proc.poll() is None
