"""Archive bombs uploaded to a real daemon: refused with 400 and a precise reason, never published,
and the daemon's peak memory (VmHWM) stays within 100 MB of what it was idle.

The bombs are written byte by byte here (a tar stream, a zip's central directory): building them
with tarfile or zipfile would take the test as long, and as much memory, as the attack.
"""

from __future__ import annotations

import gzip
import io
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Daemon, make_wheel

MiB = 1 << 20
MARGIN_KIB = 100 << 10


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp_path / "d", ["--upstream-mode", "none"]).start()
    yield running
    running.stop()


def memory_kib(daemon: Daemon, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak since start) of the daemon process."""
    assert daemon.proc is not None
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1))


def upload_bytes(daemon: Daemon, tmp_path: Path, filename: str, content: bytes) -> str:
    """Upload `content` as `filename`; the refusal's text (the upload must be refused with 400)."""
    path = tmp_path / filename
    path.write_bytes(content)
    name, version = filename.split("-")[:2]
    response = daemon.upload(path, name=name, version=version.removesuffix(".tar.gz"))
    assert response.status_code == 400, (response.status_code, response.text)
    return response.text


def listed(daemon: Daemon, project: str) -> int:
    with daemon.client() as client:
        return client.get(f"/simple/{project}/").status_code


# -- tar: a PAX header tarfile would read whole -------------------------------------------------


def _block(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def _member(name: str, data: bytes) -> bytes:
    """A tar member as it is written: its header, then its data padded to whole blocks."""
    member = tarfile.TarInfo(name)
    member.size = len(data)
    return member.tobuf(tarfile.USTAR_FORMAT) + _block(data)


def _ended(gzip: zlib._Compress, out: list[bytes]) -> bytes:
    """The .tar.gz: `out`, the two zero blocks that end a tar, the end of the gzip stream."""
    return b"".join([*out, gzip.compress(b"\0" * tarfile.BLOCKSIZE * 2), gzip.flush()])


def pax_bomb(value_size: int) -> bytes:
    """A .tar.gz whose first member carries a PAX header of `value_size` bytes, then a good
    PKG-INFO: about 0.3 MB on the wire per 300 MB of header."""
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    prefix = "comment="
    length = value_size + len(prefix) + 2
    length += len(str(length + len(str(length))))
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, length
    out = [gzip.compress(header.tobuf(tarfile.USTAR_FORMAT))]
    out.append(gzip.compress(f"{length} {prefix}".encode()))
    chunk = b"a" * MiB
    for _ in range(value_size // MiB):
        out.append(gzip.compress(chunk))
    out.append(gzip.compress(b"a" * (value_size % MiB) + b"\n"))
    out.append(gzip.compress(b"\0" * (-length % tarfile.BLOCKSIZE)))
    pkg_info = b"Metadata-Version: 2.1\nName: paxbomb\nVersion: 1.0\n\n"
    out.append(gzip.compress(_member("paxbomb-1.0/PKG-INFO", pkg_info)))
    return _ended(gzip, out)


def test_a_pax_header_bomb_is_refused_in_bounded_memory(daemon: Daemon, tmp_path: Path) -> None:
    bomb = pax_bomb(300 * MiB)
    assert len(bomb) < MiB
    idle = memory_kib(daemon, "VmHWM")
    reason = upload_bytes(daemon, tmp_path, "paxbomb-1.0.tar.gz", bomb)
    assert "extended header" in reason
    assert "limit" in reason
    assert memory_kib(daemon, "VmHWM") - idle < MARGIN_KIB
    assert listed(daemon, "paxbomb") == 404


def tar_gz(members: Iterator[tuple[str, bytes]]) -> bytes:
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
    return _ended(gzip, [gzip.compress(_member(name, data)) for name, data in members])


def test_an_sdist_of_too_many_members_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    pkg_info = b"Metadata-Version: 2.1\nName: many\nVersion: 1.0\n\n"

    def members() -> Iterator[tuple[str, bytes]]:
        yield "many-1.0/PKG-INFO", pkg_info
        for n in range(300_000):
            yield f"many-1.0/f{n}", b""

    idle = memory_kib(daemon, "VmHWM")
    reason = upload_bytes(daemon, tmp_path, "many-1.0.tar.gz", tar_gz(members()))
    assert "members" in reason
    assert "limit" in reason
    assert memory_kib(daemon, "VmHWM") - idle < MARGIN_KIB
    assert listed(daemon, "many") == 404


def test_an_sdist_that_inflates_past_the_limit_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    """PKG-INFO first, then one member of zeros: reading only up to PKG-INFO would publish it."""
    pkg_info = b"Metadata-Version: 2.1\nName: zeros\nVersion: 1.0\n\n"
    size = (1 << 30) + MiB
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)
    member = tarfile.TarInfo("zeros-1.0/PKG-INFO")
    member.size = len(pkg_info)
    out = [gzip.compress(member.tobuf(tarfile.USTAR_FORMAT) + _block(pkg_info))]
    big = tarfile.TarInfo("zeros-1.0/zeros")
    big.size = size
    out.append(gzip.compress(big.tobuf(tarfile.USTAR_FORMAT)))
    zeros = b"\0" * (16 * MiB)
    for _ in range(size // len(zeros)):
        out.append(gzip.compress(zeros))
    out.append(gzip.compress(b"\0" * (size % len(zeros) + tarfile.BLOCKSIZE * 2)))
    out.append(gzip.flush())
    reason = upload_bytes(daemon, tmp_path, "zeros-1.0.tar.gz", b"".join(out))
    assert "uncompressed" in reason
    assert listed(daemon, "zeros") == 404


# -- zip: a central directory of 1.2 million entries --------------------------------------------

_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")


def entry_bomb(extra_entries: int, *, honest: bool = True) -> bytes:
    """A good wheel whose central directory lists `extra_entries` more (empty, stored) files, all
    at the first local header: what zipfile reads into one ZipInfo each. Not `honest`: its end
    record claims the good wheel's few entries (zipfile never looks at that count)."""
    wheel = make_wheel("entrybomb", "1.0")
    end = wheel.rindex(b"PK\x05\x06")
    _sig, _disk, _cd_disk, count, _total, cd_size, cd_offset, _comment = _END.unpack_from(
        wheel, end
    )
    local, central = wheel[:cd_offset], wheel[cd_offset : cd_offset + cd_size]
    extra = b"".join(
        _CENTRAL.pack(
            b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0
        )
        + name
        for name in (f"entrybomb/{n}".encode() for n in range(extra_entries))
    )
    central += extra
    total = count + extra_entries if honest else count
    end64_offset = len(local) + len(central)
    end64 = _END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, total, total, len(central), len(local))
    locator = _LOCATOR64.pack(b"PK\x06\x07", 0, end64_offset, 1)
    tail = _END.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(central), len(local), 0)
    return local + central + end64 + locator + tail


