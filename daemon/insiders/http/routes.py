"""Every URL the daemon answers, who may call it and its handler: the one route table.

Who may call a route (`Access`):

    anyone   every caller; the handler judges the credentials itself (nginx's auth_request)
    read     a reader: with `read-access = "token"`, HTTP Basic with a read or upload token
    upload   an upload token, which the upload handler checks (and words for twine)
    hook     a signature of the sender's, which the webhook handler checks

The handlers are plain ASGI callables, named here as PART.ATTRIBUTE of the parts the daemon hands
over (app.Daemon.http_parts): a new URL is its handler, a method of its part, and its row here. The
index's hot paths (`simple`, `files`) and the web pages answer from bytes rendered earlier,
without going through Quart, which cut the requests per second of a 2,000-version page by more than
half; Quart (`web`) answers the JSON API, with its routing and its 404s, and everything no route
names. The read gate is here too, so a new path cannot forget it: its route says who may call it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

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
    handler: str  # PART or PART.ATTRIBUTE of the parts the daemon hands to Router
    what: str

    def matches(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


# In the order they are tried: the first that matches answers.
ROUTES: tuple[Route, ...] = (
    Route("/simple*", GET, "read", "index.simple", "PEP 503/691 pages: /simple/ and /simple/NAME/"),
    Route("/files/*", GET, "read", "index.file", "files hosted or cached, and their .metadata"),
    Route("/", POST, "upload", "index.upload", "uploads: the legacy API (twine, uv publish, ...)"),
    Route("/legacy", POST, "upload", "index.upload", "uploads, as some clients spell the URL"),
    Route("/legacy/", POST, "upload", "index.upload", "uploads, as some clients spell the URL"),
    Route("/hooks/*", ANY, "hook", "hooks", "webhooks: GitHub, GitLab and Gitea tag pushes"),
    Route("/-/auth", ANY, "anyone", "auth", "nginx's auth_request: 204 may read, else 401"),
    Route("/", GET, "read", "site.home", "the home page"),
    Route("/search", GET, "read", "site.search", "search, with suggestions"),
    Route("/project", GET, "read", "site.project", "redirected to /project/"),
    Route("/project/*", GET, "read", "site.project", "/project/NAME/ and /project/NAME/VERSION/"),
    Route("/builds", GET, "read", "site.builds", "redirected to /builds/"),
    Route("/builds/*", GET, "read", "site.builds", "every build; /builds/NAME/, /builds/NAME/V/"),
    Route("/static/*", GET, "read", "site.static", "the pages' styles, scripts and icons"),
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


def resolve(parts: Mapping[str, object]) -> dict[str, ASGIApp]:
    """Each route's handler found in `parts` by its PART[.ATTRIBUTE] name; a name that finds
    nothing callable is refused at start, not at its first request."""
    handlers: dict[str, ASGIApp] = {}
    missing = []
    for name in sorted({r.handler for r in (*ROUTES, FALLBACK)}):
        part, _, attribute = name.partition(".")
        found = getattr(parts.get(part), attribute, None) if attribute else parts.get(part)
        if not callable(found):
            missing.append(name)
        else:
            handlers[name] = cast(ASGIApp, found)
    if missing:
        raise ValueError(f"routes with no handler: {', '.join(missing)}")
    return handlers


class Router:
    """The ASGI app behind the browser's gate: each request's route, its read gate, its handler."""

    def __init__(
        self, parts: Mapping[str, object], tokens: Tokens, read_access: ReadAccess
    ) -> None:
        self.handlers = resolve(parts)
        self.tokens = tokens
        self.tokens_needed = read_access == "token"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            return await refuse_websocket(scope, send)
        if scope["type"] != "http":
            return await self.handlers[FALLBACK.handler](scope, receive, send)  # lifespan: Quart's
        answer = route(scope["method"], scope["path"])
        needs_token = answer.access == "read" and self.tokens_needed
        if needs_token and await unauthorized(scope, send, self.tokens):
            return
        await self.handlers[answer.handler](scope, receive, send)
