"""`insidersctl logs`: journalctl for a daemon under systemd, else its log file read the same way.

The options mean what journalctl's mean: `-n N` the last N entries (0: none), `-f` then follow,
`-p PRIORITY` that priority or a more urgent one (a name or 0-7, or a range FROM..TO), `--since`
and `--until`, and `--json` one JSON object per line. An entry is a line, as in the journal
(journald keeps each line of a traceback as an entry; so does this). `server logs` and
`watcher logs` keep the entries of those parts of the daemon. `--build NAME [VERSION]` prints a
build's log instead (the newest build's without a VERSION).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import msgspec

from insidersctl.errors import LogOptionError
from insidersctl.paths import data_dir
from insidersctl.protocol import LogsLocation

LOG_FILE = "insidersd.log"  # in the data directory (insiders.logfile writes it)
BUILD_LOGS = "logs"  # DATA/logs/NAME/VERSION.log (the watcher writes them)

# syslog priorities (what journalctl -p takes) and the levels insidersd logs with.
PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
LEVELS = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
# The loggers of each part of the daemon (`server logs`, `watcher logs`).
COMPONENTS = {
    "server": (
        "insiders.index",
        "insiders.store",
        "insiders.app",
        "hypercorn",
    ),
    "watcher": ("insiders.watcher", "insiders.repos"),
}

# A record's first line in the file: "2026-12-01 16:40:06 INFO    insiders.app: message".
_HEADER = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (DEBUG|INFO|WARNING|ERROR|CRITICAL) +([\w.\-]+): ?(.*)"
)


def default_log_file() -> Path | None:
    """The log file of a daemon run with the default directories, if there is one."""
    path = data_dir(os.environ) / LOG_FILE
    return path if path.is_file() else None


def default_build_logs() -> Path:
    return data_dir(os.environ) / BUILD_LOGS


# -- options -------------------------------------------------------------------------------------


def parse_priority(text: str) -> tuple[int, int]:
    """journalctl's -p: a name or number (that or more urgent), or FROM..TO; as (most, least)."""
    low, sep, high = text.partition("..")

    def one(value: str) -> int:
        value = value.strip().lower()
        if value.isdigit() and int(value) < len(PRIORITIES):
            return int(value)
        if value in PRIORITIES:
            return PRIORITIES.index(value)
        names = {"error": "err", "warn": "warning", "critical": "crit", "emergency": "emerg"}
        if value in names:
            return PRIORITIES.index(names[value])
        raise LogOptionError(
            f"{value!r} is not a priority: 0-7 or {', '.join(PRIORITIES)} (or FROM..TO)"
        )

    if not sep:
        return 0, one(low)
    first, last = one(low or "emerg"), one(high or "debug")
    return min(first, last), max(first, last)


_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)")


def parse_time(text: str, now: float | None = None) -> float:
    """A time as journalctl's --since/--until take it (systemd.time(7)), as seconds since 1970.

    YYYY-MM-DD [HH:MM[:SS]], HH:MM[:SS] (today), now, today, yesterday, tomorrow, and spans
    before or after now: -1h30min, +2h, "5 min ago".
    """
    now = time.time() if now is None else now
    value = text.strip().lower()
    midnight = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))
    days = {"today": 0, "yesterday": -1, "tomorrow": 1}
    if value == "now":
        return now
    if value in days:
        # mktime normalises the day, across months and summer time.
        today = time.localtime(midnight)
        return time.mktime((*today[:2], today[2] + days[value], 0, 0, 0, 0, 0, -1))
    sign, body = 0, value
    if value.startswith(("-", "+")):
        sign, body = (-1 if value[0] == "-" else 1), value[1:]
    elif value.endswith(" ago"):
        sign, body = -1, value.removesuffix(" ago")
    if sign:
        seconds, position = 0.0, 0
        for match in _SPAN.finditer(body):
            if match.start() != position or match.group(2) not in _UNITS:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        else:
            if position == len(body) and position:
                return now + sign * seconds
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return time.mktime(time.strptime(value, form))
        except ValueError:
            pass
    for form in ("%H:%M:%S", "%H:%M"):
        try:
            clock = time.strptime(value, form)
        except ValueError:
            continue
        return midnight + clock.tm_hour * 3600 + clock.tm_min * 60 + clock.tm_sec
    raise LogOptionError(
        f"cannot read the time {text!r}: give YYYY-MM-DD [HH:MM[:SS]], HH:MM[:SS], today, "
        "yesterday, now, or a span like -2h or '30 min ago'"
    )