@pytest.mark.parametrize("honest", [True, False], ids=["counted", "count-lies"])
def test_a_wheel_of_a_million_entries_is_refused_in_bounded_memory(
    daemon: Daemon, tmp_path: Path, honest: bool
) -> None:
    idle = memory_kib(daemon, "VmHWM")
    bomb = entry_bomb(1_200_000, honest=honest)
    reason = upload_bytes(daemon, tmp_path, "entrybomb-1.0-py3-none-any.whl", bomb)
    assert "entries" in reason
    assert "limit" in reason
    assert memory_kib(daemon, "VmHWM") - idle < MARGIN_KIB
    assert listed(daemon, "entrybomb") == 404


def test_a_wheel_claiming_terabytes_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    """The sizes a central directory declares are what an installer will write: bounded too."""
    wheel = make_wheel("huge", "1.0", b"payload")
    end = wheel.rindex(b"PK\x05\x06")
    _sig, disk, cd_disk, count, total, _size, cd_offset, comment = _END.unpack_from(wheel, end)
    # The payload's entry (the third) says 4 GiB - 2 bytes (at offset 24 of its central
    # header), and so do four copies of it.
    start = cd_offset
    for _ in range(2):
        fields = _CENTRAL.unpack_from(wheel, start)
        start += _CENTRAL.size + fields[12] + fields[13] + fields[14]
    fields = _CENTRAL.unpack_from(wheel, start)
    entry = bytearray(wheel[start : start + _CENTRAL.size + fields[12] + fields[13] + fields[14]])
    assert entry.endswith(b"/data.bin")
    struct.pack_into("<L", entry, 24, 0xFFFFFFFE)
    central = wheel[cd_offset:start] + bytes(entry) * 5 + wheel[start + len(entry) : end]
    tail = _END.pack(
        b"PK\x05\x06", disk, cd_disk, count + 4, total + 4, len(central), cd_offset, comment
    )
    content = wheel[:cd_offset] + central + tail
    reason = upload_bytes(daemon, tmp_path, "huge-1.0-py3-none-any.whl", content)
    assert "uncompressed" in reason
    assert listed(daemon, "huge") == 404


def test_a_big_real_wheel_is_accepted(daemon: Daemon, tmp_path: Path) -> None:
    """70,000 files (zip64: more than 65,535), written by zipfile: the bounds leave room."""
    wheel = io.BytesIO(make_wheel("bigreal", "1.0"))
    with zipfile.ZipFile(wheel, "a") as archive:
        for n in range(70_000):
            archive.writestr(f"bigreal/icons/{n}.svg", b"<svg/>")
    path = tmp_path / "bigreal-1.0-py3-none-any.whl"
    path.write_bytes(wheel.getvalue())
    response = daemon.upload(path, name="bigreal", version="1.0")
    assert response.status_code == 200, response.text
    assert listed(daemon, "bigreal") == 200


def _pax_record(key: str, value: str) -> bytes:
    text = f" {key}={value}\n".encode()
    length = len(text) + len(str(len(text)))
    length = len(text) + len(str(length))
    return str(length).encode() + text


def test_a_sparse_member_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    """GNU sparse 1.0 (in PAX): tarfile reads its map into a list of ints, a few bytes each."""
    pkg_info = b"Metadata-Version: 2.1\nName: sparse\nVersion: 1.0\n\n"
    records = b"".join(
        _pax_record(key, value)
        for key, value in [
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", "sparse-1.0/data"),
            ("GNU.sparse.realsize", "1000000"),
        ]
    )
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, len(records)
    sparse_map = b"100\n" + b"0\n0\n" * 100
    member = tarfile.TarInfo("sparse-1.0/GNUSparseFile.0/data")
    member.size = len(_block(sparse_map))
    pkg = tarfile.TarInfo("sparse-1.0/PKG-INFO")
    pkg.size = len(pkg_info)
    raw = (
        pkg.tobuf(tarfile.USTAR_FORMAT)
        + _block(pkg_info)
        + header.tobuf(tarfile.USTAR_FORMAT)
        + _block(records)
        + member.tobuf(tarfile.USTAR_FORMAT)
        + _block(sparse_map)
        + b"\0" * tarfile.BLOCKSIZE * 2
    )
    reason = upload_bytes(daemon, tmp_path, "sparse-1.0.tar.gz", gzip.compress(raw))
    assert "sparse" in reason
    assert listed(daemon, "sparse") == 404
