"""Hostile HTTP clients over real sockets, for the fault tests: they trickle, stall and hang up.

Each client records how its connection ended, so a test can tell "the server closed it" from
"it was still open when the test gave up".
"""

from __future__ import annotations

import base64
import socket
import struct
from dataclasses import dataclass

import trio

BOUNDARY = "fault-boundary"


@dataclass
class Outcome:
    kind: str
    connected: bool = False
    status: int | None = None  # the status line the server sent, if any
    closed_by_server: bool = False
    aborted: bool = False  # we hung up first
    reset: bool = False  # hang up with a reset rather than a FIN


def address(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def upload_head(token: str | None, length: int = 1_000_000, path: str = "/legacy/") -> bytes:
    """A legacy-API upload's request line and headers, and the start of its multipart body."""
    auth = ""
    if token is not None:
        basic = base64.b64encode(f"__token__:{token}".encode()).decode()
        auth = f"Authorization: Basic {basic}\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\n\r\n"
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
        f'name="content"; filename="slow-1.0-py3-none-any.whl"\r\n\r\n'
    ).encode()


async def _watch_close(stream: trio.SocketStream, outcome: Outcome) -> None:
    """Read until the server closes; note the status of any response on the way."""
    received = b""
    try:
        while chunk := await stream.receive_some(65536):
            received += chunk
            if outcome.status is None and received.startswith(b"HTTP/1.1 ") and len(received) > 12:
                outcome.status = int(received[9:12])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    outcome.closed_by_server = not outcome.aborted


async def trickle(
    url: str,
    outcome: Outcome,
    head: bytes,
    drip: bytes,
    *,
    every: float = 1.0,
    hang_up: trio.Event | None = None,
    connect_within: float = 15.0,
) -> None:
    """Send `head`, then `drip` every `every` seconds until the server closes or we hang up."""
    stream: trio.SocketStream | None = None
    with trio.move_on_after(connect_within):
        stream = await trio.open_tcp_stream(*address(url))
    if stream is None:
        return  # never accepted (the backlog was full): it holds none of the server's descriptors
    outcome.connected = True
    async with stream, trio.open_nursery() as nursery:

        async def drip_forever() -> None:
            try:
                await stream.send_all(head)
                while True:
                    await trio.sleep(every)
                    await stream.send_all(drip)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async def watch() -> None:
            await _watch_close(stream, outcome)
            nursery.cancel_scope.cancel()

        async def abort_on(event: trio.Event) -> None:
            await event.wait()
            outcome.aborted = True
            # A reset (SO_LINGER 0) or a polite close: both ways clients vanish.
            if outcome.reset:
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            nursery.cancel_scope.cancel()

        nursery.start_soon(drip_forever)
        nursery.start_soon(watch)
        if hang_up is not None:
            nursery.start_soon(abort_on, hang_up)


async def get_status(url: str, path: str = "/simple/", *, within: float = 10.0) -> int | None:
    """One GET on a new connection; its status, or None when there was no answer in time."""
    with trio.move_on_after(within):
        stream = await trio.open_tcp_stream(*address(url))
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            )
            received = b""
            while chunk := await stream.receive_some(65536):
                received += chunk
            if received.startswith(b"HTTP/1.1 "):
                return int(received[9:12])
            return -1
    return None
