"""The watcher: check repositories for new version tags, build them, publish the builds.

One check of a repository: list its tags (`git ls-remote`, no clone when nothing changed), pick the
versions to build (insiders.watcher.choice), fetch them into a bare mirror, then build and publish
each version on its own (insiders.watcher.release), newest first: a version that fails is recorded
(message, log, attempts, next retry: insiders.watcher.records) and the others go on. Checks run in
the watcher's own nursery, so a client that stops waiting does not cancel a build.

Each repository's check is a failure boundary: whatever goes wrong inside it (a full disk, git or
`nice` missing, a bug) is logged once with its traceback and recorded as that repository's error;
the index, the control plane and the other repositories carry on. What a check reports is the
watcher's own (insiders.watcher.report); insiders.control.commands words it for insidersctl.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import trio
from packaging.version import Version

from insiders.config import Settings, changed_keys
from insiders.credentials import read_secret
from insiders.errors import CheckFailed, NoSandbox, NotReproducible, NotTagged
from insiders.repos.registry import Repo, Repos
from insiders.repos.status import repo_status
from insiders.store import Store
from insiders.watcher import git
from insiders.watcher.choice import is_new_tag, versions_to_build
from insiders.watcher.records import IGNORED_TAGS_SHOWN, Records, backoff
from insiders.watcher.release import Fetched, IndexAccess, Releaser, clean_scratch
from insiders.watcher.report import (
    Outcome,
    Progress,
    Say,
    Stage,
    Step,
    VersionFailure,
    WatcherState,
    step_failures,
)
from insiders.watcher.tags import version_tags

log = logging.getLogger(__name__)


def _ignore(_step: Step) -> None:
    pass


@dataclass
class CheckResult:
    published: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # rebuilt, identical bytes
    failures: list[VersionFailure] = field(default_factory=list)
    refused: list[VersionFailure] = field(default_factory=list)  # bytes differ: not reproducible
    note: str | None = None  # e.g. no version tag


class Watcher:
    """Schedules the checks (periodic, queued, asked for now) and runs each repository's check
    within its failure boundary; the builds themselves are its Releaser's."""

    def __init__(
        self,
        *,
        repos: Repos,
        store: Store,
        settings: Settings,
        cache_dir: Path,
        logs_dir: Path,
        credentials: Path | None,
        index_access: IndexAccess,
        hidden: tuple[Path, ...] = (),
    ) -> None:
        self.repos = repos
        self.store = store
        self.settings = settings
        self.mirrors = cache_dir / "mirrors"
        self.scratch = cache_dir / "builds"
        self.credentials = credentials
        self.paused = not settings.watcher.enabled
        self.records = Records(repos, settings.watcher.interval)
        self.next_check: float | None = None
        self.checking: set[str] = set()
        self._checks = trio.CapacityLimiter(settings.watcher.max_checks)
        self._builds = trio.CapacityLimiter(settings.watcher.max_builds)
        self._locks: dict[str, trio.Lock] = {}
        self._wake = trio.Event()
        self._queued: list[Callable[[], Awaitable[object]]] = []
        self._pushed: set[str] = set()  # repositories a push check is queued or running for
        # Of those, the ones pushed to again meanwhile: checked once more after it (that check
        # may have listed the tags before the push).
        self._pushed_again: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()
        self._askpass: Path | None = None
        self.releaser = Releaser(
            store=store,
            settings=settings,
            scratch=self.scratch,
            logs_dir=logs_dir,
            credentials=credentials,
            index_access=index_access,
            hidden=hidden,
            builds=self._builds,
        )

    # -- what the control plane uses (insiders.control.commands.Watcher) --------------------

    def info(self) -> WatcherState:
        return WatcherState(
            state="paused" if self.paused else "running",
            interval=self.settings.watcher.interval,
            next_check=None if self.paused else self.next_check,
            checking=tuple(sorted(self.checking)),
            sandbox=self.releaser.sandbox_said[0],
        )

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wake.set()

    def reconfigure(self, new: Settings) -> tuple[str, ...]:
        """A reload's settings, all applied while running (nothing waits for a restart).

        Limits apply to the next check or build that starts, timeouts and targets to the next step
        that uses them; a shorter interval moves the next periodic check closer; `enabled` pauses
        or resumes (when it changed: a `watcher stop` stays in force across an unrelated reload).
        """
        old = self.settings.watcher
        if changed := changed_keys("watcher", old, new.watcher):
            keys = (key.removeprefix("watcher.") for key in changed)
            log.info("reload: the watcher now runs with the new %s", ", ".join(keys))
        self.settings = self.releaser.settings = new
        self.records.interval = new.watcher.interval
        self._checks.total_tokens = new.watcher.max_checks
        self._builds.total_tokens = new.watcher.max_builds
        if new.watcher.enabled != old.enabled:
            self.paused = not new.watcher.enabled
        if new.watcher.interval != old.interval and self.next_check is not None:
            self.next_check = min(self.next_check, time.time() + new.watcher.interval)
        self._wake.set()
        return ()

    def schedule(self, repos: Sequence[Repo], *, force: bool, versions: Sequence[str] = ()) -> None:
        self._queued.append(partial(self.check, repos, force=force, versions=versions))
        self._wake.set()

    def push(self, repos: Sequence[Repo], tag: str) -> list[Repo]:
        """A webhook says `tag` was pushed to `repos`: the ones for which it names a new version
        are checked at once (paused or not), the others are left to the periodic check.

        The check is not a person's (`explicit=False`): a failed version keeps its backoff. So a
        replayed delivery, or a push of a tag already built or failed, starts nothing, and a
        repository with a push check queued or running is checked once more after it, however
        many pushes arrive meanwhile. Returns the repositories that will be checked.
        """
        new = [r for r in repos if is_new_tag(r, tag, self._hosted_versions(r))]
        fresh = [repo for repo in new if repo.key not in self._pushed]
        self._pushed_again.update(repo.key for repo in new if repo.key in self._pushed)
        if fresh:
            self._pushed.update(repo.key for repo in fresh)
            self._queued.append(partial(self._push_check, fresh))
            self._wake.set()
        return new

    async def _push_check(self, repos: Sequence[Repo]) -> None:
        try:
            await self.check(repos, force=False, explicit=False)
        finally:
            keys = {repo.key for repo in repos}
            self._pushed -= keys
            again = [repo for repo in repos if repo.key in self._pushed_again]
            self._pushed_again -= keys
            if again:
                self._pushed.update(repo.key for repo in again)
                self._queued.append(partial(self._push_check, again))
                self._wake.set()

    async def check(
        self,
        repos: Sequence[Repo],
        *,
        force: bool,
        progress: Progress = _ignore,
        versions: Sequence[str] = (),
        explicit: bool = True,
    ) -> Sequence[Outcome]:
        """Check now; the checks run in the watcher's nursery and outlive an impatient caller.

        `versions`: build exactly these (a removed version comes back this way). `explicit`: a
        person asked, so failed versions are retried now rather than at their backoff time.
        """
        await self._running.wait()
        assert self._nursery is not None
        results: dict[str, Outcome] = {}
        done = trio.Event()
        # Every repository is said from the start, in order: a live view lists them all at once.
        for repo in repos:
            progress(Step(repo.dist, "queued", "waiting for a check slot", time=time.time()))

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
        if leftovers := await trio.to_thread.run_sync(clean_scratch, self.scratch):
            log.warning("removed %d scratch director(ies) left by builds before a crash", leftovers)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._running.set()
            task_status.started()
            nursery.start_soon(self._say_sandbox)
            self.next_check = time.time() + min(5.0, self.settings.watcher.interval)
            while True:
                with trio.move_on_after(max(0.0, self.next_check - time.time())):
                    await self._wake.wait()
                self._wake = trio.Event()
                while self._queued:
                    nursery.start_soon(self._queued.pop(0))
                if time.time() >= self.next_check:
                    if not self.paused:
                        nursery.start_soon(
                            partial(self.check, self._due(), force=False, explicit=False)
                        )
                    # Jitter spreads the checks of many daemons (and repositories) over time.
                    interval = self.settings.watcher.interval
                    self.next_check = time.time() + interval * random.uniform(0.9, 1.1)

    async def _say_sandbox(self) -> None:
        """Tell at start what builds will run in (status shows it from then on)."""
        try:
            log.info("builds run in: %s", (await self.releaser.sandbox()).describe())
        except NoSandbox as error:
            log.warning("%s", error)

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
        results: dict[str, Outcome],
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
    ) -> Outcome:
        """One repository's check, and its state as recorded after it: what `repos list` says
        (a check can publish one version while an older failure stands)."""
        outcome = await self._check_repo(
            repo, force=force, progress=progress, versions=versions, explicit=explicit
        )
        recorded = self.repos.get(repo.key)
        return replace(outcome, state=repo_status(recorded.state) if recorded else "")

    async def _check_repo(
        self,
        repo: Repo,
        *,
        force: bool,
        progress: Progress,
        versions: Sequence[str],
        explicit: bool,
    ) -> Outcome:
        def say(
            stage: Stage, message: str = "", *, version: str | None = None, log: str | None = None
        ) -> None:
            now = time.time()
            progress(Step(repo.dist, stage, message, version=version, log=log, time=now))

        lock = self._locks.setdefault(repo.key, trio.Lock())
        if lock.locked():
            say("queued", "a check of this repository is running; waiting for it")
        async with lock:
            self.checking.add(repo.dist)
            try:
                result = await self._check(repo, force, say, versions, explicit)
            except trio.Cancelled:
                # The daemon is stopping: the build's box killed its process tree; the version
                # is not published, so the next check after a restart builds it.
                await self.records.check_failed(
                    repo, "interrupted: insidersd stopped during the check"
                )
                raise
            except NotTagged as refused:
                # The request was wrong, not the repository: nothing is recorded.
                say("failed", str(refused))
                return Outcome(repo=repo.dist, outcome="failed", error=str(refused))
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
        say: Say,
        *,
        logged: bool = False,
    ) -> Outcome:
        log_text = str(log_path) if log_path else None
        if not logged:
            log.error("%s: %s", repo.dist, message)
        try:
            await self.records.check_failed(repo, message, log_text)
        except Exception as error:
            log.error("%s: cannot record the failure: %s", repo.dist, error, exc_info=error)
        say("failed", message, log=log_text)
        return Outcome(repo=repo.dist, outcome="failed", error=message, log=log_text)

    def _outcome(self, repo: Repo, result: CheckResult, say: Say) -> Outcome:
        versions = tuple(result.published)
        # A failed version makes the check failed; else a refused rebuild makes it refused.
        troubles = result.failures or result.refused
        if troubles:
            first = troubles[0]
            return Outcome(
                repo=repo.dist,
                outcome="failed" if result.failures else "refused",
                versions=versions,
                error=f"{first.version}: {first.error}",
                log=first.log,
                failures=tuple(result.failures),
                refused=tuple(result.refused),
                message=result.note,
            )
        if result.published:
            say("done", f"published {', '.join(result.published)}")
            return Outcome(
                repo=repo.dist, outcome="published", versions=versions, message=result.note
            )
        if result.note is not None and not result.unchanged:
            say("no-version-tag", result.note)
            return Outcome(repo=repo.dist, outcome="no-version-tag", message=result.note)
        say("up-to-date", result.note or "")
        return Outcome(repo=repo.dist, outcome="up-to-date", message=result.note)

    # -- one check -------------------------------------------------------------------------------

    async def _check(
        self, repo: Repo, force: bool, say: Say, only: Sequence[str], explicit: bool
    ) -> CheckResult:
        # A check slot is for listing and fetching: a repository waiting to build holds none.
        async with self._checks:
            planned = await self._plan(repo, force, say, only, explicit)
        if isinstance(planned, CheckResult):
            return planned
        fetched, wanted, versions = planned
        result = CheckResult()
        for version in wanted:  # newest first: the version a sponsor wants most lands first
            await self._release(fetched, version, versions[version], say, result, asked=bool(only))
        if result.unchanged:
            result.note = f"rebuilt {', '.join(result.unchanged)}: identical bytes, nothing changed"
        await self.records.check_done(repo)
        return result

    async def _plan(
        self, repo: Repo, force: bool, say: Say, only: Sequence[str], explicit: bool
    ) -> CheckResult | tuple[Fetched, list[Version], dict[Version, str]]:
        """List the tags, choose, fetch: what to build, or the check's result if nothing."""
        url = self.git_url(repo)
        token = await self._github_token() if self._is_github(url) else None
        env = git.git_env(self._askpass, token)
        limit = self.settings.watcher.git_timeout
        say("listing", f"git ls-remote {git.redact(url)}")
        too_slow = f"listing the tags took longer than {limit:.0f} s"
        with step_failures(too_slow=too_slow), trio.fail_after(limit):
            tags = await git.list_tags(url, env=env, token=token)
        versions = version_tags(tags)
        if not versions:
            return await self._no_version_tag(repo, tags)
        hosted = self._hosted_versions(repo)
        wanted, skipped = versions_to_build(
            repo,
            versions,
            force=force,
            only=only,
            explicit=explicit,
            hosted=hosted,
            removed=self.store.removed(repo.key),
            now=time.time(),
        )
        await self.records.listing(repo, versions[max(versions)], skipped, tags, hosted)
        if not wanted:
            # The listing worked: that is a check that worked, and a repository error clears.
            await self.records.check_done(repo)
            return CheckResult()
        mirror = self.mirrors / repo.key
        say("fetching", f"{len(wanted)} version(s) to build: {', '.join(map(str, wanted))}")
        too_slow = f"fetching took longer than {limit:.0f} s"
        with step_failures(too_slow=too_slow), trio.fail_after(limit):
            moved = await git.update_mirror(url, mirror, env=env, token=token)
        if moved is not None:
            log.warning(
                "%s: the git mirror cannot be read; moved aside to %s and fetched again",
                repo.dist,
                moved,
            )
        return Fetched(repo, mirror, env), wanted, versions

    async def _no_version_tag(self, repo: Repo, tags: dict[str, str]) -> CheckResult:
        ignored = tuple(sorted(tags)[:IGNORED_TAGS_SHOWN])
        note = (
            f"no version tag among {len(tags)} tag(s) (ignored: {', '.join(ignored)}); "
            "version tags look like v1.2.3 or 1.2.3"
            if tags
            else "no tags yet: the watcher builds version tags (v1.2.3 or 1.2.3)"
        )
        await self.records.listing(repo, None, None, tags)
        await self.records.check_done(repo)
        return CheckResult(note=note)

    def _hosted_versions(self, repo: Repo) -> list[str]:
        """The versions of the files this index holds for a repository it publishes to."""
        project = self.store.get(repo.key) if repo.local else None
        return [f.version for f in project.files] if project else []

    async def _release(
        self,
        fetched: Fetched,
        version: Version,
        tag: str,
        say: Say,
        result: CheckResult,
        *,
        asked: bool,
    ) -> None:
        """Build and publish one version into `result`; its failure is its own, the others go on.
        `asked`: a person named this version (`update --version`), which brings a removed one back.
        """
        repo = fetched.repo
        try:
            changed = await self.releaser.release(fetched, version, tag, say, bring_back=asked)
        except NotReproducible as refused:
            log_text = str(refused.log_path) if refused.log_path else None
            await self.records.version_refused(repo, version, str(refused), log_text)
            log.warning("%s %s: refused: %s", repo.dist, version, refused)
            say("refused", str(refused), version=str(version), log=log_text)
            result.refused.append(VersionFailure(str(version), str(refused), log_text, attempts=0))
            return
        except CheckFailed as failure:
            log_text = str(failure.log_path) if failure.log_path else None
            attempts = await self.records.version_failed(repo, version, str(failure), log_text)
            log.error("%s %s: %s", repo.dist, version, failure)
            say("failed", str(failure), version=str(version), log=log_text)
            result.failures.append(
                VersionFailure(
                    version=str(version), error=str(failure), log=log_text, attempts=attempts
                )
            )
            return
        await self.records.published(repo, version)
        log.info("%s %s: %s", repo.dist, version, "published" if changed else "unchanged")
        (result.published if changed else result.unchanged).append(str(version))
        if not changed:
            log.info("%s %s: rebuilt: identical bytes, nothing changed", repo.dist, version)
            say("unchanged", f"{tag}: the rebuild gave identical bytes; nothing changed")

    def git_url(self, repo: Repo) -> str:
        if repo.source.kind == "github":
            return f"{self.settings.watcher.github_url.rstrip('/')}/{repo.source.location}.git"
        return repo.source.git_url

    def _is_github(self, url: str) -> bool:
        """The token goes to the GitHub server alone, never to another host a repo names."""
        github = urlsplit(self.settings.watcher.github_url)
        target = urlsplit(url)
        return (target.scheme, target.netloc) == (github.scheme, github.netloc)

    async def _github_token(self) -> str | None:
        """Read at every check (a rotated token is used at once), in a thread: it is a file."""
        return await trio.to_thread.run_sync(
            read_secret,
            "github-token",
            self.settings.watcher.github_token_file,
            self.credentials,
        )
