"""A mirror in a directory, for nginx (or any web server) to serve.

Every write goes to a temp file in the same directory and is renamed over its key, so a reader sees
the old bytes or the new ones, never a part. Pages also get a `.gz` sibling (nginx's gzip_static
serves it), written before the page so that a gzip-accepting reader never gets a page older than
the one a plain reader gets.

The directory may be written by others too (a web server's account, a careless hand): every key
is resolved beneath the root one component at a time, each opened without following a symbolic
link (openat with O_NOFOLLOW), so a link planted in the tree (`simple/victim -> /elsewhere`)
never makes the daemon write, read or delete outside it. A key with an empty, `.` or `..`
component is refused. The root carries a marker the daemon writes (`.insiders-mirror`): a
directory that holds something and no marker is not a mirror, and is refused (`prepare`).

Nothing here is fsynced: the copy is derived data, and at every start the engine compares it with
the store and repairs what differs (a file whose size is wrong is written again).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from insiders.errors import MirrorRefused, TargetError

TEMP_PREFIX = ".insiders-tmp-"
MARKER = ".insiders-mirror"
MARKER_TEXT = b"A mirror target written by insidersd: it may replace or remove what is here.\n"
# The root manifest of a target written before markers were (an upgrade writes the marker).
LEGACY_SIGN = ("simple", "insiders-mirror.json")

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise TargetError(f"{what}: {error.strerror or error}") from error


def _parts(key: str) -> list[str]:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise TargetError(f"refused key {key!r}: not a path beneath the mirror")
    return parts


class DirectoryTarget:
    kind = "directory"

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.location = str(root)
        self.requests = 0

    # -- resolving keys ---------------------------------------------------------------------------

    @contextmanager
    def _directory(self, parts: list[str], *, create: bool) -> Iterator[int | None]:
        """An fd of the directory root/parts, every component opened without following a link;
        None when it does not exist (and `create` is false)."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                yield None
                return
            _make_dirs(self.root)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, part in enumerate(parts):
                try:
                    inner, made = _open_directory(fd, part, create)
                except FileNotFoundError:
                    raise  # removed between its mkdir and its open
                except OSError as error:
                    where = "/".join(parts[: index + 1])
                    raise TargetError(
                        f"{self.root}/{where} is not a directory of the mirror (a symbolic link, "
                        f"or a file): the mirror never follows one ({error.strerror})"
                    ) from error
                if inner is None:
                    yield None
                    return
                os.close(fd)
                fd = inner
                if made:
                    # Readable by the web server whatever the daemon's umask (the system unit's
                    # is 0077).
                    os.fchmod(fd, 0o755)
            yield fd
        finally:
            os.close(fd)

    # -- the target's operations -------------------------------------------------------------------

    def prepare(self) -> None:
        """Make sure the directory is a mirror the daemon wrote, or an empty one it may take:
        MirrorRefused for a directory that holds something and no marker."""
        with _translated(f"cannot use {self.root}"):
            _make_dirs(self.root)
            with os.scandir(self.root) as entries:
                names = {entry.name for entry in entries}
            if MARKER in names:
                return
            legacy = self.root.joinpath(*LEGACY_SIGN)
            if names and not (legacy.is_file() and not legacy.is_symlink()):
                raise MirrorRefused(
                    f"mirror {self.name}: {self.root} holds files and no {MARKER} (the mark "
                    "insidersd leaves in the directories it mirrors to): nothing is written "
                    "to it or removed from it; point [mirrors."
                    f"{self.name}] at an empty or new directory"
                )
            with self._directory([], create=True) as fd:
                assert fd is not None
                _write(fd, MARKER, MARKER_TEXT)

    def listing(self, prefix: str) -> dict[str, int]:
        self.requests += 1
        held: dict[str, int] = {}
        parts = _parts(prefix.rstrip("/")) if prefix else []
        with (
            _translated(f"cannot list {self.root}/{prefix}"),
            self._directory(parts, create=False) as top,
        ):
            if top is None:
                return held
            base = "/".join(parts)
            for directory, _, files, dir_fd in os.fwalk(".", dir_fd=top):
                inner = os.path.normpath(directory)
                relative = "/".join(p for p in (base, "" if inner == "." else inner) if p)
                for filename in files:
                    if filename.startswith(TEMP_PREFIX):
                        # Left by a kill mid-write: nobody links it, nobody needs it.
                        _unlink(dir_fd, filename)
                        continue
                    key = f"{relative}/{filename}" if relative else filename
                    if key.endswith(".gz") and not key.startswith(("files/", "quarantine/")):
                        continue  # a page's gzip sibling: it comes and goes with its page
                    try:
                        info = os.stat(filename, dir_fd=dir_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        held[key] = info.st_size  # (a link is nobody's file: never listed)
        return held

    def put_file(self, key: str, source: Path, size: int, content_type: str) -> bool:
        self.requests += 1
        *parents, name = _parts(key)
        # The store's file may be gone (removed meanwhile): FileNotFoundError goes to the engine.
        with (
            source.open("rb") as src,
            _translated(f"cannot write {self.root}/{key}"),
            self._directory(parents, create=True) as fd,
        ):
            assert fd is not None
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_size == size:
                    return False
            except FileNotFoundError:
                pass
            _write(fd, name, src)
        return True

    def put_page(self, key: str, body: bytes, gzipped: bytes | None, content_type: str) -> None:
        self.requests += 1
        *parents, name = _parts(key)
        with (
            _translated(f"cannot write {self.root}/{key}"),
            self._directory(parents, create=True) as fd,
        ):
            assert fd is not None
            sibling = f"{name}.gz"
            if gzipped is not None:
                _write(fd, sibling, gzipped)
            else:
                _unlink(fd, sibling)
            _write(fd, name, body)

    def delete(self, keys: list[str]) -> None:
        self.requests += len(keys)
        parents: set[tuple[str, ...]] = set()
        for key in keys:
            *folders, name = _parts(key)
            with (
                _translated(f"cannot remove {self.root}/{key}"),
                self._directory(folders, create=False) as fd,
            ):
                if fd is None:
                    continue
                _unlink(fd, name)  # a link itself, never what it points to
                _unlink(fd, f"{name}.gz")
            parents.add(tuple(folders))
        # Empty directories go too (a removed version's pypi/NAME/VERSION/, a removed project),
        # pages' first as the keys went: once a project's files/ is gone, so is its simple/.
        for emptied in sorted(parents, key=_removal_order):
            self._remove_empty(list(emptied))

    def _remove_empty(self, folders: list[str]) -> None:
        while folders:
            *above, name = folders
            try:
                with self._directory(above, create=False) as fd:
                    if fd is None:
                        return
                    os.rmdir(name, dir_fd=fd)
            except (OSError, TargetError):
                return  # not empty (or not ours to judge): it stays
            folders = above

    @contextmanager
    def _reading(self, key: str, doing: str) -> Iterator[BinaryIO | None]:
        """The file under `key`, opened for reading without following a link (None: there is
        none); an OSError within, the caller's too, is the target's ("cannot DOING ...")."""
        self.requests += 1
        *parents, name = _parts(key)
        with (
            _translated(f"cannot {doing} {self.root}/{key}"),
            self._directory(parents, create=False) as fd,
        ):
            file = None
            if fd is not None:
                with suppress(FileNotFoundError):
                    file = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            if file is None:
                yield None
                return
            with os.fdopen(file, "rb") as opened:
                yield opened

    def read(self, key: str) -> bytes | None:
        with self._reading(key, "read") as opened:
            return None if opened is None else opened.read()

    def fetch(self, key: str, dest: Path) -> None:
        with self._reading(key, "copy") as src:
            if src is None:
                raise FileNotFoundError(2, "No such file or directory")
            with dest.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)

    def digest(self, key: str) -> tuple[int, str] | None:
        with self._reading(key, "read") as opened:
            return None if opened is None else _hashed(iter(lambda: opened.read(1 << 20), b""))

    def close(self) -> None:
        pass


