"""The sync engine: one task per target, converging the target to the store.

The store calls `notify(name)` after every change to a project (upload, build, yank, remove); the
target's task then writes that project and the root, nothing else. Its order keeps every reader
consistent: the project's files first, then its pages (and its manifest), then the root, and only
then what the project no longer has. At start, after `insidersctl mirrors sync NAME`, and after a
failure, a full comparison lists what the target holds and repairs every difference, so a kill at
any instant, or a target that was down for a day, converges.

A full comparison first reads the target's manifests and asks `claim.judge` whether the target may
be made to match the store at all: a target that holds more than the store, or another store's, is
refused (state "refused", one log line saying what to run) and nothing is written to it until
`insidersctl mirrors sync NAME --adopt` or `--force`. While it is refused, the names it lists are
`withheld`: the index answers 503 for them instead of falling back to the upstream index, until a
comparison accepts the target. Deletions only ever take what the store holds or recorded as
removed (`layout.owned`), and pages.

A target that fails (unreachable, full, refusing) is retried with backoff in its own task: uploads
and pages never wait for a mirror. Its changes stay pending until it takes them.

Up to `concurrency` requests are in flight at once (a bucket's latency hides behind them; 1 writes
one at a time): the files of a project, then its pages together, then its manifest, so no page is
written before the files it links, and the root only once every project of the round is written.
Projects of one round (a comparison, or the changes that came in meanwhile) proceed in parallel;
changes to one project during a round coalesce into one write of its pages in the next. A round
after this process wrote a project plans from what it wrote (`_synced`), not from a listing of
the target, so a change to a project of 20,000 files costs what changed, not a listing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import msgspec
import trio

from insiders.config import MirrorSettings, Settings
from insiders.errors import MirrorRefused, ProjectChanged, TargetError
from insiders.names import NormalizedName
from insiders.store import Project, Store, StoredFile

from . import claim, layout
from .targets import Target, open_target

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
# Seconds the daemon waits, before it serves, for its targets' root manifests (see first_look).
FIRST_LOOK = 5.0


class Comparison(msgspec.Struct, kw_only=True):
    """What one full comparison did (the reply to `insidersctl mirrors sync`)."""

    files: int = 0
    pages: int = 0
    deleted: int = 0
    seconds: float = 0.0
    rewritten: int = 0  # files whose bytes in the target differed from their sha256
    error: str | None = None
    refused: bool = False  # the error is a refusal: nothing is retried until told


@dataclass(frozen=True)
class MirrorState:
    """What a target's sync shows the rest of the daemon (insidersctl words it as MirrorInfo)."""

    name: str
    kind: str  # directory, s3
    location: str
    state: str  # idle (current), syncing, comparing, failing (retrying), refused, broken
    lag: float  # seconds since the oldest change the target does not show yet
    pending: int  # projects whose changes are not written yet
    full_sync_pending: bool
    last_sync: float | None  # wall-clock time the target was last current
    last_error: str | None
    last_error_at: float | None
    next_retry: float | None  # wall-clock time of the next attempt, while failing
    requests: int  # operations on the target since the daemon started
    withheld: int = 0  # projects it lists that the store does not host, kept from the upstream


