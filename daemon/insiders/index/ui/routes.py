"""The web pages' handlers: home, search, projects, builds (with a permalink for each repository
and each version's log), static files and helpful 404s; the route table (insiders.http.routes)
names the paths each answers.

They are plain ASGI handlers, as the simple pages are IndexApp's: a page is bytes rendered
earlier, and going through the framework for it cut the requests per second of a 2,000-version
page by more than half. Quart answers the JSON API, and its own 404s are this module's
not-found page too.

Every page carries a Content-Security-Policy that allows scripts, styles and images from this
index's own files only: even if an upload's text slipped through as markup, no inline script or
handler attribute would run, and a description's image from another host is not fetched (it
would tell that host who reads which private project, and when; the description shows a link to
it instead, see readme_html). `server.image-sources` adds sources for images.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qs, quote

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import NotFound

from insiders.documents.page import Page
from insiders.http.answers import header, send_empty

# The simple pages' ASGI types and Accept-Encoding rule, in one place.
from insiders.http.asgi import Receive, Scope, Send
from insiders.index.server import _accepts_gzip as accepts_gzip
from insiders.names import NormalizedName, is_valid_name, normalize

from .pages import WebPages
from .views import build_url, project_url

HTML = b"text/html; charset=utf-8"
Headers = list[tuple[bytes, bytes]]


def content_security_policy(image_sources: Sequence[str] = ()) -> str:
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            " ".join(("img-src 'self'", *image_sources)),
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


def security_headers(image_sources: Sequence[str] = ()) -> Headers:
    return [
        (b"content-security-policy", content_security_policy(image_sources).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
    ]


IMMUTABLE = b"public, max-age=31536000, immutable"
QUERY_LIMIT = 200  # characters of a search kept


def _without_slash(path: str) -> bool:
    """/project, /builds, /project/NAME[/VERSION] and /builds/NAME[/VERSION]: moved to the path
    with its slash."""
    return path.count("/") <= 3 and not path.endswith("/")


def _name_and_version(path: str, prefix: str) -> tuple[str, str | None] | None:
    """NAME and VERSION of PREFIX/NAME/ or PREFIX/NAME/VERSION/ with a valid NAME, else None. The
    path is decoded already (ASGI): a version is used as it stands."""
    parts = path[len(prefix) :].split("/")
    if len(parts) not in (2, 3) or parts[-1] != "" or not all(parts[:-1]):
        return None
    if not is_valid_name(parts[0]):
        return None
    return parts[0], (parts[1] if len(parts) == 3 else None)


class WebApp:
    """The web pages' handlers, each an ASGI callable the route table names."""

    def __init__(self, pages: WebPages, headers: Headers) -> None:
        self.pages = pages
        self.headers = headers  # security_headers()

    async def home(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_page(scope, send, await self.pages.home(), self.headers)

    async def search(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = _query(scope).get("q", [""])[0][:QUERY_LIMIT]
        await send_page(scope, send, await self.pages.search(query), self.headers)

    async def builds(self, scope: Scope, receive: Receive, send: Send) -> None:
        """/builds/ lists every build; /builds/NAME/ and /builds/NAME/VERSION/ are permalinks of
        a repository's builds."""
        path: str = scope["path"]
        if _without_slash(path):
            return await moved(send, quote(path) + "/")
        if path == "/builds/":
            return await send_page(scope, send, await self.pages.builds(), self.headers)
        found = _name_and_version(path, "/builds/")
        if found is None:
            return await self.not_found(scope, send, None)
        name, version = found
        normalized = NormalizedName(normalize(name))
        if normalized != name:
            return await moved(send, build_url(normalized, version))
        if version is None:
            page = await self.pages.repo_builds(normalized)
        else:
            page = await self.pages.build_log(normalized, version)
        if page is None:
            return await self.not_found(scope, send, None)
        await send_page(scope, send, page, self.headers)

    async def project(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if _without_slash(path):
            return await moved(send, quote(path) + "/")
        found = _name_and_version(path, "/project/")
        if found is None:
            return await self.not_found(scope, send, None)
        name, version = found
        normalized = NormalizedName(normalize(name))
        if not self.pages.hosts(normalized):
            return await self.not_found(scope, send, name)
        if version is not None:
            canonical = self.pages.canonical_version(normalized, version)
            if canonical is None:
                return await self.not_found(scope, send, name)
            if (normalized, canonical) != (name, version):
                return await moved(send, project_url(normalized, canonical))
        elif normalized != name:
            return await moved(send, project_url(normalized))
        page = await self.pages.project(normalized, version)
        if page is None:  # removed while we looked
            return await self.not_found(scope, send, name)
        await send_page(scope, send, page, self.headers)

    async def static(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.pages.static.get(scope["path"][len("/static/") :])
        if found is None:
            return await self.not_found(scope, send, None)
        immutable = _query(scope).get("v", [""])[0] == found.digest
        await send_page(
            scope,
            send,
            found.page,
            self.headers,
            content_type=found.content_type.encode(),
            cache=IMMUTABLE if immutable else b"no-cache",
        )

    async def not_found(self, scope: Scope, send: Send, name: str | None) -> None:
        page = await self.pages.not_found(scope["path"], name)
        await send_page(scope, send, page, self.headers, status=404)


def register_not_found(app: QuartTrio, pages: WebPages, security: Headers) -> None:
    """Quart's own 404s (paths no route knows) get the same helpful page."""

    @app.errorhandler(NotFound)
    async def not_found(_error: NotFound) -> Response:
        page = await pages.not_found(request.path, None)
        headers = {k.decode(): v.decode() for k, v in security}
        headers.update({"vary": "Accept-Encoding", "cache-control": "no-cache"})
        body = page.body
        if page.gzipped is not None and accepts_gzip(dict(request.scope)):
            body = page.gzipped
            headers.update({"content-encoding": "gzip", "etag": page.gzip_etag.decode()})
        else:
            headers["etag"] = page.etag.decode()
        return Response(body, 404, headers=headers, content_type=HTML.decode())


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


async def send_page(
    scope: Scope,
    send: Send,
    page: Page,
    security: Headers,
    *,
    content_type: bytes = HTML,
    cache: bytes = b"no-cache",
    status: int = 200,
) -> None:
    """A stored page with its ETag (a 304 when the browser has it) and gzip when accepted."""
    body, etag = page.body, page.etag
    headers = [(b"vary", b"Accept-Encoding"), (b"cache-control", cache), *security]
    if page.gzipped is not None and accepts_gzip(scope):
        body, etag = page.gzipped, page.gzip_etag
        headers.append((b"content-encoding", b"gzip"))
    headers.append((b"etag", etag))
    if status == 200 and header(scope, b"if-none-match") == etag:
        return await send_empty(send, 304, headers)
    headers += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def moved(send: Send, location: str) -> None:
    body = f"Moved to {location}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 301,
            "headers": [
                (b"location", location.encode()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
