"""What each page shows, as plain data: pure functions of the store's model and core metadata.

The templates only lay these out, so the choices (which version is current, how a size or a time
reads, which links are safe to follow) are made once here and tested with tables.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import msgspec
from packaging.version import Version

from insiders.names import NormalizedName, parse_version
from insiders.repos.registry import Repo
from insiders.repos.status import repo_status
from insiders.store import Project, StoredFile
from insidersctl.output import DECIMAL, size

from .build_logs import error_lines


class Site(msgspec.Struct, frozen=True, kw_only=True):
    """What every page may say about this index; it changes only with the configuration."""

    base_url: str  # ends with "/": the URL clients reach this index at
    version: str  # insiders' own
    upstream_mode: str  # redirect, proxy or none
    upstream_url: str | None
    upstream_ttl: float = 600.0
    read_access: str = "anyone"  # or "token": every read, a copied install line too, needs one
    image_sources: tuple[str, ...] = ()  # server.image-sources: pictures shown from elsewhere

    @property
    def upstream_project_url(self) -> str | None:
        """The upstream's web pages, when its simple URL is the usual `…/simple/`: a person is
        better sent to a project's page there than to its raw simple page."""
        url = self.upstream_url
        if url and url.rstrip("/").endswith("/simple"):
            return url.rstrip("/").removesuffix("simple") + "project/"
        return None

    @property
    def simple_url(self) -> str:
        return f"{self.base_url}simple/"

    @property
    def upload_url(self) -> str:
        return f"{self.base_url}legacy/"


class Listing(msgspec.Struct, frozen=True, kw_only=True):
    """A hosted project as the home page and the search list it."""

    name: str
    normalized: NormalizedName
    latest: str | None
    summary: str
    last_upload: float
    versions: int
    status: str | None = None  # PEP 792's archived, deprecated or quarantined; None when active

    @property
    def url(self) -> str:
        return project_url(self.normalized)


class VersionRow(msgspec.Struct, frozen=True, kw_only=True):
    version: str
    url: str
    uploaded: float
    yanked: bool
    yanked_reason: str | None
    prerelease: bool
    current: bool  # the version this page shows
    latest: bool


class FileRow(msgspec.Struct, frozen=True, kw_only=True):
    filename: str
    url: str
    kind: str
    size: int
    uploaded: float
    requires_python: str | None
    sha256: str
    uploaded_by: str | None
    yanked: bool
    yanked_reason: str | None


class Link(msgspec.Struct, frozen=True):
    label: str
    url: str


def project_url(name: str, version: str | None = None) -> str:
    """The page of a project (or of one of its versions), relative to the site's root."""
    path = f"/project/{quote(name, safe='')}/"
    return f"{path}{quote(version, safe='')}/" if version else path


def listing(project: Project, summary: str | None) -> Listing:
    """A quarantined project is listed by its name and status only: its summary and version come
    from its files, which are not shown while it is quarantined."""
    quarantined = project.status == "quarantined"
    return Listing(
        name=project.name,
        normalized=project.normalized,
        latest=None if quarantined else project.latest(),
        summary="" if quarantined else summary or "",
        status=None if project.status == "active" else project.status,
        last_upload=max((f.upload_time for f in project.files), default=0.0),
        versions=len({f.version for f in project.files}),
    )


def newest_uploads_first(listings: Iterable[Listing]) -> list[Listing]:
    return sorted(listings, key=lambda item: (-item.last_upload, item.normalized))


def _normal(text: str) -> str:
    """PEP 503's rule on any text: `mkdocs_material`, `MkDocs.Material` are `mkdocs-material`."""
    return _SEPARATORS.sub("-", text.casefold())


_SEPARATORS = re.compile(r"[-_.]+")


