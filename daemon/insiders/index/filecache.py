"""The upstream's files kept on disk, verified, bounded by bytes, least recently used evicted first.

Cache mode (`[upstream] mode = "cache"`) serves the files of projects the index does not host
from here once they were fetched (insiders.index.upstreamfiles fetches them). Each file is
`DIRECTORY/NAME/FILENAME.SHA256`: the digest the upstream's page announced and the bytes were
checked against, so an entry names its own ETag, and a file the upstream replaced under the same
name is a new entry rather than a silent change. Only a verified file is ever renamed into place
(written beside it, fsynced, renamed: insiders.fsutil's way); the rest is temp files that the
next start removes.

In the daemon's cache directory the files are private (0600). A directory the configuration
names instead (`file-cache-directory`) is for the nginx front to read: 0644 files, 0755
directories, as a mirror directory's.

The order of use is the files' modification times at start (a hit moves a file's time forward),
then kept in memory. It is derived data: deleting the directory loses nothing but time.
Blocking: call from a thread; a lock keeps the threads apart.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from insiders.config import Settings
from insiders.fsutil import fsync_dir

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
TEMP_PREFIX = ".fetch-"


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    filename: str
    sha256: str
    size: int
    used: float  # time.time() of the last hit (or of the fetch)

    @property
    def relative(self) -> str:
        """Its path under the cache directory (also its path under nginx's internal location)."""
        return f"{self.name}/{self.filename}.{self.sha256}"


@dataclass(frozen=True, slots=True)
class Usage:
    size: int
    files: int
    limit: int
    hits: int
    misses: int
    oldest: float | None  # the least recently used entry's last use


class FileCache:
    """At most `limit` bytes of verified upstream files under `directory`."""

    def __init__(self, directory: Path, limit: int, *, shared: bool = False) -> None:
        self.directory = directory
        self.limit = limit
        # Readable by the front's nginx, which may then send the files itself.
        self.shared = shared
        self._file_mode, self._dir_mode = (0o644, 0o755) if shared else (0o600, 0o700)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        # (name, filename) -> entry, least recently used first; None until the first call.
        self._entries: dict[tuple[str, str], Entry] | None = None
        self._size = 0
        # Names that became hosted: their files go at the next call from a thread.
        self._hosted: set[str] = set()

    def reconfigure(self, new: Settings) -> tuple[str, ...]:
        """A reload's cache size applies to the next file kept; another directory waits for a
        restart (the files of this one stay in use until then)."""
        self.limit = new.upstream.file_cache_size
        configured = new.upstream.file_cache_directory
        if (Path(configured) if configured else None) != (self.directory if self.shared else None):
            return ("upstream.file-cache-directory",)
        return ()

    # -- reading ---------------------------------------------------------------------------------

    def lookup(self, name: str, filename: str) -> Entry | None:
        """The entry for a file, made the most recently used (a hit), or None (a miss)."""
        with self._lock:
            entries = self._known()
            entry = entries.pop((name, filename), None)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            entry = Entry(entry.name, entry.filename, entry.sha256, entry.size, time.time())
            entries[(name, filename)] = entry
        # The new order survives a restart as the file's time (a hint: a failure costs nothing).
        with contextlib.suppress(OSError):
            os.utime(self.path(entry), (entry.used, entry.used))
        return entry

    def peek(self, name: str, filename: str) -> Entry | None:
        """The entry, if any, without counting a hit or a miss or changing the order."""
        with self._lock:
            return self._known().get((name, filename))

    def path(self, entry: Entry) -> Path:
        return self.directory / entry.relative

    def usage(self) -> Usage:
        with self._lock:
            entries = self._known()
            oldest = next(iter(entries.values())).used if entries else None
            return Usage(self._size, len(entries), self.limit, self.hits, self.misses, oldest)

    # -- writing ---------------------------------------------------------------------------------

    def temp_file(self, name: str) -> tuple[int, Path]:
        """A new private file in NAME's directory to write a fetch into: (fd, path)."""
        with self._lock:
            self._known()  # the first scan removes temp files: never this one
        folder = self.directory / name
        if not folder.is_dir():
            self.directory.mkdir(mode=self._dir_mode, parents=True, exist_ok=True)
            folder.mkdir(mode=self._dir_mode, exist_ok=True)
            os.chmod(folder, self._dir_mode)  # mkdir's mode is cut by the umask (0077)
        fd, temp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
        return fd, Path(temp)

    def keep(self, name: str, filename: str, temp: Path, sha256: str) -> Entry | None:
        """Rename a fetched and verified temp file into place (fsynced first), as the newest
        entry, the least recently used evicted first to make room for it. A file larger than
        the whole limit is not kept (None)."""
        size = temp.stat().st_size
        if size > self.limit:
            temp.unlink(missing_ok=True)
            return None
        entry = Entry(name, filename, sha256, size, time.time())
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fchmod(fd, self._file_mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            entries = self._known()
            self._forget((name, filename))
            while entries and self._size + size > self.limit:
                self._forget(next(iter(entries)))
            os.replace(temp, self.path(entry))
            entries[(name, filename)] = entry
            self._size += size
        # Outside the lock, which the event loop takes too (`peek`): a rename lost in a crash
        # loses only a cached copy.
        fsync_dir(temp.parent)
        return entry

    def prune(
        self, *, used_before: float | None = None, names: frozenset[str] = frozenset()
    ) -> Usage:
        """Drop the entries last used before `used_before` (None: any time), of `names` (empty:
        every name); what was dropped (its size, files)."""
        dropped = dropped_files = 0
        with self._lock:
            for key, entry in list(self._known().items()):
                if names and entry.name not in names:
                    continue
                if used_before is not None and entry.used >= used_before:
                    continue
                dropped += entry.size
                dropped_files += 1
                self._forget(key)
        return Usage(dropped, dropped_files, self.limit, 0, 0, None)

    def drop_name(self, name: str) -> None:
        self.prune(names=frozenset({name}))

    def drop_later(self, name: str) -> None:
        """Forget NAME's files soon (a store listener, on the event loop: no lock, no I/O).
        Nothing serves them meanwhile: a hosted name never reaches the file cache."""
        self._hosted.add(name)

    # -- inside the lock -------------------------------------------------------------------------

    def _forget(self, key: tuple[str, str]) -> None:
        assert self._entries is not None
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._size -= entry.size
        self.path(entry).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: other files of that project
            (self.directory / entry.name).rmdir()

    def _known(self) -> dict[tuple[str, str], Entry]:
        """The entries, read from the directory at the first call (temp files left by a crash
        removed, anything that is not an entry's name left alone), without those of names that
        became hosted."""
        if self._entries is None:
            self._entries = self._scan()
            self._size = sum(e.size for e in self._entries.values())
        while self._hosted:
            name = self._hosted.pop()
            for key in [k for k in self._entries if k[0] == name]:
                self._forget(key)
        return self._entries

    def _scan(self) -> dict[tuple[str, str], Entry]:
        found: list[Entry] = []
        try:
            folders = list(os.scandir(self.directory))
        except FileNotFoundError:
            folders = []
        for folder in folders:
            if not folder.is_dir(follow_symlinks=False):
                continue
            for item in os.scandir(folder.path):
                if not item.is_file(follow_symlinks=False):
                    continue
                if item.name.startswith(TEMP_PREFIX):
                    Path(item.path).unlink(missing_ok=True)
                    continue
                filename, _, digest = item.name.rpartition(".")
                if filename and _DIGEST.match(digest):
                    info = item.stat(follow_symlinks=False)
                    found.append(Entry(folder.name, filename, digest, info.st_size, info.st_mtime))
        found.sort(key=lambda e: e.used)
        return {(e.name, e.filename): e for e in found}
