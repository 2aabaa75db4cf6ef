"""Archives read with bounds: members, uncompressed bytes and header sizes are checked before a
reading library gets the chance to hold them in memory.

Two readers, both blocking (call from a thread):

- `scan_zip` walks a zip's central directory in small chunks, counting the entries and adding up
  their declared sizes, and returns only the entries asked for; `read_zip_member` inflates one of
  them with a bound. zipfile is not used: it parses the whole central directory into one ZipInfo
  per entry before anything can be checked (a wheel of 1.2 million empty entries cost 692 MB).
- `open_tar_gz` reads a .tar.gz as a stream through tarfile, with a TarInfo that refuses a header
  block announcing an oversized extended header (PAX, GNU long name) before tarfile reads that
  header whole into memory, and an inflate budget that ends the stream at the size limit.

The limits are for real projects, with room: see each one's reason.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Self

from insiders.errors import InvalidDistribution

# Files in one archive. The big projects we know of ship tens of thousands (a theme's wheel with
# every icon set, a distribution of many bundled collections); a million empty entries is only an
# attack on whoever lists them.
MAX_MEMBERS = 200_000
# Bytes a wheel may unpack to, by its central directory: a GPU build of a machine-learning
# library unpacks to a few GB. It is what an installer will write, so it is checked, although
# only METADATA is inflated here.
MAX_WHEEL_UNPACKED = 8 << 30
# Bytes an sdist may unpack to: sources, and the largest sdists we know of unpack to a few hundred
# MB. The whole stream is inflated to count members, so this also bounds the time it takes.
MAX_SDIST_UNPACKED = 1 << 30
# An extended tar header (a PAX record set, a GNU long name or link) is read whole by tarfile. It
# holds a path (at most 4 KiB on Linux), times, perhaps extended attributes: 1 MiB is plenty.
MAX_TAR_HEADER = 1 << 20

_CHUNK = 1 << 20
_END = struct.Struct("<4s4H2LH")  # end of central directory
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory
_LOCATOR64 = struct.Struct("<4sLQL")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_STORED, _DEFLATED = 0, 8


@dataclass(frozen=True, slots=True)
class ZipEntry:
    name: str
    flags: int
    method: int
    crc: int
    compressed: int
    size: int
    offset: int  # of its local header, from the start of the file


def _end_of_directory(file: BinaryIO) -> tuple[int, int, int, int]:
    """(entries, directory size, directory offset as stored, directory's real position)."""
    size = file.seek(0, io.SEEK_END)
    tail_start = max(0, size - _END.size - 0xFFFF)
    file.seek(tail_start)
    tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    # The last signature whose record, comment included, ends the file (a comment may hold one).
    while at >= 0 and (
        at + _END.size > len(tail) or at + _END.size + _END.unpack_from(tail, at)[7] > len(tail)
    ):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise InvalidDistribution("not a readable zip archive (no end of central directory)")
    _sig, _disk, _cd_disk, _here, entries, cd_size, cd_offset, _comment = _END.unpack_from(tail, at)
    end_position = tail_start + at
    if entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
        locator_at = end_position - _LOCATOR64.size
        file.seek(max(0, locator_at))
        locator = file.read(_LOCATOR64.size)
        if len(locator) == _LOCATOR64.size and locator.startswith(b"PK\x06\x07"):
            end64_at = _LOCATOR64.unpack(locator)[2]
            file.seek(end64_at)
            record = file.read(_END64.size)
            if len(record) < _END64.size or not record.startswith(b"PK\x06\x06"):
                raise InvalidDistribution("a broken zip64 end of central directory")
            _s, _n, _v, _x, _d, _cd, _here64, entries, cd_size, cd_offset = _END64.unpack(record)
            end_position = locator_at - _END64.size
    if entries > MAX_MEMBERS:
        raise InvalidDistribution(f"{entries} entries, over the limit of {MAX_MEMBERS}")
    start = end_position - cd_size
    if start < 0 or cd_offset > start:
        raise InvalidDistribution("its central directory lies outside the file")
    return entries, cd_size, cd_offset, start


def _zip64_sizes(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """The zip64 extra field's values for the fields the central header saturated."""
    at = 0
    while at + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, at)
        if kind == 1:
            values = iter(struct.unpack_from(f"<{length // 8}Q", extra, at + 4))
            size = next(values, size) if size == 0xFFFFFFFF else size
            compressed = next(values, compressed) if compressed == 0xFFFFFFFF else compressed
            offset = next(values, offset) if offset == 0xFFFFFFFF else offset
            break
        at += 4 + length
    return size, compressed, offset


def scan_zip(file: BinaryIO, wanted: Callable[[str], bool], *, max_unpacked: int) -> list[ZipEntry]:
    """The entries whose names `wanted` accepts, once every entry was counted and its declared
    size added up within the limits (InvalidDistribution otherwise). Memory does not grow with
    the number of entries."""
    _entries, cd_size, cd_offset, start = _end_of_directory(file)
    shift = start - cd_offset  # bytes before the archive proper (none in a wheel, as a rule)
    file.seek(start)
    reader = io.BufferedReader(_Window(file, cd_size), _CHUNK)
    found: list[ZipEntry] = []
    count = total = 0
    while header := reader.read(_CENTRAL.size):
        if len(header) < _CENTRAL.size or not header.startswith(b"PK\x01\x02"):
            raise InvalidDistribution("a broken central directory")
        fields = _CENTRAL.unpack(header)
        flags, method, crc, compressed, size = fields[5], fields[6], fields[9], *fields[10:12]
        name_length, extra_length, comment_length, offset = *fields[12:15], fields[18]
        raw_name = reader.read(name_length)
        extra = reader.read(extra_length)
        reader.read(comment_length)
        size, compressed, offset = _zip64_sizes(extra, size, compressed, offset)
        count += 1
        total += size
        if count > MAX_MEMBERS:
            raise InvalidDistribution(f"more than {MAX_MEMBERS} entries, the limit")
        if total > max_unpacked:
            raise InvalidDistribution(
                f"over {max_unpacked >> 20} MiB uncompressed, the limit for its kind"
            )
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        if wanted(name):
            found.append(ZipEntry(name, flags, method, crc, compressed, size, offset + shift))
    return found


class _Window(io.RawIOBase):
    """The next `length` bytes of a file, then end of file."""

    def __init__(self, file: BinaryIO, length: int) -> None:
        self._file, self._left = file, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)[: self._left]
        data = self._file.read(len(view))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


