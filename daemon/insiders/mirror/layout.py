"""What a mirror target holds and under which keys: pure functions of the store's projects.

    simple/index.html, simple/index.json              the root (PEP 503 HTML, PEP 691 JSON)
    simple/insiders-mirror.json                       the root manifest: format, generator, projects
    simple/NAME/index.html, simple/NAME/index.json    a project's pages
    simple/NAME/insiders-project.json                 its manifest: the store's own record of it
    files/NAME/FILENAME, files/NAME/FILENAME.metadata the distributions and their core metadata
    pypi/NAME/json, pypi/NAME/VERSION/json            the JSON API documents

The manifests make a target self-describing: a daemon with an empty store restores from them and
checks every file against its hash. The pages are rendered by the renderers the daemon serves
with, so a target serves the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import msgspec

from insiders import __version__
from insiders.index import jsonapi, render
from insiders.index.model import hosted_page
from insiders.index.pages import Page, make_page
from insiders.names import NormalizedName
from insiders.store import Project, StoredFile

FORMAT = 1
GENERATOR = __version__
ROOT_MANIFEST = "simple/insiders-mirror.json"
PROJECT_MANIFEST = "insiders-project.json"

HTML = "text/html; charset=utf-8"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
API_JSON = "application/json"
BINARY = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"


class RootManifest(msgspec.Struct, frozen=True, kw_only=True):
    format: int = FORMAT
    # The insiders version that rendered the pages: another one re-renders them all.
    generator: str = ""
    projects: tuple[str, ...] = ()


class PageFile(msgspec.Struct, frozen=True):
    key: str
    page: Page
    content_type: str


_encode = msgspec.json.Encoder().encode
decode_root = msgspec.json.Decoder(RootManifest).decode
decode_project = msgspec.json.Decoder(Project).decode


def encode_project(project: Project) -> bytes:
    return _encode(project)


def file_key(name: str, filename: str) -> str:
    return f"files/{name}/{filename}"


def project_prefixes(name: str) -> tuple[str, ...]:
    """Every prefix that holds something of the project, pages last (they go first on removal)."""
    return (f"files/{name}/", f"pypi/{name}/", f"simple/{name}/")


def project_of(key: str) -> NormalizedName | None:
    """The project a key belongs to, None for the root's keys and anything outside the layout."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] in ("files", "pypi", "simple"):
        return NormalizedName(parts[1])
    return None


def wanted_files(project: Project) -> dict[str, tuple[StoredFile, bool]]:
    """key -> (file, is its metadata) for every distribution and metadata file of the project."""
    name = project.normalized
    wanted: dict[str, tuple[StoredFile, bool]] = {}
    for stored in project.files:
        wanted[file_key(name, stored.filename)] = (stored, False)
        if stored.metadata_sha256 is not None:
            wanted[file_key(name, f"{stored.filename}.metadata")] = (stored, True)
    return wanted


def page_keys(project: Project) -> set[str]:
    """The keys of every page project_pages writes for the project."""
    name = project.normalized
    return {
        f"pypi/{name}/json",
        *(f"pypi/{name}/{version}/json" for version in project.versions()),
        f"simple/{name}/index.html",
        f"simple/{name}/index.json",
        f"simple/{name}/{PROJECT_MANIFEST}",
    }


def changed_versions(before: Project | None, after: Project) -> set[str] | None:
    """The versions whose files differ between two states of a project (None: all of them).

    A release's JSON API document depends on its own files only, so a new upload rewrites one
    document, not one per version of a project that has thousands.
    """
    if before is None:
        return None
    old: dict[str, set[StoredFile]] = {}
    for stored in before.files:
        old.setdefault(stored.version, set()).add(stored)
    new: dict[str, set[StoredFile]] = {}
    for stored in after.files:
        new.setdefault(stored.version, set()).add(stored)
    return {v for v, files in new.items() if old.get(v) != files}


def project_pages(
    project: Project,
    metadata: Callable[[StoredFile], bytes | None],
    base: str,
    versions: set[str] | None = None,
) -> list[PageFile]:
    """The project's pages, JSON API documents and manifest, the manifest last.

    `metadata` reads a file's stored metadata; `versions` limits the per-version documents to
    those (None: every version).
    """
    name = project.normalized
    model = hosted_page(project)
    by_version: dict[str, list[StoredFile]] = {}
    for stored in project.files:
        by_version.setdefault(stored.version, []).append(stored)
    latest = project.files_of(project.latest() or "")
    return [
        PageFile(f"pypi/{name}/json", _api(project, latest, metadata, base, True), API_JSON),
        *(
            PageFile(
                f"pypi/{name}/{version}/json",
                _api(project, by_version[version], metadata, base, False),
                API_JSON,
            )
            for version in project.versions()
            if versions is None or version in versions
        ),
        PageFile(f"simple/{name}/index.html", make_page(render.project_html(model)), HTML),
        PageFile(f"simple/{name}/index.json", make_page(render.project_json(model)), SIMPLE_JSON),
        PageFile(f"simple/{name}/{PROJECT_MANIFEST}", make_page(encode_project(project)), API_JSON),
    ]


def _api(
    project: Project,
    release: Sequence[StoredFile],
    metadata: Callable[[StoredFile], bytes | None],
    base: str,
    with_releases: bool,
) -> Page:
    source = jsonapi.metadata_source(release)
    body = jsonapi.document(project, release, metadata(source), base, with_releases=with_releases)
    return make_page(_encode(body))


def root_pages(hosted: Iterable[Project]) -> list[PageFile]:
    projects = list(hosted)
    names = sorted(p.name for p in projects)
    manifest = RootManifest(
        generator=GENERATOR, projects=tuple(sorted(str(p.normalized) for p in projects))
    )
    return [
        PageFile("simple/index.html", make_page(render.root_html(names)), HTML),
        PageFile("simple/index.json", make_page(render.root_json(names)), SIMPLE_JSON),
        PageFile(ROOT_MANIFEST, make_page(_encode(manifest)), API_JSON),
    ]
