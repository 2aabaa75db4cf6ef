"""Fill an empty store from a mirror target (`insidersd --restore-from NAME`).

The target's manifests say which projects and files it holds, with their hashes; every file is
fetched into the store's incoming directory, checked against its recorded size and sha256, and
published through `Store.add`, the path uploads take: a restore interrupted at any instant leaves a
store that lists only complete, verified files, and running it again picks up where it stopped.
Once a project's files are in, its manifest becomes the target's record of it (status, reasons,
removals, revision); once every project is in, the store takes the target's identity, so the
target is this store's mirror again.

Until then a marker in the data directory names the target: a start without `--restore-from`
refuses such a data directory (`check_unfinished`) rather than serve, and mirror, part of a store.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import msgspec
import trio

from insiders.errors import RestoreError, TargetError, UnfinishedRestore
from insiders.fsutil import atomic_write
from insiders.ingest import hash_file, incoming_file
from insiders.store import Project, Store, StoredFile

from . import layout
from .targets import Target

log = logging.getLogger(__name__)


MARKER = "restoring"


def check_unfinished(root: Path) -> None:
    """Refuse a data directory whose restore did not finish (blocking: call from a thread)."""
    try:
        name = (root / MARKER).read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return
    raise UnfinishedRestore(
        f"{root} holds an unfinished restore from mirror {name or '?'}: run "
        f"`insidersd --restore-from {name or 'NAME'}` to finish it (nothing is served or "
        "mirrored until then)"
    )


async def restore_into(store: Store, target: Target) -> tuple[int, int]:
    """Restore into an empty store, or finish a restore that was interrupted.

    A marker file in the data directory says a restore is under way; without it, a store that
    holds anything is refused: a restore never mixes two indexes.
    """
    marker = store.root / MARKER
    if store.projects and not await trio.Path(marker).exists():
        raise RestoreError(
            f"the store in {store.root} holds {len(store.projects)} projects: "
            "--restore-from fills an empty data directory only"
        )
    data = f"{target.name}\n{target.location}\n".encode()
    await trio.to_thread.run_sync(atomic_write, marker, data)
    counts = await restore(store, target)
    await trio.Path(marker).unlink()
    return counts


async def restore(store: Store, target: Target) -> tuple[int, int]:
    """Copy every project the target holds into `store`; returns (projects, files) restored."""
    root = await trio.to_thread.run_sync(target.read, layout.ROOT_MANIFEST)
    if root is None:
        raise RestoreError(
            f"{target.location} holds no {layout.ROOT_MANIFEST}: not an insiders mirror (yet)"
        )
    try:
        manifest = layout.decode_root(root)
    except msgspec.DecodeError as error:
        raise RestoreError(
            f"{target.location}: unreadable {layout.ROOT_MANIFEST}: {error}"
        ) from None
    if manifest.format > layout.FORMAT:
        raise RestoreError(
            f"{target.location} was written in mirror format {manifest.format} by insiders "
            f"{manifest.generator}; this insiders reads format {layout.FORMAT} and older"
        )
    files = 0
    for name in manifest.projects:
        files += await _restore_project(store, target, name)
    if manifest.store:
        await store.restore_identity(manifest.store)
    return len(manifest.projects), files


async def _restore_project(store: Store, target: Target, name: str) -> int:
    """Every file of one project the store lacks, then its record; the files restored."""
    key = f"simple/{name}/{layout.PROJECT_MANIFEST}"
    data = await trio.to_thread.run_sync(target.read, key)
    if data is None:
        raise RestoreError(f"{target.location}: {key} is missing")
    try:
        project = layout.decode_project(data)
    except msgspec.DecodeError as error:
        raise RestoreError(f"{target.location}: unreadable {key}: {error}") from None
    files = 0
    record = project
    for stored in project.files:
        current = store.get(project.normalized)
        if current is not None and (have := current.file(stored.filename)) is not None:
            record = _with_file(record, have)
            continue
        metadata = None
        if stored.metadata_sha256 is not None:
            metadata = await _fetch_metadata(target, project, stored)
            if metadata is None:
                stored = msgspec.structs.replace(stored, metadata_sha256=None)
                record = _with_file(record, stored)
        async with incoming_file(store) as content:
            await _fetch(target, project, stored, content)
            await store.add(project.name, stored, content, metadata)
        files += 1
    if project.files:
        await store.restore_record(record)
    log.info("restored %s (%d files, %s)", project.name, len(project.files), project.status)
    return files


def _with_file(project: Project, stored: StoredFile) -> Project:
    """The record with the file as the store holds it (its metadata may have been left out)."""
    files = tuple(stored if f.filename == stored.filename else f for f in project.files)
    return msgspec.structs.replace(project, files=files)


def _keys(project: Project, filename: str) -> tuple[str, str]:
    """Where the file is kept in the target, then where else it may be (a target written before
    quarantined files moved to quarantine/, or a sync cut short while moving them)."""
    first, other = layout.files_area(project), layout.QUARANTINE
    if first == layout.QUARANTINE:
        other = layout.FILES
    name = project.normalized
    return layout.file_key(name, filename, first), layout.file_key(name, filename, other)


async def _fetch(target: Target, project: Project, stored: StoredFile, content: Path) -> None:
    """The file into `content`, checked against the size and sha256 its manifest records."""
    key, other = _keys(project, stored.filename)
    try:
        await trio.to_thread.run_sync(target.fetch, key, content)
    except TargetError:
        key = other
        await trio.to_thread.run_sync(target.fetch, key, content)
    got = await trio.to_thread.run_sync(hash_file, content)
    if (got.size, got.sha256) != (stored.size, stored.sha256):
        raise RestoreError(
            f"{target.location}: {key} does not match its manifest ({got.size} bytes, sha256 "
            f"{got.sha256}; recorded {stored.size} bytes, {stored.sha256})"
        )


async def _fetch_metadata(target: Target, project: Project, stored: StoredFile) -> bytes | None:
    data = None
    for key in _keys(project, f"{stored.filename}.metadata"):
        data = await trio.to_thread.run_sync(target.read, key)
        if data is not None:
            break
    if data is None or hashlib.sha256(data).hexdigest() != stored.metadata_sha256:
        log.warning("%s: missing or altered; the file is restored without its metadata", key)
        return None
    return data
