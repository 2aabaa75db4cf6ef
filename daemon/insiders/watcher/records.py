"""What the watcher records of each repository: its listings, failures, published versions.

Every change goes through the repository registry (`Repos.update_state`, which persists it) and is
shielded: a stop of the daemon must not lose what a finished step learned. The backoff of failed
repositories and versions is computed here too, since it is recorded with the failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import msgspec
import trio
from packaging.version import Version

from insiders.names import parse_version
from insiders.repos.registry import Repo, Repos, RepoState, VersionRecord
from insiders.watcher.tags import version_tags

MAX_BACKOFF = 6 * 3600.0
IGNORED_TAGS_SHOWN = 5


def backoff(failures: int, interval: float) -> float:
    """Seconds to wait after `failures` failed attempts in a row before the periodic retry."""
    return 0.0 if failures <= 0 else min(interval * 2 ** (failures - 1), MAX_BACKOFF)


class Records:
    """The recorded state of the watched repositories, changed one step at a time."""

    def __init__(self, repos: Repos, interval: float) -> None:
        self.repos = repos
        # The running [watcher] interval (Watcher.reconfigure): failed versions back off by it.
        self.interval = interval

    async def _change(self, repo: Repo, change: Callable[[RepoState], RepoState]) -> RepoState:
        with trio.CancelScope(shield=True):
            updated = await self.repos.update_state(repo.key, change)
        return updated.state if updated is not None else repo.state

    async def check_failed(self, repo: Repo, message: str, log_path: str | None = None) -> None:
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

    async def listing(
        self,
        repo: Repo,
        newest_tag: str | None,
        skipped: tuple[str, ...] | None,
        tags: dict[str, str],
        hosted: Iterable[str] = (),
    ) -> None:
        """What a listing found. A failure that is over is dropped, or it would say "failing"
        forever: its tag is gone, or the version is in the index now (`hosted`: uploaded by hand).
        """
        now = time.time()
        ignored = () if newest_tag else tuple(sorted(tags)[:IGNORED_TAGS_SHOWN])
        tagged = set(version_tags(tags))
        here = {parse_version(text) for text in hosted}

        def over(text: str, record: VersionRecord) -> bool:
            version = parse_version(text)
            if record.status == "failed":
                return version not in tagged or version in here
            return record.status == "refused" and version not in tagged

        def change(state: RepoState) -> RepoState:
            kept = {text: r for text, r in state.versions.items() if not over(text, r)}
            updates: dict[str, object] = {
                "last_check": now,
                "newest_tag": newest_tag,
                "ignored_tags": ignored,
                "tags_seen": len(tags),
                "versions": kept,
            }
            if skipped is not None:
                updates["skipped"] = skipped
            return msgspec.structs.replace(state, **updates)

        await self._change(repo, change)

    async def version_failed(
        self, repo: Repo, version: Version, message: str, log_path: str | None
    ) -> int:
        """Record a failed version with its next retry time; its failed attempts in a row."""
        now = time.time()
        interval = self.interval
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
            return with_error_from_versions(
                msgspec.structs.replace(state, versions={**state.versions, key: record})
            )

        state = await self._change(repo, change)
        record = state.versions.get(key)
        return record.attempts if record else 1

    async def version_refused(
        self, repo: Repo, version: Version, message: str, log_path: str | None
    ) -> None:
        """A rebuild that did not reproduce the published files: its own state, never retried."""
        record = VersionRecord(status="refused", at=time.time(), message=message, log=log_path)

        def change(state: RepoState) -> RepoState:
            return msgspec.structs.replace(state, versions={**state.versions, str(version): record})

        await self._change(repo, change)

    async def published(self, repo: Repo, version: Version) -> None:
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

    async def check_done(self, repo: Repo) -> None:
        await self._change(repo, with_error_from_versions)


def with_error_from_versions(state: RepoState) -> RepoState:
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
