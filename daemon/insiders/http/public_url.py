"""The URL this index is reached at, for the absolute links it hands out.

The JSON API's links and the pages' instructions must not come from the request's Host header:
any client could make them point elsewhere, and a cache in front would keep that for everyone.
They come from `server.public-url` when set (behind a reverse proxy), else from the address the
daemon listens on.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

_UNSPECIFIED = {"0.0.0.0", "::", "[::]", ""}


def public_base_url(configured: str | None, listening: list[str], fallback: str) -> str:
    """The base URL, ending with "/".

    `listening` are the URLs hypercorn reports (http://127.0.0.1:31411); an address that means
    "every interface" is named by this machine's host name instead, which other machines can use.
    `fallback` is the configured bind address, used before the listener is up.
    """
    if configured:
        return configured.rstrip("/") + "/"
    url = listening[0] if listening else fallback
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in _UNSPECIFIED or parts.netloc.startswith("[::]"):
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{socket.gethostname()}{port}")
    return urlunsplit(parts._replace(path="/", query="", fragment=""))
