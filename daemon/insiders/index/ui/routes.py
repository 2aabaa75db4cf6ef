"""The web pages' routes on the Quart app: home, search, projects, builds, static files, 404s.

Every page carries a Content-Security-Policy that allows scripts and styles from this index's
own files only: even if an upload's text slipped through as markup, no inline script or
handler attribute would run.
"""

from __future__ import annotations

from quart import Response, redirect, request
from quart_trio import QuartTrio
from werkzeug.exceptions import NotFound
from werkzeug.wrappers.response import Response as WerkzeugResponse

from insiders.index.pages import Page

# The simple pages' rule for Accept-Encoding, in one place.
from insiders.index.server import _accepts_gzip as accepts_gzip
from insiders.names import NormalizedName, is_valid_name, normalize

from .pages import WebPages
from .views import project_url

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # Descriptions show their images (badges, screenshots) as the public index does.
        "img-src 'self' https: data:",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
HTML = "text/html; charset=utf-8"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def register(app: QuartTrio, pages: WebPages) -> None:
    @app.get("/")
    async def home() -> Response:
        return send(await pages.home())

    @app.get("/search")
    async def search() -> Response:
        query = request.args.get("q", "")[:200]
        return html(await pages.search(query))

    @app.get("/project/<name>/")
    async def project(name: str) -> Response | WerkzeugResponse:
        return await _project(pages, name, None)

    @app.get("/project/<name>/<version>/")
    async def version(name: str, version: str) -> Response | WerkzeugResponse:
        return await _project(pages, name, version)

    @app.get("/builds/")
    async def builds() -> Response:
        return send(await pages.builds())

    @app.get("/static/<name>")
    async def static(name: str) -> Response:
        found = pages.static.get(name)
        if found is None:
            return await _not_found(pages, None)
        immutable = request.args.get("v") == found.digest
        return send(
            found.page,
            content_type=found.content_type,
            cache="public, max-age=31536000, immutable" if immutable else "no-cache",
        )

    @app.errorhandler(NotFound)
    async def not_found(_error: NotFound) -> Response:
        return await _not_found(pages, None)


async def _project(pages: WebPages, name: str, version: str | None) -> Response | WerkzeugResponse:
    if not is_valid_name(name):
        return await _not_found(pages, None)
    normalized = normalize(name)
    if not pages.hosts(normalized):
        return await _not_found(pages, name)
    if version is not None:
        canonical = pages.canonical_version(normalized, version)
        if canonical is None:
            return await _not_found(pages, name)
        if (normalized, canonical) != (name, version):
            return redirect(project_url(normalized, canonical), 301)
    elif normalized != name:
        return redirect(project_url(normalized), 301)
    page = await pages.project(NormalizedName(normalized), version)
    if page is None:
        return await _not_found(pages, name)
    return send(page)


async def _not_found(pages: WebPages, name: str | None) -> Response:
    return html(await pages.not_found(request.path, name), 404)


def html(body: bytes, status: int = 200) -> Response:
    return Response(body, status, headers=SECURITY_HEADERS, content_type=HTML)


def send(page: Page, *, content_type: str = HTML, cache: str = "no-cache") -> Response:
    """A stored page with its ETag (a 304 when the browser has it) and gzip when accepted."""
    body, etag, headers = page.body, page.etag, dict(SECURITY_HEADERS)
    if page.gzipped is not None and accepts_gzip(dict(request.scope)):
        body, etag = page.gzipped, page.gzip_etag
        headers["Content-Encoding"] = "gzip"
    headers.update({"ETag": etag.decode(), "Cache-Control": cache, "Vary": "Accept-Encoding"})
    if request.headers.get("If-None-Match") == etag.decode():
        return Response(b"", 304, headers=headers)
    return Response(body, 200, headers=headers, content_type=content_type)