def _hashed(chunks: Iterator[bytes]) -> tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return size, hasher.hexdigest()


_AREAS = {"simple": 0, "pypi": 1, "quarantine": 2, "files": 3}


def _removal_order(folders: tuple[str, ...]) -> tuple[int, int]:
    return (_AREAS.get(folders[0], 4) if folders else 5, -len(folders))


def _open_directory(fd: int, part: str, create: bool) -> tuple[int | None, bool]:
    """The directory `part` of `fd`, opened without following a link (None: it is missing and
    not to be made), and whether it was made now. Made only when missing: a copy's requests
    find their directories there, and cost their opens alone."""
    try:
        return os.open(part, _DIRECTORY, dir_fd=fd), False
    except FileNotFoundError:
        if not create:
            return None, False
    made = False
    try:
        os.mkdir(part, 0o755, dir_fd=fd)
        made = True
    except FileExistsError:
        pass  # made meanwhile, by another request
    return os.open(part, _DIRECTORY, dir_fd=fd), made


def _make_dirs(path: Path) -> None:
    """Create `path` and its missing parents readable by all (the web server), whatever the
    daemon's umask (the system unit's is 0077). The configured root is the person's: it may be a
    link."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    path.chmod(0o755)


def _write(fd: int, name: str, data: bytes | BinaryIO) -> None:
    """`name` in the directory `fd` replaced atomically by `data` (bytes, or a file to copy): a
    temp file of our own beside it, renamed over it (a link there is replaced, not followed)."""
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    out_fd = os.open(
        temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd
    )
    try:
        with os.fdopen(out_fd, "wb") as out:
            if isinstance(data, bytes):
                out.write(data)
            else:
                shutil.copyfileobj(data, out, 1 << 20)
            os.fchmod(out.fileno(), 0o644)
        os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        _unlink(fd, temp)
        raise


def _unlink(fd: int, name: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=fd)
