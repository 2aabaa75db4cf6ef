"""Helpers for the control-plane tests: fuzz strategies, a real Daemon object, raw socket clients.

(tests/conftest.py belongs to the index tests; these are imported explicitly.)
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
from hypothesis import strategies as st

from insidersctl import protocol as p

PYTHON = sys.executable

# -- hypothesis strategies: anything a confused or hostile client might send ---------------------

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Real tags (with fields of any type), near misses and nonsense.
tags = st.sampled_from(sorted(p._CLIENT_TAGS | p._SERVER_TAGS | {"", "x", "hello ", "STATUS"}))
tagged_maps = st.builds(
    lambda tag, fields: msgspec.msgpack.encode({**fields, "type": tag}),
    tags,
    st.dictionaries(st.text(max_size=10), values, max_size=5),
)
# Harmless requests with valid shapes: what the daemon must answer, not just survive.
valid_requests = st.sampled_from(
    [
        p.Status(),
        p.ServerStatus(),
        p.ListRepos(),
        p.ListTokens(),
        p.ListProjects(),
        p.WatcherControl(),
        p.Logs(),
        p.ShowProject(name="nothing-here"),
        p.Yank(project="nothing-here", version="1"),
        p.Remove(project="nothing-here", version="1", dry_run=True),
        p.RemoveRepo(name="not-watched"),
        p.AddRepo(spec="not a spec"),
        p.Update(names=("not-watched",)),
    ]
).map(lambda m: msgspec.msgpack.encode(m))
bodies = st.binary(max_size=300) | tagged_maps | valid_requests


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


# -- places ------------------------------------------------------------------------------------


@contextmanager
def short_tmp(prefix: str = "ictl-") -> Iterator[Path]:
    """A directory with a short path (sun_path is 108 bytes), traversable by other users."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- a blocking raw client (for tests that must misbehave on purpose) -------------------------


class RawClient:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.reader = p.FrameReader()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_message(self, message: msgspec.Struct) -> None:
        self.sock.sendall(p.encode_frame(message))  # type: ignore[arg-type]

    def hello(self) -> p.ServerMessage:
        self.send_message(p.Hello(client="test"))
        return self.receive()

    def receive(self) -> p.ServerMessage:
        """The next message; AssertionError if the daemon closes first."""
        message = self.receive_or_eof()
        assert message is not None, "the daemon closed the connection"
        return message

    def receive_or_eof(self) -> p.ServerMessage | None:
        while (body := self.reader.next_frame()) is None:
            data = self.sock.recv(65536)
            if not data:
                assert self.reader.pending == 0, "the daemon sent a truncated frame"
                return None
            self.reader.feed(data)
        return p.decode_server_message(body)

    def drain(self) -> list[p.ServerMessage]:
        """Every message until the daemon closes."""
        messages = []
        while (message := self.receive_or_eof()) is not None:
            messages.append(message)
        return messages
