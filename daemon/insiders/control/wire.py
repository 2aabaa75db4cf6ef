"""The daemon's records as the protocol's replies (insidersctl.protocol): the one translator.

Every field is copied by name through `copied`, which refuses a field the daemon's type lacks, or
built here from what the daemon holds (a project's counts, a repository's state word).
"""

from __future__ import annotations

from collections.abc import Mapping

from insiders.mirror.sync import MirrorState
from insiders.names import parse_version
from insiders.repos.registry import Repo, RepoState, VersionRecord
from insiders.repos.status import repo_status
from insiders.store import Project, StoredFile
from insiders.structs import copied
from insiders.tokens import Token
from insiders.watcher.report import Outcome, Step, VersionFailure, WatcherState
from insidersctl import protocol as p


def repo_info(repo: Repo, removed: Mapping[str, float]) -> p.RepoInfo:
    """`removed`: the versions of its project the store remembers removed, and when."""
    state = repo.state
    return p.RepoInfo(
        name=repo.dist,
        source=repo.source.location,
        kind=repo.source.kind,
        versions=repo.versions,
        since=repo.since,
        publish_to=repo.publish_to,
        local=repo.local,
        added=repo.added,
        last_check=state.last_check,
        newest_tag=state.newest_tag,
        last_published=state.last_published,
        last_published_at=state.last_published_at,
        last_error=state.last_error,
        last_error_at=state.last_error_at,
        log=state.log,
        version_states=version_states(state, removed),
        tags_seen=state.tags_seen,
        ignored_tags=state.ignored_tags,
        state=repo_status(state),
    )


def version_states(
    state: RepoState, removed: Mapping[str, float] | None = None
) -> tuple[p.VersionInfo, ...]:
    """The watcher's record of each version, newest first, with the versions it skipped and
    those the store remembers removed (a removal is the project's, and outlasts the record)."""
    removed = removed or {}
    gone = {parse_version(text) for text in removed}
    infos = [
        p.VersionInfo(
            version=text,
            status=record.status,
            at=record.at or None,
            message=record.message,
            log=record.log,
            attempts=record.attempts,
            retry_at=record.retry_at,
        )
        for text, record in state.versions.items()
        if parse_version(text) not in gone
    ]
    infos += [p.VersionInfo(version=text, status="removed", at=at) for text, at in removed.items()]
    infos += [
        p.VersionInfo(version=text, status="skipped")
        for text in state.skipped or ()
        if text not in state.versions and parse_version(text) not in gone
    ]
    return tuple(sorted(infos, key=lambda i: _version_key(i.version), reverse=True))


def newest_failure(state: RepoState) -> tuple[str, VersionRecord] | None:
    """The newest version the watcher tried, if its last attempt failed or was refused and left
    a log."""
    tried = [(text, r) for text, r in state.versions.items() if r.status != "removed"]
    if not tried:
        return None
    text, record = max(tried, key=lambda item: _version_key(item[0]))
    return (text, record) if record.status in {"failed", "refused"} and record.log else None


def _version_key(text: str) -> tuple[int, object]:
    parsed = parse_version(text)
    return (1, parsed) if parsed is not None else (0, text)


def project_info(project: Project) -> p.ProjectInfo:
    return p.ProjectInfo(
        name=project.name,
        versions=len(project.versions()),
        files=len(project.files),
        latest=project.latest(),
        size=sum(f.size for f in project.files),
        last_upload=max((f.upload_time for f in project.files), default=None) or None,
        yanked_files=sum(1 for f in project.files if f.yanked),
        status=project.status,
        status_reason=project.status_reason,
    )


def file_info(stored: StoredFile) -> p.FileInfo:
    return copied(p.FileInfo, stored)


def token_info(token: Token) -> p.TokenInfo:
    return copied(p.TokenInfo, token)


# -- the watcher's and the mirrors' reports, as insidersctl reads them ----------------------------
# The one place that knows both the daemon's types (insiders.watcher.report, insiders.mirror) and
# the protocol's; `copied` refuses a field the daemon's type does not have.


def watcher_info_wire(state: WatcherState) -> p.WatcherInfo:
    return copied(p.WatcherInfo, state, available=True, message="")


def progress_wire(step: Step) -> p.Progress:
    return copied(p.Progress, step)


def outcome_wire(outcome: Outcome) -> p.RepoOutcome:
    def failures(found: tuple[VersionFailure, ...]) -> tuple[p.VersionFailure, ...]:
        return tuple(copied(p.VersionFailure, failure) for failure in found)

    return copied(
        p.RepoOutcome,
        outcome,
        failures=failures(outcome.failures),
        refused=failures(outcome.refused),
    )


def mirror_wire(state: MirrorState) -> p.MirrorInfo:
    return copied(p.MirrorInfo, state)
