"""What a distribution file says about itself: read its core metadata with bounded effort.

Blocking (zip and tar reading): call from a thread. Uploads and the watcher's builds both pass
through it, so only files that are what their names claim get published.
"""

from __future__ import annotations

import struct
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.metadata import parse_email

from insiders import archives
from insiders.errors import InvalidDistribution

from .names import DistFilename, NormalizedName, is_valid_name, normalize, parse_version

# Core metadata embeds the long description, so allow a generous size, but not an unbounded one.
# The archives' own bounds (members, uncompressed bytes, tar headers) are in `archives`.
MAX_METADATA = 8 << 20


@dataclass(frozen=True, slots=True)
class CoreMetadata:
    name: str
    version: str
    requires_python: str | None
    summary: str | None
    raw: bytes

    @property
    def normalized(self) -> NormalizedName:
        return normalize(self.name)


def inspect(path: Path, dist: DistFilename) -> CoreMetadata:
    """Read and check the core metadata of `path`, which is named `dist.filename`."""
    if dist.kind == "wheel":
        raw = _wheel_metadata(path, dist)
    elif dist.filename.endswith(".zip"):
        raw = _zip_sdist_metadata(path, dist)
    else:
        raw = _tar_sdist_metadata(path, dist)
    meta = parse_metadata(raw, where=dist.filename)
    if meta.normalized != dist.name:
        raise InvalidDistribution(
            f"{dist.filename}: its metadata names the project {meta.name!r}, not {dist.name!r}"
        )
    if parse_version(meta.version) != dist.version:
        raise InvalidDistribution(
            f"{dist.filename}: its metadata says version {meta.version}, "
            f"its filename {dist.version}"
        )
    return meta


def parse_metadata(raw: bytes, *, where: str) -> CoreMetadata:
    fields, _unparsed = parse_email(raw)
    name, version = fields.get("name"), fields.get("version")
    if not name or not version:
        raise InvalidDistribution(f"{where}: core metadata lacks Name or Version")
    if not is_valid_name(name):
        raise InvalidDistribution(
            f"{where}: core metadata names the project {name[:80]!r}, not a valid project name "
            "(ASCII letters, digits and . _ - inside)"
        )
    if parse_version(version) is None:
        raise InvalidDistribution(
            f"{where}: core metadata has an invalid version {version[:80]!r} (PEP 440)"
        )
    return CoreMetadata(
        name=name,
        version=version,
        requires_python=fields.get("requires_python"),
        summary=fields.get("summary"),
        raw=raw,
    )


def _wheel_metadata(path: Path, dist: DistFilename) -> bytes:
    def wanted(name: str) -> bool:
        return name.count("/") == 1 and name.endswith(".dist-info/METADATA")

    with _archive_errors(dist, "zip archive"), path.open("rb") as file:
        candidates = archives.scan_zip(file, wanted, max_unpacked=archives.MAX_WHEEL_UNPACKED)
        chosen = [e for e in candidates if _dir_matches(e.name, dist, ".dist-info")]
        if len(chosen) != 1:
            raise InvalidDistribution(
                f"expected one {dist.name}-{dist.version}.dist-info/METADATA, found {len(chosen)}"
            )
        return archives.read_zip_member(file, chosen[0], MAX_METADATA)


def _zip_sdist_metadata(path: Path, dist: DistFilename) -> bytes:
    with _archive_errors(dist, "zip archive"), path.open("rb") as file:
        found = archives.scan_zip(file, _is_pkg_info, max_unpacked=archives.MAX_SDIST_UNPACKED)
        if not found:
            raise InvalidDistribution("no top-level PKG-INFO")
        return archives.read_zip_member(file, found[0], MAX_METADATA)


def _tar_sdist_metadata(path: Path, dist: DistFilename) -> bytes:
    """The first top-level PKG-INFO, once the whole archive was read within the bounds (a bomb
    may as well follow PKG-INFO as precede it)."""
    raw: bytes | None = None
    with _archive_errors(dist, ".tar.gz"), archives.open_tar_gz(path) as stream:
        for member in stream.members():
            if raw is None and member.isfile() and _is_pkg_info(member.name):
                raw = stream.read(member, MAX_METADATA)
    if raw is None:
        raise InvalidDistribution(f"{dist.filename} has no top-level PKG-INFO")
    return raw


def _is_pkg_info(name: str) -> bool:
    return name.count("/") == 1 and name.endswith("/PKG-INFO")


@contextmanager
def _archive_errors(dist: DistFilename, kind: str) -> Iterator[None]:
    """The archive readers' refusals, and the libraries' errors, worded with the filename."""
    try:
        yield
    except InvalidDistribution as error:
        raise InvalidDistribution(f"{dist.filename}: {error}") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error, struct.error) as error:
        raise InvalidDistribution(f"{dist.filename} is not a readable {kind}: {error}") from None


def _dir_matches(member: str, dist: DistFilename, suffix: str) -> bool:
    stem = member.split("/", 1)[0].removesuffix(suffix)
    name, _, version = stem.rpartition("-")
    return normalize(name) == dist.name and parse_version(version) == dist.version
