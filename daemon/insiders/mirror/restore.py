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

from insiders.errors import RestoreError, UnfinishedRestore
from insiders.fsutil import atomic_write
from insiders.ingest import hash_file, incoming_file
from insiders.names import NormalizedName, is_valid_name
from insiders.store import Project, Store, StoredFile

from . import claim, layout
from .targets import Target

log = logging.getLogger(__name__)


MARKER = "restoring"


def unfinished(root: Path) -> str | None:
    """The target of the restore the data directory holds unfinished, None when it holds none
    (blocking: call from a thread)."""
    try:
        return (root / MARKER).read_text().split("\n", 1)[0].strip()
    except FileNotFoundError:
        return None


def check_unfinished(root: Path) -> None:
    """Refuse a data directory whose restore did not finish (blocking: call from a thread)."""
    name = unfinished(root)
    if name is None:
        return
    raise UnfinishedRestore(
        f"{root} holds an unfinished restore from mirror {name or '?'}: run "
        f"`insidersd --restore-from {name or 'NAME'}` to finish it (nothing is served or "
        "mirrored until then)"
    )


async def restore_into(store: Store, target: Target) -> Restored:
    """Restore into an empty store, or finish a restore that was interrupted.

    A marker file in the data directory says a restore is under way; without it, a store that
    holds anything is refused: a restore never mixes two indexes.
    """
    marker = store.root / MARKER
    under_way = await trio.to_thread.run_sync(unfinished, store.root)
    if store.projects and under_way is None:
        raise RestoreError(
            f"the store in {store.root} holds {len(store.projects)} projects: "
            "--restore-from fills an empty data directory only"
        )
    if under_way and under_way != target.name:
        raise RestoreError(
            f"{store.root} holds an unfinished restore from mirror {under_way}: finish it with "
            f"`insidersd --restore-from {under_way}` (a restore never mixes two mirrors)"
        )
    data = f"{target.name}\n{target.location}\n".encode()
    await trio.to_thread.run_sync(atomic_write, marker, data)
    counts = await restore(store, target)
    await trio.Path(marker).unlink()
    return counts


class Restored(msgspec.Struct, kw_only=True):
    """What a restore did: projects and files restored, and what it skipped and why."""

    projects: int = 0
    files: int = 0
    skipped: list[str] = msgspec.field(default_factory=list)

    def skip(self, why: str) -> None:
        log.warning("restore: skipped %s", why)
        self.skipped.append(why)


async def restore(store: Store, target: Target) -> Restored:
    """Copy every project the target holds into `store`.

    Nothing the target says is trusted: a project or file name that an upload could not have
    (a path, another project's file) is skipped, so the store writes nothing outside its own
    layout; a file whose bytes do not match its recorded hash, or that is missing, is skipped
    with a report rather than ending the restore. A failure to read the target ends it (run it
    again to resume).
    """
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
    done = Restored()
    for name in manifest.projects:
        if not claim.is_project_name(name):
            done.skip(f"project {name!r} named in {layout.ROOT_MANIFEST}: not a project name")
            continue
        if await _restore_project(store, target, NormalizedName(name), done):
            done.projects += 1
    for name in manifest.removed:
        if not claim.is_project_name(name):
            done.skip(f"project {name!r} named in {layout.ROOT_MANIFEST}: not a project name")
            continue
        await _restore_tombstone(store, target, NormalizedName(name), done)
    if manifest.store:
        await store.restore_identity(manifest.store)
    return done


async def _read_record(
    target: Target, name: NormalizedName, done: Restored
) -> tuple[str, Project | None]:
    """The project's manifest in the target (None: skipped, with the reason reported)."""
    key = layout.manifest_key(name)
    data = await trio.to_thread.run_sync(target.read, key)
    if data is None:
        done.skip(f"{key}: missing")
        return key, None
    try:
        project = layout.decode_project(data)
    except msgspec.DecodeError as error:
        done.skip(f"{key}: unreadable: {error}")
        return key, None
    if not is_valid_name(project.name) or project.normalized != name:
        done.skip(f"{key}: names the project {project.name!r}, not {name}")
        return key, None
    return key, project


