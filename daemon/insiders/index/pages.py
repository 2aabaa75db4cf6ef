"""Rendered pages of hosted projects, kept as bytes and dropped when their project changes.

Serving a page is a dictionary lookup: no directory scan, no hashing, no archive reading. The
pages kept weigh at most PAGES_KEPT bytes, the least recently served going first: at a million
files, every page once would otherwise keep about as much again as the store's records (1.8 GB),
and a page not asked for in a while costs one render (milliseconds) when it is.
"""

from __future__ import annotations

from insiders.documents import render
from insiders.documents.model import hosted_page
from insiders.documents.negotiate import Format
from insiders.documents.page import Page, make_page
from insiders.names import NormalizedName
from insiders.store import Store

from .pagecache import LRU

ROOT = NormalizedName("")
# Bytes of rendered pages kept (plain and gzipped together).
PAGES_KEPT = 256 << 20


class HostedPages:
    def __init__(self, store: Store, limit: int = PAGES_KEPT) -> None:
        self._store = store
        self._cache: LRU[tuple[NormalizedName, bool], Page] = LRU(limit)
        store.subscribe(self.invalidate)

    def invalidate(self, name: NormalizedName) -> None:
        for key in ((name, True), (name, False), (ROOT, True), (ROOT, False)):
            self._cache.discard(key)

    def _keep(self, key: tuple[NormalizedName, bool], page: Page) -> Page:
        self._cache.put(key, page, len(page.body) + len(page.gzipped or b""))
        return page

    def root(self, fmt: Format) -> Page:
        key = (ROOT, fmt.is_html)
        page = self._cache.get(key)
        if page is None:
            names = sorted(p.name for p in self._store.projects.values())
            body = render.root_html(names) if fmt.is_html else render.root_json(names)
            page = self._keep(key, make_page(body))
        return page

    def project(self, name: NormalizedName, fmt: Format) -> Page | None:
        key = (name, fmt.is_html)
        page = self._cache.get(key)
        if page is None:
            project = self._store.get(name)
            if project is None:
                return None
            model = hosted_page(project)
            body = render.project_html(model) if fmt.is_html else render.project_json(model)
            page = self._keep(key, make_page(body))
        return page
