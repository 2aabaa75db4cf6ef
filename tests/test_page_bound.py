"""The rendered pages a daemon keeps are bounded by bytes (issue 26): at a million files, every
page once kept as much again as the store's records. A page evicted is rendered again, the same
bytes; a change still drops its project's pages and the root."""

from __future__ import annotations

from pathlib import Path

from insiders.documents.negotiate import Format
from insiders.index.pages import HostedPages
from insiders.names import NormalizedName, normalize
from insiders.store import Project, Store, StoredFile


def project(name: str, versions: int) -> Project:
    files = tuple(
        StoredFile(
            filename=f"{name.replace('-', '_')}-1.{v}-py3-none-any.whl",
            version=f"1.{v}",
            size=100,
            sha256=f"{v:064x}",
        )
        for v in range(versions)
    )
    return Project(name=name, files=files)


def test_pages_kept_are_bounded_and_rendered_again(tmp_path: Path) -> None:
    projects = {normalize(f"proj-{i}"): project(f"proj-{i}", 30) for i in range(40)}
    store = Store(tmp_path, projects)
    limit = 40_000
    pages = HostedPages(store, limit=limit)
    first = {
        (name, fmt): pages.project(name, fmt).body  # type: ignore[union-attr]
        for name in projects
        for fmt in (Format.HTML, Format.JSON)
    }
    assert sum(len(body) for body in first.values()) > 3 * limit
    assert pages._cache.weight <= limit
    # Evicted pages come back as they were; the newest are still kept.
    for (name, fmt), body in first.items():
        page = pages.project(name, fmt)
        assert page is not None
        assert page.body == body
        assert pages._cache.weight <= limit
    last = NormalizedName("proj-39")
    kept = pages.project(last, Format.JSON)
    assert pages.project(last, Format.JSON) is kept
    # A change drops the project's pages (and the root), whatever the bound.
    pages.root(Format.HTML)
    pages.invalidate(last)
    assert pages._cache.get((last, False)) is None
    assert pages._cache.get((NormalizedName(""), True)) is None
