"""The package store: distribution files and what is known about them, durable and crash-safe.

Layout under the store root:

    packages/<normalized-name>/<filename>            a distribution, complete and hashed
    packages/<normalized-name>/<filename>.metadata   its core metadata (METADATA or PKG-INFO)
    packages/<normalized-name>/.project.json         the manifest: which files are published
    incoming/                                        uploads in flight (emptied at start)
    store.json                                       the store's identity (see below)

A file is renamed into place before the manifest names it, and the manifest is replaced atomically,
so a kill at any instant leaves a manifest that lists only complete files. Everything else the index
serves (pages, caches) is derived from the manifests.

Every change to a project raises its `revision`, and a removal is recorded in its manifest as
such (`removed`); a project whose files are all removed keeps its manifest (a tombstone). With the
store's identity (a random id made when the store is, or taken from the mirror it is restored
from) a mirror target can tell whether it was written from this store, and whether the store holds
all the target does: the generation, the sum of every revision, only grows.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import trio

from insiders.errors import FileConflict, ProjectClosed, StoreError
from insiders.fsutil import atomic_write, fsync_dir, fsync_file
from insidersctl.protocol import ProjectStatus

from .names import NormalizedName, normalize, parse_version, release_slot

log = logging.getLogger(__name__)

MANIFEST = ".project.json"
IDENTITY = "store.json"


class StoredFile(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
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
    # sha256 of the stored core metadata; None when the archive had none we could read.
    metadata_sha256: str | None = None
    # The name of the token that uploaded it (None: published by the watcher, or before this
    # was recorded).
    uploaded_by: str | None = None

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


class RemovedFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file the store unpublished: what lets a mirror delete it, and a restore remember it."""

    filename: str
    sha256: str
    removed_at: float = 0.0


