"""`insidersctl logs`: journalctl for a daemon under systemd, else the tail of its log file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

from insidersctl.paths import default_data_dir
from insidersctl.protocol import LogsLocation

LOG_FILE = "insidersd.log"  # in the data directory (insiders.logfile writes it)


def default_log_file() -> Path | None:
    """The log file of a daemon run with the default directories, if there is one."""
    path = default_data_dir(os.environ) / LOG_FILE
    return path if path.is_file() else None


def journalctl_command(where: LogsLocation, *, lines: int, follow: bool) -> list[str]:
    command = ["journalctl", "--no-pager", "--lines", str(lines)]
    if follow:
        command.append("--follow")
    if where.unit:
        command += ["--user-unit" if where.user else "--unit", where.unit]
    elif where.invocation:
        command.append(f"_SYSTEMD_INVOCATION_ID={where.invocation}")
    return command


def show_log(where: LogsLocation, *, lines: int, follow: bool) -> int:
    if where.journal:
        command = journalctl_command(where, lines=lines, follow=follow)
        if shutil.which("journalctl") is None:
            print("insidersctl: the daemon logs to the journal, and journalctl is not installed")
            return 1
        sys.stdout.flush()
        try:
            return subprocess.call(command)
        except KeyboardInterrupt:
            return 130
    if where.path is None:
        print(
            "insidersctl: the daemon keeps no log file (it logs to its standard error)",
            file=sys.stderr,
        )
        return 1
    try:
        with open(where.path, "rb") as file:
            return _tail(file, Path(where.path), lines=lines, follow=follow)
    except OSError as error:
        print(f"insidersctl: cannot read {where.path}: {error.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def last_lines(file: BinaryIO, count: int, block: int = 1 << 16) -> bytes:
    """The last `count` lines of a file, read backwards in blocks (logs can be large)."""
    if count == 0:
        return b""
    end = file.seek(0, os.SEEK_END)
    position, data = end, b""
    # One more newline than lines wanted, unless the file ends without one.
    while position > 0 and data.count(b"\n") <= count:
        step = min(block, position)
        position -= step
        file.seek(position)
        data = file.read(step) + data
    file.seek(end)
    tail = data.splitlines(keepends=True)[-count:]
    return b"".join(tail)


def _tail(file: BinaryIO, path: Path, *, lines: int, follow: bool) -> int:
    sys.stdout.flush()  # what was printed before goes first
    out = sys.stdout.buffer
    out.write(last_lines(file, lines))
    out.flush()
    while follow:
        chunk = file.read()
        if chunk:
            out.write(chunk)
            out.flush()
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        # Rotated (a new file in its place) or truncated: start over from the new file's top.
        if stat is not None and (
            stat.st_ino != os.fstat(file.fileno()).st_ino or stat.st_size < file.tell()
        ):
            file.close()
            file = open(path, "rb")  # noqa: SIM115  (reopened in the loop; closed above)
            continue
        time.sleep(0.25)
    file.close()
    return 0
