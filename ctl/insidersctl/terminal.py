"""What the output stream can do: redraw lines in place, and colours (https://no-color.org).

A terminal gets the live view and, unless NO_COLOR is set to anything but the empty string,
colours; a pipe, a file or TERM=dumb get plain lines that scripts and logs can read. Written here
rather than taken from a library: the client stays stdlib + msgspec, and it needs four escapes.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

STYLES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "cyan": "36",
}


class Terminal:
    """The capabilities of one output stream, decided once."""

    __slots__ = ("colour", "live", "stream")

    def __init__(self, stream: TextIO, env: Mapping[str, str] = os.environ) -> None:
        self.stream = stream
        try:
            tty = stream.isatty()
        except ValueError:  # closed
            tty = False
        self.live = tty and env.get("TERM", "") != "dumb"
        self.colour = self.live and not env.get("NO_COLOR")

    def paint(self, text: str, *styles: str) -> str:
        if not self.colour or not styles or not text:
            return text
        codes = ";".join(STYLES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def width(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns

    def height(self) -> int:
        return shutil.get_terminal_size((100, 24)).lines


def visible(text: str) -> str:
    """`text` without its escape sequences: what takes room on the screen."""
    return _ANSI.sub("", text)


def fit(text: str, width: int) -> str:
    """`text` cut to `width` visible characters (escapes kept), so that it never wraps."""
    if len(visible(text)) <= width:
        return text
    out, seen, index = [], 0, 0
    while index < len(text) and seen < width - 1:
        match = _ANSI.match(text, index)
        if match:
            out.append(match.group())
            index = match.end()
            continue
        out.append(text[index])
        seen += 1
        index += 1
    return "".join(out) + "…" + ("\x1b[0m" if "\x1b[" in text else "")


def rows(text: str, width: int) -> int:
    """How many screen rows `text` takes once the terminal wraps it."""
    return max(1, -(-len(visible(text)) // max(1, width)))
