"""Human output (aligned tables, relative times, sizes) and the stable JSON form of replies."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

_json = msgspec.json.Encoder(order="deterministic")


def to_json(message: msgspec.Struct, *, indent: int = 2) -> str:
    """The reply exactly as the protocol defines it: its fields are the JSON interface."""
    data = _json.encode(message)
    return msgspec.json.format(data, indent=indent).decode() if indent else data.decode()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append(indent + "  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """3 s, 12 min, 5 h, 3 days: one unit, rounded down, as people say it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400 * 2:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} days"


def ago(when: float | None, now: float, never: str = "never") -> str:
    if when is None or when <= 0:
        return never
    delta = now - when
    if delta < -1:
        return f"in {duration(-delta)}"
    if delta < 2:
        return "just now"
    return f"{duration(delta)} ago"


BINARY = (1024, ("B", "KiB", "MiB", "GiB"))
# As the public index's pages say it (and the daemon's web pages after them).
DECIMAL = (1000, ("bytes", "kB", "MB", "GB"))


def size(count: int, units: tuple[int, tuple[str, ...]] = BINARY) -> str:
    """`count` bytes in the largest unit under which it stays below the base, one decimal."""
    base, names = units
    value = float(count)
    for unit in names:
        if value < base or unit == names[-1]:
            return f"{count} {unit}" if unit == names[0] else f"{value:.1f} {unit}"
        value /= base
    raise AssertionError("unreachable")


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else (words or word + 's')}"


def without_log(message: str, log: str | None) -> str:
    """`message` without the log path it may quote: the path is printed once, from its own field.

    (Daemons before the watcher's `log` field put "; log: PATH" into the message itself.)
    """
    if not log or log not in message:
        return message
    for form in (f"; log: {log}", f" (log: {log})", f", log: {log}", f"log: {log}", log):
        message = message.replace(form, "")
    return message.strip().rstrip(";,:").rstrip()


def clock(seconds: float) -> str:
    """Elapsed time as a stopwatch shows it: 0:07, 12:30, 1:02:03."""
    whole = int(max(0.0, seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"
