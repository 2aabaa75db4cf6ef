"""The release of one version: check its tag out, build it in the box, publish what it made.

Here and in its local index (the store) or the other indexes a repository publishes to
([targets.NAME]). Every expected failure becomes the version's CheckFailed, carrying the build log
once there is one; the check records it and goes on with the other versions.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio
from packaging.version import Version

from insiders.config import Settings
from insiders.credentials import read_secret
from insiders.errors import CheckFailed, NoSandbox, NotReproducible, ReleaseDiffers
from insiders.ingest import hash_file, publish_release
from insiders.repos.registry import Repo
from insiders.store import Store
from insiders.watcher import builder, git, other_indexes, reproducible
from insiders.watcher.report import Say, publish_failures, step_failures
from insiders.watcher.sandbox import Sandbox, python_version

log = logging.getLogger(__name__)

IndexAccess = Callable[[str], AbstractContextManager[str | None]]


def clean_scratch(scratch: Path) -> int:
    """Remove what builds left in the scratch directory (a crash, a kill -9); how many."""
    try:
        leftovers = list(scratch.iterdir())
    except FileNotFoundError:
        return 0
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return len(leftovers)


@dataclass(frozen=True)
class Fetched:
    """A repository whose version tags are in its bare mirror, with git's environment for it."""

    repo: Repo
    mirror: Path
    env: dict[str, str]


