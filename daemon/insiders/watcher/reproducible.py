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
import io
import os
import shutil
import tarfile
from pathlib import Path

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
    """Clamp every time in a .tar.gz to `epoch`; True if the file was rewritten."""
    if not path.name.endswith(".tar.gz"):
        return False
    data = path.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = archive.getmembers()
        late = _gzip_mtime(data) != epoch or any(
            m.mtime > epoch or any(k in m.pax_headers for k in _TIME_PAX_KEYS) for m in members
        )
        if not late:
            return False
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=archive.format) as out:
            for member in members:
                member.mtime = min(int(member.mtime), epoch)
                member.pax_headers = {
                    k: v for k, v in member.pax_headers.items() if k not in _TIME_PAX_KEYS
                }
                content = archive.extractfile(member) if member.isreg() else None
                out.addfile(member, content)
    temp = path.with_name(f".{path.name}.normalized")
    # No file name and a fixed time in the gzip header: the bytes depend on the content only.
    with (
        temp.open("wb") as file,
        gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=epoch) as compressed,
    ):
        raw.seek(0)
        shutil.copyfileobj(raw, compressed)
    os.replace(temp, path)
    return True
