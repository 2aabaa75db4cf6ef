"""The watcher: check repositories for new version tags, build them, publish the builds.

One check of a repository: list its tags (`git ls-remote`, no clone when nothing changed), pick the
versions to build, fetch them into a bare mirror, then build and publish each version on its own,
newest first: a version that fails is recorded (message, log, attempts, next retry) and the others
go on. Checks run in the watcher's own nursery, so a client that stops waiting does not cancel a
build.

Each repository's check is a failure boundary: whatever goes wrong inside it (a full disk, git or
`nice` missing, a bug) is logged once with its traceback and recorded as that repository's error;
the index, the control plane and the other repositories carry on.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import trio
from packaging.version import Version

from insiders.config import Settings
from insiders.credentials import read_secret
from insiders.errors import (
    BuildError,
    CheckFailed,
    FileConflict,
    GitError,
    InvalidDistribution,
    InvalidFilename,
    ProjectClosed,
    PublishError,
)
from insiders.ingest import publish_file
from insiders.names import parse_version
from insiders.repos.registry import Repo, Repos, RepoState, VersionRecord
from insiders.store import Store
from insiders.watcher import builder, git, reproducible, targets
from insiders.watcher.tags import to_build, version_tags
from insidersctl import protocol as p

log = logging.getLogger(__name__)

Progress = Callable[[p.Progress], None]
MAX_BACKOFF = 6 * 3600.0
IGNORED_TAGS_SHOWN = 5


def _ignore(_event: p.Progress) -> None:
    pass


def backoff(failures: int, interval: float) -> float:
    """Seconds to wait after `failures` failed attempts in a row before the periodic retry."""
    return 0.0 if failures <= 0 else min(interval * 2 ** (failures - 1), MAX_BACKOFF)


@dataclass
class CheckResult:
    published: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # rebuilt, identical bytes
    failures: list[p.VersionFailure] = field(default_factory=list)
    note: str | None = None  # e.g. no version tag


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _clean_scratch(scratch: Path) -> int:
    """Remove what builds left in the scratch directory (a crash, a kill -9); how many."""
    try:
        leftovers = list(scratch.iterdir())
    except FileNotFoundError:
        return 0
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return len(leftovers)


class Watcher:
    def __init__(
        self,
        *,
        repos: Repos,
        store: Store,
        settings: Settings,
        cache_dir: Path,
        logs_dir: Path,
        credentials: Path | None,
        index_url: Callable[[], str | None],
    ) -> None:
        self.repos = repos
        self.store = store
        self.settings = settings
        self.mirrors = cache_dir / "mirrors"
        self.scratch = cache_dir / "builds"
        self.logs_dir = logs_dir
        self.credentials = credentials
        self.index_url = index_url
        self.paused = not settings.watcher.enabled
        self.next_check: float | None = None
        self.checking: set[str] = set()
        self._checks = trio.CapacityLimiter(settings.watcher.max_checks)
        self._builds = trio.CapacityLimiter(settings.watcher.max_builds)
        self._locks: dict[str, trio.Lock] = {}
        self._wake = trio.Event()
        self._queued: list[tuple[Sequence[Repo], bool, Sequence[str]]] = []
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()
        self._askpass: Path | None = None

    # -- what the control plane uses (insiders.control.commands.Watcher) --------------------

    def info(self) -> p.WatcherInfo:
        return p.WatcherInfo(
            available=True,
            state="paused" if self.paused else "running",
            interval=self.settings.watcher.interval,
            next_check=None if self.paused else self.next_check,
            checking=tuple(sorted(self.checking)),
        )

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wake.set()

    def apply_settings(self, new: Settings) -> list[str]:
        """Make a reloaded configuration the running one; the [watcher] keys that changed.

        Limits apply to the next check or build that starts, timeouts and targets to the next step
        that uses them; a shorter interval moves the next periodic check closer; `enabled` pauses
        or resumes (when it changed: a `watcher stop` stays in force across an unrelated reload).
        """
        old = self.settings.watcher
        changed = [
            name.replace("_", "-")
            for name in old.__struct_fields__
            if getattr(old, name) != getattr(new.watcher, name)
        ]
        self.settings = new
        self._checks.total_tokens = new.watcher.max_checks
        self._builds.total_tokens = new.watcher.max_builds
        if new.watcher.enabled != old.enabled:
            self.paused = not new.watcher.enabled
        if new.watcher.interval != old.interval and self.next_check is not None:
            self.next_check = min(self.next_check, time.time() + new.watcher.interval)
        self._wake.set()
        return changed

    def schedule(self, repos: Sequence[Repo], *, force: bool, versions: Sequence[str] = ()) -> None:
        self._queued.append((repos, force, versions))
        self._wake.set()

    async def check(
        self,
        repos: Sequence[Repo],
        *,
        force: bool,
        progress: Progress = _ignore,
        versions: Sequence[str] = (),
        explicit: bool = True,
    ) -> Sequence[p.RepoOutcome]:
        """Check now; the checks run in the watcher's nursery and outlive an impatient caller.

        `versions`: build exactly these (a removed version comes back this way). `explicit`: a
        person asked, so failed versions are retried now rather than at their backoff time.
        """
        await self._running.wait()
        assert self._nursery is not None
        results: dict[str, p.RepoOutcome] = {}
        done = trio.Event()

        async def run_all() -> None:
            async with trio.open_nursery() as nursery:
                for repo in repos:
                    nursery.start_soon(
                        partial(
                            self._check_into,
                            repo,
                            force,
                            progress,
                            results,
                            versions=versions,
                            explicit=explicit,
                        )
                    )
            done.set()

        self._nursery.start_soon(run_all)
        await done.wait()
        return [results[r.dist] for r in repos if r.dist in results]

    # -- the periodic loop -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._askpass = await trio.to_thread.run_sync(git.write_askpass, self.mirrors.parent)
        # A build's scratch directory is removed when it ends; after a crash, here.
        if leftovers := await trio.to_thread.run_sync(_clean_scratch, self.scratch):
            log.warning("removed %d scratch director(ies) left by builds before a crash", leftovers)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._running.set()
            task_status.started()
            self.next_check = time.time() + min(5.0, self.settings.watcher.interval)
            while True:
                with trio.move_on_after(max(0.0, self.next_check - time.time())):
                    await self._wake.wait()
                self._wake = trio.Event()
                while self._queued:
                    repos, force, versions = self._queued.pop(0)
                    nursery.start_soon(partial(self.check, repos, force=force, versions=versions))
                if time.time() >= self.next_check:
                    if not self.paused:
                        nursery.start_soon(
                            partial(self.check, self._due(), force=False, explicit=False)
                        )
                    # Jitter spreads the checks of many daemons (and repositories) over time.
                    interval = self.settings.watcher.interval
                    self.next_check = time.time() + interval * random.uniform(0.9, 1.1)

    def _due(self) -> list[Repo]:
        now = time.time()
        interval = self.settings.watcher.interval
        return [
            repo
            for repo in self.repos.all()
            if repo.state.last_error_at is None
            or repo.state.failures == 0
            or now >= repo.state.last_error_at + backoff(repo.state.failures, interval)
        ]

    # -- one repository: the failure boundary ----------------------------------------------------

    async def _check_into(
        self,
        repo: Repo,
        force: bool,
        progress: Progress,
        results: dict[str, p.RepoOutcome],
        *,
        versions: Sequence[str],
        explicit: bool,
    ) -> None:
        results[repo.dist] = await self.check_repo(
            repo, force=force, progress=progress, versions=versions, explicit=explicit
        )

    async def check_repo(
        self,
        repo: Repo,
        *,
        force: bool,
        progress: Progress,
        versions: Sequence[str] = (),
        explicit: bool = True,
    ) -> p.RepoOutcome:
        def say(stage: str, message: str = "", **extra: str | None) -> None:
            progress(
                p.Progress(repo=repo.dist, stage=stage, message=message, time=time.time(), **extra)
            )

        lock = self._locks.setdefault(repo.key, trio.Lock())
        if lock.locked():
            say("queued", "a check of this repository is running; waiting for it")
        async with lock, self._checks:
            self.checking.add(repo.dist)
            try:
                result = await self._check(repo, force, say, versions, explicit)
            except trio.Cancelled:
                # The daemon is stopping: the build's box killed its process tree; the version
                # is not published, so the next check after a restart builds it.
                await self._record_failure(repo, "interrupted: insidersd stopped during the check")
                raise
            except CheckFailed as failure:
                return await self._failed(repo, str(failure), failure.log_path, say)
            except Exception as error:
                # The boundary: nothing of one repository reaches the daemon's core.
                message = f"internal error: {type(error).__name__}: {error}"
                log.error("%s: the check stopped: %s", repo.dist, message, exc_info=error)
                return await self._failed(repo, message, None, say, logged=True)
            finally:
                self.checking.discard(repo.dist)
        return self._outcome(repo, result, say)

    async def _failed(
        self,
        repo: Repo,
        message: str,
        log_path: Path | None,
        say: Callable[..., None],
        *,
        logged: bool = False,
    ) -> p.RepoOutcome:
        log_text = str(log_path) if log_path else None
        if not logged:
            log.error("%s: %s", repo.dist, message)
        try:
            await self._record_failure(repo, message, log_text)
        except Exception as error:
            log.error("%s: cannot record the failure: %s", repo.dist, error, exc_info=error)
        say("failed", message, log=log_text)
        return p.RepoOutcome(repo=repo.dist, outcome="failed", error=message, log=log_text)

    def _outcome(self, repo: Repo, result: CheckResult, say: Callable[..., None]) -> p.RepoOutcome:
        versions = tuple(result.published)
        if result.failures:
            first = result.failures[0]
            return p.RepoOutcome(
                repo=repo.dist,
                outcome="failed",
                versions=versions,
                error=f"{first.version}: {first.error}",
                log=first.log,
                failures=tuple(result.failures),
                message=result.note,
            )
        if result.published:
            say("done", f"published {', '.join(result.published)}")
            return p.RepoOutcome(
                repo=repo.dist, outcome="published", versions=versions, message=result.note
            )
        if result.note is not None and not result.unchanged:
            say("no-version-tag", result.note)
            return p.RepoOutcome(repo=repo.dist, outcome="no-version-tag", message=result.note)
        say("up-to-date", result.note or "")
        return p.RepoOutcome(repo=repo.dist, outcome="up-to-date", message=result.note)

    # -- one check -------------------------------------------------------------------------------

    async def _check(
        self,
        repo: Repo,
        force: bool,
        say: Callable[..., None],
        only: Sequence[str],
        explicit: bool,
    ) -> CheckResult:
        url = self.git_url(repo)
        token = self._github_token() if self._is_github(url) else None
        env = git.git_env(self._askpass, token)
        limit = self.settings.watcher.git_timeout
        say("listing", f"git ls-remote {git.redact(url)}")
        try:
            with trio.fail_after(limit):
                tags = await git.list_tags(url, env=env, token=token)
        except trio.TooSlowError:
            raise CheckFailed(f"listing the tags took longer than {limit:.0f} s") from None
        except GitError as error:
            raise CheckFailed(str(error)) from None
        versions = version_tags(tags)
        result = CheckResult()
        if not versions:
            ignored = tuple(sorted(tags)[:IGNORED_TAGS_SHOWN])
            result.note = (
                f"no version tag among {len(tags)} tag(s) (ignored: {', '.join(ignored)}); "
                "version tags look like v1.2.3 or 1.2.3"
                if tags
                else "no tags yet: the watcher builds version tags (v1.2.3 or 1.2.3)"
            )
            await self._record_listing(repo, None, None, tags)
            await self._record_check_done(repo)
            return result
        newest = max(versions)
        wanted, skipped = self._versions_to_build(repo, versions, force, only, explicit)
        await self._record_listing(repo, versions[newest], skipped, tags)
        if not wanted:
            return result
        mirror = self.mirrors / repo.key
        say("fetching", f"{len(wanted)} version(s) to build: {', '.join(map(str, wanted))}")
        try:
            with trio.fail_after(limit):
                await git.update_mirror(url, mirror, env=env, token=token)
        except trio.TooSlowError:
            raise CheckFailed(f"fetching took longer than {limit:.0f} s") from None
        except GitError as error:
            raise CheckFailed(str(error)) from None
        for version in wanted:  # newest first: the version a sponsor wants most lands first
            tag = versions[version]
            try:
                changed = await self._build_and_publish(repo, version, tag, mirror, env, say)
            except CheckFailed as failure:
                log_text = str(failure.log_path) if failure.log_path else None
                attempts = await self._record_version_failure(repo, version, str(failure), log_text)
                log.error("%s %s: %s", repo.dist, version, failure)
                say("failed", str(failure), version=str(version), log=log_text)
                result.failures.append(
                    p.VersionFailure(
                        version=str(version), error=str(failure), log=log_text, attempts=attempts
                    )
                )
                continue
            await self._record_published(repo, version)
            (result.published if changed else result.unchanged).append(str(version))
            if not changed:
                say("unchanged", f"{tag}: the rebuild gave identical bytes; nothing changed")
        if result.unchanged:
            result.note = f"rebuilt {', '.join(result.unchanged)}: identical bytes, nothing changed"
        await self._record_check_done(repo)
        return result

    def _versions_to_build(
        self,
        repo: Repo,
        versions: dict[Version, str],
        force: bool,
        only: Sequence[str],
        explicit: bool,
    ) -> tuple[list[Version], tuple[str, ...] | None]:
        """What to build now, newest first, and (at the first listing only) the versions skipped.

        Never a removed version unless asked for by `only`; never a failed one before its retry
        time unless a person asked (`explicit`).
        """
        if only:
            wanted = []
            for text in only:
                version = parse_version(text)
                if version is None or version not in versions:
                    known = ", ".join(str(v) for v in sorted(versions, reverse=True)[:5])
                    raise CheckFailed(f"--version {text}: no tag names this version ({known})")
                wanted.append(version)
            return sorted(set(wanted), reverse=True), None
        records = repo.state.versions
        removed = {v for v in versions if _status_record(records, v, "removed")}
        if force:
            newest = max(versions)
            return ([] if newest in removed else [newest]), None
        project = self.store.get(repo.key) if repo.local else None
        published = (
            {v for f in project.files if (v := parse_version(f.version))} if project else set()
        )
        if not repo.local:
            published |= {v for v in versions if _status_record(records, v, "published")}
            if repo.state.last_published:
                last = Version(repo.state.last_published)
                published |= {v for v in versions if v <= last}
        now = time.time()
        waiting = set()
        if not explicit:
            for version in versions:
                record = _status_record(records, version, "failed")
                if record is not None and record.retry_at is not None and record.retry_at > now:
                    waiting.add(version)
        first = repo.state.skipped is None
        skipped = {Version(v) for v in repo.state.skipped or ()}
        wanted = to_build(
            versions,
            published=published | skipped | removed | waiting,
            first_check=first,
            select="latest" if repo.versions == "newest" else "all",
            since=Version(repo.since) if repo.versions == "since" and repo.since else None,
        )
        wanted.reverse()
        if not first:
            return wanted, None
        return wanted, tuple(
            str(v)
            for v in sorted(versions)
            if v not in wanted and v not in published and v not in removed
        )

    async def _build_and_publish(
        self,
        repo: Repo,
        version: Version,
        tag: str,
        mirror: Path,
        env: dict[str, str],
        say: Callable[..., None],
    ) -> bool:
        """Build one version and publish it; False when identical files were published already."""
        log_path = self.logs_dir / repo.key / f"{version}.log"
        await trio.Path(self.scratch).mkdir(parents=True, exist_ok=True)
        scratch = Path(await trio.to_thread.run_sync(lambda: tempfile.mkdtemp(dir=self.scratch)))
        try:
            source, out = scratch / "src", scratch / "dist"
            try:
                await git.checkout(mirror, tag, source, env=env)
                epoch = await git.commit_time(source, env=env)
            except GitError as error:
                raise CheckFailed(str(error)) from None
            await trio.to_thread.run_sync(reproducible.clamp_tree_mtimes, source, epoch)
            limit = self.settings.watcher.build_timeout
            async with self._builds:
                say("building", f"python -m build ({tag})", version=str(version), log=str(log_path))
                try:
                    with trio.fail_after(limit):
                        built = await builder.build(
                            source,
                            out,
                            log_path,
                            index_url=self.index_url(),
                            scratch=scratch,
                            epoch=epoch,
                        )
                except trio.TooSlowError:
                    raise CheckFailed(
                        f"the build took longer than {limit:.0f} s and was stopped", log_path
                    ) from None
                except BuildError as error:
                    raise CheckFailed(str(error), log_path) from None
            try:
                files = builder.check_dists(built, repo.key, version)
            except BuildError as error:
                raise CheckFailed(str(error), log_path) from None
            for path in files:
                await trio.to_thread.run_sync(reproducible.normalize_sdist, path, epoch)
            say("publishing", ", ".join(f.name for f in files), version=str(version))
            changed = True
            if repo.local:
                changed = await self._publish_local(repo, version, files, log_path)
            for name in repo.publish_to:
                await self._publish_remote(name, files, log_path)
            return changed
        finally:
            await trio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))

    async def _publish_local(
        self, repo: Repo, version: Version, files: list[Path], log_path: Path
    ) -> bool:
        """Publish the files; a published file never changes: other bytes are refused, before any
        file of the version is published. False when every file was there with the same bytes."""
        project = self.store.get(repo.key)
        if project is not None and not project.takes_uploads:
            raise CheckFailed(str(ProjectClosed(project)), log_path)
        digests = {path: await trio.to_thread.run_sync(_sha256, path) for path in files}
        for path, sha256 in digests.items():
            stored = project.file(path.name) if project else None
            if stored is not None and stored.sha256 != sha256:
                raise CheckFailed(
                    f"{path.name} is published with other bytes (sha256 {stored.sha256}; this "
                    f"build: {sha256}), and a published file never changes: tag a new version, "
                    f"or remove this one first (insidersctl remove {repo.dist} {version}) and "
                    f"build it again (insidersctl update {repo.dist} --version {version})",
                    log_path,
                )
        added = False
        for path in files:
            try:
                added = await publish_file(self.store, path) or added
            except (InvalidFilename, InvalidDistribution, FileConflict, ProjectClosed) as error:
                raise CheckFailed(f"publishing {path.name}: {error}", log_path) from None
        return added

    async def _publish_remote(self, name: str, files: list[Path], log_path: Path) -> None:
        target = self.settings.targets.get(name)
        if target is None:
            raise CheckFailed(f"--publish-to {name}: no [targets.{name}] in the configuration")
        password = read_secret(f"target-{name}", target.password_file, self.credentials)
        async with httpx.AsyncClient(timeout=120) as client:
            for path in files:
                try:
                    result = await targets.upload(client, target, password, path)
                except PublishError as error:
                    raise CheckFailed(str(error), log_path) from None
                log.info("%s: %s to %s", path.name, result, name)

    def git_url(self, repo: Repo) -> str:
        if repo.source.kind == "github":
            return f"{self.settings.watcher.github_url.rstrip('/')}/{repo.source.location}.git"
        return repo.source.git_url

    def _is_github(self, url: str) -> bool:
        """The token goes to the GitHub server alone, never to another host a repo names."""
        github = urlsplit(self.settings.watcher.github_url)
        target = urlsplit(url)
        return (target.scheme, target.netloc) == (github.scheme, github.netloc)

    def _github_token(self) -> str | None:
        return read_secret(
            "github-token", self.settings.watcher.github_token_file, self.credentials
        )

    # -- recording what happened (shielded: a stop must not lose what a finished step learned) --

    async def _change(self, repo: Repo, change: Callable[[RepoState], RepoState]) -> RepoState:
        with trio.CancelScope(shield=True):
            updated = await self.repos.update_state(repo.key, change)
        return updated.state if updated is not None else repo.state

    async def _record_failure(self, repo: Repo, message: str, log_path: str | None = None) -> None:
        """The check itself failed (listing, fetching, the boundary): the repository backs off."""
        now = time.time()

        def change(state: RepoState) -> RepoState:
            return msgspec.structs.replace(
                state,
                last_check=now,
                last_error=message,
                last_error_at=now,
                failures=state.failures + 1,
                log=log_path,
            )

        await self._change(repo, change)

    async def _record_listing(
        self,
        repo: Repo,
        newest_tag: str | None,
        skipped: tuple[str, ...] | None,
        tags: dict[str, str],
    ) -> None:
        now = time.time()
        ignored = () if newest_tag else tuple(sorted(tags)[:IGNORED_TAGS_SHOWN])

        def change(state: RepoState) -> RepoState:
            updates: dict[str, object] = {
                "last_check": now,
                "newest_tag": newest_tag,
                "ignored_tags": ignored,
                "tags_seen": len(tags),
            }
            if skipped is not None:
                updates["skipped"] = skipped
            return msgspec.structs.replace(state, **updates)

        await self._change(repo, change)

    async def _record_version_failure(
        self, repo: Repo, version: Version, message: str, log_path: str | None
    ) -> int:
        now = time.time()
        interval = self.settings.watcher.interval
        key = str(version)

        def change(state: RepoState) -> RepoState:
            before = state.versions.get(key)
            attempts = (before.attempts if before and before.status == "failed" else 0) + 1
            record = VersionRecord(
                status="failed",
                at=now,
                message=message,
                log=log_path,
                attempts=attempts,
                retry_at=now + backoff(attempts, interval),
            )
            return _with_error_from_versions(
                msgspec.structs.replace(state, versions={**state.versions, key: record})
            )

        state = await self._change(repo, change)
        record = state.versions.get(key)
        return record.attempts if record else 1

    async def _record_published(self, repo: Repo, version: Version) -> None:
        now = time.time()
        key = str(version)

        def change(state: RepoState) -> RepoState:
            updates: dict[str, object] = {
                "versions": {**state.versions, key: VersionRecord(status="published", at=now)}
            }
            last = parse_version(state.last_published) if state.last_published else None
            if last is None or version >= last:
                updates.update(last_published=key, last_published_at=now)
            return msgspec.structs.replace(state, **updates)

        await self._change(repo, change)

    async def _record_check_done(self, repo: Repo) -> None:
        await self._change(repo, _with_error_from_versions)


def _status_record(
    records: dict[str, VersionRecord], version: Version, status: str
) -> VersionRecord | None:
    record = records.get(str(version))
    if record is None:
        # Recorded under another spelling of the same version (1.0 and 1.0.0 are one release).
        record = next((r for text, r in records.items() if parse_version(text) == version), None)
    return record if record is not None and record.status == status else None


def _with_error_from_versions(state: RepoState) -> RepoState:
    """After a listing that worked, the repository's error is its newest failed version's, if any:
    it stays visible until that version builds (or is removed)."""
    failed = [
        (parsed, text, record)
        for text, record in state.versions.items()
        if record.status == "failed" and (parsed := parse_version(text)) is not None
    ]
    if not failed:
        return msgspec.structs.replace(state, last_error=None, last_error_at=None, failures=0)
    _, text, record = max(failed, key=lambda item: item[0])
    return msgspec.structs.replace(
        state,
        last_error=f"{text}: {record.message}",
        last_error_at=record.at,
        log=record.log,
        failures=0,
    )