def read_zip_member(file: BinaryIO, entry: ZipEntry, limit: int) -> bytes:
    """One member's bytes, inflating at most `limit` (InvalidDistribution beyond it)."""
    if entry.flags & 0x1:
        raise InvalidDistribution(f"{entry.name} is encrypted")
    if entry.method not in (_STORED, _DEFLATED):
        raise InvalidDistribution(f"{entry.name} uses compression method {entry.method}")
    if entry.size > limit:
        raise InvalidDistribution(f"{entry.name} is larger than {limit >> 20} MiB")
    file.seek(entry.offset)
    header = file.read(_LOCAL.size)
    if len(header) < _LOCAL.size or not header.startswith(b"PK\x03\x04"):
        raise InvalidDistribution(f"{entry.name}: no local header where the directory says")
    name_length, extra_length = _LOCAL.unpack(header)[10:12]
    local_name = file.read(name_length)
    if local_name.decode("utf-8" if entry.flags & 0x800 else "cp437", "replace") != entry.name:
        raise InvalidDistribution(f"{entry.name}: its local header names another file")
    file.seek(extra_length, io.SEEK_CUR)
    compressed = file.read(min(entry.compressed, limit + (1 << 16)))
    if entry.method == _STORED:
        data = compressed
    else:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(compressed, limit + 1)
        except zlib.error as error:
            raise InvalidDistribution(f"{entry.name}: {error}") from None
    if len(data) > limit:
        raise InvalidDistribution(f"{entry.name} is larger than {limit >> 20} MiB")
    if len(data) != entry.size or zlib.crc32(data) != entry.crc:
        raise InvalidDistribution(f"{entry.name} is damaged (its size or CRC does not match)")
    return data


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that checks each header block before tarfile acts on it: tarfile reads an
    extended header's content whole (`_proc_pax`, `_proc_gnulong`), so its size is checked here,
    from the block that announces it. Sparse members, which no sdist has, are refused: their maps
    are read into lists of ints (a few bytes of input for each)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _EXTENDED and info.size > MAX_TAR_HEADER:
            raise InvalidDistribution(
                f"an extended header (tar type {info.type.decode()!r}) of {info.size} bytes, "
                f"over the limit of {MAX_TAR_HEADER >> 10} KiB"
            )
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise InvalidDistribution(f"{info.name}: a sparse member, which no sdist has")
        return info

    def _proc_gnusparse_10(self, next: Any, pax_headers: Any, tarfile: Any) -> None:
        raise InvalidDistribution(f"{next.name}: a sparse member, which no sdist has")


_EXTENDED = {
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}
# The override above only bounds what tarfile still calls by that name: hold it to it.
assert hasattr(tarfile.TarInfo, "_proc_gnusparse_10")


class _Budget(io.RawIOBase):
    """The inflated stream, ended with InvalidDistribution past `limit` bytes."""

    def __init__(self, inner: gzip.GzipFile, limit: int) -> None:
        self._inner, self._left, self._limit = inner, limit, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        data = self._inner.read(min(len(view), self._left + 1))
        if len(data) > self._left:
            raise InvalidDistribution(
                f"over {self._limit >> 20} MiB uncompressed, the limit for an sdist"
            )
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


class TarStream:
    """A tar archive read once, front to back, its members counted."""

    def __init__(self, archive: tarfile.TarFile) -> None:
        self._archive = archive

    def members(self) -> Iterator[tarfile.TarInfo]:
        count = 0
        while (member := self._archive.next()) is not None:
            # TarFile keeps every member it read in a list (not in its stubs; getmembers()
            # would read the rest first); a stream needs none of them back.
            self._archive.members.clear()  # type: ignore[attr-defined]
            count += 1
            if count > MAX_MEMBERS:
                raise InvalidDistribution(f"more than {MAX_MEMBERS} members, the limit")
            yield member

    def open(self, member: tarfile.TarInfo) -> IO[bytes]:
        """The current member's content as a stream (the inflate budget still bounds it)."""
        extracted = self._archive.extractfile(member)
        if extracted is None:
            raise InvalidDistribution(f"{member.name} is not a regular file")
        return extracted

    def read(self, member: tarfile.TarInfo, limit: int) -> bytes:
        """The current member's bytes (InvalidDistribution past `limit`)."""
        if member.size > limit:
            raise InvalidDistribution(f"{member.name} is larger than {limit >> 20} MiB")
        extracted = self._archive.extractfile(member)
        if extracted is None:
            raise InvalidDistribution(f"{member.name} is not a regular file")
        return extracted.read(limit)


@contextmanager
def open_tar_gz(path: Path) -> Iterator[TarStream]:
    """A .tar.gz as a stream: its extended headers, members and inflated bytes bounded."""
    with path.open("rb") as raw, gzip.GzipFile(fileobj=raw) as inflated:
        budget = io.BufferedReader(_Budget(inflated, MAX_SDIST_UNPACKED))
        with tarfile.open(fileobj=budget, mode="r|", tarinfo=_BoundedTarInfo) as archive:
            yield TarStream(archive)
