"""Rendered pages of hosted projects, kept as bytes and dropped when their project changes.

Serving a page is a dictionary lookup: no directory scan, no hashing, no archive reading.
"""

from __future__ import annotations

from insiders.documents import render
from insiders.documents.model import hosted_page
from insiders.documents.negotiate import Format
from insiders.documents.page import Page, make_page
from insiders.names import NormalizedName
from insiders.store import Store

ROOT = NormalizedName("")


class HostedPages:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[tuple[NormalizedName, bool], Page] = {}
        store.subscribe(self.invalidate)

    def invalidate(self, name: NormalizedName) -> None:
        for key in ((name, True), (name, False), (ROOT, True), (ROOT, False)):
            self._cache.pop(key, None)

    def root(self, fmt: Format) -> Page:
        key = (ROOT, fmt.is_html)
        page = self._cache.get(key)
        if page is None:
            names = sorted(p.name for p in self._store.projects.values())
            body = render.root_html(names) if fmt.is_html else render.root_json(names)
            page = self._cache[key] = make_page(body)
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
            page = self._cache[key] = make_page(body)
        return page
