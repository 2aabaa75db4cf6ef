"""What a distribution file says about itself: read its core metadata with bounded effort.

Blocking (zip and tar reading): call from a thread. Uploads and the watcher's builds both pass
through it, so only files that are what their names claim get published.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from packaging.metadata import parse_email

from insiders.errors import InvalidDistribution

from .names import DistFilename, NormalizedName, is_valid_name, normalize, parse_version

# Core metadata embeds the long description, so allow a generous size, but not an unbounded one.
MAX_METADATA = 8 << 20
# An sdist is read as a stream until PKG-INFO turns up; a bomb must not make us inflate gigabytes.
MAX_SDIST_INFLATE = 512 << 20
MAX_SDIST_MEMBERS = 100_000


@dataclass(frozen=True, slots=True)
class CoreMetadata:
    name: str
    normalized: NormalizedName
    version: str
    requires_python: str | None
    summary: str | None
    raw: bytes


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
        normalized=normalize(name),
        version=version,
        requires_python=fields.get("requires_python"),
        summary=fields.get("summary"),
        raw=raw,
    )


def _read_bounded(file: IO[bytes], where: str) -> bytes:
    data = file.read(MAX_METADATA + 1)
    if len(data) > MAX_METADATA:
        raise InvalidDistribution(f"{where} is larger than {MAX_METADATA >> 20} MiB")
    return data


def _wheel_metadata(path: Path, dist: DistFilename) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            candidates = [
                info
                for info in archive.infolist()
                if info.filename.count("/") == 1 and info.filename.endswith(".dist-info/METADATA")
            ]
            chosen = [i for i in candidates if _dir_matches(i.filename, dist, ".dist-info")]
            if len(chosen) != 1:
                raise InvalidDistribution(
                    f"{dist.filename}: expected one {dist.name}-{dist.version}.dist-info/METADATA, "
                    f"found {len(chosen)}"
                )
            with archive.open(chosen[0]) as member:
                return _read_bounded(member, f"{dist.filename}: METADATA")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise InvalidDistribution(
            f"{dist.filename} is not a readable zip archive: {error}"
        ) from None


def _zip_sdist_metadata(path: Path, dist: DistFilename) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.count("/") == 1 and info.filename.endswith("/PKG-INFO"):
                    with archive.open(info) as member:
                        return _read_bounded(member, f"{dist.filename}: PKG-INFO")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise InvalidDistribution(
            f"{dist.filename} is not a readable zip archive: {error}"
        ) from None
    raise InvalidDistribution(f"{dist.filename} has no top-level PKG-INFO")


class _Budget(io.RawIOBase):
    """A reader that refuses to go past a number of bytes, to bound decompression."""

    def __init__(self, inner: gzip.GzipFile, limit: int) -> None:
        self._inner, self._left = inner, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            raise InvalidDistribution("PKG-INFO not found within the inflate limit (a tar bomb?)")
        view = memoryview(buffer)[: self._left]
        data = self._inner.read(len(view))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _tar_sdist_metadata(path: Path, dist: DistFilename) -> bytes:
    try:
        with path.open("rb") as raw, gzip.GzipFile(fileobj=raw) as inflated:
            budget = io.BufferedReader(_Budget(inflated, MAX_SDIST_INFLATE))
            with tarfile.open(fileobj=budget, mode="r|") as archive:
                for count, member in enumerate(archive):
                    if count > MAX_SDIST_MEMBERS:
                        break
                    if (
                        member.isfile()
                        and member.name.count("/") == 1
                        and member.name.endswith("/PKG-INFO")
                    ):
                        extracted = archive.extractfile(member)
                        if extracted is None:
                            break
                        return _read_bounded(extracted, f"{dist.filename}: PKG-INFO")
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise InvalidDistribution(f"{dist.filename} is not a readable .tar.gz: {error}") from None
    raise InvalidDistribution(f"{dist.filename} has no top-level PKG-INFO")


def _dir_matches(member: str, dist: DistFilename, suffix: str) -> bool:
    stem = member.split("/", 1)[0].removesuffix(suffix)
    name, _, version = stem.rpartition("-")
    return normalize(name) == dist.name and parse_version(version) == dist.version
