"""Which versions a check builds: the tags listed, weighed against what was published, removed,
skipped or failed before. Pure: the check hands in the repository's record and the store's
versions, so the rules are tested with tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from packaging.version import Version

from insiders.errors import NotTagged
from insiders.names import parse_version
from insiders.repos.registry import Repo, VersionRecord
from insiders.watcher.tags import tag_version, to_build

KNOWN_VERSIONS_SHOWN = 5


def versions_to_build(
    repo: Repo,
    versions: dict[Version, str],
    *,
    force: bool,
    only: Sequence[str],
    explicit: bool,
    hosted: Iterable[str],
    removed: Iterable[str] = (),
    now: float,
) -> tuple[list[Version], tuple[str, ...] | None]:
    """What to build now, newest first, and (at the first listing only) the versions skipped.

    `versions` maps each version tag's version to the tag; `hosted` are the versions of the files
    the store holds for the repository, `removed` the versions the store remembers removed. Never
    a removed version unless asked for by `only`; never a failed one before its retry time unless
    a person asked (`explicit`).
    """
    if only:
        return requested(only, versions), None
    records = repo.state.versions
    gone = {v for text in removed if (v := parse_version(text)) is not None}
    # (A registry written before the store kept removals records them per repository.)
    gone |= {v for v in versions if status_record(records, v, "removed")}
    if force:
        newest = max(versions)
        return ([] if newest in gone else [newest]), None
    published = _published(repo, versions, hosted)
    waiting = set() if explicit else _waiting(records, versions, now)
    first = repo.state.skipped is None
    skipped = {Version(v) for v in repo.state.skipped or ()}
    wanted = to_build(
        versions,
        published=published | skipped | gone | waiting,
        first_check=first,
        select="latest" if repo.versions == "newest" else "all",
        since=Version(repo.since) if repo.versions == "since" and repo.since else None,
    )
    wanted.reverse()
    if not first:
        return wanted, None
    return wanted, tuple(
        str(v) for v in sorted(versions) if v not in wanted and v not in published and v not in gone
    )


def is_new_tag(repo: Repo, tag: str, hosted: Iterable[str]) -> bool:
    """Whether `tag` names a version the watcher has not met in this repository: not published,
    failed, removed or skipped, nor among the files the store holds for it. A push of such a tag
    is worth a check at once; any other push is the periodic check's (pause and backoff apply)."""
    version = tag_version(tag)
    if version is None or tag == repo.state.newest_tag:
        return False
    known = [*repo.state.versions, *(repo.state.skipped or ()), *hosted]
    return all(parse_version(text) != version for text in known)


def requested(only: Sequence[str], versions: dict[Version, str]) -> list[Version]:
    """The versions `update --version` names, newest first; each must have a tag."""
    wanted = []
    for text in only:
        version = parse_version(text)
        if version is None or version not in versions:
            newest = sorted(versions, reverse=True)[:KNOWN_VERSIONS_SHOWN]
            known = ", ".join(str(v) for v in newest)
            raise NotTagged(f"--version {text}: no tag names this version ({known})")
        wanted.append(version)
    return sorted(set(wanted), reverse=True)


def _published(repo: Repo, versions: dict[Version, str], hosted: Iterable[str]) -> set[Version]:
    """The versions built already: in the store for a local repository, else as recorded (and
    every version up to the last one published)."""
    published = {v for text in hosted if (v := parse_version(text))}
    if not repo.local:
        records = repo.state.versions
        published |= {v for v in versions if status_record(records, v, "published")}
        if repo.state.last_published:
            last = Version(repo.state.last_published)
            published |= {v for v in versions if v <= last}
    return published


def _waiting(
    records: dict[str, VersionRecord], versions: dict[Version, str], now: float
) -> set[Version]:
    """The failed versions whose retry time has not come."""
    waiting = set()
    for version in versions:
        record = status_record(records, version, "failed")
        if record is not None and record.retry_at is not None and record.retry_at > now:
            waiting.add(version)
    return waiting


def status_record(
    records: dict[str, VersionRecord], version: Version, status: str
) -> VersionRecord | None:
    record = records.get(str(version))
    if record is None:
        # Recorded under another spelling of the same version (1.0 and 1.0.0 are one release).
        record = next((r for text, r in records.items() if parse_version(text) == version), None)
    return record if record is not None and record.status == status else None
