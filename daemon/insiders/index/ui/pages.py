"""The web pages as bytes, rendered once per change of what they show, like the simple pages.

People read these pages far more often than projects change, so a page is rendered when first
asked for after a change and then served as stored bytes (gzipped once too, see `make_page`). The
store's change notice drops the pages of that project and the lists; the builds page is keyed
on the watched repositories' state, which is replaced on every change the watcher records (a
watched project's page is kept with the state it showed).
Rendering (Jinja2, readme_renderer) and reading metadata or logs run in a worker thread, so a
project with thousands of versions never stalls the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import trio
from packaging.metadata import parse_email

from insiders.documents.page import Page, make_page
from insiders.errors import UpstreamError
from insiders.index.upstream import Upstream, remember
from insiders.names import NormalizedName, is_valid_name, normalize
from insiders.repos.registry import Repo, Repos
from insiders.store import Project, Store, StoredFile

from .build_logs import PathCut, Provenance, cut_paths, provenance
from .describe import render_description
from .release import classifiers, index_url, install_lines, license_of, people, requirements
from .static import StaticFiles
from .views import (
    BuildLog,
    BuildRow,
    Listing,
    Site,
    build_row,
    build_url,
    close_names,
    failed_versions,
    file_rows,
    human_size,
    iso,
    listing,
    newest_uploads_first,
    project_status,
    safe_links,
    search,
    version_rows,
    when,
)

# Version pages kept rendered at once; a project's own page and the lists are always kept.
MEMORY_PAGES = 1024
# A build log shows its last part: the end of a build log is where the error is.
LOG_TAIL = 64 << 10
LOGS_SHOWN = 10  # the newest build logs per repository on /builds/
LOGS_KEPT = 50  # on a repository's own page, /builds/NAME/
FULL_LOG = 1 << 20  # a version's own page, /builds/NAME/VERSION/, shows this much of its end
SEARCHES = 256  # search pages kept (the queries are the readers' choice, so they are bounded)
BUILD_PAGES = 256  # /builds/NAME/ and /builds/NAME/VERSION/ pages kept


def environment(static: StaticFiles) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("insiders.index.ui", "templates"),
        # Every value is text unless it is Markup (the sanitised description): untrusted
        # summaries, yank reasons and build logs can never become markup.
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(size=human_size, when=when, iso=iso)
    env.globals.update(static=static.url, build_url=build_url)
    return env


@dataclass(eq=False)
class WebPages:
    """Each web page's bytes, kept from its first request until a change of what it shows."""

    store: Store
    repos: Repos
    logs_dir: Path
    site: Callable[[], Site]
    upstream: Upstream  # reconfigured in place by a reload
    # This server's paths that build logs may name, and the names readers see instead.
    path_cuts: Sequence[PathCut] = ()
    static: StaticFiles = field(init=False, default_factory=StaticFiles.load)
    _env: jinja2.Environment = field(init=False)
    # Counts store changes: a page rendered across one is not kept.
    _changes: int = field(init=False, default=0)
    # A project page shows the site (its install lines name the index, its pictures follow
    # server.image-sources): it is kept for one site and one repository state.
    _pages: dict[tuple[NormalizedName, str | None], tuple[Repo | None, Site, Page]] = field(
        init=False, default_factory=dict
    )
    _listings: dict[NormalizedName, Listing] = field(init=False, default_factory=dict)
    _searches: dict[str, tuple[Site, Page]] = field(init=False, default_factory=dict)
    # /builds/NAME/ and /builds/NAME/VERSION/, each kept for one site and repository state.
    _build_pages: dict[tuple[NormalizedName, str | None], tuple[Site, Repo, Page]] = field(
        init=False, default_factory=dict
    )
    _home: tuple[Site, Page] | None = field(init=False, default=None)
    _builds: tuple[tuple[Site, tuple[Repo, ...]], Page] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._env = environment(self.static)
        self.store.subscribe(self.invalidate)

    def invalidate(self, name: NormalizedName) -> None:
        self._changes += 1
        for key in [key for key in self._pages if key[0] == name]:
            del self._pages[key]
        self._listings.pop(name, None)
        for key in [key for key in self._build_pages if key[0] == name]:
            del self._build_pages[key]
        self._searches.clear()
        self._home = None
        self._builds = None  # it links the projects it built

    # -- the pages -------------------------------------------------------------------------------

    async def home(self) -> Page:
        site = self.site()
        if self._home is not None and self._home[0] == site:
            return self._home[1]
        changes = self._changes
        listings = newest_uploads_first(await self._all_listings())
        page = await self._render(
            "home.html",
            site=site,
            projects=listings,
            watched=len(self.repos.all()),
            index_url=index_url(site),
        )
        if changes == self._changes:
            self._home = (site, page)
        return page

    async def search(self, query: str) -> Page:
        """The last SEARCHES queries' pages are kept until the next change, like the others."""
        site = self.site()
        if (kept := self._searches.get(query)) is not None and kept[0] == site:
            return kept[1]
        changes = self._changes
        listings = await self._all_listings()
        found = search(listings, query)
        exact = any(item.normalized == normalize(query.strip() or "-") for item in found)
        page = await self._render(
            "search.html",
            site=site,
            query=query,
            projects=found,
            suggestions=[] if exact else close_names(listings, query),
            total=len(self.store.projects),
        )
        if changes == self._changes:
            remember(self._searches, query, (site, page), SEARCHES)
        return page

    async def project(self, name: NormalizedName, version: str | None) -> Page | None:
        """A project's page (its latest version) or a version's; None if there is no such."""
        key = (name, version)
        repo = self.repos.get(name)
        # A watched project's page shows its repository's state, which the watcher replaces
        # (a new Repo) on every change: the page is kept for one state.
        site = self.site()
        if (kept := self._pages.get(key)) is not None and kept[0] is repo and kept[1] == site:
            return kept[2]
        project = self.store.get(name)
        if project is None:
            return None
        if project.status == "quarantined":
            return await self._quarantined(project, key, repo)
        shown = version if version is not None else project.latest()
        files = list(project.files_of(shown)) if shown is not None else []
        if not files:
            return None
        changes = self._changes
        fields = await self._metadata(project, files, site.image_sources)
        build = None
        built_from: Any = None
        if repo:
            build = build_row(repo, await self._build_logs(repo, 1), cut=self._cut)
            built_from = await trio.to_thread.run_sync(self._provenance, repo.key, files[0].version)
        is_latest = files[0].version == project.latest()
        page = await self._render(
            "project.html",
            site=site,
            project=project,
            version=files[0].version,
            is_latest=is_latest,
            install=install_lines(
                site, project.normalized, None if is_latest else files[0].version
            ),
            requirements=requirements(fields),
            classifiers=classifiers(fields),
            license=license_of(fields),
            authors=people(fields.get("author"), fields.get("author_email")),
            maintainers=people(fields.get("maintainer"), fields.get("maintainer_email")),
            built_from=built_from,
            fields=fields,
            description=fields.get("_description_html"),
            links=safe_links(fields),
            versions=version_rows(project, files[0].version),
            files=file_rows(project, files),
            status=project_status(project),
            yanked=all(f.yanked for f in files),
            yanked_reason=next((f.yanked_reason for f in files if f.yanked_reason), None),
            build=build,
        )
        if changes == self._changes:
            remember(self._pages, key, (repo, site, page), MEMORY_PAGES)
        return page

    async def _quarantined(
        self, project: Project, key: tuple[NormalizedName, str | None], repo: Repo | None
    ) -> Page:
        """A quarantined project's page (PEP 792): its status and reason, and nothing that came
        from its files: no file, hash or link, nor the description or metadata they carry."""
        changes = self._changes
        site = self.site()
        page = await self._render(
            "project.html",
            site=site,
            project=project,
            version="",
            is_latest=True,
            quarantined=True,
            fields={},
            description=None,
            links=[],
            versions=[],
            files=[],
            status=project_status(project),
            yanked=False,
            yanked_reason=None,
            install=[],
            requirements=[],
            classifiers=[],
            license=None,
            authors=[],
            maintainers=[],
            built_from=None,
            build=build_row(repo, (), quarantined=True, cut=self._cut) if repo else None,
        )
        if changes == self._changes:
            remember(self._pages, key, (repo, site, page), MEMORY_PAGES)
        return page

    def hosts(self, name: NormalizedName) -> bool:
        return self.store.get(name) is not None

    def canonical_version(self, name: NormalizedName, version: str) -> str | None:
        """The version as stored, for a URL that spells it another way (1.0.0 for 1.0)."""
        project = self.store.get(name)
        files = list(project.files_of(version)) if project is not None else []
        return files[0].version if files else None

    async def builds(self) -> Page:
        """Every watched repository, failing ones first."""
        site = self.site()
        repos = tuple(self.repos.all())
        if self._builds is not None and self._builds[0] == (site, repos):
            return self._builds[1]
        rows = [await self._build_row(repo, LOGS_SHOWN) for repo in repos]
        rows.sort(key=lambda row: (not row.failed, row.state != "failing"))
        page = await self._render("builds.html", site=site, repos=rows)
        self._builds = ((site, repos), page)
        return page

    async def repo_builds(self, name: NormalizedName) -> Page | None:
        """/builds/NAME/: one repository's state and its logs (a permalink)."""
        return await self._build_page(name, None)

    async def build_log(self, name: NormalizedName, version: str) -> Page | None:
        """/builds/NAME/VERSION/: one version's build log, its end first in view."""
        return await self._build_page(name, version)

    async def _build_page(self, name: NormalizedName, version: str | None) -> Page | None:
        repo = self.repos.get(name)
        if repo is None:
            return None
        site = self.site()
        key = (name, version)
        if (kept := self._build_pages.get(key)) is not None and kept[:2] == (site, repo):
            return kept[2]
        changes = self._changes
        if version is None:
            row = await self._build_row(repo, LOGS_KEPT)
            page = await self._render("build_repo.html", site=site, r=row)
        else:
            row = await self._build_row(repo, 0)
            log = None
            if not row.quarantined:
                directory = self.logs_dir / repo.key
                log = await trio.to_thread.run_sync(
                    self._read_one_log, directory, version, FULL_LOG
                )
            failure = next((f for f in row.failed if f.version == version), None)
            if log is None and failure is None:
                return None
            page = await self._render(
                "build_log.html", site=site, r=row, log=log, failure=failure, version=version
            )
        if changes == self._changes:
            remember(self._build_pages, key, (site, repo, page), BUILD_PAGES)
        return page

    async def _build_row(self, repo: Repo, count: int) -> BuildRow:
        project = self.store.get(repo.key)
        if project is not None and project.status == "quarantined":
            return build_row(repo, (), quarantined=True, cut=self._cut)
        return build_row(repo, await self._build_logs(repo, count), cut=self._cut)

    async def not_found(self, path: str, name: str | None) -> Page:
        """A 404 that helps: the normalised name, hosted projects with a close name (a typo), a
        search for it, and what the upstream says."""
        normalized = normalize(name) if name and is_valid_name(name) else None
        close = close_names(await self._all_listings(), normalized) if normalized else []
        return await self._render(
            "not_found.html",
            site=self.site(),
            path=path,
            name=name,
            normalized=normalized,
            close=close,
            **await self._upstream_answer(normalized),
        )

    async def _upstream_answer(self, normalized: NormalizedName | None) -> dict[str, object]:
        """What the not-found page says of the upstream: whether it has the name (None when it
        was not asked: no upstream, or no valid name), or why it could not be asked."""
        upstream = self.upstream
        if normalized is None or upstream.mode == "none" or not upstream.url:
            return {"upstream_has": None, "upstream_error": None}
        try:
            return {"upstream_has": await upstream.exists(normalized), "upstream_error": None}
        except UpstreamError as error:
            return {"upstream_has": None, "upstream_error": str(error)}

    # -- reading ---------------------------------------------------------------------------------

    async def _render(self, template: str, **context: Any) -> Page:
        def render() -> Page:
            body = self._env.get_template(template).render(**context).encode()
            return make_page(body)

        return await trio.to_thread.run_sync(render)

    async def _all_listings(self) -> list[Listing]:
        """Every hosted project's listing; summaries are read (once per change) in a thread."""
        projects = list(self.store.projects.values())  # the store may change while we read
        missing = [p for p in projects if p.normalized not in self._listings]
        made: dict[NormalizedName, Listing] = {}
        if missing:
            changes = self._changes
            summaries = await trio.to_thread.run_sync(self._read_summaries, missing)
            made = {
                p.normalized: listing(p, summary)
                for p, summary in zip(missing, summaries, strict=True)
            }
            if changes == self._changes:
                self._listings.update(made)
        return [
            self._listings.get(p.normalized) or made.get(p.normalized) or listing(p, None)
            for p in projects
        ]

    def _read_summaries(self, projects: list[Project]) -> list[str | None]:
        summaries: list[str | None] = []
        for project in projects:
            latest = project.latest()
            files = list(project.files_of(latest)) if latest else []
            fields = self._read_fields(project, files) if files else {}
            summary = fields.get("summary")
            summaries.append(summary if isinstance(summary, str) else None)
        return summaries

    async def _metadata(
        self, project: Project, files: list[StoredFile], image_sources: Sequence[str]
    ) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            fields = self._read_fields(project, files)
            fields["_description_html"] = render_description(
                fields.get("description"), fields.get("description_content_type"), image_sources
            )
            return fields

        return await trio.to_thread.run_sync(read)

    def _read_fields(self, project: Project, files: list[StoredFile]) -> dict[str, Any]:
        """A release's core metadata: a wheel's (the built truth) before an sdist's PKG-INFO."""
        for stored in sorted(files, key=lambda f: not f.is_wheel):
            path = self.store.path(project.normalized, f"{stored.filename}.metadata")
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            fields, _ = parse_email(raw)
            return dict(fields)
        return {}

    async def _build_logs(self, repo: Repo, count: int) -> list[BuildLog]:
        """The newest `count` logs, and those of the newest failed versions whatever their age
        (a failure is what a reader of the builds page comes for)."""
        directory = self.logs_dir / repo.key
        failed = [f.version for f in failed_versions(repo) if f.version][:LOGS_SHOWN]

        def read() -> list[BuildLog]:
            logs = {log.version: log for log in _read_logs(directory, count, self._cut)}
            for version in failed:
                if version not in logs and (
                    log := self._read_one_log(directory, version, LOG_TAIL)
                ):
                    logs[version] = log
            return list(logs.values())

        return await trio.to_thread.run_sync(read)

    def _read_one_log(self, directory: Path, version: str, tail: int) -> BuildLog | None:
        if "/" in version or version.startswith("."):
            return None
        path = directory / f"{version}.log"
        try:
            return _read_log(path, tail, self._cut)
        except OSError:
            return None

    def _provenance(self, name: NormalizedName, version: str) -> Provenance | None:
        """The tag and commit a watched version was built from, as its build log records them
        (None when there is no log: the store itself does not keep them)."""
        try:
            with open(self.logs_dir / name / f"{version}.log", "rb") as file:
                head = file.read(4096).decode("utf-8", "replace")
        except OSError:
            return None
        return provenance(head)

    def _cut(self, text: str) -> str:
        """`text` without this server's paths (build logs and errors are shown to readers)."""
        cuts = [*self.path_cuts, PathCut(str(self.logs_dir.parent), "$DATA")]
        for repo in self.repos.all():
            location = repo.source.location
            if repo.source.kind != "github" and location.startswith("/"):
                cuts.append(PathCut(location, location.rstrip("/").rpartition("/")[2]))
        return cut_paths(text, cuts)


def _read_logs(directory: Path, count: int, cut: Callable[[str], str]) -> list[BuildLog]:
    """The newest `count` build logs of a repository, each cut to its last LOG_TAIL bytes."""
    if count <= 0:
        return []
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(".log") and e.is_file()]
    except OSError:
        return []
    entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    logs = []
    for entry in entries[:count]:
        try:
            logs.append(_read_log(Path(entry.path), LOG_TAIL, cut))
        except OSError:
            continue
    return logs


def _read_log(path: Path, tail: int, cut: Callable[[str], str]) -> BuildLog:
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        file.seek(max(0, size - tail))
        data = file.read()
        at = os.fstat(file.fileno()).st_mtime
    return BuildLog(
        version=path.name.removesuffix(".log"),
        at=at,
        text=cut(data.decode("utf-8", "replace")),
        truncated=size > tail,
    )
