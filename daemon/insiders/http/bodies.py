"""Request bodies on a deadline, and no connection reused after a body was left unread.

A client that announces a body and then trickles it (a byte now and then) would otherwise hold a
connection, a descriptor and an upload's temp file for as long as it likes. The rule is the one of
Apache's mod_reqtimeout (`body=20,MinRate=500`): a body gets `timeout` seconds plus one second per
`min_rate` bytes that arrived, and no single wait longer than `timeout`. Only the time spent
waiting for the client counts, not the time the app spends on what already arrived. A body too
slow is answered 408 (when no response began) and the app sees a disconnect.

A response that begins before the body was read to its end (a refusal: 401, 413, a 404 for a
POST) says `Connection: close` on HTTP/1: the rest of that body will not be read, so the
connection cannot carry another request. Once such a response is out, the app's wait for more
body ends as a disconnect, so the app finishes and the connection is closed, instead of the
client's next request being read as the old body and hanging.

While the last message of such a response goes out, the rest of the body is read and dropped. It
must be: hypercorn hands the app's disconnect through the same bounded queue as the body, inside
that last send, and with the queue full of body nobody reads, the send, the app and the
connection would wait forever while the client's writes stall. A client still sending after
`LINGER` seconds has its connection closed.

An ASGI middleware rather than socket timeouts: only the HTTP layer knows when a body is being
waited for, as opposed to a response being computed or a download being sent.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from insiders.http.asgi import ASGIApp, Message, Receive, Scope, Send
from insiders.http.connections import current_connection

log = logging.getLogger(__name__)


MIN_RATE = 500.0  # bytes per second, as mod_reqtimeout's default
LINGER = 2.0  # seconds the rest of a refused body is read and dropped before closing
_TOO_SLOW = b"Request Timeout: the request body arrived too slowly\n"


class RequestBodies:
    """Wraps an ASGI app; requests that announce no body pass through untouched."""

    def __init__(self, app: ASGIApp, *, timeout: float, min_rate: float = MIN_RATE) -> None:
        self.app = app
        self.timeout = timeout
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            return await self.app(scope, receive, send)
        body = _Body(scope, receive, send, self.timeout, self.min_rate)
        await self.app(scope, body.receive, body.send)


def _has_body(scope: Scope) -> bool:
    if not str(scope.get("http_version", "1.1")).startswith("1"):
        return scope["method"] not in ("GET", "HEAD")  # HTTP/2 need not announce a length
    for key, value in scope["headers"]:
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() != b"0"):
            return True
    return False


class _Body:
    def __init__(
        self, scope: Scope, receive: Receive, send: Send, timeout: float, min_rate: float
    ) -> None:
        self._receive = receive
        self._send = send
        self.timeout = timeout
        self.min_rate = min_rate
        self.client = scope.get("client")
        self.http1 = str(scope.get("http_version", "1.1")).startswith("1")
        self.received = 0
        self.waited = 0.0
        self.complete = False  # the last piece of the body arrived
        self.given_up = False  # the body stopped arriving: the app sees a disconnect
        self.answered = False  # we answered 408; the app's own response is dropped
        self.started = False  # a response began
        self.finished = False  # the response is out
        self._waiting: trio.CancelScope | None = None

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()  # after the body only a disconnect can come
        if self.given_up or self.finished:
            return {"type": "http.disconnect"}
        budget = min(self.timeout, self.timeout + self.received / self.min_rate - self.waited)
        began = trio.current_time()
        with trio.move_on_after(max(budget, 0.0)) as waiting:
            self._waiting = waiting
            message = await self._receive()
        self._waiting = None
        self.waited += trio.current_time() - began
        if waiting.cancelled_caught:
            if not self.finished:
                await self._too_slow()
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
            if self.http1 and not self.complete:
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
        last = message["type"] == "http.response.body" and not message.get("more_body", False)
        await (self._send_last(message) if last else self._send(message))
        if last:
            self.finished = True
            # The app may still wait for the body it did not need: that wait ends now (after
            # the send, so that the app's ending cannot cut the response short).
            if self._waiting is not None and not self.complete:
                self._waiting.cancel()

    async def _send_last(self, message: Message) -> None:
        """The response's last message; the rest of an unread body is dropped meanwhile."""
        if self.complete:
            return await self._send(message)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._discard_rest)
            await self._send(message)

    async def _discard_rest(self) -> None:
        """Read and drop the body until the disconnect (see the module)."""
        if await self._drain(LINGER):
            return
        connection = current_connection.get()
        if connection is not None and self.http1:
            connection.close_now()
            await self._drain(LINGER)  # only what was queued and the disconnect are left

    async def _drain(self, within: float) -> bool:
        """True once the disconnect came `within` seconds."""
        with trio.move_on_after(within):
            while (await self._receive())["type"] != "http.disconnect":
                pass  # dropped on purpose: the answer is on its way
            return True
        return False

    async def _too_slow(self) -> None:
        self.given_up = True
        log.info(
            "request body from %s too slow (%d bytes in %.0f s): closing",
            _peer(self.client),
            self.received,
            self.waited,
        )
        if self.started:
            return
        self.started = self.answered = True
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(_TOO_SLOW)).encode()),
        ]
        if self.http1:
            headers.append((b"connection", b"close"))
        await self._send({"type": "http.response.start", "status": 408, "headers": headers})
        await self._send_last({"type": "http.response.body", "body": _TOO_SLOW})
        self.finished = True


def _peer(client: Any) -> str:
    if isinstance(client, (list, tuple)) and len(client) == 2:
        return f"{client[0]}:{client[1]}"
    return "a client"
