"""A project's record as a mirror keeps it (simple/NAME/insiders-project.json): the mirror's own
types, apart from the store's.

A target outlives the daemon that wrote it, and a restore reads what an older daemon wrote: so the
manifest's fields are named here, and copied from and to the store's records by name (`copied`
refuses a field the other side lacks). Renaming a field of the store's is then a failing test,
never a silent change of every mirror's manifests. The bytes are the store's record's as of this
format (tests/test_mirror_pure.py holds them equal), so the manifests written before these types
existed read as they are.
"""

from __future__ import annotations

import msgspec

from insiders.store import Project, ProjectStatus, RemovedFile, StoredFile
from insiders.structs import copied


class FileEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    filename: str
    version: str
    size: int
    sha256: str
    md5: str = ""
    blake2b_256: str = ""
    upload_time: float = 0.0
    requires_python: str | None = None
    yanked: bool = False
    yanked_reason: str | None = None
    metadata_sha256: str | None = None
    uploaded_by: str | None = None


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
