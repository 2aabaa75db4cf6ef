"""Caches of upstream pages bounded by bytes, least recently used evicted: in memory and on disk.

A count of pages is no bound: one upstream page can be a few kB or several MB (a project with
thousands of files), and anyone who may read the index picks which names are fetched. So both
caches count bytes: the memory one what each page weighs as fetched or rendered, the disk one
the files it wrote. The disk copy is what proxy mode serves while the upstream is down; it is
derived data, dropped freely.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Generic, TypeVar

from insiders.fsutil import atomic_write

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """Values with a weight each (bytes), at most `limit` in all; a lookup makes one the newest.

    A value heavier than the whole limit is not kept. Not thread-safe: the event loop's.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.weight = 0
        self._items: dict[K, tuple[V, int]] = {}  # oldest first (dicts keep order)

    def get(self, key: K) -> V | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self._items[key] = item
        return item[0]

    def put(self, key: K, value: V, weight: int) -> None:
        self.discard(key)
        if weight > self.limit:
            return
        self._items[key] = (value, weight)
        self.weight += weight
        while self.weight > self.limit:
            oldest = next(iter(self._items))
            self.discard(oldest)

    def discard(self, key: K) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.weight -= item[1]

    def clear(self) -> None:
        self._items.clear()
        self.weight = 0


class DiskPages:
    """Pages kept as files NAME.json in `directory`, at most `limit` bytes of them.

    The order of use is known from the files' modification times at the first call (a fetch
    rewrites its file), then kept in memory: a save, a load, and `touch` when the page was served
    from memory make a page the newest. Blocking but `touch`: call from a thread (a lock keeps the
    threads apart).
    """

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self._lock = threading.Lock()
        self._sizes: dict[str, int] | None = None  # name -> bytes, least recently used first
        self._total = 0

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def _known(self) -> dict[str, int]:
        if self._sizes is None:
            found: list[tuple[float, str, int]] = []
            try:
                entries = list(os.scandir(self.directory))
            except FileNotFoundError:
                entries = []
            for entry in entries:
                if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    found.append((stat.st_mtime, entry.name.removesuffix(".json"), stat.st_size))
            self._sizes = {name: size for _mtime, name, size in sorted(found)}
            self._total = sum(self._sizes.values())
        return self._sizes

    def save(self, name: str, data: bytes) -> None:
        """Keep `data` as the newest page, the least recently used evicted first to make room
        (the directory never holds more than the limit, not even between the two); a page
        larger than the limit replaces no copy and is not kept."""
        with self._lock:
            sizes = self._known()
            self._forget(name)
            if len(data) > self.limit:
                return
            while sizes and self._total + len(data) > self.limit:
                self._forget(next(iter(sizes)))
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(self._path(name), data)
            sizes[name] = len(data)
            self._total += len(data)

    def load(self, name: str) -> bytes | None:
        with self._lock:
            sizes = self._known()
            try:
                data = self._path(name).read_bytes()
            except FileNotFoundError:
                return None
            if name in sizes:
                sizes[name] = sizes.pop(name)
            return data

    def touch(self, name: str) -> None:
        """Make `name` the most recently used, if the cache is not busy (called from the event
        loop on a page served from memory: it must not wait for a write, and recency is a hint)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._sizes is not None and name in self._sizes:
                self._sizes[name] = self._sizes.pop(name)
        finally:
            self._lock.release()

    def holds(self, name: str) -> bool | None:
        """Whether a copy of `name` is kept, from the index in memory (no I/O, for the event
        loop); None when that is not known yet (the directory not read, or the cache busy)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return None if self._sizes is None else name in self._sizes
        finally:
            self._lock.release()

    def drop(self, name: str) -> None:
        with self._lock:
            self._known()
            self._forget(name)

    def _forget(self, name: str) -> None:
        assert self._sizes is not None
        size = self._sizes.pop(name, None)
        if size is not None:
            self._total -= size
        self._path(name).unlink(missing_ok=True)
