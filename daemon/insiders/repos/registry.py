"""The registry of watched repositories: what `insidersctl repos add` records, the watcher acts on.

One JSON file in the data directory, replaced atomically on every change. Each repository carries
its options (which versions to build, where to publish) and a `RepoState` that the watcher fills in
(last check, newest tag, what became of each version, the last error and its log).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec
import trio

from insiders.errors import RepoError
from insiders.fsutil import atomic_write
from insiders.names import NormalizedName, is_valid_name, normalize, parse_version

from .spec import ParsedSpec, Source

log = logging.getLogger(__name__)

REPOS_FILE = "repos.json"
FORMAT_VERSION = 1

VersionPolicy = Literal["newest", "all", "since"]
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


VersionStatus = Literal["published", "failed", "refused", "removed"]


class VersionRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What happened to one version of a repository: each version lives on its own.

    `failed`: the last attempt failed (`message`, `log`), and the periodic check tries again at
    `retry_at` (backoff on `attempts`); the other versions are built meanwhile. `refused`: a
    rebuild (`update --force`) made other bytes than the published files, which stay; nothing is
    retried, the next build of the version (after a removal) replaces the record. `removed`: taken
    off the index by `insidersctl remove` (written by registries before the store kept removals:
    insiders.store remembers them now, for the project, whatever watches it).
    """

    status: VersionStatus
    at: float = 0.0  # when this status was recorded
    message: str | None = None
    log: str | None = None
    attempts: int = 0  # consecutive failed attempts
    retry_at: float | None = None