def search(listings: Iterable[Listing], query: str) -> list[Listing]:
    """Projects whose name or summary holds every word of `query`; best name matches first.

    Names and words compare the PEP 503 way, as the index's URLs do: `mkdocs_material` finds
    `mkdocs-material`.
    """
    words = [_normal(word) for word in query.split()]
    if not words:
        return newest_uploads_first(listings)
    whole = _normal(query.strip())
    found: list[tuple[int, str, Listing]] = []
    for item in listings:
        name = item.normalized
        spaced = name.replace("-", " ")
        haystack = f"{name} {spaced} {_normal(item.summary)}"
        if not all(word in haystack for word in words):
            continue
        if whole == name:
            rank = 0
        elif name.startswith(whole):
            rank = 1
        elif all(word in f"{name} {spaced}" for word in words):
            rank = 2
        else:
            rank = 3
        found.append((rank, item.normalized, item))
    return [item for _, _, item in sorted(found, key=lambda entry: entry[:2])]


def close_names(listings: Iterable[Listing], query: str, limit: int = 3) -> list[Listing]:
    """Hosted projects whose name is close to the query (a typo: `reqests`), closest first."""
    by_name = {item.normalized: item for item in listings}
    wanted = _normal(query.strip()).replace(" ", "-")
    if not wanted:
        return []
    names = difflib.get_close_matches(wanted, list(by_name), n=limit, cutoff=0.75)
    return [by_name[NormalizedName(name)] for name in names]


def version_rows(project: Project, current: str) -> list[VersionRow]:
    """Every version, newest first, with what a reader needs to choose one."""
    latest = project.latest()
    by_version: dict[str, list[StoredFile]] = {}
    for stored in project.files:
        by_version.setdefault(stored.version, []).append(stored)
    rows = []
    for version in reversed(project.versions()):
        files = by_version[version]
        parsed = parse_version(version)
        rows.append(
            VersionRow(
                version=version,
                url=project_url(project.normalized, version),
                uploaded=min(f.upload_time for f in files),
                yanked=all(f.yanked for f in files),
                yanked_reason=next((f.yanked_reason for f in files if f.yanked_reason), None),
                prerelease=parsed is not None and parsed.is_prerelease,
                current=version == current,
                latest=version == latest,
            )
        )
    return rows


def file_rows(project: Project, files: Iterable[StoredFile]) -> list[FileRow]:
    """A release's files, wheels first."""
    rows = [
        FileRow(
            filename=f.filename,
            url=f"/files/{project.normalized}/{quote(f.filename)}",
            kind="wheel" if f.is_wheel else "source",
            size=f.size,
            uploaded=f.upload_time,
            requires_python=f.requires_python,
            sha256=f.sha256,
            uploaded_by=f.uploaded_by,
            yanked=f.yanked,
            yanked_reason=f.yanked_reason,
        )
        for f in files
    ]
    return sorted(rows, key=lambda row: (row.kind != "wheel", row.filename))


def project_status(project: Project) -> tuple[str, str | None] | None:
    """PEP 792's status (archived, quarantined, deprecated) and its reason, when one is set."""
    if project.status == "active":
        return None
    return project.status, project.status_reason


def safe_links(fields: Mapping[str, Any]) -> list[Link]:
    """The metadata's Project-URL and Home-page entries that are plain http(s) links.

    An upload chooses these: anything but http and https (javascript:, data:) is dropped.
    """
    links: list[Link] = []
    urls: Any = fields.get("project_urls") or {}
    home = fields.get("home_page")
    pairs = list(urls.items()) if isinstance(urls, dict) else []
    if isinstance(home, str):
        pairs.insert(0, ("Homepage", home))
    seen: set[str] = set()
    for label, url in pairs:
        url = str(url).strip()
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc and url not in seen:
            seen.add(url)
            links.append(Link(str(label).strip() or parts.netloc, url))
    return links


# -- words and numbers as people read them -----------------------------------------------------


def human_size(count: int) -> str:
    return size(count, DECIMAL)


