"""Publishing a distribution file that is already on disk (a build) into the store.

It passes the same checks as an upload (filename, archive, core metadata) and the same atomic
publication; the file is copied into the store, so the source stays where it was.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from insiders.distributions import CoreMetadata, inspect
from insiders.names import DistFilename, parse_dist_filename
from insiders.store import Store, StoredFile

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Digests:
    size: int
    sha256: str
    md5: str
    blake2b_256: str


def stored_entry(dist: DistFilename, meta: CoreMetadata, digests: Digests) -> StoredFile:
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
    )


def _copy_and_hash(source: Path, target: Path) -> Digests:
    sha256, md5, blake2b = hashlib.sha256(), hashlib.md5(), hashlib.blake2b(digest_size=32)
    size = 0
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(CHUNK):
            for hasher in (sha256, md5, blake2b):
                hasher.update(chunk)
            writer.write(chunk)
            size += len(chunk)
    return Digests(size, sha256.hexdigest(), md5.hexdigest(), blake2b.hexdigest())


async def publish_file(store: Store, path: Path) -> bool:
    """Publish one file; True if added, False if the same file was there already.

    Raises InvalidFilename, InvalidDistribution or FileConflict, as an upload would be refused.
    """
    dist = parse_dist_filename(path.name)
    meta = await trio.to_thread.run_sync(inspect, path, dist)
    temp = store.new_incoming()
    try:
        digests = await trio.to_thread.run_sync(_copy_and_hash, path, temp)
        return await store.add(meta.name, stored_entry(dist, meta, digests), temp, meta.raw)
    finally:
        await trio.Path(temp).unlink(missing_ok=True)
