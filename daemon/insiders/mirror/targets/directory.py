"""A mirror in a directory, for nginx (or any web server) to serve.

Every write goes to a temp file in the same directory and is renamed over its key, so a reader sees
the old bytes or the new ones, never a part. Pages also get a `.gz` sibling (nginx's gzip_static
serves it), written before the page so that a gzip-accepting reader never gets a page older than
the one a plain reader gets.

Nothing here is fsynced: the copy is derived data, and at every start the engine compares it with
the store and repairs what differs (a file whose size is wrong is written again).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from insiders.errors import TargetError

TEMP_PREFIX = ".insiders-tmp-"


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise TargetError(f"{what}: {error.strerror or error}") from error


class DirectoryTarget:
    kind = "directory"

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.location = str(root)
        self.requests = 0

    def _path(self, key: str) -> Path:
        return self.root / key

    def listing(self, prefix: str) -> dict[str, int]:
        self.requests += 1
        held: dict[str, int] = {}
        start = self._path(prefix) if prefix else self.root
        with _translated(f"cannot list {start}"):
            if not start.is_dir():
                return held
            for directory, _, files in os.walk(start):
                relative = os.path.relpath(directory, self.root)
                for filename in files:
                    path = os.path.join(directory, filename)
                    if filename.startswith(TEMP_PREFIX):
                        # Left by a kill mid-write: nobody links it, nobody needs it.
                        Path(path).unlink(missing_ok=True)
                        continue
                    key = filename if relative == "." else f"{relative}/{filename}"
                    if key.endswith(".gz") and not key.startswith("files/"):
                        continue  # a page's gzip sibling: it comes and goes with its page
                    try:
                        held[key] = os.stat(path).st_size
                    except FileNotFoundError:
                        continue
        return held

    def put_file(self, key: str, source: Path, size: int, content_type: str) -> bool:
        self.requests += 1
        path = self._path(key)
        # The store's file may be gone (removed meanwhile): FileNotFoundError goes to the engine.
        with source.open("rb") as src, _translated(f"cannot write {path}"):
            try:
                if path.stat().st_size == size:
                    return False
            except FileNotFoundError:
                pass
            _make_dirs(path.parent)
            fd, temp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                    os.fchmod(out.fileno(), 0o644)
                os.replace(temp, path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        return True

    def put_page(self, key: str, body: bytes, gzipped: bytes | None, content_type: str) -> None:
        self.requests += 1
        path = self._path(key)
        with _translated(f"cannot write {path}"):
            _make_dirs(path.parent)
            sibling = path.with_name(f"{path.name}.gz")
            if gzipped is not None:
                _write_atomically(sibling, gzipped)
            else:
                sibling.unlink(missing_ok=True)
            _write_atomically(path, body)

    def delete(self, keys: list[str]) -> None:
        self.requests += len(keys)
        parents: set[Path] = set()
        for key in keys:
            path = self._path(key)
            with _translated(f"cannot remove {path}"):
                path.unlink(missing_ok=True)
                path.with_name(f"{path.name}.gz").unlink(missing_ok=True)
            parents.add(path.parent)
        # Empty directories go too (a removed version's pypi/NAME/VERSION/, a removed project).
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            while parent != self.root and parent.is_relative_to(self.root):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def read(self, key: str) -> bytes | None:
        self.requests += 1
        path = self._path(key)
        with _translated(f"cannot read {path}"):
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

    def fetch(self, key: str, dest: Path) -> None:
        self.requests += 1
        with _translated(f"cannot copy {self._path(key)}"):
            shutil.copyfile(self._path(key), dest)

    def close(self) -> None:
        pass


def _make_dirs(path: Path) -> None:
    """Create `path` and its missing parents readable by all (the web server), whatever the
    daemon's umask (the system unit's is 0077)."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    path.chmod(0o755)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            os.fchmod(file.fileno(), 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
