"""The ceiling of our own stack: a minimal ASGI app, run on hypercorn's trio worker.

    hypercorn -k trio -b 127.0.0.1:PORT insiders_bench.ceiling:app

By default it answers every request with a short constant body: what hypercorn + trio can do at
all on this machine, the figure the issue's targets are ratios to. With CEILING_STATIC set to the
benchmark's static tree (and CEILING_FILES to the store's packages/), it answers each path with the
very bytes insidersd serves there, read once and then kept: a dictionary lookup and a send, the
best an index on this stack could do for pages of that size.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HELLO = b"Hello, world!\n"
_STATIC = os.environ.get("CEILING_STATIC")
_FILES = os.environ.get("CEILING_FILES")
_bodies: dict[tuple[str, bool], tuple[bytes, bytes] | None] = {}


def _load(path: str, json: bool) -> tuple[bytes, bytes] | None:
    """The body and content type for `path`, from disk on the first request only."""
    key = (path, json)
    if key in _bodies:
        return _bodies[key]
    found: tuple[bytes, bytes] | None = None
    if _STATIC and path.startswith("/simple/") and path.endswith("/") and ".." not in path:
        name = "index.json" if json else "index.html"
        kind = b"application/vnd.pypi.simple.v1+json" if json else b"text/html"
        page = Path(_STATIC) / path.lstrip("/") / name
        if page.is_file():
            found = (page.read_bytes(), kind)
    elif _FILES and path.startswith("/files/") and ".." not in path:
        file = Path(_FILES) / path[len("/files/") :]
        if file.is_file():
            found = (file.read_bytes(), b"application/octet-stream")
    if len(_bodies) < 10_000:
        _bodies[key] = found
    return found


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body, kind = HELLO, b"text/plain"
    if _STATIC:
        json = any(k == b"accept" and b"json" in v for k, v in scope["headers"])
        found = _load(scope["path"], json)
        if found is None:
            body, kind = b"Not Found\n", b"text/plain"
            status = 404
        else:
            body, kind = found
            status = 200
    else:
        status = 200
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
