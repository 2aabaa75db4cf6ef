"""The one way a distribution file enters the store: an upload, a watcher build, any later source.

Every file passes the same sequence: its name parsed and spelled the normalised way, what its
sender claimed about it checked, its archive and core metadata inspected, then the atomic
`Store.add` (one file) or `Store.add_release` (a build's files, together). The refusals are
`IngestError`s and the store's own (`FileConflict`, `ProjectClosed`, `VersionRemoved`), worded for
a person; each caller translates them at its boundary (the upload API into HTTP statuses for twine,
the watcher into a version's failure).

The file's digests are computed while it streams into the store's incoming/ directory (one
`Hasher` for the three the index publishes), so the bytes are read once.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from insiders.distributions import CoreMetadata, inspect
from insiders.errors import NotAsClaimed
from insiders.names import (
    DistFilename,
    check_normalized,
    normalize,
    parse_dist_filename,
    parse_version,
)
from insiders.store import Incoming, Store, StoredFile

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Digests:
    """What the streaming hasher found of a file: its size and the digests an index lists."""

    size: int
    sha256: str
    md5: str
    blake2b_256: str

    def form_fields(self) -> dict[str, str]:
        """The digests under the names the legacy upload API's form gives them (what twine sends,
        what a sender's claims are checked against)."""
        return {
            "sha256_digest": self.sha256,
            "md5_digest": self.md5,
            "blake2_256_digest": self.blake2b_256,
        }


class Hasher:
    """The size and the three digests of a stream, fed chunk by chunk (hashing is CPU work: feed
    it from a thread when the chunks are large)."""

    def __init__(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5()
        self._blake2b = hashlib.blake2b(digest_size=32)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        for hasher in (self._sha256, self._md5, self._blake2b):
            hasher.update(chunk)

    def digests(self) -> Digests:
        return Digests(
            self.size, self._sha256.hexdigest(), self._md5.hexdigest(), self._blake2b.hexdigest()
        )


def hash_file(path: Path) -> Digests:
    """The digests of a file on disk (blocking: call from a thread)."""
    hasher = Hasher()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
    return hasher.digests()


def copy_and_hash(source: Path, target: Path) -> Digests:
    """Copy `source` to `target`, hashing on the way: one read (blocking: call from a thread)."""
    hasher = Hasher()
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            hasher.update(chunk)
            writer.write(chunk)
    return hasher.digests()


@dataclass(frozen=True, slots=True)
class Claims:
    """What the sender of a file stated about it (an upload's form): the file must agree."""

    name: str
    version: str
    # The form's fields: those of Digests.form_fields() that are there are checked, the rest
    # ignored (a sender may send no digest at all).
    fields: Mapping[str, str]

    def check(self, dist: DistFilename, digests: Digests) -> None:
        if dist.name != normalize(self.name) or dist.version != parse_version(self.version):
            raise NotAsClaimed(
                f"The filename {dist.filename} does not match the form's project {self.name} "
                f"version {self.version}"
            )
        for key, actual in digests.form_fields().items():
            claimed = self.fields.get(key, "").strip().lower()
            # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError).
            if claimed and not hmac.compare_digest(claimed.encode(), actual.encode()):
                raise NotAsClaimed(
                    f"{key} does not match the file: the upload was damaged on its way"
                )


def check_filename(filename: str) -> DistFilename:
    """The parsed name of a new file, or InvalidFilename: a wheel or sdist name, spelled the
    normalised way. (A source of several files, as a build, can check them all before the first
    is published.)"""
    dist = parse_dist_filename(filename)
    check_normalized(dist)
    return dist


@asynccontextmanager
async def incoming_file(store: Store) -> AsyncIterator[Path]:
    """A fresh temp file in the store's incoming/ for a file on its way in, removed afterwards
    (a published file was renamed away from it already)."""
    temp = await trio.to_thread.run_sync(store.new_incoming)
    try:
        yield temp
    finally:
        # Shielded: a cancelled upload must not leave its bytes behind until the next start.
        with trio.CancelScope(shield=True):
            await trio.Path(temp).unlink(missing_ok=True)


async def ingest(
    store: Store,
    filename: str,
    content: Path,
    digests: Digests,
    *,
    claims: Claims,
    uploaded_by: str,
) -> bool:
    """Check an upload's `content` (a complete file in the store's incoming/, named `filename`
    by its sender) and publish it; True if added, False if the same file was there already.
    Both `claims` and `uploaded_by` are required: an upload is always checked against its form
    and recorded with its token's name (a build's files go by publish_release).

    Raises InvalidFilename, NotAsClaimed, InvalidDistribution, FileConflict or ProjectClosed.
    """
    dist = check_filename(filename)
    claims.check(dist, digests)
    meta = await trio.to_thread.run_sync(inspect, content, dist)
    entry = _stored_entry(dist, meta, digests, uploaded_by)
    return await store.add(meta.name, entry, content, meta.raw)


async def publish_file(store: Store, path: Path) -> bool:
    """Publish one file already on disk, as a person would upload it (see publish_release)."""
    return await publish_release(store, [path], bring_back=True)


async def publish_release(store: Store, paths: list[Path], *, bring_back: bool) -> bool:
    """Publish the files of one release already on disk (a build), together: copied into the
    store (the sources stay where they were), each through the same checks as an upload, then
    `Store.add_release`. True if any was added, False if all were there with the same bytes.

    `bring_back`: a person asked for this version, so one removed before is published again.
    Raises what `ingest` raises, and the store's ReleaseDiffers or VersionRemoved.
    """
    for path in paths:  # every name checked before anything is copied
        check_filename(path.name)
    async with AsyncExitStack() as stack:
        files: list[Incoming] = []
        for path in paths:
            temp = await stack.enter_async_context(incoming_file(store))
            digests = await trio.to_thread.run_sync(copy_and_hash, path, temp)
            dist = check_filename(path.name)
            meta = await trio.to_thread.run_sync(inspect, temp, dist)
            files.append(Incoming(_stored_entry(dist, meta, digests), temp, meta.raw))
        return await store.add_release(meta.name, files, bring_back=bring_back)


def _stored_entry(
    dist: DistFilename, meta: CoreMetadata, digests: Digests, uploaded_by: str | None = None
) -> StoredFile:
    return StoredFile(
        filename=dist.filename,
        version=meta.version,
        size=digests.size,
        sha256=digests.sha256,
        md5=digests.md5,
        blake2b_256=digests.blake2b_256,
        upload_time=time.time(),
        requires_python=meta.requires_python,
        metadata_sha256=hashlib.sha256(meta.raw).hexdigest(),
        uploaded_by=uploaded_by,
    )