class RepoState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the watcher learned; times are wall-clock seconds."""

    last_check: float | None = None
    newest_tag: str | None = None
    last_published: str | None = None  # the newest version it published
    last_published_at: float | None = None
    last_error: str | None = None  # None once a check succeeds again
    last_error_at: float | None = None
    log: str | None = None  # the log of the last build or failure
    failures: int = 0  # consecutive, for backoff
    # Versions the policy chose not to build at the first listing (`newest`: all but the newest);
    # None until that first listing, so a failed first check does not count as one.
    skipped: tuple[str, ...] | None = None
    # Per version (as the tag names it, PEP 440 text): failed, removed, published by the watcher.
    versions: dict[str, VersionRecord] = msgspec.field(default_factory=dict)
    # The last listing found tags but none that names a version: the first few, to show why.
    ignored_tags: tuple[str, ...] = ()
    tags_seen: int = 0  # how many tags the last listing found


class Repo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    dist: str  # as given; `key` is its normalised form
    source: Source
    added: float
    versions: VersionPolicy = "newest"
    since: str | None = None
    publish_to: tuple[str, ...] = ()
    local: bool = True  # publish to this index
    state: RepoState = RepoState()

    @property
    def key(self) -> NormalizedName:
        return normalize(self.dist)


class _RepoFile(msgspec.Struct, kw_only=True):
    version: int = FORMAT_VERSION
    repos: list[Repo] = msgspec.field(default_factory=list)


_encode = msgspec.json.Encoder(order="deterministic").encode
_decode = msgspec.json.Decoder(_RepoFile).decode


def make_repo(
    parsed: ParsedSpec,
    dist: str,
    *,
    versions: VersionPolicy = "newest",
    since: str | None = None,
    publish_to: tuple[str, ...] = (),
    local: bool = True,
    now: float | None = None,
) -> Repo:
    """Validate the options of `repos add` (pure) and make the record."""
    check_policy(versions, since, publish_to, local)
    return Repo(
        dist=dist,
        source=parsed.source,
        added=time.time() if now is None else now,
        versions=versions,
        since=since,
        publish_to=publish_to,
        local=local,
    )


def check_policy(
    versions: VersionPolicy, since: str | None, publish_to: tuple[str, ...], local: bool
) -> None:
    """The options of `repos add` and `repos set` (pure): RepoError says what is wrong."""
    if versions == "since":
        if not since:
            raise RepoError("--since needs a VERSION")
        if parse_version(since) is None:
            raise RepoError(f"--since {since}: not a version (PEP 440)")
    elif since is not None:
        raise RepoError(f"a --since version goes with versions='since', not {versions!r}")
    for target in publish_to:
        if not _TARGET.match(target):
            raise RepoError(f"--publish-to {target!r}: not a target name of the config")
    if len(set(publish_to)) != len(publish_to):
        raise RepoError("--publish-to names a target twice")
    if not local and not publish_to:
        raise RepoError("a repository published nowhere: give --publish-to, or publish locally")


def with_policy(
    repo: Repo,
    *,
    versions: VersionPolicy | None = None,
    since: str | None = None,
    publish_to: tuple[str, ...] | None = None,
    local: bool | None = None,
) -> Repo:
    """The repository under a new policy (None keeps a setting), checked as `repos add` checks.

    A new choice of versions is made afresh at the next check (as at the first): the versions the
    old policy skipped are weighed again, and those published or removed stay as they are.
    """
    new_versions = repo.versions if versions is None else versions
    new_since = (since if versions is not None else repo.since) if new_versions == "since" else None
    new_publish = repo.publish_to if publish_to is None else publish_to
    new_local = repo.local if local is None else local
    check_policy(new_versions, new_since, new_publish, new_local)
    state = repo.state
    if (new_versions, new_since) != (repo.versions, repo.since):
        state = msgspec.structs.replace(state, skipped=None)
    return msgspec.structs.replace(
        repo,
        versions=new_versions,
        since=new_since,
        publish_to=new_publish,
        local=new_local,
        state=state,
    )


class Repos:
    """The registry: read at start, every change written through atomically before it is seen."""

    def __init__(self, path: Path, repos: dict[NormalizedName, Repo]) -> None:
        self.path = path
        self._repos = repos
        self._lock = trio.Lock()
        self._listeners: list[Callable[[NormalizedName, Repo | None], None]] = []

    @classmethod
    def open(cls, data_dir: Path) -> Repos:
        """Load the registry (blocking). An unreadable file is moved aside, loudly, not lost."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / REPOS_FILE
        try:
            loaded = _decode(path.read_bytes())
        except FileNotFoundError:
            return cls(path, {})
        except msgspec.DecodeError as error:
            aside = path.with_name(f"{REPOS_FILE}.unreadable-{int(time.time())}")
            os.replace(path, aside)
            log.error(
                "%s: unreadable (%s); moved to %s, starting with no repos", path, error, aside
            )
            return cls(path, {})
        return cls(path, {repo.key: repo for repo in loaded.repos})

    def all(self) -> list[Repo]:
        return sorted(self._repos.values(), key=lambda r: r.key)

    def get(self, key: NormalizedName) -> Repo | None:
        return self._repos.get(key)

    def find(self, name: str) -> Repo:
        """By distribution name, or by source as written (OWNER/REPO, the URL, the path)."""
        if is_valid_name(name) and (repo := self._repos.get(normalize(name))):
            return repo
        wanted = name.strip().removesuffix("/").removesuffix(".git")
        for repo in self._repos.values():
            location = repo.source.location
            if wanted in {location, location.removesuffix(".git")} or (
                repo.source.kind == "github" and wanted.lower() == location.lower()
            ):
                return repo
        known = ", ".join(sorted(self._repos)) or "none"
        raise RepoError(f"no watched repository {name!r} (watched: {known})")

    def subscribe(self, listener: Callable[[NormalizedName, Repo | None], None]) -> None:
        """Call listener(key, repo) after a repository is added, and (key, None) after removal."""
        self._listeners.append(listener)

    async def add(self, repo: Repo) -> Repo:
        async with self._lock:
            if existing := self._repos.get(repo.key):
                raise RepoError(
                    f"{existing.dist} is watched already, from {existing.source.location} "
                    f"(remove it first: insidersctl repos remove {existing.dist})"
                )
            for other in self._repos.values():
                if other.source == repo.source:
                    raise RepoError(f"{repo.source.location} is watched already, for {other.dist}")
            await self._save({**self._repos, repo.key: repo})
        self._notify(repo.key, repo)
        return repo

    async def set_policy(self, name: str, change: Callable[[Repo], Repo]) -> tuple[Repo, Repo]:
        """Apply `change` (see with_policy) to a repository found by `find`; (before, after)."""
        async with self._lock:
            before = self.find(name)
            after = change(before)
            if after != before:
                await self._save({**self._repos, before.key: after})
        return before, after

    async def remove(self, name: str) -> Repo:
        async with self._lock:
            repo = self.find(name)
            await self._save({k: r for k, r in self._repos.items() if k != repo.key})
        self._notify(repo.key, None)
        return repo

    async def update_state(
        self, key: NormalizedName, change: Callable[[RepoState], RepoState]
    ) -> Repo | None:
        """Apply `change` to a repository's state and persist it; None if it was removed."""
        async with self._lock:
            repo = self._repos.get(key)
            if repo is None:
                return None
            updated = msgspec.structs.replace(repo, state=change(repo.state))
            await self._save({**self._repos, key: updated})
            return updated

    async def _save(self, repos: dict[NormalizedName, Repo]) -> None:
        data = _encode(_RepoFile(repos=sorted(repos.values(), key=lambda r: r.key)))
        await trio.to_thread.run_sync(atomic_write, self.path, data, 0o600)
        self._repos = repos

    def _notify(self, key: NormalizedName, repo: Repo | None) -> None:
        for listener in self._listeners:
            listener(key, repo)
