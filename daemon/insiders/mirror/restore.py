"""Fill an empty store from a mirror target (`insidersd --restore-from NAME`).

The target's manifests say which projects and files it holds, with their hashes; every file is
fetched into the store's incoming directory, checked against its recorded size and sha256, and
published through `Store.add`, the path uploads take: a restore interrupted at any instant leaves a
store that lists only complete, verified files, and running it again picks up where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import msgspec
import trio

from insiders.errors import RestoreError
from insiders.ingest import hash_file, incoming_file
from insiders.store import Store, StoredFile

from . import layout
from .targets import Target

log = logging.getLogger(__name__)


MARKER = "restoring"


async def restore_into(store: Store, target: Target) -> tuple[int, int]:
    """Restore into an empty store, or finish a restore that was interrupted.

    A marker file in the data directory says a restore is under way; without it, a store that
    holds anything is refused: a restore never mixes two indexes.
    """
    marker = trio.Path(store.root / MARKER)
    if store.projects and not await marker.exists():
        raise RestoreError(
            f"the store in {store.root} holds {len(store.projects)} projects: "
            "--restore-from fills an empty data directory only"
        )
    await marker.write_text(f"{target.location}\n")
    counts = await restore(store, target)
    await marker.unlink()
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
        key = f"simple/{name}/{layout.PROJECT_MANIFEST}"
        data = await trio.to_thread.run_sync(target.read, key)
        if data is None:
            raise RestoreError(f"{target.location}: {key} is missing")
        try:
            project = layout.decode_project(data)
        except msgspec.DecodeError as error:
            raise RestoreError(f"{target.location}: unreadable {key}: {error}") from None
        for stored in project.files:
            current = store.get(project.normalized)
            if current is not None and current.file(stored.filename) is not None:
                continue
            metadata = None
            if stored.metadata_sha256 is not None:
                metadata = await _fetch_metadata(target, project.normalized, stored)
                if metadata is None:
                    stored = msgspec.structs.replace(stored, metadata_sha256=None)
            async with incoming_file(store) as content:
                await _fetch(target, project.normalized, stored, content)
                await store.add(project.name, stored, content, metadata)
            files += 1
        log.info("restored %s (%d files)", project.name, len(project.files))
    return len(manifest.projects), files


async def _fetch(target: Target, name: str, stored: StoredFile, content: Path) -> None:
    """The file into `content`, checked against the size and sha256 its manifest records."""
    key = layout.file_key(name, stored.filename)
    await trio.to_thread.run_sync(target.fetch, key, content)
    got = await trio.to_thread.run_sync(hash_file, content)
    if (got.size, got.sha256) != (stored.size, stored.sha256):
        raise RestoreError(
            f"{target.location}: {key} does not match its manifest ({got.size} bytes, sha256 "
            f"{got.sha256}; recorded {stored.size} bytes, {stored.sha256})"
        )


async def _fetch_metadata(target: Target, name: str, stored: StoredFile) -> bytes | None:
    key = layout.file_key(name, f"{stored.filename}.metadata")
    data = await trio.to_thread.run_sync(target.read, key)
    if data is None or hashlib.sha256(data).hexdigest() != stored.metadata_sha256:
        log.warning("%s: missing or altered; the file is restored without its metadata", key)
        return None
    return data
