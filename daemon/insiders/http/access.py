"""Who may read the index: the gate every route marked "read" passes, and nginx's auth endpoint.

With `[server] read-access = "token"`, every request but an upload (which checks its own upload
token) and a webhook (`/hooks/`, signed with the shared secret: GitHub, GitLab and Gitea cannot
send a read token) needs HTTP Basic credentials whose password is a token granting read; any user
name is accepted, since clients vary (`__token__`, a person's name, the token itself in the user
field). Which request is which is the route table's (insiders.http.routes): a route names who may
call it, and anything no route names is a read, so every page (present and future, Quart's
included) is behind the gate. The answer without a good token is 401 with a Basic challenge, so
pip, uv, poetry and pdm ask their keyring or the person. Error messages never quote what the
client sent.

The index speaks no WebSocket, so a WebSocket request is refused at once (403, a plain answer)
instead of reaching a framework that would answer with a traceback.

`/-/auth` answers nginx's `auth_request` for a static mirror served in front: 204 when the
request's credentials grant read (or reads are open), 401 with the challenge otherwise.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Literal

from insiders.errors import MalformedCredentials, TokenRefused
from insiders.http.answers import header, send_text
from insiders.http.asgi import Receive, Scope, Send
from insiders.http.reason import reason_header
from insiders.tokens import Tokens

ReadAccess = Literal["anyone", "token"]

CHALLENGE = (b"www-authenticate", b'Basic realm="insiders"')
NO_WEBSOCKET = b"This index serves no WebSocket\n"
NEEDS_TOKEN = (
    "This index needs a read token: HTTP Basic with any user name (__token__, say) and the "
    "token as the password (insidersctl tokens create NAME --scope read)"
)


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


async def unauthorized(scope: Scope, send: Send, tokens: Tokens) -> bool:
    """Whether the request may not read: then it was answered 401 with the challenge."""
    refusal = read_refusal(tokens, header(scope, b"authorization"))
    if refusal is None:
        return False
    await _answer(send, 401, refusal, scope["method"] == "HEAD")
    return True


class AuthRequest:
    """nginx's auth_request (`/-/auth`): 204 for a reader, 401 with the challenge for others."""

    def __init__(self, tokens: Tokens, read_access: ReadAccess) -> None:
        self.tokens = tokens
        self.read_access = read_access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.read_access == "token" and await unauthorized(scope, send, self.tokens):
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


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
    # pip and poetry print the status line alone: the reason says what is missing.
    headers = [CHALLENGE, reason_header(message)]
    await send_text(send, status, message, head=head, headers=headers)


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