class MirrorTarget:
    """One [mirrors.NAME]: its target, what it still has to write, and how it fares."""

    def __init__(
        self,
        name: str,
        settings: MirrorSettings,
        store: Store,
        credentials: Path | None,
        opener: Callable[[str, MirrorSettings, Path | None], Target] = open_target,
        public_url: str | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        # The base of the JSON API documents' absolute URLs: the mirror's own `url`, else the
        # server's public-url (the URL the front answers at), else relative to the front's host.
        self.base_url = settings.url or (public_url.rstrip("/") + "/" if public_url else "/")
        self.store = store
        self.kind = "directory" if settings.directory is not None else "s3"
        self.location = settings.directory or f"s3://{settings.bucket}/{settings.prefix}"
        self.target: Target | None = None
        self.broken: str | None = None
        try:
            self.target = opener(name, settings, credentials)
            self.location = self.target.location
        except TargetError as error:
            self.broken = str(error)
            log.error("mirror %s cannot be used: %s", name, error)
        self.concurrency = settings.concurrency
        self._limiter = trio.CapacityLimiter(self.concurrency)
        self._root_lock = trio.Lock()  # one root write at a time: the newest state lands last
        self._wake = trio.Event()
        self._retry_now = trio.Event()
        # name -> change counter when last notified, and when its first unwritten change came.
        self._changes: dict[NormalizedName, int] = {}
        self._first_change: dict[NormalizedName, float] = {}
        self._counter = 0
        self._full_wanted = True  # every start begins with a full comparison
        self._accept: claim.Accept = ""  # what the next full comparison may accept
        self.refused: str | None = None  # why the target is not written (a refusal's line)
        # The projects the target lists while it is refused: never looked up upstream.
        self.withheld: frozenset[str] = frozenset()
        self._waiters: list[tuple[trio.Event, list[Comparison]]] = []
        # What this process last wrote: the project as synced, and the root pages' digests.
        self._synced: dict[NormalizedName, Project] = {}
        self._root_etags: dict[str, bytes] = {}
        self.state = "idle"
        self.last_sync: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.next_retry: float | None = None
        self._comparison = Comparison()

    # -- what the rest of the daemon sees -------------------------------------------------------

    def notify(self, name: NormalizedName) -> None:
        self._counter += 1
        self._changes[name] = self._counter
        self._first_change.setdefault(name, time.time())
        self._wake.set()

    def info(self) -> MirrorState:
        now = time.time()
        oldest = min(self._first_change.values(), default=None)
        return MirrorState(
            name=self.name,
            kind=self.kind,
            location=self.location,
            state="broken" if self.broken else self.state,
            lag=now - oldest if oldest is not None else 0.0,
            pending=len(self._changes),
            full_sync_pending=self._full_wanted,
            last_sync=self.last_sync,
            last_error=self.broken or self.last_error,
            last_error_at=self.last_error_at,
            next_retry=self.next_retry,
            requests=self.target.requests if self.target else 0,
            withheld=sum(1 for n in self.withheld if self.store.get(NormalizedName(n)) is None),
        )

    async def full_sync(self, accept: claim.Accept = "") -> Comparison:
        """Ask for a full comparison and wait for it (or for its first failure); `accept` lifts
        a refusal (see `claim`)."""
        if self.broken:
            return Comparison(error=self.broken)
        if accept:
            self._accept = accept
        done = trio.Event()
        result: list[Comparison] = []
        self._waiters.append((done, result))
        self._full_wanted = True
        self._wake.set()
        self._retry_now.set()
        await done.wait()
        return result[0]

    async def verify(self) -> tuple[int, list[tuple[str, str]]]:
        """Every file the target's manifests name, read back and checked by its size and
        sha256, changing nothing: (files checked, [(key, what differs)])."""
        if self.target is None:
            raise TargetError(self.broken or "not usable")
        target = self.target
        root = _root(await self._call(target.read, layout.ROOT_MANIFEST))
        if root is None:
            return 0, [(layout.ROOT_MANIFEST, "missing or unreadable")]
        names = [NormalizedName(n) for n in root.projects if claim.is_project_name(n)]
        theirs = await self._held_manifests(names)
        differs = [
            (layout.ROOT_MANIFEST, f"names {n!r}, not a project name")
            for n in root.projects
            if not claim.is_project_name(n)
        ]
        differs += [
            (f"simple/{n}/{layout.PROJECT_MANIFEST}", "missing or unreadable")
            for n in names
            if n not in theirs
        ]
        wanted: list[tuple[str, int | None, str]] = []
        for name, project in theirs.items():
            for key, (stored, is_metadata) in layout.wanted_files(project).items():
                why = claim.unsafe_file(name, stored)
                if why is not None:
                    differs.append((f"simple/{name}/{layout.PROJECT_MANIFEST}", why))
                    continue
                size = None if is_metadata else stored.size
                wanted.append((key, size, _recorded(stored, is_metadata)))

        async def check(key: str, size: int | None, sha256: str) -> None:
            held = await self._call(target.digest, key)
            if held is None:
                differs.append((key, "missing"))
            elif held[1] != sha256 or (size is not None and held[0] != size):
                recorded = f"{size} bytes, " if size is not None else ""
                differs.append(
                    (key, f"holds {held[0]} bytes, sha256 {held[1]}; recorded {recorded}{sha256}")
                )

        await _each(check, wanted)
        return len(wanted), sorted(differs)

    async def first_look(self) -> None:
        """Before the index serves: the projects the target's root manifest lists and the store
        does not host are withheld until a comparison judges the target, so that no request
        reaches the upstream for them in between (a target that cannot be read now is judged
        by its comparison alone)."""
        if self.target is None:
            return
        try:
            data = await trio.to_thread.run_sync(
                self.target.read, layout.ROOT_MANIFEST, abandon_on_cancel=True
            )
        except TargetError:
            return
        root = _root(data)
        if root is not None:
            self.withheld = frozenset(
                n
                for n in root.projects
                if claim.is_project_name(n) and self.store.get(NormalizedName(n)) is None
            )

    # -- the task ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.target is None:
            return
        failures = 0
        while True:
            if not self._full_wanted and not self._changes:
                self.state = "idle"
                await self._wake.wait()
            self._wake = trio.Event()
            self._retry_now = trio.Event()  # a sync asked for meanwhile is this very attempt
            full = self._full_wanted
            waiters, self._waiters = self._waiters, []
            self.state = "comparing" if full else "syncing"
            started = time.monotonic()
            self._comparison = Comparison()
            try:
                if full:
                    self._full_wanted = False
                    await self._compare_all()
                else:
                    await self._sync_pending()
            except MirrorRefused as refusal:
                await self._hold(refusal, waiters)
                continue
            except TargetError as error:
                if full:
                    self._full_wanted = True
                failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (failures - 1))
                self.state = "failing"
                self.last_error, self.last_error_at = str(error), time.time()
                self.next_retry = time.time() + delay
                log.warning("mirror %s: %s (next attempt in %.0fs)", self.name, error, delay)
                self._answer(waiters, msgspec.structs.replace(self._comparison, error=str(error)))
                # Changes wait for the next attempt; `mirrors sync` does not.
                with trio.move_on_after(delay):
                    await self._retry_now.wait()
                self._retry_now = trio.Event()
                self.next_retry = None
                continue
            if failures:
                log.info("mirror %s: current again", self.name)
            failures = 0
            self.last_error = None
            self.refused = None
            if not self._changes:
                self.last_sync = time.time()
            self._comparison.seconds = time.monotonic() - started
            self._answer(waiters, self._comparison)

    async def _hold(
        self, refusal: MirrorRefused, waiters: list[tuple[trio.Event, list[Comparison]]]
    ) -> None:
        """Write nothing to the target until `mirrors sync` asks again (with --adopt or --force,
        or once the store holds what the target does); say why once, in one line."""
        message = str(refusal)
        if message != self.refused:
            log.error("%s", message)
        self.refused = message
        self._full_wanted = True
        self.state = "refused"
        self.last_error, self.last_error_at = message, time.time()
        self._answer(
            waiters, msgspec.structs.replace(self._comparison, error=message, refused=True)
        )
        await self._retry_now.wait()
        self._retry_now = trio.Event()

    def _answer(
        self, waiters: list[tuple[trio.Event, list[Comparison]]], outcome: Comparison
    ) -> None:
        for done, result in waiters:
            result.append(outcome)
            done.set()

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)

    # -- incremental ------------------------------------------------------------------------------

    async def _sync_pending(self) -> None:
        batch = dict(self._changes)

        async def one(name: NormalizedName) -> None:
            # A project that changed mid-write is notified again: the next round writes it.
            with suppress(ProjectChanged):
                await self._sync_project(name, None)

        await self._each_project(one, sorted(batch))
        await self._write_root()
        for name, counter in batch.items():
            if self._changes.get(name) == counter:
                del self._changes[name]
                self._first_change.pop(name, None)

    async def _each_project(
        self, job: Callable[[NormalizedName], Awaitable[None]], names: list[NormalizedName]
    ) -> None:
        """`job(name)` for each, `concurrency` projects at a time (their requests share the
        target's limiter); the first TargetError cancels the others (see `_each`). As many
        workers as that, taking the next name in turn: not a task per project of 24,500."""
        queue = iter(names)

        async def worker() -> None:
            for name in queue:
                await job(name)

        await _each(worker, [() for _ in range(min(self.concurrency, len(names)))])

    async def _held(self, name: NormalizedName) -> dict[str, int]:
        assert self.target is not None
        previous = self._synced.get(name)
        if previous is not None:
            # What this process wrote of it: a listing of a large project costs more than the
            # change (a file written twice is found held, a page is replaced anyway).
            return _written(previous)
        held: dict[str, int] = {}
        for prefix in layout.project_prefixes(name):
            held.update(await self._call(self.target.listing, prefix))
        return held

    async def _sync_project(
        self,
        name: NormalizedName,
        held: dict[str, int] | None,
        *,
        full: bool = False,
        theirs: Project | None = None,
        forced: bool = False,
        verify: bool = False,
    ) -> None:
        """Write the project as the store has it. In a full comparison `theirs` is the target's
        own manifest of it; `forced` (mirrors sync --force) lets what that manifest names go;
        `verify` reads every file held back to check it by its sha256."""
        assert self.target is not None
        if held is None:
            held = await self._held(name)
        project = self.store.get(name)
        record = self.store.record(name)
        records = [r for r in (record, theirs if forced else None) if r]
        if project is None:
            # A tombstone's manifest stays: the record of the removals, for a restore.
            kept = {layout.manifest_key(name)} if record is not None else set()
            doomed = [k for k in held if k not in kept and any(layout.owned(k, r) for r in records)]
            if doomed:
                # The root stops naming the project before its pages go, its pages before its
                # files: no reader follows a link to something already gone.
                await self._write_root()
                await self._delete(_pages_first(doomed))
            written = theirs if full else self._synced.get(name)
            if record is None:
                self._synced.pop(name, None)
            elif written != record or layout.manifest_key(name) not in held:
                await self._put_page(layout.tombstone_page(record))
                self._synced[name] = record
            return
        previous = theirs if full else self._synced.get(name)
        await self._copy_files(project, held, previous, verify=verify, trusted=not full)
        pages = layout.page_keys(project)
        if full and previous == project and all(key in held for key in pages):
            pass  # the target shows this project as it is
        else:
            versions = None if full else layout.changed_versions(previous, project)
            new = {f"pypi/{name}/{v}/json" for v in versions or ()}
            if any(key not in held and key not in new for key in pages):
                versions = None  # something is missing: write every page
            await self._write_pages(project, versions)
        self._synced[name] = project
        wanted = set(layout.wanted_files(project)) | pages
        await self._delete(
            _pages_first(
                k for k in held if k not in wanted and any(layout.owned(k, r) for r in records)
            )
        )

    async def _held_manifest(self, name: NormalizedName) -> Project | None:
        """The project as the target's manifest records it (None: none, or unreadable)."""
        assert self.target is not None
        data = await self._call(self.target.read, f"simple/{name}/{layout.PROJECT_MANIFEST}")
        try:
            return layout.decode_project(data) if data is not None else None
        except msgspec.DecodeError:
            return None

    async def _held_manifests(
        self, names: Iterable[NormalizedName]
    ) -> dict[NormalizedName, Project]:
        """Every named project's manifest in the target, read in parallel."""
        found: dict[NormalizedName, Project] = {}

        async def read(name: NormalizedName) -> None:
            project = await self._held_manifest(name)
            if project is not None:
                found[name] = project

        await _each(read, [(name,) for name in names])
        return found

    async def _copy_files(
        self,
        project: Project,
        held: dict[str, int],
        previous: Project | None,
        verify: bool,
        trusted: bool = False,
    ) -> None:
        """Write what the target lacks; a file held with other bytes (its size or its recorded
        hash differs: removed, then uploaded again with new content; or, with `verify`, its
        bytes do not have its sha256) is replaced."""
        assert self.target is not None
        target = self.target
        # One thread trip for the whole plan: a project of thousands of files stats every
        # metadata file.
        todo, stale, kept = await trio.to_thread.run_sync(
            _plan_copies, self.store, project, held, previous, trusted
        )
        if verify:
            for key, path, size, content_type, _ in await self._differing(kept):
                log.warning(
                    "mirror %s: %s holds other bytes than its sha256: rewritten", self.name, key
                )
                stale.append(key)
                todo.append((key, path, size, content_type))
                self._comparison.rewritten += 1
        if stale:
            await self._delete(stale)

        async def put(key: str, path: Path, size: int, content_type: str) -> None:
            try:
                written = await self._call(target.put_file, key, path, size, content_type)
            except FileNotFoundError:
                raise ProjectChanged(key) from None
            self._comparison.files += written

        try:
            await _each(put, todo)
        except* ProjectChanged:
            raise ProjectChanged(project.normalized) from None

    async def _differing(self, kept: list[Kept]) -> list[Kept]:
        """The held files whose bytes do not have the size and sha256 the store records."""
        assert self.target is not None
        target = self.target
        found: list[Kept] = []

        async def check(*job: object) -> None:
            entry: Kept = job  # type: ignore[assignment]
            key, _, size, _, sha256 = entry
            if await self._call(target.digest, key) != (size, sha256):
                found.append(entry)

        await _each(check, kept)
        return found

    async def _write_pages(self, project: Project, versions: set[str] | None) -> None:
        assert self.target is not None
        name = project.normalized
        store = self.store

        def metadata(stored: StoredFile) -> bytes | None:
            try:
                return store.path(name, f"{stored.filename}.metadata").read_bytes()
            except OSError:
                return None

        pages = await trio.to_thread.run_sync(
            layout.project_pages, project, metadata, self.base_url, versions
        )
        *linking, manifest = pages  # the manifest last: it says the pages are whole
        await _each(self._put_page, [(page,) for page in linking])
        await self._put_page(manifest)

    async def _put_page(self, page: layout.PageFile) -> None:
        assert self.target is not None
        await self._call(
            self.target.put_page, page.key, page.page.body, page.page.gzipped, page.content_type
        )
        self._comparison.pages += 1

    async def _write_root(self, *, force: bool = False) -> None:
        async with self._root_lock:  # rendered and written in turn: an older one never lands last
            await self._write_root_now(force=force)

    async def _write_root_now(self, *, force: bool) -> None:
        store = self.store
        pages = await trio.to_thread.run_sync(
            layout.root_pages,
            list(store.projects.values()),
            store.identity,
            store.generation,
            self.base_url,
            [str(n) for n in store.tombstones],
        )
        # Each page only when it changed: most changes move the manifest's generation alone.
        for page in pages:
            if force or self._root_etags.get(page.key) != page.page.etag:
                await self._put_page(page)
                self._root_etags[page.key] = page.page.etag

    async def _delete(self, keys: Iterable[str]) -> None:
        assert self.target is not None
        doomed = list(keys)
        if doomed:
            await self._call(self.target.delete, doomed)
            self._comparison.deleted += len(doomed)

    # -- full comparison --------------------------------------------------------------------------

    async def _compare_all(self) -> None:
        """Long because it is the order of a full comparison: read, judge, write, delete."""
        assert self.target is not None
        log.info("mirror %s: comparing %s with the store", self.name, self.location)
        await self._call(self.target.prepare)
        held = await self._call(self.target.listing, "")
        by_project: dict[NormalizedName, dict[str, int]] = {}
        for key, size in held.items():
            owner = layout.project_of(key)
            if owner is not None:
                by_project.setdefault(owner, {})[key] = size
        root = _root(await self._call(self.target.read, layout.ROOT_MANIFEST))
        manifest = layout.PROJECT_MANIFEST
        # The projects the target's manifests name; a name that is no project name is nobody's.
        with_manifest = {n for n, keys in by_project.items() if f"simple/{n}/{manifest}" in keys}
        named = {
            NormalizedName(n)
            for n in {*(root.projects if root else ()), *with_manifest}
            if claim.is_project_name(n)
        }
        theirs = await self._held_manifests(sorted(named))
        accept, self._accept = self._accept, ""
        verdict = claim.judge(root, theirs, self.store.record, self.store.identity)
        refusal = verdict.refusal(self.name, self.location, accept)
        if refusal is not None:
            self.withheld = frozenset(named)
            unhosted = sum(1 for n in named if self.store.get(n) is None)
            raise MirrorRefused(refusal + claim.withheld_note(unhosted))
        self.withheld = frozenset()
        if root is None or root.store != self.store.identity:
            log.info("mirror %s: written from this store from now on", self.name)
        forced = accept == "force"
        if forced and verdict.holds_more:
            lost = sum(len(files) for files in verdict.lost.values())
            log.warning(
                "mirror %s: made to match the store as told (--force): %d files only it held go",
                self.name,
                lost,
            )
        # Pages rendered by another insiders version, or with other URLs, are all written again.
        current = (
            root is not None and root.generator == layout.GENERATOR and root.base == self.base_url
        )
        if not current:
            self._synced.clear()
        batch = dict(self._changes)

        async def one(name: NormalizedName) -> None:
            try:
                await self._sync_project(
                    name,
                    by_project.get(name, {}),
                    full=current,
                    theirs=theirs.get(name),
                    forced=forced,
                    verify=True,
                )
            except ProjectChanged:
                batch.pop(name, None)

        await self._each_project(one, sorted(self.store.projects))
        ours = root is not None and root.store == self.store.identity
        await self._write_root(force=not current or not ours)
        gone = {n for n in by_project if self.store.get(n) is None} | set(self.store.tombstones)
        for name in sorted(gone):
            await self._sync_project(
                name, by_project.get(name, {}), full=True, theirs=theirs.get(name), forced=forced
            )
        for name, counter in batch.items():
            if self._changes.get(name) == counter:
                del self._changes[name]
                self._first_change.pop(name, None)
        o = self._comparison
        log.info(
            "mirror %s: current (%d files and %d pages written, %d removed)",
            self.name,
            o.files,
            o.pages,
            o.deleted,
        )


