"""A project's record as a mirror keeps it (simple/NAME/insiders-project.json): the mirror's own
types, apart from the store's.

A target outlives the daemon that wrote it, and a restore reads what an older daemon wrote: so the
manifest's fields are named here, and copied from and to the store's records by name (`copied`
refuses a field the other side lacks). Renaming a field of the store's is then a failing test,
never a silent change of every mirror's manifests. The bytes are the store's record's as of this
format (tests/test_mirror_pure.py holds them equal), so the manifests written before these types
existed read as they are.

A file's facts are the one part declared once for both (store.FileFacts): a second copy of the
same twelve fields, byte for byte the store's by design, would only be a place to forget a change.
That test spells their keys out, so renaming one of them fails it all the same.
"""

from __future__ import annotations

import msgspec

from insiders.store import FileFacts, Project, ProjectStatus, RemovedFile, StoredFile
from insiders.structs import copied


class FileEntry(FileFacts, frozen=True, kw_only=True, omit_defaults=True):
    """A file as a manifest names it: the facts the store records (FileFacts, see above); what
    the store's own record adds to them (StoredFile) stays out of manifests."""


class RemovedEntry(msgspec.Struct, frozen=True, kw_only=True):
    filename: str
    sha256: str
    removed_at: float = 0.0


class ProjectManifest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    files: tuple[FileEntry, ...] = ()
    status: ProjectStatus = "active"
    status_reason: str | None = None
    revision: int = 0
    removed: tuple[RemovedEntry, ...] = ()


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ProjectManifest).decode


def encode_project(project: Project) -> bytes:
    files = tuple(copied(FileEntry, stored) for stored in project.files)
    removed = tuple(copied(RemovedEntry, gone) for gone in project.removed)
    return _encode(copied(ProjectManifest, project, files=files, removed=removed))


def decode_project(data: bytes) -> Project:
    """The store's record of a manifest; msgspec.DecodeError (a ValueError) when it is none."""
    manifest = _decode(data)
    files = tuple(copied(StoredFile, entry) for entry in manifest.files)
    removed = tuple(copied(RemovedFile, gone) for gone in manifest.removed)
    return copied(Project, manifest, files=files, removed=removed)
