"""Reproducible builds: the same tag gives the same bytes, so a published file never has to change.

The time of the tagged commit becomes `SOURCE_DATE_EPOCH`, which hatchling, flit-core, pdm-backend,
poetry-core and setuptools' wheels honour. Two things it does not cover are fixed here, the way
Debian's strip-nondeterminism does: the checkout's files carry the time of the clone (copied into
an sdist by backends that keep file times), so they are set to the commit's time before the build;
and setuptools writes its sdist with the build time on generated files (PKG-INFO, egg-info) and in
the gzip header, so an sdist whose archive carries a later time is rewritten with every time clamped
to the commit's. Contents, names, order and modes stay as the backend made them.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from insiders.archives import open_tar_gz

_TIME_PAX_KEYS = ("mtime", "atime", "ctime")


def clamp_tree_mtimes(root: Path, epoch: int) -> None:
    """Give every file and directory under `root` (not following links) the time `epoch`."""
    for directory, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.utime(os.path.join(directory, name), (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def _gzip_mtime(data: bytes) -> int:
    return int.from_bytes(data[4:8], "little") if data[:2] == b"\x1f\x8b" else 0


def normalize_sdist(path: Path, epoch: int) -> bool:
    """Clamp every time in a .tar.gz to `epoch`; True if the file was rewritten.

    The archive is a build's, so it is read as the index reads an upload, through the bounded
    reader (insiders.archives: members, header sizes and inflated bytes checked before tarfile
    holds them), in two streaming passes: one to see whether any time is late, one to rewrite.
    InvalidDistribution when it crosses a bound.
    """
    if not path.name.endswith(".tar.gz"):
        return False
    with path.open("rb") as source:
        head = source.read(8)
    with open_tar_gz(path) as archive:
        late = _gzip_mtime(head) != epoch or any(
            m.mtime > epoch or any(k in m.pax_headers for k in _TIME_PAX_KEYS)
            for m in archive.members()
        )
    if not late:
        return False
    temp = path.with_name(f".{path.name}.normalized")
    # No file name and a fixed time in the gzip header: the bytes depend on the content only.
    with (
        open_tar_gz(path) as archive,
        temp.open("wb") as target,
        gzip.GzipFile(filename="", mode="wb", fileobj=target, mtime=epoch) as compressed,
        tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as out,
    ):
        for member in archive.members():
            member.mtime = min(int(member.mtime), epoch)
            member.pax_headers = {
                k: v for k, v in member.pax_headers.items() if k not in _TIME_PAX_KEYS
            }
            out.addfile(member, archive.open(member) if member.isreg() else None)
    os.replace(temp, path)
    return True