Kept = tuple[str, Path, int, str, str]  # key, source, size, content type, sha256


def _written(project: Project) -> dict[str, int]:
    """key -> size of what writing `project` left in the target (a metadata file's size is not
    recorded: -1; `_plan_copies` trusts such a record by its hashes)."""
    held = {
        key: -1 if is_metadata else stored.size
        for key, (stored, is_metadata) in layout.wanted_files(project).items()
    }
    held.update(dict.fromkeys(layout.page_keys(project), -1))
    return held


def _plan_copies(
    store: Store,
    project: Project,
    held: dict[str, int],
    previous: Project | None,
    trusted: bool = False,
) -> tuple[list[tuple[str, Path, int, str]], list[str], list[Kept]]:
    """What to copy (key, source, size, content type), which held keys hold other bytes, and
    which held keys look right by their size (with the sha256 they must have). `trusted`: held
    and `previous` are what this process wrote itself, and a file recorded there with the same
    hashes is written already (nothing is stat'ed for it)."""
    name = project.normalized
    before = {f.filename: f for f in previous.files} if previous is not None else {}
    area = layout.files_area(project)
    stale: list[str] = []
    todo: list[tuple[str, Path, int, str]] = []
    kept: list[Kept] = []
    for key, (stored, is_metadata) in layout.wanted_files(project).items():
        recorded = before.get(stored.filename)
        if (
            trusted
            and key in held
            and recorded is not None
            and (recorded.sha256, recorded.metadata_sha256)
            == (stored.sha256, stored.metadata_sha256)
            and previous is not None
            and layout.files_area(previous) == area
        ):
            continue  # written by this process, unchanged since
        filename = f"{stored.filename}.metadata" if is_metadata else stored.filename
        path = store.path(name, filename)
        if is_metadata:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue  # the store has none after all: nothing links it
            content_type, sha256 = layout.TEXT, stored.metadata_sha256 or ""
        else:
            size, content_type, sha256 = stored.size, layout.BINARY, stored.sha256
        same = recorded is None or recorded.sha256 == stored.sha256
        if held.get(key) == size and same:
            kept.append((key, path, size, content_type, sha256))
            continue
        if key in held:
            stale.append(key)  # a torn copy, or an older file of that name: written again
        todo.append((key, path, size, content_type))
    return todo, stale, kept


