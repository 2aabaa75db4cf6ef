"""Fill an empty store from a mirror target (`insidersd --restore-from NAME`).

The target's manifests say which projects and files it holds, with their hashes; every file is
fetched into the store's incoming directory (`concurrency` at a time, several projects at once;
one trip to a worker thread per file: fetch, size and sha256 checked, fsync, and the same for
its metadata), and published in batches (`Store.restore_files`: renames, one directory fsync,
one manifest write per batch of BATCH files or a quarter of what the project holds, whichever is
more: the manifest bytes written stay linear in the project's files). A file costs the same
in the first project as in the last, and in a project of 20,000 files as in one of 2. A
restore interrupted at any instant leaves a store that lists only complete, verified files (a
batch is named by the manifest only once its files are in place), and running it again picks up
where it stopped: the files a manifest names are not fetched again.
Once a project's files are in, its manifest becomes the target's record of it (status, reasons,
removals, revision); once every project is in, the store takes the target's identity, so the
target is this store's mirror again.

Until then a marker in the data directory names the target: a start without `--restore-from`
refuses such a data directory (`check_unfinished`) rather than serve, and mirror, part of a store.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from insiders.errors import RestoreError, UnfinishedRestore
from insiders.fsutil import atomic_write
from insiders.names import NormalizedName, is_valid_name
from insiders.store import Incoming, Project, Store, StoredFile, discard_incoming

from . import claim, layout
from .targets import Target

log = logging.getLogger(__name__)


MARKER = "restoring"
# Files published per manifest write, at least: large enough that a project's manifest is written
# a few times, small enough that an interruption costs seconds of fetching (a large project's
# batches grow to a quarter of what it holds: its manifest is rewritten a few dozen times).
BATCH = 256
# Projects restored at once (their fetches share the target's `concurrency`): a small project's
# round trips (listing, manifest) overlap another's files.
PROJECTS_AT_ONCE = 4


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


async def restore_into(store: Store, target: Target, concurrency: int = 16) -> Restored:
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
    counts = await restore(store, target, concurrency)
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


async def restore(store: Store, target: Target, concurrency: int = 16) -> Restored:
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
    limiter = trio.CapacityLimiter(concurrency)
    names: list[NormalizedName] = []
    for name in manifest.projects:
        if claim.is_project_name(name):
            names.append(NormalizedName(name))
        else:
            done.skip(f"project {name!r} named in {layout.ROOT_MANIFEST}: not a project name")
    queue = iter(names)

    async def worker() -> None:
        for name in queue:  # each worker takes the next project in turn
            if await _restore_project(store, target, name, done, limiter):
                done.projects += 1

    async with trio.open_nursery() as nursery:
        for _ in range(PROJECTS_AT_ONCE):
            nursery.start_soon(worker)
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
    store: Store,
    target: Target,
    name: NormalizedName,
    done: Restored,
    limiter: trio.CapacityLimiter,
) -> bool:
    """Every file of one project the store lacks, then its record; whether any file is in."""
    key, project = await _read_record(target, name, done)
    if project is None:
        return False
    present: dict[str, int] = {}
    for prefix in (f"{layout.FILES}/{name}/", f"{layout.QUARANTINE}/{name}/"):
        present.update(await trio.to_thread.run_sync(target.listing, prefix, limiter=limiter))
    current = store.get(name)
    have = {f.filename: f for f in current.files} if current is not None else {}
    wanted: list[StoredFile] = []
    for stored in project.files:
        why = claim.unsafe_file(name, stored)
        if why is not None:
            done.skip(f"{key}: {why}")
        elif stored.filename not in have:
            wanted.append(stored)
    removed = tuple(r for r in project.removed if claim.unsafe_filename(name, r.filename) is None)
    # What the manifest becomes once every file is in (the batch that brings the last one
    # writes it: a small project is one manifest write).
    coming = {f.filename for f in wanted}
    final = msgspec.structs.replace(
        project,
        files=tuple(f for f in project.files if f.filename in have or f.filename in coming),
        removed=removed,
    )
    fetch = functools.partial(_fetch_file, store, target, project)
    await _publish_in_batches(
        store, project.name, wanted, len(have), final, fetch, present, done, limiter
    )
    current = store.get(name)
    if current is None:
        return False
    # The store's entries: a file whose metadata was missing or altered was kept without it.
    kept = {f.filename: f for f in current.files}
    restored = tuple(kept[f.filename] for f in project.files if f.filename in kept)
    record = msgspec.structs.replace(project, files=restored, removed=removed)
    if current != record:  # a file was skipped, or nothing was fetched: not written yet
        await store.restore_record(record)
    log.info("restored %s (%d files, %s)", project.name, len(restored), project.status)
    return True


async def _publish_in_batches(
    store: Store,
    display_name: str,
    wanted: list[StoredFile],
    held: int,
    final: Project,
    fetch: Callable[..., Awaitable[None]],
    present: dict[str, int],
    done: Restored,
    limiter: trio.CapacityLimiter,
) -> None:
    """`wanted` fetched (`fetch`, many at once) and published a batch at a time; `held` files of
    the project are in the store already."""
    start = 0
    while start < len(wanted):
        # A project's manifest is written once per batch: batches grow with what it holds, so
        # a 20,000-file project writes its manifest a few dozen times, not once per 256 files
        # of an ever larger manifest (its bytes written stay linear in its files).
        size = max(BATCH, (held + start) // 4)
        batch: list[Incoming] = []
        try:
            async with trio.open_nursery() as nursery:
                for stored in wanted[start : start + size]:
                    nursery.start_soon(fetch, stored, present, done, limiter, batch)
            handed, batch = batch, []  # restore_files consumes them, published or not
            published = await store.restore_files(display_name, handed, final)
            done.files += published  # (not `+= await`: other projects count meanwhile)
        finally:
            if batch:  # a batch cut short: its fetched files go
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(discard_incoming, batch)
        start += size


async def _fetch_file(
    store: Store,
    target: Target,
    project: Project,
    stored: StoredFile,
    present: dict[str, int],
    done: Restored,
    limiter: trio.CapacityLimiter,
    batch: list[Incoming],
) -> None:
    """One file (and its metadata) into the store's incoming/, checked against its record and
    fsynced, appended to `batch`; nothing when it was skipped (reported). One trip to a worker
    thread does it all: a file of a few kilobytes costs its system calls, not the event loop's
    hand-offs."""
    key = next((k for k in _keys(project, stored.filename) if k in present), None)
    if key is None:
        done.skip(f"{layout.file_key(project.normalized, stored.filename)}: missing")
        return
    side = None
    if stored.metadata_sha256 is not None:
        side = next(
            (k for k in _keys(project, f"{stored.filename}.metadata") if k in present), None
        )
    fetched = await trio.to_thread.run_sync(
        _fetch_durably, store, target, key, stored, side, limiter=limiter
    )
    # No checkpoint between the thread's return and here: a cancelled batch finds the file in
    # `batch` and removes it.
    if isinstance(fetched, str):
        done.skip(fetched)
    else:
        batch.append(fetched)


def _fetch_durably(
    store: Store, target: Target, key: str, stored: StoredFile, side: str | None
) -> Incoming | str:
    """Copy `key` into a new file of incoming/, check its size and sha256 against the record,
    fsync it; its metadata (`side`) too, when it matches its recorded sha256 (else the file is
    kept without it, with a warning). The Incoming, or why the file is skipped. Blocking: run
    in a worker thread, many at once (the batch's publishing then costs no fsync per file)."""
    content = store.new_incoming()
    metadata_file: Path | None = None
    try:
        target.fetch(key, content)
        with content.open("rb") as fetched:
            digest = hashlib.file_digest(fetched, "sha256")
            size = fetched.tell()
            if (size, digest.hexdigest()) != (stored.size, stored.sha256):
                content.unlink()
                return (
                    f"{key}: does not match its manifest ({size} bytes, sha256 "
                    f"{digest.hexdigest()}; recorded {stored.size} bytes, {stored.sha256})"
                )
            os.fsync(fetched.fileno())
        if stored.metadata_sha256 is not None:
            metadata = target.read(side) if side is not None else None
            if metadata is None or hashlib.sha256(metadata).hexdigest() != stored.metadata_sha256:
                where = side or f"{key}.metadata"
                log.warning(
                    "%s: missing or altered; the file is restored without its metadata", where
                )
                stored = msgspec.structs.replace(stored, metadata_sha256=None)
            else:
                metadata_file = store.new_incoming()
                _write_durably(metadata_file, metadata)
    except BaseException:
        content.unlink(missing_ok=True)
        if metadata_file is not None:
            metadata_file.unlink(missing_ok=True)
        raise
    return Incoming(stored, content, None, metadata_file=metadata_file)


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _keys(project: Project, filename: str) -> tuple[str, str]:
    """Where the file is kept in the target, then where else it may be (a target written before
    quarantined files moved to quarantine/, or a sync cut short while moving them)."""
    first, other = layout.files_area(project), layout.QUARANTINE
    if first == layout.QUARANTINE:
        other = layout.FILES
    name = project.normalized
    return layout.file_key(name, filename, first), layout.file_key(name, filename, other)