class Filter(msgspec.Struct, frozen=True, kw_only=True):
    """Which entries to show: priority, time range and part of the daemon."""

    priority: tuple[int, int] | None = None
    since: float | None = None
    until: float | None = None
    component: str | None = None

    @property
    def everything(self) -> bool:
        return (
            self.priority is None
            and self.since is None
            and self.until is None
            and (self.component is None)
        )

    def keeps(self, entry: Entry) -> bool:
        if self.priority is not None and not (
            self.priority[0] <= entry.priority <= self.priority[1]
        ):
            return False
        if self.since is not None and (entry.time is None or entry.time < self.since):
            return False
        if self.until is not None and (entry.time is None or entry.time > self.until):
            return False
        if self.component is not None:
            return entry.logger.startswith(COMPONENTS[self.component])
        return True


EVERYTHING = Filter()


# -- the log file ----------------------------------------------------------------------------------


class Entry:
    """One line of the log; a traceback's lines carry the time, priority and logger of their
    record's first line."""

    __slots__ = ("level", "line", "logger", "message", "priority", "time")

    def __init__(
        self, line: bytes, time: float | None, level: str, logger: str, message: str
    ) -> None:
        self.line = line
        self.time = time
        self.level = level
        self.priority = LEVELS.get(level, 6)
        self.logger = logger
        self.message = message

    def json(self) -> str:
        return json.dumps(
            {
                "time": self.time,
                "priority": self.priority,
                "level": self.level,
                "logger": self.logger,
                "message": self.message,
            },
            ensure_ascii=False,
        )


class EntryReader:
    """Lines of the log file to entries; remembers the record a continuation line belongs to."""

    def __init__(self) -> None:
        self._record: tuple[float | None, str, str] = (None, "INFO", "")
        self._times: dict[str, float] = {}

    def entry(self, line: bytes) -> Entry:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        match = _HEADER.fullmatch(text)
        if match is None:
            when, level, logger = self._record
            return Entry(line, when, level, logger, text)
        stamp, level, logger, message = match.groups()
        when = self._times.get(stamp)
        if when is None:
            when = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
            self._times = {stamp: when}  # lines come in order: one second's stamp at a time
        self._record = (when, level, logger)
        return Entry(line, when, level, logger, message)


class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """How `logs` reads: the last `lines` entries (None: all; 0: none), then on as they come if
    `follow`; only the entries `keep` keeps; `as_json`: one JSON object a line. `since` and
    `until` are the options as typed, for journalctl (which reads more forms than parse_time)."""

    lines: int | None
    follow: bool
    keep: Filter = EVERYTHING
    as_json: bool = False
    since: str | None = None
    until: str | None = None


def show_log(where: LogsLocation, how: Reading) -> int:
    """Print the daemon's log (journalctl or the file); the exit status."""
    if where.journal:
        return _journalctl(journalctl_command(where, how), how.as_json)
    if where.path is None:
        print(
            "insidersctl: the daemon keeps no log file (it logs to its standard error)",
            file=sys.stderr,
        )
        return 1
    return read_file(Path(where.path), how)


