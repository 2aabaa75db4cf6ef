"""The browser is a client like any other: requests must name this index, and a change of state
must not come from another web site.

A web page in someone's browser can make that browser send requests anywhere, with the Basic
credentials it has cached, so two rules stand in front of everything (read gate included):

- **Host.** With DNS rebinding a site points a name it controls at 127.0.0.1 (or the LAN address
  of the index): the browser then sends the page's requests to the index with `Host: that name`,
  and lets the page read the answers, build logs included. Every request must name a host this
  index is: a loopback name, the address the connection came in on (an address cannot be
  rebound), `server.host`, the host of the public URL (`server.public-url`, else the host name
  the pages give), or one of `server.allowed-hosts`. Anything else is 421 Misdirected Request.
- **Origin.** A form or script on another site may POST an upload. A request that changes
  state (anything but GET, HEAD and OPTIONS) whose `Origin` is not this index, or whose
  `Sec-Fetch-Site` says another site sent it, is 403. Tools (twine, uv, poetry, pip) send
  neither header, so they are not affected. The webhooks are exempt: they are signed, and the
  hosts that send them are not browsers.

A request without a Host header (HTTP/1.0) was not sent by a browser and passes the first rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from insiders.http.answers import send_text
from insiders.http.asgi import ASGIApp, Receive, Scope, Send
from insiders.http.reason import reason_header
from insiders.logs import shown

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGNED_PATHS = "/hooks/"  # the webhooks prove where they come from with the shared secret
_UNSPECIFIED = frozenset({"", "0.0.0.0", "::"})


def host_name(value: str) -> str:
    """The host of a Host header or netloc, without port and brackets, lowercased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def is_loopback_address(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def own_names(configured: Iterable[str], host: str) -> frozenset[str]:
    """The host names a request may use besides the public URL's: loopback, the bind address and
    the configured ones (`server.allowed-hosts`)."""
    names = set(LOOPBACK_NAMES)
    names.update(host_name(n) for n in configured)
    if host_name(host) not in _UNSPECIFIED:
        names.add(host_name(host))
    return frozenset(names)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def host_refusal(scope: Scope, names: frozenset[str]) -> str | None:
    """Why this request's Host is not this index (a message), or None when it is."""
    value = _header(scope, b"host")
    if value is None:
        value = _header(scope, b":authority")
    if value is None:
        return None
    name = host_name(value)
    server = scope.get("server")
    arrived_at = host_name(str(server[0])) if server else None
    if name in names or is_loopback_address(name) or name == arrived_at:
        return None
    return (
        f"Misdirected Request: this index does not answer to the host {shown(name, 100)!r} "
        "(a web page using DNS rebinding would); if clients reach it by that name, add it to "
        "[server] allowed-hosts or set [server] public-url"
    )


def origin_refusal(scope: Scope, own_origins: frozenset[str]) -> str | None:
    """Why this request may not change state from where it was sent, or None when it may."""
    if scope["method"] in SAFE_METHODS or scope["path"].startswith(SIGNED_PATHS):
        return None
    fetch_site = (_header(scope, b"sec-fetch-site") or "").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return "Forbidden: a request from another web site may not change this index"
    origin = _header(scope, b"origin")
    if origin is None:
        return None  # not a browser (twine, uv, poetry ...), or a same-origin navigation
    origin = origin.strip().lower()
    host = (_header(scope, b"host") or "").strip().lower()
    scheme = scope.get("scheme", "http")
    if origin in own_origins or origin == f"{scheme}://{host}":
        return None
    return (
        f"Forbidden: a request from {shown(origin, 100)} (another origin) may not change this index"
    )


class BrowserGuard:
    """The ASGI app in front of the read gate: Host first, then Origin for changes of state."""

    def __init__(
        self, app: ASGIApp, *, names: frozenset[str], public_url: Callable[[], str]
    ) -> None:
        self.app = app
        self.names = names
        self.public_url = public_url
        # The public URL is known once the listener is up (its port may be chosen then): the
        # names and origin it gives are worked out once per value, not per request.
        self._public: tuple[str, frozenset[str], frozenset[str]] = ("", names, frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        names, origins = self._from_public_url()
        refusal = host_refusal(scope, names)
        status = 421
        if refusal is None and scope["type"] == "http":
            refusal = origin_refusal(scope, origins)
            status = 403
        if refusal is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await refuse(send, status, refusal, head=scope["method"] == "HEAD")

    def _from_public_url(self) -> tuple[frozenset[str], frozenset[str]]:
        url = self.public_url()
        if url != self._public[0]:
            parts = urlsplit(url)
            names = self.names | ({host_name(parts.hostname)} if parts.hostname else set())
            origins = frozenset({f"{parts.scheme}://{parts.netloc}".lower()})
            self._public = (url, names, origins)
        return self._public[1], self._public[2]


async def refuse(send: Send, status: int, message: str, *, head: bool = False) -> None:
    """A plain-text refusal, its message in the status line too."""
    await send_text(send, status, message, head=head, headers=[reason_header(message)])
