"""Durable writes: a file either keeps its old content or has the whole new one, after any crash.

The store, the token file, the repository registry and the upstream cache all write this way
(dumb-pypi's atomic_write is the model): a temp file beside the target, fsynced, renamed over
it, and the directory fsynced so that the rename itself survives a power cut. Blocking: call
from a thread.

Everything the daemon writes is its own: files 0600 and directories 0700, in user mode as under
the system unit (UMask=0077, StateDirectoryMode=0700). `PRIVATE_UMASK` is set for the whole
process (a file opened anywhere, by a library or a child process, is private too), the durable
writes say their mode anyway, and `make_private` restricts what an earlier version left open.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_UMASK = 0o077


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a temp file beside `path`, fsync it, rename it over `path`, fsync the directory."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    """Make a file's content durable (before a rename makes it visible under its final name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of a directory durable: a rename into it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private(root: Path) -> int:
    """Take group and other permissions away under `root` (itself included, symbolic links not
    followed); how many entries were changed. Blocking: call from a thread."""
    changed = 0
    for directory, dirnames, filenames in os.walk(root):
        for path in (directory, *(os.path.join(directory, n) for n in (*dirnames, *filenames))):
            try:
                mode = os.lstat(path).st_mode
                if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                    os.chmod(path, stat.S_IMODE(mode) & 0o700)
                    changed += 1
            except FileNotFoundError:
                continue  # removed meanwhile (an upload's temp file)
    return changed


def is_disk_full(error: OSError) -> bool:
    """ENOSPC or EDQUOT: nothing was stored (every write is atomic), and nothing is wrong with
    the request either; the answer is "no space left", not a bug."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT)