async def _each(
    job: Callable[..., Awaitable[None]], arguments: Iterable[tuple[object, ...]]
) -> None:
    """`job(*args)` for each, concurrently; the first TargetError cancels the others and leaves
    here as itself, not in a group (the engine's backoff catches it). Other exceptions leave in
    their group (`except*` them)."""
    failure: TargetError | None = None
    try:
        async with trio.open_nursery() as nursery:
            for args in arguments:
                nursery.start_soon(job, *args)
    except* TargetError as failed:
        failure = failed.exceptions[0]  # type: ignore[assignment]
    if failure is not None:
        raise failure


def _recorded(stored: StoredFile, is_metadata: bool) -> str:
    return (stored.metadata_sha256 or "") if is_metadata else stored.sha256


def _root(manifest: bytes | None) -> layout.RootManifest | None:
    """The target's root manifest; None when there is none or it cannot be read."""
    if manifest is None:
        return None
    try:
        return layout.decode_root(manifest)
    except msgspec.DecodeError:
        return None


def _pages_first(keys: Iterable[str]) -> list[str]:
    """Pages, then documents, then files: the order in which removing them keeps links whole."""
    order = {"simple": 0, "pypi": 1, "files": 2}
    return sorted(keys, key=lambda k: (order.get(k.split("/", 1)[0], 3), k))


