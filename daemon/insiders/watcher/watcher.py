"""The watcher: check repositories for new version tags, build them, publish the builds.

One check of a repository: list its tags (`git ls-remote`, no clone when nothing changed), pick the
versions to build, fetch them into a bare mirror, build each in a fresh checkout, publish. Checks
run in the watcher's own nursery, so a client that stops waiting does not cancel a build.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import trio
from packaging.version import Version

from insiders.config import Settings
from insiders.distributions import InvalidDistribution
from insiders.names import InvalidFilename, parse_version
from insiders.publish import publish_file
from insiders.repos import Repo, Repos, RepoState
from insiders.store import FileConflict, ProjectClosed, Store, StoreError
from insiders.watcher import builder, git, targets
from insiders.watcher.tags import to_build, version_tags
from insidersctl import protocol as p

log = logging.getLogger(__name__)

Progress = Callable[[p.Progress], None]
MAX_BACKOFF = 6 * 3600.0


def _ignore(_event: p.Progress) -> None:
    pass


class CheckFailed(Exception):
    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


def backoff(failures: int, interval: float) -> float:
    """Seconds to wait after `failures` failed checks in a row before the periodic check retries."""
    return 0.0 if failures <= 0 else min(interval * 2 ** (failures - 1), MAX_BACKOFF)


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
        self._queued: list[tuple[Sequence[Repo], bool]] = []
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()
        self._askpass: Path | None = None

    # -- what the control plane uses (insiders.commands.Watcher) ----------------------------------

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

    def schedule(self, repos: Sequence[Repo], *, force: bool) -> None:
        self._queued.append((repos, force))
        self._wake.set()

    async def check(
        self, repos: Sequence[Repo], *, force: bool, progress: Progress = _ignore
    ) -> Sequence[p.RepoOutcome]:
        """Check now; the checks run in the watcher's nursery and outlive an impatient caller."""
        await self._running.wait()
        assert self._nursery is not None
        results: dict[str, p.RepoOutcome] = {}
        done = trio.Event()

        async def run_all() -> None:
            async with trio.open_nursery() as nursery:
                for repo in repos:
                    nursery.start_soon(self._check_into, repo, force, progress, results)
            done.set()

        self._nursery.start_soon(run_all)
        await done.wait()
        return [results[r.dist] for r in repos if r.dist in results]

    # -- the periodic loop -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._askpass = await trio.to_thread.run_sync(git.write_askpass, self.mirrors.parent)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._running.set()
            task_status.started()
            interval = self.settings.watcher.interval
            self.next_check = time.time() + min(5.0, interval)
            while True:
                with trio.move_on_after(max(0.0, self.next_check - time.time())):
                    await self._wake.wait()
                self._wake = trio.Event()
                while self._queued:
                    repos, force = self._queued.pop(0)
                    nursery.start_soon(partial(self.check, repos, force=force))
                if time.time() >= self.next_check:
                    if not self.paused:
                        nursery.start_soon(partial(self.check, self._due(), force=False))
                    # Jitter spreads the checks of many daemons (and repositories) over time.
                    self.next_check = time.time() + interval * random.uniform(0.9, 1.1)

    def _due(self) -> list[Repo]:
        now = time.time()
        interval = self.settings.watcher.interval
        return [
            repo
            for repo in self.repos.all()
            if repo.state.last_error_at is None
            or now >= repo.state.last_error_at + backoff(repo.state.failures, interval)
        ]

    # -- one repository --------------------------------------------------------------------------

    async def _check_into(
        self, repo: Repo, force: bool, progress: Progress, results: dict[str, p.RepoOutcome]
    ) -> None:
        results[repo.dist] = await self.check_repo(repo, force=force, progress=progress)

    async def check_repo(self, repo: Repo, *, force: bool, progress: Progress) -> p.RepoOutcome:
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
                published = await self._check(repo, force, say)
            except trio.Cancelled:
                # The daemon is stopping: the build's process group is gone (builder.build);
                # the version is not published, so the next check after a restart builds it.
                await self._record(repo, error="interrupted: insidersd stopped during the check")
                raise
            except CheckFailed as failure:
                message = str(failure)
                log_path = str(failure.log_path) if failure.log_path else None
                log.error("%s: %s", repo.dist, message)
                await self._record(repo, error=message, log_path=log_path)
                say("failed", message, log=log_path)
                return p.RepoOutcome(repo=repo.dist, outcome="failed", error=message, log=log_path)
            finally:
                self.checking.discard(repo.dist)
        if published:
            say("done", f"published {', '.join(published)}")
            return p.RepoOutcome(repo=repo.dist, outcome="published", versions=tuple(published))
        say("up-to-date")
        return p.RepoOutcome(repo=repo.dist, outcome="up-to-date")

    async def _check(self, repo: Repo, force: bool, say: Callable[..., None]) -> list[str]:
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
        except git.GitError as error:
            raise CheckFailed(str(error)) from None
        versions = version_tags(tags)
        newest = max(versions) if versions else None
        wanted, skipped = self._versions_to_build(repo, versions, force)
        await self._record(repo, newest_tag=versions[newest] if newest else None, skipped=skipped)
        if not wanted:
            return []
        mirror = self.mirrors / repo.key
        say("fetching", f"{len(wanted)} new version(s): {', '.join(map(str, wanted))}")
        try:
            with trio.fail_after(limit):
                await git.update_mirror(url, mirror, env=env, token=token)
        except trio.TooSlowError:
            raise CheckFailed(f"fetching took longer than {limit:.0f} s") from None
        except git.GitError as error:
            raise CheckFailed(str(error)) from None
        published = []
        for version in wanted:
            await self._build_and_publish(repo, version, versions[version], mirror, env, force, say)
            published.append(str(version))
            await self._record(repo, published=str(version))
        return published

    def _versions_to_build(
        self, repo: Repo, versions: dict[Version, str], force: bool
    ) -> tuple[list[Version], tuple[str, ...] | None]:
        """What to build now, and (at the first listing only) the versions to remember skipped."""
        if not versions:
            return [], None
        if force:
            return [max(versions)], None
        project = self.store.get(repo.key) if repo.local else None
        published = (
            {v for f in project.files if (v := parse_version(f.version))} if project else set()
        )
        if not repo.local and repo.state.last_published:
            last = Version(repo.state.last_published)
            published |= {v for v in versions if v <= last}
        first = repo.state.skipped is None
        skipped = {Version(v) for v in repo.state.skipped or ()}
        wanted = to_build(
            versions,
            published=published | skipped,
            first_check=first,
            select="latest" if repo.versions == "newest" else "all",
            since=Version(repo.since) if repo.versions == "since" and repo.since else None,
        )
        if not first:
            return wanted, None
        return wanted, tuple(
            str(v) for v in sorted(versions) if v not in wanted and v not in published
        )

    async def _build_and_publish(
        self,
        repo: Repo,
        version: Version,
        tag: str,
        mirror: Path,
        env: dict[str, str],
        force: bool,
        say: Callable[..., None],
    ) -> None:
        log_path = self.logs_dir / repo.key / f"{version}.log"
        await trio.Path(self.scratch).mkdir(parents=True, exist_ok=True)
        scratch = Path(await trio.to_thread.run_sync(lambda: tempfile.mkdtemp(dir=self.scratch)))
        try:
            source, out = scratch / "src", scratch / "dist"
            try:
                await git.checkout(mirror, tag, source, env=env)
            except git.GitError as error:
                raise CheckFailed(f"{tag}: {error}") from None
            limit = self.settings.watcher.build_timeout
            async with self._builds:
                say("building", f"python -m build ({tag})", version=str(version), log=str(log_path))
                try:
                    with trio.fail_after(limit):
                        built = await builder.build(
                            source, out, log_path, index_url=self.index_url()
                        )
                except trio.TooSlowError:
                    raise CheckFailed(
                        f"{tag}: the build took longer than {limit:.0f} s and was stopped", log_path
                    ) from None
                except builder.BuildError as error:
                    raise CheckFailed(f"{tag}: {error}", log_path) from None
            try:
                files = builder.check_dists(built, repo.key, version)
            except builder.BuildError as error:
                raise CheckFailed(f"{tag}: {error}", log_path) from None
            say("publishing", ", ".join(f.name for f in files), version=str(version))
            if repo.local:
                await self._publish_local(repo, version, files, force, log_path)
            for name in repo.publish_to:
                await self._publish_remote(name, files, log_path)
        finally:
            await trio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))

    async def _publish_local(
        self, repo: Repo, version: Version, files: list[Path], force: bool, log_path: Path
    ) -> None:
        project = self.store.get(repo.key)
        if project is not None and not project.takes_uploads:
            # Before a forced rebuild removes anything: an archived project keeps its files.
            raise CheckFailed(str(ProjectClosed(project)), log_path)
        if force and project is not None:
            try:
                removed = await self.store.remove(repo.key, version=str(version))
                log.info("%s: rebuilding %s, replaced %s", repo.dist, version, ", ".join(removed))
            except StoreError:
                pass  # that version was not published before
        for path in files:
            try:
                await publish_file(self.store, path)
            except (InvalidFilename, InvalidDistribution, FileConflict, ProjectClosed) as error:
                raise CheckFailed(f"publishing {path.name}: {error}", log_path) from None

    async def _publish_remote(self, name: str, files: list[Path], log_path: Path) -> None:
        target = self.settings.targets.get(name)
        if target is None:
            raise CheckFailed(f"--publish-to {name}: no [targets.{name}] in the configuration")
        password = targets.read_secret(f"target-{name}", target.password_file, self.credentials)
        async with httpx.AsyncClient(timeout=120) as client:
            for path in files:
                try:
                    result = await targets.upload(client, target, password, path)
                except targets.TargetError as error:
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
        return targets.read_secret(
            "github-token", self.settings.watcher.github_token_file, self.credentials
        )

    async def _record(
        self,
        repo: Repo,
        *,
        error: str | None = None,
        log_path: str | None = None,
        newest_tag: str | None = None,
        published: str | None = None,
        skipped: tuple[str, ...] | None = None,
    ) -> None:
        now = time.time()

        def change(state: RepoState) -> RepoState:
            updates: dict[str, object] = {"last_check": now}
            if newest_tag is not None:
                updates["newest_tag"] = newest_tag
            if skipped is not None:
                updates["skipped"] = skipped
            if published is not None:
                updates.update(last_published=published, last_published_at=now)
            if error is not None:
                updates.update(
                    last_error=error, last_error_at=now, failures=state.failures + 1, log=log_path
                )
            elif newest_tag is not None or published is not None:
                updates.update(last_error=None, last_error_at=None, failures=0)
            return msgspec.structs.replace(state, **updates)

        # A stop of the daemon must not lose what a finished step learned.
        with trio.CancelScope(shield=True):
            await self.repos.update_state(repo.key, change)
