"""The small answers every handler sends, and a request header read: one copy for all of them."""

from __future__ import annotations

from collections.abc import Sequence

from .asgi import Scope, Send

Headers = Sequence[tuple[bytes, bytes]]


def header(scope: Scope, name: bytes) -> bytes:
    """The first value of header `name` (lower case), or b"" when the request has none."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


async def send_text(
    send: Send, status: int, message: str, *, head: bool = False, headers: Headers = ()
) -> None:
    """A plain-text answer: `message` and a newline (no body for HEAD, its length all the same)."""
    body = (message + "\n").encode()
    start = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_empty(send: Send, status: int, headers: Headers) -> None:
    """An answer with no body: a 304, say."""
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": b""})


async def send_redirect(
    send: Send, location: str, scope: Scope, *, permanent: bool = False
) -> None:
    """301 or 302 to `location`; a path of this index keeps the request's query."""
    query = scope.get("query_string", b"")
    if query and location.startswith("/"):
        location = f"{location}?{query.decode('latin-1')}"
    headers = [(b"location", location.encode()), (b"vary", b"Accept")]
    await send_text(send, 301 if permanent else 302, f"Redirecting to {location}", headers=headers)