class Mirrors:
    """Every configured mirror target, each in its own task."""

    def __init__(
        self,
        settings: dict[str, MirrorSettings],
        store: Store,
        credentials: Path | None,
        public_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.targets = {
            name: MirrorTarget(name, s, store, credentials, public_url=public_url)
            for name, s in sorted(settings.items())
        }
        if self.targets:
            store.subscribe(self.notify)

    def reconfigure(self, new: Settings) -> tuple[str, ...]:
        """Targets are made at start: changed [mirrors] wait for a restart."""
        return ("mirrors",) if new.mirrors != self.settings else ()

    def notify(self, name: NormalizedName) -> None:
        for target in self.targets.values():
            target.notify(name)

    def withheld(self, name: str) -> str | None:
        """Why `name` (not hosted) must not be looked up upstream: a refused target lists it."""
        for target in self.targets.values():
            if name in target.withheld:  # kept while a new comparison runs, until one passes
                return claim.withheld(name, target.name, judged=target.refused is not None)
        return None

    def infos(self) -> tuple[MirrorState, ...]:
        return tuple(t.info() for t in self.targets.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Started before the index serves: each target's first look is taken (all at once, for
        FIRST_LOOK seconds at most), then each target's task runs."""
        with trio.move_on_after(FIRST_LOOK):
            async with trio.open_nursery() as looks:
                for target in self.targets.values():
                    looks.start_soon(target.first_look)
        async with trio.open_nursery() as nursery:
            for target in self.targets.values():
                await nursery.start(target.run)
            task_status.started()

    def close(self) -> None:
        for target in self.targets.values():
            if target.target is not None:
                target.target.close()
