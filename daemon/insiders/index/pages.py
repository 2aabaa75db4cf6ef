"""Rendered pages of hosted projects, kept as bytes and dropped when their project changes.

Serving a page is a dictionary lookup: no directory scan, no hashing, no archive reading.
"""

from __future__ import annotations

import gzip
import hashlib

import msgspec

from insiders.names import NormalizedName
from insiders.store import Store

from . import render
from .model import hosted_page
from .negotiate import Format

ROOT = NormalizedName("")


# Pages smaller than this go out as they are: compressing them saves less than a packet.
GZIP_MIN = 1024


class Page(msgspec.Struct, frozen=True):
    body: bytes
    etag: bytes  # quoted, as it goes into the header
    # The same page gzipped once, at render time, for clients that accept it (pip and uv do):
    # a 2,000-version page shrinks about tenfold.
    gzipped: bytes | None = None
    gzip_etag: bytes = b""


def make_page(body: bytes, *, compresslevel: int = 6) -> Page:
    """The page and its gzipped bytes. Pages rendered once and served long (hosted ones, the
    mirror's) are worth level 6; an upstream page rendered again each `cache-ttl`, level 1
    (three times faster, a page about 15% larger)."""
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    if len(body) < GZIP_MIN:
        return Page(body, f'"{digest}"'.encode())
    # mtime=0: the same page always compresses to the same bytes.
    gzipped = gzip.compress(body, compresslevel=compresslevel, mtime=0)
    return Page(body, f'"{digest}"'.encode(), gzipped, f'"{digest}-gzip"'.encode())


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