@dataclass(kw_only=True)
class Releaser:
    """Builds and publishes one version at a time (at most `builds` builds at once)."""

    store: Store
    # The running settings (Watcher.reconfigure): a reload's timeouts and targets apply to the
    # next step that uses them.
    settings: Settings
    scratch: Path
    logs_dir: Path
    credentials: Path | None
    # The index URL one build resolves its build dependencies through, with its own credential.
    index_access: IndexAccess
    # The daemon's directories, absent from a build's sandbox.
    hidden: tuple[Path, ...]
    builds: trio.CapacityLimiter
    # What the last choice of a sandbox found: what `insidersctl status` says builds run in.
    sandbox_said: list[str] = field(default_factory=lambda: ["not chosen yet"])

    async def sandbox(self) -> Sandbox:
        """The sandbox the next build runs in, or NoSandbox: none here, and none is allowed."""
        try:
            setting = self.settings.watcher.sandbox
            sandbox = await builder.choose_sandbox(setting, self.hidden, self.scratch)
        except NoSandbox as error:
            self.sandbox_said[0] = f"refused: {error.reason}"
            raise
        self.sandbox_said[0] = sandbox.kind
        return sandbox

    async def release(
        self, fetched: Fetched, version: Version, tag: str, say: Say, *, bring_back: bool = False
    ) -> bool:
        """Build one version and publish it; False when identical files were published already.
        `bring_back`: a person asked for this version (one removed is published again)."""
        repo = fetched.repo
        log_path = self.logs_dir / repo.key / f"{version}.log"
        await trio.Path(self.scratch).mkdir(parents=True, exist_ok=True)
        scratch = Path(await trio.to_thread.run_sync(lambda: tempfile.mkdtemp(dir=self.scratch)))
        try:
            files, seconds = await self._build(fetched, version, tag, say, scratch, log_path)
            say("publishing", ", ".join(f.name for f in files), version=str(version))
            changed = True
            if repo.local:
                changed = await self._publish_local(repo, version, files, log_path, bring_back)
            for name in repo.publish_to:
                await self._publish_remote(name, files, log_path)
            if changed:
                await _log_published(repo, version, files, seconds)
            return changed
        finally:
            # Shielded: a clean stop cancels the build, and must not leave its scratch behind
            # (the box has killed the build's processes by now).
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(lambda: shutil.rmtree(scratch, ignore_errors=True))

    async def _build(
        self, fetched: Fetched, version: Version, tag: str, say: Say, scratch: Path, log_path: Path
    ) -> tuple[list[Path], float]:
        """The checked wheel and sdist of `tag`, reproducible: their times are the commit's; and
        the seconds the build took."""
        source, out = scratch / "src", scratch / "dist"
        with step_failures():
            await git.checkout(fetched.mirror, tag, source, env=fetched.env)
            commit, epoch = await git.head_commit(source, env=fetched.env)
        await trio.to_thread.run_sync(reproducible.clamp_tree_mtimes, source, epoch)
        watcher = self.settings.watcher
        limit = watcher.build_timeout
        with step_failures():
            sandbox = await self.sandbox()
        header = (
            f"repository: {fetched.repo.source.location}",
            f"tag: {tag}, commit {commit}, SOURCE_DATE_EPOCH={epoch}",
            f"python: {python_version(sandbox.python)} ({sandbox.python})",
            # Its installed version is in the log below ("Installed build dependency versions").
            f"build backend: {await trio.to_thread.run_sync(builder.build_backend, source)}",
        )
        if self.builds.available_tokens < 1:
            say("waiting", "waiting for a build slot", version=str(version))
        async with self.builds:
            say("building", f"python -m build ({tag})", version=str(version), log=str(log_path))
            log.info(
                "%s %s: building %s, commit %s, in %s (log: %s)",
                *(fetched.repo.dist, version, tag, commit, sandbox.kind, log_path),
            )
            started = trio.current_time()
            too_slow = f"the build took longer than {limit:.0f} s and was stopped"
            with (
                step_failures(log_path, too_slow=too_slow),
                trio.fail_after(limit),
                self.index_access(f"{fetched.repo.key}-{version}") as index_url,
            ):
                built = await builder.build(
                    *(source, out, log_path),
                    index_url=index_url,
                    sandbox=sandbox,
                    scratch=scratch,
                    # The checkout's objects are the mirror's (git clone --shared): readable.
                    readable=(fetched.mirror,),
                    epoch=epoch,
                    header=header,
                )
        with step_failures(log_path):
            check = builder.check_dists
            files = await trio.to_thread.run_sync(check, built, fetched.repo.key, version)
        for path in files:
            # The archive is the build's: read within the bounds an upload is read within.
            with publish_failures(path.name, log_path):
                await trio.to_thread.run_sync(reproducible.normalize_sdist, path, epoch)
        return files, trio.current_time() - started

    async def _publish_local(
        self, repo: Repo, version: Version, files: list[Path], log_path: Path, bring_back: bool
    ) -> bool:
        """Publish the files together, by the store's rules (insiders.store): a published file
        never changes, so other bytes are refused before any file of the version is published.
        False when every file was there with the same bytes."""
        names = ", ".join(path.name for path in files)
        with publish_failures(names, log_path):
            try:
                return await publish_release(self.store, files, bring_back=bring_back)
            except ReleaseDiffers as differs:
                raise NotReproducible(
                    f"{differs.filename} is published with other bytes (sha256 "
                    f"{differs.published}; this build: {differs.offered}), and a published file "
                    f"never changes: tag a new version, or remove this one first (insidersctl "
                    f"remove {repo.dist} {version}) and build it again (insidersctl update "
                    f"{repo.dist} --version {version})",
                    log_path,
                ) from None

    async def _publish_remote(self, name: str, files: list[Path], log_path: Path) -> None:
        target = self.settings.targets.get(name)
        if target is None:
            raise CheckFailed(f"--publish-to {name}: no [targets.{name}] in the configuration")
        password = await trio.to_thread.run_sync(
            read_secret, f"target-{name}", target.password_file, self.credentials
        )
        async with httpx.AsyncClient(timeout=120) as client:
            for path in files:
                with step_failures(log_path):
                    result = await other_indexes.upload(client, target, password, path)
                log.info("%s: %s to %s", path.name, result, name)


async def _log_published(repo: Repo, version: Version, files: list[Path], seconds: float) -> None:
    """One INFO line per publication: what, where, its sha256, and how long the build took."""
    digests = [await trio.to_thread.run_sync(hash_file, path) for path in files]
    what = ", ".join(f"{p.name} (sha256 {d.sha256})" for p, d in zip(files, digests, strict=True))
    where = ", ".join((["this index"] if repo.local else []) + list(repo.publish_to))
    log.info("%s %s: published %s in %.1f s, to %s", repo.dist, version, what, seconds, where)