class Project(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # as the project spells it in its metadata
    files: tuple[StoredFile, ...] = ()
    # PEP 792. archived: no new files; quarantined: no file listed or served; deprecated: shown.
    status: ProjectStatus = "active"
    status_reason: str | None = None
    # Raised by every change: a mirror whose record of the project is newer has seen more.
    revision: int = 0
    removed: tuple[RemovedFile, ...] = ()

    @property
    def takes_uploads(self) -> bool:
        """PEP 792: archived and quarantined projects take no new files."""
        return self.status not in ("archived", "quarantined")

    @property
    def served_files(self) -> tuple[StoredFile, ...]:
        """The files pages list and /files/ serves: none while the project is quarantined."""
        return () if self.status == "quarantined" else self.files

    @property
    def normalized(self) -> NormalizedName:
        return normalize(self.name)

    def file(self, filename: str) -> StoredFile | None:
        for stored in self.files:
            if stored.filename == filename:
                return stored
        return None

    def files_of(self, version: str) -> tuple[StoredFile, ...]:
        """The files of `version`: as spelled, or equal to it by PEP 440 (1.0 is 1.0.0 and 01.0),
        as an installer asking for `==1.0` would find them. Empty when there is no such version.
        """
        wanted = parse_version(version)
        return tuple(
            f
            for f in self.files
            if f.version == version or (wanted is not None and parse_version(f.version) == wanted)
        )

    def versions(self) -> list[str]:
        """Distinct versions, oldest first by PEP 440 order."""
        seen = {f.version for f in self.files}
        return sorted(seen, key=_version_key)

    def latest(self) -> str | None:
        """The version a person means by "the latest": the public index's rule, in one place.

        A version counts as yanked when all its files are. The public index orders releases by
        (not yanked, final release, version) and takes the first, so: the highest final release not
        yanked, else the highest pre-release not yanked, else the highest yanked one. The JSON API,
        `insidersctl projects list` and the web pages all name this version. None for no files.
        """
        live = {f.version for f in self.files if not f.yanked}

        def rank(version: str) -> tuple[bool, bool, tuple[int, object]]:
            parsed = parse_version(version)
            final = parsed is not None and not parsed.is_prerelease
            return (version in live, final, _version_key(version))

        return max({f.version for f in self.files}, key=rank, default=None)


def _version_key(version: str) -> tuple[int, object]:
    parsed = parse_version(version)
    return (1, parsed) if parsed is not None else (0, version)


def sort_files(files: Iterable[StoredFile]) -> tuple[StoredFile, ...]:
    return tuple(sorted(files, key=lambda f: (_version_key(f.version), f.filename)))


def _changed(project: Project, **changes: object) -> Project:
    """The project with `changes`, one revision later."""
    return msgspec.structs.replace(project, revision=project.revision + 1, **changes)


def is_disk_full(error: OSError) -> bool:
    """ENOSPC or EDQUOT: nothing was stored (every write is atomic), and nothing is wrong with
    the request either; the answer is "no space left", not a bug."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


_encode = msgspec.json.Encoder().encode
_decode_project = msgspec.json.Decoder(Project).decode


class StoreIdentity(msgspec.Struct, frozen=True, kw_only=True):
    id: str


_decode_identity = msgspec.json.Decoder(StoreIdentity).decode


def _identity(root: Path) -> str:
    """The store's identity, made (and written) the first time the store is opened."""
    path = root / IDENTITY
    try:
        return _decode_identity(path.read_bytes()).id
    except FileNotFoundError:
        pass
    except msgspec.DecodeError as error:
        raise StoreError(f"{path}: unreadable store identity: {error}") from None
    made = uuid.uuid4().hex
    atomic_write(path, _encode(StoreIdentity(id=made)))
    return made


def release_conflict(project: Project, entry: StoredFile) -> str | None:
    """Why `entry` may not join `project`, or None: one release per version (PEP 440 equality).

    1.0, 1.0.0 and 01.0 are one version: a release keeps the spelling it was published with, and
    holds one sdist and one wheel per build tag and tags, so that an installer asking for
    `foo==1.0` cannot be handed other bytes than the ones published first.
    """
    new = release_slot(entry.filename)
    if new is None:
        return None
    version, slot = new
    for stored in project.files:
        old = release_slot(stored.filename)
        if old is None or old[0] != version:
            continue
        # (A release stored before spellings were checked, as 01.0, takes the normalised one.)
        normalised = str(parse_version(stored.version)) == stored.version
        if stored.version != entry.version and normalised:
            return (
                f"Version {entry.version} is the release {stored.version} already published "
                f"(the same version under PEP 440): upload it as {stored.version}"
            )
        if old[1] == slot:
            what = "an sdist" if slot[0] == "sdist" else "a wheel with the same build tag and tags"
            return (
                f"File already exists: {project.name} {stored.version} has {what}, "
                f"{stored.filename}; a published release never changes (a rebuilt wheel needs "
                "a build tag, changed code a new version)"
            )
    return None


class Store:
    """The published projects; mutations are serialised per project and written through to disk."""

    def __init__(
        self,
        root: Path,
        projects: dict[NormalizedName, Project],
        tombstones: dict[NormalizedName, Project] | None = None,
        identity: str = "",
    ) -> None:
        self.root = root
        self.identity = identity
        # Projects whose every file was removed: their manifests remember the removals.
        self._tombstones = tombstones or {}
        self.packages = root / "packages"
        self.incoming = root / "incoming"
        self._projects = projects
        self._locks: dict[NormalizedName, trio.Lock] = {}
        self._listeners: list[Callable[[NormalizedName], None]] = []
        # filename -> file, per project: downloads look files up by name, pages never need it.
        self._by_filename: dict[NormalizedName, dict[str, StoredFile]] = {}

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path) -> Store:
        """Load every manifest (blocking: call it from a thread). Leftover uploads are removed."""
        packages = root / "packages"
        incoming = root / "incoming"
        packages.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True, exist_ok=True)
        projects: dict[NormalizedName, Project] = {}
        tombstones: dict[NormalizedName, Project] = {}
        with os.scandir(packages) as entries:
            for entry in entries:
                if not entry.is_dir():
                    continue
                manifest = Path(entry.path) / MANIFEST
                try:
                    project = _decode_project(manifest.read_bytes())
                except FileNotFoundError:
                    continue  # a project whose first upload never completed
                except (OSError, msgspec.DecodeError) as error:
                    log.error("%s: unreadable manifest, project not served: %s", manifest, error)
                    continue
                kept = projects if project.files else tombstones
                kept[normalize(project.name)] = project
        return cls(root, projects, tombstones, _identity(root))

    # -- reading (no I/O: pages are rendered from these) ---------------------------------------

    @property
    def projects(self) -> dict[NormalizedName, Project]:
        return self._projects

    def get(self, name: NormalizedName) -> Project | None:
        return self._projects.get(name)

    def record(self, name: NormalizedName) -> Project | None:
        """The project, or the tombstone of one whose files were all removed."""
        return self._projects.get(name) or self._tombstones.get(name)

    @property
    def tombstones(self) -> dict[NormalizedName, Project]:
        return self._tombstones

    @property
    def generation(self) -> int:
        """The sum of every project's revision: it grows with every change the store makes."""
        return sum(p.revision for p in self._projects.values()) + sum(
            p.revision for p in self._tombstones.values()
        )

    def file(self, name: NormalizedName, filename: str) -> StoredFile | None:
        index = self._by_filename.get(name)
        if index is None:
            project = self._projects.get(name)
            if project is None:
                return None
            index = self._by_filename[name] = {f.filename: f for f in project.files}
        return index.get(filename)

    def path(self, name: NormalizedName, filename: str) -> Path:
        return self.packages / name / filename

    def file_count(self) -> int:
        return sum(len(p.files) for p in self._projects.values())

    def subscribe(self, listener: Callable[[NormalizedName], None]) -> None:
        """Call listener(name) after every change to that project."""
        self._listeners.append(listener)

    def new_incoming(self) -> Path:
        """A fresh temp file on the store's file system, for a file on its way in (blocking: call
        it from a thread; `ingest.incoming_file` does, and removes the file afterwards)."""
        fd, name = tempfile.mkstemp(dir=self.incoming, prefix="upload-")
        os.close(fd)
        return Path(name)

    # -- changing ------------------------------------------------------------------------------

    async def add(
        self, display_name: str, entry: StoredFile, content: Path, metadata: bytes | None
    ) -> bool:
        """Publish `content` (a complete temp file in incoming/) as `entry`.

        Returns False when the same file with the same hash is there already (nothing changes),
        True when it was added; raises FileConflict when the name is taken by other content.
        """
        name = normalize(display_name)
        async with self._lock(name):
            current = self._projects.get(name)
            if current is not None and not current.takes_uploads:
                await trio.Path(content).unlink(missing_ok=True)
                raise ProjectClosed(current)
            existing = current.file(entry.filename) if current else None
            if existing is not None:
                await trio.Path(content).unlink(missing_ok=True)
                if existing.sha256 == entry.sha256:
                    return False
                raise FileConflict(
                    f"File already exists: {entry.filename} is stored with another content "
                    f"(sha256 {existing.sha256}); a published file never changes, "
                    "upload it under a new version"
                )
            if current is not None and (conflict := release_conflict(current, entry)):
                await trio.Path(content).unlink(missing_ok=True)
                raise FileConflict(conflict)
            files = (*current.files, entry) if current else (entry,)
            # The project keeps the spelling of its first upload, and its status; one that comes
            # back after every file was removed keeps its record of removals and its revision.
            base = current or self._tombstones.get(name)
            project = (
                msgspec.structs.replace(current, files=sort_files(files))
                if current
                else Project(
                    name=display_name,
                    files=sort_files(files),
                    revision=base.revision if base else 0,
                    removed=base.removed if base else (),
                )
            )
            project = _changed(
                project,
                removed=tuple(r for r in project.removed if r.filename != entry.filename),
            )
            await trio.to_thread.run_sync(
                self._write_new_file, name, entry.filename, content, metadata, project
            )
            self._publish(name, project)
        return True

    async def set_yanked(
        self, name: NormalizedName, version: str, yanked: bool, reason: str | None = None
    ) -> int:
        """Yank or unyank every file of a version (PEP 592); returns how many files changed."""
        reason = reason if yanked else None
        async with self._lock(name):
            project = self._require(name)
            release = {f.filename for f in project.files_of(version)}
            if not release:
                raise StoreError(f"{project.name} has no version {version}")
            changed = 0
            files = []
            for f in project.files:
                if f.filename in release and (f.yanked, f.yanked_reason) != (yanked, reason):
                    f = msgspec.structs.replace(f, yanked=yanked, yanked_reason=reason)
                    changed += 1
                files.append(f)
            if changed:
                new = _changed(project, files=tuple(files))
                await trio.to_thread.run_sync(self._write_manifest, name, new)
                self._publish(name, new)
            return changed

    async def set_status(
        self, name: NormalizedName, status: ProjectStatus, reason: str | None = None
    ) -> Project:
        """Mark a hosted project with a PEP 792 status (and an optional reason)."""
        async with self._lock(name):
            project = self._require(name)
            new = msgspec.structs.replace(
                project, status=status, status_reason=reason if status != "active" else None
            )
            if new != project:
                new = _changed(new)
                await trio.to_thread.run_sync(self._write_manifest, name, new)
                self._publish(name, new)
            return new

    async def remove(
        self, name: NormalizedName, *, version: str | None = None, filename: str | None = None
    ) -> list[str]:
        """Unpublish one file or every file of a version; returns the filenames removed."""
        async with self._lock(name):
            project = self._require(name)
            if version is not None:
                gone = project.files_of(version)
            else:
                gone = tuple(f for f in project.files if f.filename == filename)
            if not gone:
                what = f"file {filename}" if filename else f"version {version}"
                raise StoreError(f"{project.name} has no {what}")
            now = time.time()
            new = _changed(
                project,
                files=tuple(f for f in project.files if f not in gone),
                removed=(
                    *project.removed,
                    *(
                        RemovedFile(filename=f.filename, sha256=f.sha256, removed_at=now)
                        for f in gone
                    ),
                ),
            )
            # The manifest stops naming the files first, so a crash leaves unlisted files only.
            await trio.to_thread.run_sync(self._write_manifest, name, new)
            self._publish(name, new)
            await trio.to_thread.run_sync(self._unlink, name, [f.filename for f in gone])
            return [f.filename for f in gone]

    async def restore_record(self, record: Project) -> None:
        """Make the project's manifest `record` (a restore's last step for a project, once every
        file it names is here): status, reasons, removals and revision as the mirror holds them."""
        name = record.normalized
        async with self._lock(name):
            current = self._require(name)
            held = {f.filename for f in current.files}
            if held != {f.filename for f in record.files}:
                raise StoreError(f"{record.name}: the restored files differ from its record")
            await trio.to_thread.run_sync(self._write_manifest, name, record)
            self._publish(name, record)

    async def restore_tombstone(self, record: Project) -> None:
        """Keep the record of a project whose files were all removed, as the mirror holds it."""
        name = record.normalized
        async with self._lock(name):
            if record.files or self._projects.get(name) is not None:
                raise StoreError(f"{record.name}: hosted here, or not a record of removals")
            await trio.to_thread.run_sync(self._write_tombstone, name, record)
            self._publish(name, record)

    def _write_tombstone(self, name: NormalizedName, record: Project) -> None:
        (self.packages / name).mkdir(exist_ok=True)
        self._write_manifest(name, record)

    async def restore_identity(self, identity: str) -> None:
        """Take the identity of the mirror this (empty) store is restored from."""
        data = _encode(StoreIdentity(id=identity))
        await trio.to_thread.run_sync(atomic_write, self.root / IDENTITY, data)
        self.identity = identity

    # -- internals -----------------------------------------------------------------------------

    def _lock(self, name: NormalizedName) -> trio.Lock:
        return self._locks.setdefault(name, trio.Lock())

    def _require(self, name: NormalizedName) -> Project:
        project = self._projects.get(name)
        if project is None:
            raise StoreError(f"no project {name} is hosted here")
        return project

    def _publish(self, name: NormalizedName, project: Project) -> None:
        self._by_filename.pop(name, None)
        if project.files:
            self._projects[name] = project
            self._tombstones.pop(name, None)
        else:
            self._projects.pop(name, None)
            self._tombstones[name] = project
        for listener in self._listeners:
            listener(name)

    def _write_new_file(
        self,
        name: NormalizedName,
        filename: str,
        content: Path,
        metadata: bytes | None,
        project: Project,
    ) -> None:
        directory = self.packages / name
        directory.mkdir(exist_ok=True)
        if metadata is not None:
            atomic_write(directory / f"{filename}.metadata", metadata)
        fsync_file(content)
        os.replace(content, directory / filename)
        fsync_dir(directory)  # the file is durable before any manifest names it
        self._write_manifest(name, project)

    def _write_manifest(self, name: NormalizedName, project: Project) -> None:
        atomic_write(self.packages / name / MANIFEST, _encode(project))

    def _unlink(self, name: NormalizedName, filenames: list[str]) -> None:
        for filename in filenames:
            for path in (self.path(name, filename), self.path(name, f"{filename}.metadata")):
                path.unlink(missing_ok=True)