async def _restore_tombstone(
    store: Store, target: Target, name: NormalizedName, done: Restored
) -> None:
    """The record of a project whose files were all removed (what it had, and when it went)."""
    key, record = await _read_record(target, name, done)
    if record is None or store.record(name) is not None:
        return
    if record.files:
        done.skip(f"{key}: listed as removed, and names files")
        return
    removed = tuple(r for r in record.removed if claim.unsafe_filename(name, r.filename) is None)
    await store.restore_tombstone(msgspec.structs.replace(record, removed=removed))


async def _restore_project(
    store: Store, target: Target, name: NormalizedName, done: Restored
) -> bool:
    """Every file of one project the store lacks, then its record; whether any file is in."""
    key, project = await _read_record(target, name, done)
    if project is None:
        return False
    present: dict[str, int] = {}
    for prefix in (f"{layout.FILES}/{name}/", f"{layout.QUARANTINE}/{name}/"):
        present.update(await trio.to_thread.run_sync(target.listing, prefix))
    restored: list[StoredFile] = []
    for stored in project.files:
        why = claim.unsafe_file(name, stored)
        if why is not None:
            done.skip(f"{key}: {why}")
            continue
        current = store.get(name)
        if current is not None and (have := current.file(stored.filename)) is not None:
            restored.append(have)
            continue
        entry = await _restore_file(store, target, project, stored, present, done)
        if entry is not None:
            restored.append(entry)
    if not restored:
        return False
    removed = tuple(r for r in project.removed if claim.unsafe_filename(name, r.filename) is None)
    files = tuple(restored)
    await store.restore_record(msgspec.structs.replace(project, files=files, removed=removed))
    log.info("restored %s (%d files, %s)", project.name, len(files), project.status)
    return True


async def _restore_file(
    store: Store,
    target: Target,
    project: Project,
    stored: StoredFile,
    present: dict[str, int],
    done: Restored,
) -> StoredFile | None:
    """One file into the store, checked against its record; None when it was skipped."""
    key = next((k for k in _keys(project, stored.filename) if k in present), None)
    if key is None:
        done.skip(f"{layout.file_key(project.normalized, stored.filename)}: missing")
        return None
    metadata = None
    if stored.metadata_sha256 is not None:
        metadata = await _fetch_metadata(target, project, stored, present)
        if metadata is None:
            stored = msgspec.structs.replace(stored, metadata_sha256=None)
    async with incoming_file(store) as content:
        await trio.to_thread.run_sync(target.fetch, key, content)
        got = await trio.to_thread.run_sync(hash_file, content)
        if (got.size, got.sha256) != (stored.size, stored.sha256):
            done.skip(
                f"{key}: does not match its manifest ({got.size} bytes, sha256 {got.sha256}; "
                f"recorded {stored.size} bytes, {stored.sha256})"
            )
            return None
        await store.add(project.name, stored, content, metadata)
    done.files += 1
    return stored


def _keys(project: Project, filename: str) -> tuple[str, str]:
    """Where the file is kept in the target, then where else it may be (a target written before
    quarantined files moved to quarantine/, or a sync cut short while moving them)."""
    first, other = layout.files_area(project), layout.QUARANTINE
    if first == layout.QUARANTINE:
        other = layout.FILES
    name = project.normalized
    return layout.file_key(name, filename, first), layout.file_key(name, filename, other)


async def _fetch_metadata(
    target: Target, project: Project, stored: StoredFile, present: dict[str, int]
) -> bytes | None:
    key = next((k for k in _keys(project, f"{stored.filename}.metadata") if k in present), None)
    data = await trio.to_thread.run_sync(target.read, key) if key is not None else None
    if data is None or hashlib.sha256(data).hexdigest() != stored.metadata_sha256:
        where = key or layout.file_key(project.normalized, f"{stored.filename}.metadata")
        log.warning("%s: missing or altered; the file is restored without its metadata", where)
        return None
    return data
