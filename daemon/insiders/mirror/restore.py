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
            content = await _fetch(store, target, project.normalized, stored)
            metadata = None
            if stored.metadata_sha256 is not None:
                metadata = await _fetch_metadata(target, project.normalized, stored)
                if metadata is None:
                    stored = msgspec.structs.replace(stored, metadata_sha256=None)
            await store.add(project.name, stored, content, metadata)
            files += 1
        log.info("restored %s (%d files)", project.name, len(project.files))
    return len(manifest.projects), files


async def _fetch(store: Store, target: Target, name: str, stored: StoredFile) -> Path:
    temp = await trio.to_thread.run_sync(store.new_incoming)
    key = layout.file_key(name, stored.filename)
    try:
        await trio.to_thread.run_sync(target.fetch, key, temp)
        size, digest = await trio.to_thread.run_sync(_size_and_sha256, temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if (size, digest) != (stored.size, stored.sha256):
        temp.unlink(missing_ok=True)
        raise RestoreError(
            f"{target.location}: {key} does not match its manifest "
            f"({size} bytes, sha256 {digest}; recorded {stored.size} bytes, {stored.sha256})"
        )
    return temp


async def _fetch_metadata(target: Target, name: str, stored: StoredFile) -> bytes | None:
    key = layout.file_key(name, f"{stored.filename}.metadata")
    data = await trio.to_thread.run_sync(target.read, key)
    if data is None or hashlib.sha256(data).hexdigest() != stored.metadata_sha256:
        log.warning("%s: missing or altered; the file is restored without its metadata", key)
        return None
    return data


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
