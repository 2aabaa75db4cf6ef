"""Every URL the daemon answers, who may call it and its handler: the one route table.

Who may call a route (`Access`):

    anyone   every caller; the handler judges the credentials itself (nginx's auth_request)
    read     a reader: with `read-access = "token"`, HTTP Basic with a read or upload token
    upload   an upload token, which the upload handler checks (and words for twine)
    hook     a signature of the sender's, which the webhook handler checks

The handlers are plain ASGI callables, named here and handed over by the daemon (app.Daemon):
the index's hot paths (`simple`, `files`) and the web pages answer from bytes rendered earlier,
without going through Quart, which cut the requests per second of a 2,000-version page by more than
half; Quart (`web`) answers the JSON API, with its routing and its 404s, and everything no route
names. The read gate is here too, so a new path cannot forget it: its route says who may call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from insiders.tokens import Tokens

from .access import ReadAccess, refuse_websocket, unauthorized
from .asgi import ASGIApp, Receive, Scope, Send

Access = Literal["anyone", "read", "upload", "hook"]

GET = frozenset({"GET", "HEAD"})
POST = frozenset({"POST"})
ANY: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Route:
    path: str  # the path itself, or a prefix when it ends with "*"
    methods: frozenset[str]  # empty: any method
    access: Access
    handler: str  # its key in the handlers the daemon hands to Router
    what: str

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


# In the order they are tried: the first that matches answers.
ROUTES: tuple[Route, ...] = (
    Route("/simple*", GET, "read", "simple", "PEP 503/691 pages: /simple/ and /simple/NAME/"),
    Route("/files/*", GET, "read", "files", "files hosted or cached, and their .metadata"),
    Route("/", POST, "upload", "upload", "uploads: the legacy API (twine, uv publish, ...)"),
    Route("/legacy", POST, "upload", "upload", "uploads, as some clients spell the URL"),
    Route("/legacy/", POST, "upload", "upload", "uploads, as some clients spell the URL"),
    Route("/hooks/*", ANY, "hook", "hooks", "webhooks: GitHub, GitLab and Gitea tag pushes"),
    Route("/-/auth", ANY, "anyone", "auth", "nginx's auth_request: 204 may read, else 401"),
    Route("/", GET, "read", "home", "the home page"),
    Route("/search", GET, "read", "search", "search, with suggestions"),
    Route("/project", GET, "read", "project", "redirected to /project/"),
    Route("/project/*", GET, "read", "project", "/project/NAME/ and /project/NAME/VERSION/"),
    Route("/builds", GET, "read", "builds", "redirected to /builds/"),
    Route("/builds/*", GET, "read", "builds", "every build; /builds/NAME/, /builds/NAME/V/"),
    Route("/static/*", GET, "read", "static", "the pages' styles, scripts and icons"),
    Route("/pypi/*", GET, "read", "web", "the JSON API: /pypi/NAME/json, /pypi/NAME/V/json"),
)
# Whatever no route names: Quart's 404 (the web pages' helpful one) or 405.
FALLBACK = Route("*", ANY, "read", "web", "anything else: the helpful 404")

# The exact paths, looked up at once; the prefixes are tried in order after them.
_EXACT: dict[tuple[str, str], Route] = {}
for _route in reversed(ROUTES):
    if not _route.path.endswith("*"):
        for _method in _route.methods or ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"):
            _EXACT[(_method, _route.path)] = _route
_PREFIXES = tuple(r for r in ROUTES if r.path.endswith("*"))


def route(method: str, path: str) -> Route:
    """The route that answers `method path`."""
    found = _EXACT.get((method, path))
    if found is not None:
        return found
    for candidate in _PREFIXES:
        if candidate.matches(method, path):
            return candidate
    # An exact path asked with a method its table row does not list (say OPTIONS /-/auth).
    for candidate in ROUTES:
        if candidate.matches(method, path):
            return candidate
    return FALLBACK


class Router:
    """The ASGI app behind the browser's gate: each request's route, its read gate, its handler."""

    def __init__(
        self, handlers: Mapping[str, ASGIApp], tokens: Tokens, read_access: ReadAccess
    ) -> None:
        missing = {r.handler for r in (*ROUTES, FALLBACK)} - handlers.keys()
        if missing:
            raise ValueError(f"routes with no handler: {', '.join(sorted(missing))}")
        self.handlers = dict(handlers)
        self.tokens = tokens
        self.tokens_needed = read_access == "token"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            return await refuse_websocket(scope, send)
        if scope["type"] != "http":
            return await self.handlers["web"](scope, receive, send)  # lifespan: Quart's
        answer = route(scope["method"], scope["path"])
        needs_token = answer.access == "read" and self.tokens_needed
        if needs_token and await unauthorized(scope, send, self.tokens):
            return
        await self.handlers[answer.handler](scope, receive, send)