def read_file(path: Path, how: Reading) -> int:
    try:
        with open(path, "rb") as file:
            return _read(file, path, how)
    except BrokenPipeError:
        raise  # the reader went away (`| head`): cli.main ends quietly, this is no read error
    except OSError as error:
        print(f"insidersctl: cannot read {path}: {error.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _read(file: BinaryIO, path: Path, how: Reading) -> int:
    sys.stdout.flush()  # what was printed before goes first
    out = sys.stdout.buffer
    reader = EntryReader()
    keep, lines = how.keep, how.lines
    raw = keep.everything and not how.as_json

    def write(line: bytes, entry: Entry) -> None:
        out.write((entry.json() + "\n").encode() if how.as_json else line)

    if raw and lines is not None:
        out.write(last_lines(file, lines))  # read backwards: logs can be large
    else:
        # Every line from the top: a traceback's lines need their record's first line.
        kept = [(line, entry) for line in file if keep.keeps(entry := reader.entry(line))]
        if lines is not None:
            kept = kept[len(kept) - lines :] if lines else []
        for line, entry in kept:
            write(line, entry)
    out.flush()
    if how.follow:
        for chunk in _follow(file, path):
            for line in chunk.splitlines(keepends=True):
                entry = reader.entry(line)
                if raw or keep.keeps(entry):
                    write(line, entry)
            out.flush()
    return 0


def _follow(file: BinaryIO, path: Path) -> Iterator[bytes]:
    """Whole lines as they are appended; across rotation and truncation."""
    partial = b""
    current = file
    try:
        while True:
            chunk = current.read()
            if chunk:
                complete, newline, partial = (partial + chunk).rpartition(b"\n")
                if newline:
                    yield complete + newline
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                stat = None
            # Rotated (a new file in its place) or truncated: start over from the new file's top.
            if stat is not None and (
                stat.st_ino != os.fstat(current.fileno()).st_ino or stat.st_size < current.tell()
            ):
                if current is not file:
                    current.close()
                current = open(path, "rb")  # noqa: SIM115  (closed when replaced or at the end)
                continue
            time.sleep(0.25)
    finally:
        if current is not file:
            current.close()


def last_lines(file: BinaryIO, count: int, block: int = 1 << 16) -> bytes:
    """The last `count` lines of a file, read backwards in blocks; leaves the file at its end."""
    end = file.seek(0, os.SEEK_END)
    if count == 0:
        return b""
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


# -- build logs ------------------------------------------------------------------------------------


def build_log(directory: Path, name: str, version: str | None) -> Path:
    """DIR/NAME/VERSION.log, or the newest build's log of NAME; FileNotFoundError says why."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    builds = directory / key
    if version is not None:
        path = builds / f"{version}.log"
        if not path.is_file():
            known = sorted(p.stem for p in builds.glob("*.log"))
            also = f" (there are logs of {', '.join(known)})" if known else ""
            raise FileNotFoundError(f"no build log of {name} {version} in {builds}{also}")
        return path
    logs = sorted(builds.glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        raise FileNotFoundError(f"no build log of {name} in {directory}")
    return logs[-1]


# -- the journal -----------------------------------------------------------------------------------


def journalctl_command(where: LogsLocation, how: Reading) -> list[str]:
    lines, keep = how.lines, how.keep
    command = ["journalctl", "--no-pager", "--lines", "all" if lines is None else str(lines)]
    if how.follow:
        command.append("--follow")
    if keep.priority is not None:
        low, high = keep.priority
        command += ["--priority", f"{low}..{high}"]
    if how.since is not None:
        command += ["--since", how.since]
    if how.until is not None:
        command += ["--until", how.until]
    if keep.component is not None:
        loggers = "|".join(re.escape(name) for name in COMPONENTS[keep.component])
        command += ["--grep", f"^({loggers})[.:]"]
    if how.as_json:
        command += ["--output", "json"]
    if where.unit:
        command += ["--user-unit" if where.user else "--unit", where.unit]
    elif where.invocation:
        command.append(f"_SYSTEMD_INVOCATION_ID={where.invocation}")
    return command


def journal_entry(line: str) -> str | None:
    """A line of `journalctl -o json` in the shape of the log file's entries (see Entry.json)."""
    try:
        fields = json.loads(line)
        text = fields.get("MESSAGE")
        if not isinstance(text, str):
            return None  # binary data: journalctl gives an array of bytes
        priority = int(fields.get("PRIORITY", 6))
        stamp = int(fields.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    except (ValueError, AttributeError, TypeError):
        return None
    logger, sep, message = text.partition(": ")
    if not sep or " " in logger:
        logger, message = "", text
    level = next((name for name, value in LEVELS.items() if value == priority), "INFO")
    return Entry(b"", stamp or None, level, logger, message).json()


def _journalctl(command: list[str], as_json: bool) -> int:
    if shutil.which("journalctl") is None:
        print(
            "insidersctl: the daemon logs to the journal, and journalctl is not installed",
            file=sys.stderr,
        )
        return 1
    sys.stdout.flush()
    try:
        if not as_json:
            return subprocess.call(command)
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout is not None
            for line in process.stdout:
                entry = journal_entry(line)
                if entry is not None:
                    print(entry, flush=True)
            return process.wait()
    except KeyboardInterrupt:
        return 130
