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

The store owns the release rules, for uploads and builds alike: a release's files are all checked
(a closed project, a name taken by other bytes, a second release of one version) before the first is
published, and published together (`add_release`); a version removed is remembered, whatever
watches its project, so that no build brings it back unless a person asks (`removed`, read from
the manifest's record of removals, which mirrors carry and a restore brings back).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import msgspec
import trio

from insiders.errors import (
    FileConflict,
    InvalidFilename,
    ProjectClosed,
    ReleaseDiffers,
    StoreError,
    VersionRemoved,
)
from insiders.fsutil import atomic_write, fsync_dir, fsync_file

from .names import NormalizedName, normalize, parse_dist_filename, parse_version, release_slot

log = logging.getLogger(__name__)

MANIFEST = ".project.json"
IDENTITY = "store.json"


# A project's status (PEP 792); the store's own, apart from the protocol's.
ProjectStatus = Literal["active", "archived", "quarantined", "deprecated"]


class FileFacts(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What is recorded of a published file, as both of its durable records spell it: the
    store's manifest (StoredFile) and a mirror's (insiders.mirror.manifest.FileEntry), whose
    bytes are the same by design. Declared once so that the two cannot drift; a name changed
    here changes both formats, which tests/test_mirror_pure.py spells out key by key."""

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


class StoredFile(FileFacts, frozen=True, kw_only=True, omit_defaults=True):
    """A file the store publishes: its recorded facts, and what the store reads from them."""

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
        # In the files' order, which is already that one (sort_files): the sort then only
        # checks it, a comparison per version instead of n log n of them (10,000 versions).
        seen = dict.fromkeys(f.version for f in self.files)
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


def _removed_version(gone: RemovedFile) -> str:
    """The version a removed file was of (its filename says it)."""
    try:
        return str(parse_dist_filename(gone.filename).version)
    except InvalidFilename:
        return ""


def _same_version(a: str, b: str) -> bool:
    """One release under PEP 440 (1.0 and 1.0.0), or the same text when one does not parse."""
    parsed = parse_version(a)
    return a == b or (parsed is not None and parsed == parse_version(b))


def _version_key(version: str) -> tuple[int, object]:
    parsed = parse_version(version)
    return (1, parsed) if parsed is not None else (0, version)


def sort_files(files: Iterable[StoredFile]) -> tuple[StoredFile, ...]:
    return tuple(sorted(files, key=lambda f: (_version_key(f.version), f.filename)))


def _as_recorded(project: Project, record: Project) -> Project:
    """`record` (a restore's) once `project` holds every file it names, with the store's entries
    of them; else `project`."""
    held = {f.filename: f for f in project.files}
    if held.keys() != {f.filename for f in record.files}:
        return project
    return msgspec.structs.replace(record, files=tuple(held[f.filename] for f in record.files))


def _changed(project: Project, **changes: object) -> Project:
    """The project with `changes`, one revision later."""
    return msgspec.structs.replace(project, revision=project.revision + 1, **changes)


def discard_incoming(files: Iterable[Incoming]) -> None:
    """The temp files of incoming files that were not published (refused, or held already):
    blocking, one trip to a thread for a whole release or batch."""
    for incoming in files:
        incoming.content.unlink(missing_ok=True)
        if incoming.metadata_file is not None:
            incoming.metadata_file.unlink(missing_ok=True)


_encode = msgspec.json.Encoder().encode
_decode_project = msgspec.json.Decoder(Project).decode


class Incoming(msgspec.Struct, frozen=True):
    """One file of a release on its way in: its record, its bytes (a complete temp file in
    incoming/), its core metadata."""

    entry: StoredFile
    content: Path
    metadata: bytes | None
    # A restore's metadata, already written (and fsynced) beside the content in incoming/.
    metadata_file: Path | None = None


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
        # Only a file of the same release can conflict: its version says so without parsing
        # its filename (the files of a project of thousands are not all parsed per upload).
        spelled = parse_version(stored.version)
        if spelled is not None and spelled != version:
            continue
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

    def removed(self, name: NormalizedName) -> dict[str, float]:
        """The versions of `name` removed (and not published again since), and when: read from
        the project's record of removals, so a tombstone, a mirror and a restore keep them."""
        record = self.record(name)
        if record is None:
            return {}
        held = [f.version for f in record.files]
        found: dict[str, float] = {}
        for gone in record.removed:
            version = _removed_version(gone)
            if not any(_same_version(version, v) for v in held):
                found[version] = max(found.get(version, 0.0), gone.removed_at)
        return found

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
        """Publish `content` (a complete temp file in incoming/) as `entry`: an upload, which a
        person sent, so a version removed before comes back.

        Returns False when the same file with the same hash is there already (nothing changes),
        True when it was added; raises FileConflict when the name is taken by other content.
        """
        incoming = Incoming(entry, content, metadata)
        return await self.add_release(display_name, [incoming], bring_back=True)

    async def add_release(
        self, display_name: str, files: list[Incoming], *, bring_back: bool
    ) -> bool:
        """Publish the files of one release together, after every one of them was checked.

        False when every file was there with the same bytes. Raises ProjectClosed, ReleaseDiffers
        (a name taken by other bytes), FileConflict (a second release of the version) or, unless
        `bring_back` (a person asked for it), VersionRemoved. Every content is consumed.
        """

        def checked(current: Project | None) -> list[Incoming]:
            return self._check_release(display_name, current, files, bring_back=bring_back)

        return bool(await self._add_files(display_name, files, checked, self._write_release))

    def _check_release(
        self,
        display_name: str,
        current: Project | None,
        files: list[Incoming],
        *,
        bring_back: bool,
    ) -> list[Incoming]:
        """The files of a release that are new; raises what add_release refuses."""
        if current is not None and not current.takes_uploads:
            raise ProjectClosed(current)
        if not bring_back:
            removed = self.removed(normalize(display_name))
            for incoming in files:
                if any(_same_version(v, incoming.entry.version) for v in removed):
                    raise VersionRemoved(
                        f"{display_name} {incoming.entry.version} was removed; only a "
                        "person brings it back (an upload, or insidersctl update NAME --version)"
                    )
        new: list[Incoming] = []
        held = current.files if current is not None else ()
        for incoming in files:
            entry = incoming.entry
            existing = current.file(entry.filename) if current else None
            if existing is not None:
                if existing.sha256 != entry.sha256:
                    raise ReleaseDiffers(entry.filename, existing.sha256, entry.sha256)
                continue
            # What the release would join (in no order: release_conflict needs none).
            accepted = Project(name=display_name, files=(*held, *(f.entry for f in new)))
            if conflict := release_conflict(accepted, entry):
                raise FileConflict(conflict)
            new.append(incoming)
        return new

    def _with_files(
        self, display_name: str, current: Project | None, entries: list[StoredFile]
    ) -> Project:
        """The project with `entries` added, one revision later: a new project keeps the spelling
        of its first file, an existing one its own and its status; one that comes back after
        every file was removed keeps its record of removals and its revision. A version published
        again is not removed any more."""
        base = current or self._tombstones.get(normalize(display_name))
        project = current or Project(
            name=display_name,
            files=(),
            revision=base.revision if base else 0,
            removed=base.removed if base else (),
        )
        versions = {e.version for e in entries}
        return _changed(
            project,
            files=sort_files((*project.files, *entries)),
            removed=tuple(
                r
                for r in project.removed
                if not any(_same_version(_removed_version(r), v) for v in versions)
            ),
        )

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
            if versions := {f.version for f in gone} - {f.version for f in new.files}:
                log.info(
                    "%s %s: removed; no build brings it back unless asked (insidersctl update "
                    "NAME --version V, or an upload)",
                    name,
                    ", ".join(sorted(versions)),
                )
            return [f.filename for f in gone]

    async def restore_files(
        self, display_name: str, files: list[Incoming], record: Project | None = None
    ) -> int:
        """Publish a batch of a restore's files with one manifest write: files fetched from a
        mirror and checked against its record, their bytes (and metadata, under `metadata_file`)
        already fsynced by the fetch, so a batch costs renames, one directory fsync and the
        manifest, whatever the project's size. No release rule is asked: the mirror's record
        is the store's own (restore_record makes it the manifest once every file is in; so does
        this batch when it brings the last file `record` names: a small project is one manifest
        write). How many were new; every content is consumed."""

        def not_held(current: Project | None) -> list[Incoming]:
            held = {f.filename for f in current.files} if current is not None else set()
            return [f for f in files if f.entry.filename not in held]

        return len(
            await self._add_files(display_name, files, not_held, self._write_restored, record)
        )

    async def _add_files(
        self,
        display_name: str,
        files: list[Incoming],
        new_of: Callable[[Project | None], list[Incoming]],
        write: Callable[[NormalizedName, list[Incoming], Project], None],
        record: Project | None = None,
    ) -> list[Incoming]:
        """What add_release and restore_files share, under the project's lock: `new_of`, given
        the project as it stands, picks the files to add (or raises); `write` puts them in place,
        then the manifest (a restore's `record` once the project holds every file it names); then
        they are published together. The files added; every content is consumed, added or not."""
        name = normalize(display_name)
        new: list[Incoming] = []
        try:
            async with self._lock(name):
                current = self._projects.get(name)
                new = new_of(current)
                if new:
                    project = self._with_files(display_name, current, [f.entry for f in new])
                    if record is not None:
                        project = _as_recorded(project, record)
                    await trio.to_thread.run_sync(write, name, new, project)
                    self._publish(name, project)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(discard_incoming, files)
            raise
        # The published ones were moved into place: only the others' temp files are left.
        moved = {id(f) for f in new}
        if leftover := [f for f in files if id(f) not in moved]:
            await trio.to_thread.run_sync(discard_incoming, leftover)
        return new

    def _write_restored(
        self, name: NormalizedName, files: list[Incoming], project: Project
    ) -> None:
        directory = self.packages / name
        directory.mkdir(exist_ok=True)
        for incoming in files:
            filename = incoming.entry.filename
            if incoming.metadata_file is not None:
                os.replace(incoming.metadata_file, directory / f"{filename}.metadata")
            os.replace(incoming.content, directory / filename)
        fsync_dir(directory)  # the files are durable before any manifest names them
        self._write_manifest(name, project)

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

    def _write_release(self, name: NormalizedName, files: list[Incoming], project: Project) -> None:
        directory = self.packages / name
        directory.mkdir(exist_ok=True)
        for incoming in files:
            filename = incoming.entry.filename
            if incoming.metadata is not None:
                atomic_write(directory / f"{filename}.metadata", incoming.metadata)
            fsync_file(incoming.content)
            os.replace(incoming.content, directory / filename)
        fsync_dir(directory)  # the files are durable before any manifest names them
        self._write_manifest(name, project)

    def _write_manifest(self, name: NormalizedName, project: Project) -> None:
        atomic_write(self.packages / name / MANIFEST, _encode(project))

    def _unlink(self, name: NormalizedName, filenames: list[str]) -> None:
        for filename in filenames:
            for path in (self.path(name, filename), self.path(name, f"{filename}.metadata")):
                path.unlink(missing_ok=True)
