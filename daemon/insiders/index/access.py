"""Who may read the index: one gate in front of the whole HTTP app, and nginx's auth endpoint.

With `[server] read-access = "token"`, every request but an upload (which checks its own upload
token) and a webhook (`/hooks/`, signed with the shared secret: GitHub, GitLab and Gitea cannot
send a read token) needs HTTP Basic credentials whose password is a token granting read; any user
name is accepted, since clients vary (`__token__`, a person's name, the token itself in the user
field). The gate wraps the app once, at the top, so every page (present and future, Quart's
included) is behind it. The answer without a good token is 401 with a Basic challenge, so pip,
uv, poetry and pdm ask their keyring or the person. Error messages never quote what the client sent.

Every ASGI scope passes here: the index speaks no WebSocket, so a WebSocket request is refused
at once (403, a plain answer) instead of reaching a framework that would answer with a
traceback. Lifespan events go through.

`GET /-/auth` answers nginx's `auth_request` for a static mirror served in front: 204 when the
request's credentials grant read (or reads are open), 401 with the challenge otherwise.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Literal

from insiders.errors import InsidersError, TokenRefused
from insiders.index.asgi import ASGIApp, Receive, Scope, Send
from insiders.index.reason import reason_header
from insiders.tokens import Tokens

ReadAccess = Literal["anyone", "token"]

AUTH_PATH = "/-/auth"
CHALLENGE = (b"www-authenticate", b'Basic realm="insiders"')
UPLOAD_PATHS = ("/", "/legacy", "/legacy/")
HOOKS_PREFIX = "/hooks/"  # signed by the sender (insiders.index.hooks)
NO_WEBSOCKET = b"This index serves no WebSocket\n"
NEEDS_TOKEN = (
    "This index needs a read token: HTTP Basic with any user name (__token__, say) and the "
    "token as the password (insidersctl tokens create NAME --scope read)"
)


class MalformedCredentials(InsidersError):
    """An Authorization: Basic header that does not decode (its content is never quoted)."""


def basic_credentials(authorization: bytes) -> tuple[str, str] | None:
    """(user, password) of a Basic Authorization header; None when there is no Basic header."""
    scheme, _, encoded = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise MalformedCredentials("Malformed Authorization header") from None
    user, _, password = decoded.partition(":")
    return user, password


def header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return b""


def read_refusal(tokens: Tokens, authorization: bytes) -> str | None:
    """Why these credentials may not read (a message for the client), or None when they may."""
    try:
        credentials = basic_credentials(authorization)
    except MalformedCredentials as error:
        return f"{error}: {NEEDS_TOKEN}"
    if credentials is None:
        return NEEDS_TOKEN
    try:
        tokens.verify(credentials[1], "read")
    except TokenRefused as refusal:
        return refusal.message
    return None


def is_upload(scope: Scope) -> bool:
    return scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS


def proves_itself(scope: Scope) -> bool:
    """An upload (its upload token) or a webhook (its signature): checked where it is handled."""
    return is_upload(scope) or scope["path"].startswith(HOOKS_PREFIX)


class ReadGate:
    """The ASGI app in front of everything: reads need a token when read-access is "token"."""

    def __init__(self, app: ASGIApp, tokens: Tokens, read_access: ReadAccess) -> None:
        self.app = app
        self.tokens = tokens
        self.read_access = read_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            return await refuse_websocket(scope, send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)  # lifespan
        if scope["path"] == AUTH_PATH:
            return await self.auth_request(scope, send)
        if self.read_access == "token" and not proves_itself(scope):
            refusal = read_refusal(self.tokens, header(scope, b"authorization"))
            if refusal is not None:
                return await _answer(send, 401, refusal, scope["method"] == "HEAD")
        await self.app(scope, receive, send)

    async def auth_request(self, scope: Scope, send: Send) -> None:
        """nginx's auth_request: 204 for a reader, 401 with the challenge for anyone else."""
        refusal = None
        if self.read_access == "token":
            refusal = read_refusal(self.tokens, header(scope, b"authorization"))
        if refusal is None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            return await send({"type": "http.response.body", "body": b""})
        await _answer(send, 401, refusal, scope["method"] == "HEAD")


async def refuse_websocket(scope: Scope, send: Send) -> None:
    """403 with a plain body where the server offers it (ASGI's websocket.http.response), else
    the close before accepting that servers answer with a bare 403."""
    if "websocket.http.response" in scope.get("extensions", {}):
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(NO_WEBSOCKET)).encode()),
        ]
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        return await send({"type": "websocket.http.response.body", "body": NO_WEBSOCKET})
    await send({"type": "websocket.close", "code": 1008})


async def _answer(send: Send, status: int, message: str, head: bool) -> None:
    body = (message + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        CHALLENGE,
        reason_header(message),  # pip and poetry print the status line alone
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


# -- safe by default off loopback ---------------------------------------------------------------


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def exposure_refusal(hosts: list[str], read_access: ReadAccess, public: bool) -> str | None:
    """Why the daemon must not start on these addresses (one line), or None when it may."""
    exposed = [h for h in hosts if not is_loopback(h)]
    if not exposed or read_access == "token" or public:
        return None
    return (
        f'refusing to serve {", ".join(exposed)} beyond loopback with read-access = "anyone", '
        "which lets everyone who reaches it read every package: set [server] "
        'read-access = "token" (and give readers tokens: insidersctl tokens create NAME '
        "--scope read), or say [server] public = true"
    )
