"""The index's ASGI app: the hot routes answered directly, everything else handed to Quart.

Pages and files are what pip and uv ask for thousands of times a minute from CI machines, so they
skip the framework: a page is a lookup of bytes rendered earlier, a file is streamed from disk.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import msgspec
import trio

from insiders.config import Settings
from insiders.documents import render
from insiders.documents.model import ProjectPage, hosted_page
from insiders.documents.negotiate import Format, from_query, negotiate
from insiders.documents.page import Page, make_page
from insiders.errors import UploadRefused, UpstreamError
from insiders.http.answers import header, send_empty, send_redirect, send_text
from insiders.http.asgi import Receive, Scope, Send
from insiders.http.reason import reason_header
from insiders.index.pagecache import LRU
from insiders.index.upstream import Upstream
from insiders.logs import shown
from insiders.names import is_valid_name, normalize
from insiders.store import Store
from insiders.tokens import Tokens

from .pages import HostedPages
from .upload import handle_upload
from .upstreamfiles import SAFE_FILENAME, UpstreamFiles

log = logging.getLogger(__name__)


CHUNK = 256 << 10
# Bytes of proxied pages kept as rendered (the upstream's cache keeps the parsed ones).
RENDERED_BYTES = 16 << 20
_NEGOTIATED_LIMIT = 256  # distinct Accept headers remembered


class IndexApp:
    def __init__(
        self,
        *,
        store: Store,
        tokens: Tokens,
        upstream: Upstream,
        settings: Settings,
        upstream_files: UpstreamFiles | None = None,
        withheld: Callable[[str], str | None] = lambda name: None,
    ) -> None:
        self.store = store
        # Cache mode's files of projects not hosted here (None: the daemon keeps no files).
        self.upstream_files = upstream_files
        self.tokens = tokens
        self.upstream = upstream
        self.settings = settings
        self.pages = HostedPages(store)
        # Why a name not hosted must not fall back upstream (a refused mirror lists it), or None.
        self.withheld = withheld
        self._negotiated: dict[bytes, Format | None] = {}
        # Proxied pages as rendered, by their bytes, each with the time its upstream page was
        # fetched: a rendering outlives the parsed page (which weighs several times more, so the
        # upstream's memory lets it go first) and is served again while that fetch is fresh.
        # Only the gzipped bytes are kept of a page that has them (a fifth of the body, or
        # less): what pip, uv and browsers take; the rare client that does not is sent them
        # decompressed.
        self._proxied: LRU[tuple[str, bool], tuple[float, Page]] = LRU(RENDERED_BYTES)

    def reconfigure(self, new: Settings) -> tuple[str, ...]:
        """A reload's settings (its upstream reconfigures itself): pages proxied from the old
        upstream are dropped. [server] is the daemon's to name: its listeners wait for a restart."""
        self.settings = new
        self._proxied.clear()
        return ()

    # -- /simple/ ---------------------------------------------------------------------------------

    def _format(self, scope: Scope) -> Format | None:
        query = scope.get("query_string", b"")
        if query and b"format=" in query:
            values = parse_qs(query.decode("latin-1")).get("format")
            if values:
                return from_query(values[0])
        accept = b""
        for key, value in scope["headers"]:
            if key == b"accept":
                accept = value
                break
        try:
            return self._negotiated[accept]
        except KeyError:
            fmt = negotiate(accept.decode("latin-1"))
            if len(self._negotiated) < _NEGOTIATED_LIMIT:
                self._negotiated[accept] = fmt
            return fmt

    async def simple(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/simple":
            return await send_redirect(send, "/simple/", scope, permanent=True)
        name, slash, rest = path[len("/simple/") :].partition("/")
        if rest:
            return await text(send, 404, "Not Found")
        if name and not is_valid_name(name):
            return await text(send, 404, f"{name!r} is not a valid project name")
        if name and (normalize(name) != name or not slash):
            return await send_redirect(send, f"/simple/{normalize(name)}/", scope, permanent=True)
        fmt = self._format(scope)
        if fmt is None:
            return await text(
                send,
                406,
                "Not Acceptable: this index serves application/vnd.pypi.simple.v1+json, "
                "application/vnd.pypi.simple.v1+html and text/html",
                vary=True,
            )
        if not name:
            return await send_page(scope, send, self.pages.root(fmt), fmt)
        normalized = normalize(name)
        hosted = self.pages.project(normalized, fmt)
        if hosted is not None:
            if self._merges(normalized):
                return await self._merged(scope, send, normalized, fmt)
            return await send_page(scope, send, hosted, fmt)
        return await self._from_upstream(scope, send, normalized, fmt)

    def _merges(self, name: str) -> bool:
        project = self.settings.projects.get(name)
        return project is not None and project.upstream == "merge" and self.upstream.keeps_pages

    async def _from_upstream(self, scope: Scope, send: Send, name: str, fmt: Format) -> None:
        withheld = self.withheld(name)
        if withheld is not None:
            # Not the upstream's to answer: the store lost a name a mirror still holds.
            return await text(send, 503, withheld, extra=[reason_header(withheld)])
        mode = self.upstream.mode
        if mode == "none":
            return await text(send, 404, f"No project {name} here (and no upstream index is set)")
        normalized = normalize(name)
        if mode == "redirect":
            return await send_redirect(send, self.upstream.redirect_url(normalized), scope)
        key = (name, fmt.is_html)
        fetched = self.upstream.fresh_fetch(normalized)
        rendered = self._proxied.get(key)
        if rendered is None or fetched is None or rendered[0] != fetched:
            try:
                upstream, fetched = await self.upstream.fetched_page(normalized)
            except UpstreamError as error:
                return await text(send, 502, str(error))
            if upstream is None:
                return await text(send, 404, f"No project {name} here or upstream")
            rendered = self._proxied.get(key)
            if rendered is None or rendered[0] != fetched:
                rendered = (fetched, self._render_proxied(fmt, upstream))
                page = rendered[1]
                self._proxied.put(key, rendered, len(page.body) + len(page.gzipped or b""))
        return await send_page(scope, send, _whole(rendered[1], scope), fmt)

    def _render_proxied(self, fmt: Format, model: ProjectPage) -> Page:
        """The page as kept: its gzipped bytes alone when it has them (see `_proxied`)."""
        shown = model
        if self.upstream.mode == "cache":
            shown = _through_cache(model, self.settings.server.public_url)
        body = render.project_html(shown) if fmt.is_html else render.project_json(shown)
        page = make_page(body, compresslevel=1)
        return page if page.gzipped is None else msgspec.structs.replace(page, body=b"")

    async def _merged(self, scope: Scope, send: Send, name: str, fmt: Format) -> None:
        project = self.store.get(normalize(name))
        assert project is not None
        hosted = hosted_page(project)
        try:
            upstream = await self.upstream.page(normalize(name))
        except UpstreamError as error:
            log.warning("%s: serving hosted files only: %s", name, error)
            upstream = None
        if upstream is None:
            return await send_page(scope, send, self.pages.project(normalize(name), fmt), fmt)
        own = {link.filename for link in hosted.files}
        files = hosted.files + tuple(f for f in upstream.files if f.filename not in own)
        versions = sorted(set(hosted.versions) | set(upstream.versions))
        model = ProjectPage(name=hosted.name, files=files, versions=tuple(versions))
        body = render.project_html(model) if fmt.is_html else render.project_json(model)
        return await send_page(scope, send, make_page(body), fmt)

    # -- /files/ ----------------------------------------------------------------------------------

    async def file(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"][len("/files/") :].split("/")
        if len(parts) != 2:
            return await text(send, 404, "Not Found")
        name, filename = parts
        project = self.store.get(normalize(name))
        if project is None and normalize(name) == name and self._caches_files():
            # Hosted names never get here: the store was asked first (no confusion via the cache).
            assert self.upstream_files is not None
            normalized = normalize(name)
            return await self.upstream_files.serve(scope, send, self.upstream, normalized, filename)
        if project is None or normalize(name) != name:
            return await text(send, 404, f"No project {name} here")
        if project.status == "quarantined":
            return await text(send, 404, f"Project {name} is quarantined: its files are not served")
        stored = self.store.file(project.normalized, filename)
        if stored is not None:
            digest, content_type = stored.sha256, b"application/octet-stream"
        else:
            base = self.store.file(project.normalized, filename.removesuffix(".metadata"))
            if not filename.endswith(".metadata") or base is None or not base.is_wheel:
                return await text(send, 404, f"No file {filename} in {name}")
            if base.metadata_sha256 is None:
                return await text(send, 404, f"No metadata for {base.filename}")
            digest, content_type = base.metadata_sha256, b"text/plain; charset=utf-8"
        etag = f'"{digest}"'.encode()
        if header(scope, b"if-none-match") == etag:
            return await send_empty(send, 304, [(b"etag", etag)])
        path = self.store.path(project.normalized, filename)
        try:
            size, whole = await trio.to_thread.run_sync(_read_if_small, path)
        except FileNotFoundError:
            log.error("%s is listed but missing on disk", path)
            return await text(send, 404, f"{filename} is missing from the store")
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(size).encode()),
            (b"etag", etag),
            (b"cache-control", b"public, max-age=31536000, immutable"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["method"] == "HEAD":
            return await send({"type": "http.response.body", "body": b""})
        if whole is not None:
            return await send({"type": "http.response.body", "body": whole})
        # Large files stream: memory stays flat whatever their size.
        async with await trio.open_file(path, "rb") as handle:
            while chunk := await handle.read(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def _caches_files(self) -> bool:
        return self.upstream.mode == "cache" and self.upstream_files is not None

    # -- uploads ----------------------------------------------------------------------------------

    async def upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        try:
            status, message = await handle_upload(
                receive, headers, self.store, self.tokens, self.settings.server.max_upload_size
            )
        except UploadRefused as refusal:
            # The whole message goes to the client; the log keeps its start (it may quote
            # the form's values, which can be long).
            log.info("upload refused (%d): %s", refusal.status, shown(refusal.message, 500))
            # The message goes in the status line too, for clients that print nothing else.
            extra = [*refusal.headers, reason_header(refusal.message)]
            return await text(send, refusal.status, refusal.message, extra=extra)
        await text(send, status, message)


def _through_cache(page: ProjectPage, public_url: str | None = None) -> ProjectPage:
    """An upstream page whose files point at this index (cache mode); only the files it can
    serve: a distribution's filename and a sha256 to check.

    The links are absolute under `[server] public-url` when it is set, else relative as hosted
    ones. An upstream page can list thousands of files, and pip resolves every relative link
    with urljoin while it takes an absolute http(s) one as it is: measured on a 15,000-file
    page, pip built its links in 385 ms from absolute URLs and 689 ms from relative ones (the
    upstream's own, longer, 535 ms); the pages of a 100-wheel install list 116,000 files."""
    prefix = f"{public_url.rstrip('/')}/files/" if public_url else "../../files/"
    files = tuple(
        msgspec.structs.replace(f, url=f"{prefix}{page.name}/{f.filename}")
        for f in page.files
        if SAFE_FILENAME.fullmatch(f.filename) and f.hashes.get("sha256")
    )
    return ProjectPage(name=page.name, files=files, versions=page.versions)


def _whole(page: Page, scope: Scope) -> Page:
    """A proxied page as kept (gzipped bytes alone), with its body for a client that does not
    take gzip."""
    if page.body or page.gzipped is None or _accepts_gzip(scope):
        return page
    return msgspec.structs.replace(page, body=gzip.decompress(page.gzipped))


def _read_if_small(path: Path) -> tuple[int, bytes | None]:
    """The file's size, and its bytes when it fits one chunk: one thread trip for most wheels."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        return size, file.read() if size <= CHUNK else None


# -- responses --------------------------------------------------------------------------------


def _accepts_gzip(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"accept-encoding":
            for coding in value.lower().split(b","):
                name, _, params = coding.partition(b";")
                if name.strip() == b"gzip":
                    return params.replace(b" ", b"") not in (b"q=0", b"q=0.0", b"q=0.00")
    return False


async def send_page(scope: Scope, send: Send, page: Page | None, fmt: Format) -> None:
    assert page is not None
    body, etag = page.body, page.etag
    encoding: list[tuple[bytes, bytes]] = []
    if page.gzipped is not None and _accepts_gzip(scope):
        body, etag = page.gzipped, page.gzip_etag
        encoding = [(b"content-encoding", b"gzip")]
    headers = [
        (b"content-type", fmt.content_type.encode()),
        (b"vary", b"Accept, Accept-Encoding"),
        (b"etag", etag),
        # Always revalidate: a new release must show at once; an unchanged page costs a 304.
        (b"cache-control", b"no-cache"),
        *encoding,
    ]
    if header(scope, b"if-none-match") == etag:
        return await send_empty(send, 304, headers[1:])
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def text(
    send: Send,
    status: int,
    message: str,
    *,
    vary: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [*(extra or []), *([(b"vary", b"Accept")] if vary else [])]
    await send_text(send, status, message, headers=headers)