def iso(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(timestamp: float | None) -> str:
    """A time as a short UTC date and time: the same for every reader and every cache."""
    if not timestamp:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- the watcher --------------------------------------------------------------------------------


class BuildLog(msgspec.Struct, frozen=True, kw_only=True):
    """One build's log file (DATA/logs/NAME/VERSION.log): its text, or its tail when long."""

    version: str
    at: float  # when it was last written
    text: str
    truncated: bool = False


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    version: str | None
    error: str
    at: float | None
    lines: tuple[str, ...] = ()  # the lines of its log that say why (build_logs.error_lines)


class BuildRow(msgspec.Struct, frozen=True, kw_only=True):
    """A watched repository as the builds page and its project's page show it."""

    dist: str
    normalized: NormalizedName
    source: str
    state: str  # "ok", "failing", "not checked yet"
    newest_tag: str | None
    last_published: str | None
    last_published_at: float | None
    last_check: float | None
    failed: tuple[Failure, ...]
    builds: tuple[BuildLog, ...]  # newest first
    # The project is quarantined: its logs and failures (which name its files) are not shown.
    quarantined: bool = False

    @property
    def url(self) -> str:
        return project_url(self.normalized)

    @property
    def builds_url(self) -> str:
        return build_url(self.normalized)

    @property
    def failed_versions(self) -> set[str]:
        return {f.version for f in self.failed if f.version}


def build_url(name: str, version: str | None = None) -> str:
    """The permalink of a repository's builds, or of one version's build log."""
    path = f"/builds/{quote(name, safe='')}/"
    return f"{path}{quote(version, safe='')}/" if version else path


def source_text(repo: Repo) -> str:
    """Where the repository is, as readers may see it: a local one by its directory's name only
    (its path is this server's business)."""
    source = repo.source
    if source.kind == "github":
        return f"GitHub {source.location}"
    if source.location.startswith("/"):
        return f"the local repository {source.location.rstrip('/').rpartition('/')[2]}"
    return source.location


def failed_versions(repo: Repo) -> tuple[Failure, ...]:
    """The versions whose last build failed, newest first, with their error; else the check's own
    error (listing or fetching failed before any version was tried)."""
    state = repo.state
    failed = [(v, r) for v, r in state.versions.items() if r.status == "failed"]
    if failed:
        failed.sort(key=lambda item: parse_version(item[0]) or Version("0"), reverse=True)
        return tuple(
            Failure(version=v, error=r.message or "the build failed", at=r.at) for v, r in failed
        )
    if not state.last_error:
        return ()
    return (Failure(version=None, error=state.last_error, at=state.last_error_at),)


def build_row(
    repo: Repo,
    logs: Iterable[BuildLog],
    *,
    quarantined: bool = False,
    cut: Callable[[str], str] = str,
) -> BuildRow:
    """A repository's state with its logs, failures first: a failed version's log before the
    newer successes (the failure is what a reader came for), each failure with the lines of
    its log that say why. `cut` hides this server's paths in what the watcher recorded."""
    state = repo.state
    derived = repo_status(state)  # as insidersctl says it
    status = "not checked yet" if derived == "unchecked" else derived
    logs = list(logs)
    by_version = {log.version: log for log in logs}
    failed = () if quarantined else failed_versions(repo)
    failed = tuple(
        msgspec.structs.replace(
            f,
            error=cut(f.error),
            lines=error_lines(by_version[f.version].text) if f.version in by_version else (),
        )
        for f in failed
    )
    failing = {f.version for f in failed}
    return BuildRow(
        dist=repo.dist,
        normalized=repo.key,
        source=source_text(repo),
        state=status,
        newest_tag=state.newest_tag,
        last_published=state.last_published,
        last_published_at=state.last_published_at,
        last_check=state.last_check,
        failed=failed,
        builds=()
        if quarantined
        else tuple(sorted(logs, key=lambda log: (log.version not in failing, -log.at))),
        quarantined=quarantined,
    )
