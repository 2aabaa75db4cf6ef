"""What a mirror target holds and under which keys: pure functions of the store's projects.

    simple/index.html, simple/index.json              the root (PEP 503 HTML, PEP 691 JSON)
    simple/insiders-mirror.json                       the root manifest: format, generator, projects
    simple/NAME/index.html, simple/NAME/index.json    a project's pages
    simple/NAME/insiders-project.json                 its manifest: the store's own record of it
                                                      (kept alone for a project whose files were
                                                      all removed: the record of the removals)
    files/NAME/FILENAME, files/NAME/FILENAME.metadata the distributions and their core metadata
    pypi/NAME/json, pypi/NAME/VERSION/json            the JSON API documents
    quarantine/NAME/FILENAME[.metadata]               a quarantined project's files (PEP 792)

A quarantined project's page lists no file and it has no JSON API document, as the daemon serves
it; its files move to quarantine/, which no front serves (nginx's site configs map only simple/,
files/ and pypi/), so the target stays a complete backup and a lifted quarantine moves them back.

The manifests make a target self-describing: a daemon with an empty store restores from them and
checks every file against its hash. The root manifest names the store it was written from (its
identity) and the store's generation then: see `claim`. The pages are rendered by the renderers
the daemon serves with, so a target serves the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import msgspec

from insiders import __version__
from insiders.documents import jsonapi, render
from insiders.documents.model import hosted_page
from insiders.documents.page import Page, make_page
from insiders.names import NormalizedName
from insiders.store import Project, StoredFile

from .manifest import decode_project as decode_project  # read by sync and restore
from .manifest import encode_project

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
    # The identity of the store it was written from ("": before identities, or never written).
    store: str = ""
    generation: int = 0
    # The base of the JSON API documents' URLs they were written with: another one rewrites them.
    base: str = ""
    # Projects whose files were all removed: only their manifest is kept (a restore brings their
    # record back, so the restored store is the one that was lost, removals included).
    removed: tuple[str, ...] = ()


class PageFile(msgspec.Struct, frozen=True):
    key: str
    page: Page
    content_type: str


_encode = msgspec.json.Encoder().encode
decode_root = msgspec.json.Decoder(RootManifest).decode


FILES = "files"
QUARANTINE = "quarantine"
PROJECT_AREAS = (FILES, QUARANTINE, "pypi", "simple")


def file_key(name: str, filename: str, area: str = FILES) -> str:
    return f"{area}/{name}/{filename}"


def files_area(project: Project) -> str:
    """Where the project's files are kept: served, or out of reach while quarantined."""
    return QUARANTINE if project.status == "quarantined" else FILES


def project_prefixes(name: str) -> tuple[str, ...]:
    """Every prefix that holds something of the project, pages last (they go first on removal)."""
    return (f"{FILES}/{name}/", f"{QUARANTINE}/{name}/", f"pypi/{name}/", f"simple/{name}/")


def project_of(key: str) -> NormalizedName | None:
    """The project a key belongs to, None for the root's keys and anything outside the layout."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] in PROJECT_AREAS:
        return NormalizedName(parts[1])
    return None


def filename_of(key: str) -> str | None:
    """The distribution a file key holds (itself or its metadata), None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] not in (FILES, QUARANTINE):
        return None
    return parts[2].removesuffix(".metadata")


def wanted_files(project: Project) -> dict[str, tuple[StoredFile, bool]]:
    """key -> (file, is its metadata) for every distribution and metadata file of the project."""
    name = project.normalized
    area = files_area(project)
    wanted: dict[str, tuple[StoredFile, bool]] = {}
    for stored in project.files:
        wanted[file_key(name, stored.filename, area)] = (stored, False)
        if stored.metadata_sha256 is not None:
            wanted[file_key(name, f"{stored.filename}.metadata", area)] = (stored, True)
    return wanted


def documents_served(project: Project) -> bool:
    """The daemon answers 404 for a quarantined project's JSON API documents: so does a mirror."""
    return project.status != "quarantined"


def page_keys(project: Project) -> set[str]:
    """The keys of every page project_pages writes for the project."""
    name = project.normalized
    documents = (
        {f"pypi/{name}/json", *(f"pypi/{name}/{version}/json" for version in project.versions())}
        if documents_served(project)
        else set()
    )
    return {
        *documents,
        f"simple/{name}/index.html",
        f"simple/{name}/index.json",
        f"simple/{name}/{PROJECT_MANIFEST}",
    }


def owned(key: str, record: Project) -> bool:
    """Whether the daemon may delete `key` of the record's project: a page or document (the
    layout's own names), or a file the record holds or names as removed. A file the store never
    knew is someone else's, or a loss the claim check refuses: never deleted for it."""
    filename = filename_of(key)
    if filename is None:
        return _is_page_key(key)
    return record.file(filename) is not None or any(r.filename == filename for r in record.removed)


def _is_page_key(key: str) -> bool:
    parts = key.split("/")
    if parts[0] == "simple":
        return len(parts) == 3 and parts[2] in ("index.html", "index.json", PROJECT_MANIFEST)
    if parts[0] == "pypi":
        return (len(parts) == 3 and parts[2] == "json") or (len(parts) == 4 and parts[3] == "json")
    return False


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
    documents = (
        [
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
        ]
        if documents_served(project)
        else []
    )
    return [
        *documents,
        PageFile(f"simple/{name}/index.html", make_page(render.project_html(model)), HTML),
        PageFile(f"simple/{name}/index.json", make_page(render.project_json(model)), SIMPLE_JSON),
        PageFile(f"simple/{name}/{PROJECT_MANIFEST}", make_page(encode_project(project)), API_JSON),
    ]


def manifest_key(name: str) -> str:
    return f"simple/{name}/{PROJECT_MANIFEST}"


def tombstone_page(record: Project) -> PageFile:
    """All a target keeps of a project whose files were all removed: its record."""
    return PageFile(manifest_key(record.normalized), make_page(encode_project(record)), API_JSON)


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


def root_pages(
    hosted: Iterable[Project],
    store: str = "",
    generation: int = 0,
    base: str = "",
    removed: Iterable[str] = (),
) -> list[PageFile]:
    projects = list(hosted)
    names = sorted(p.name for p in projects)
    manifest = RootManifest(
        generator=GENERATOR,
        projects=tuple(sorted(str(p.normalized) for p in projects)),
        store=store,
        generation=generation,
        base=base,
        removed=tuple(sorted(removed)),
    )
    return [
        PageFile("simple/index.html", make_page(render.root_html(names)), HTML),
        PageFile("simple/index.json", make_page(render.root_json(names)), SIMPLE_JSON),
        PageFile(ROOT_MANIFEST, make_page(_encode(manifest)), API_JSON),
    ]
