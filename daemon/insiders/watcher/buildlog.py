"""A build's log as it is stored: redacted of secrets and bounded in size.

The build's output comes to the daemon through a pipe and is written here line by line, so a
secret never reaches the disk (and `/builds/`, which shows logs to every reader): a token of this
index (the build's own read credential included) and the password part of a URL are replaced by
`****`. A build that prints without end fills its log up to MAX_LOG_BYTES, then its output is
dropped (and said so) while it goes on.
"""

from __future__ import annotations

import re
from typing import Protocol

import trio

from insiders.tokens import PREFIX

MAX_LOG_BYTES = 32 << 20
FULL = f"\ninsiders: the log reached {MAX_LOG_BYTES >> 20} MiB; the rest is dropped\n".encode()
# A line longer than this is cut: a token cannot hide in a line that never ends.
MAX_LINE_BYTES = 64 << 10

_SECRETS = re.compile(
    rb"(?P<token>" + re.escape(PREFIX.encode()) + rb")[A-Za-z0-9_-]{8,}"
    rb"|(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"
)


def redact(line: bytes) -> bytes:
    """`line` with every token of this index and every URL password replaced by ****."""
    return _SECRETS.sub(
        lambda m: (m["token"] or b"") + b"****" if m["token"] else m["scheme"] + b"****@", line
    )


class AsyncWriter(Protocol):
    async def write(self, data: bytes, /) -> object: ...


class Redactor:
    """Feeds output in, gives redacted whole lines out; what is left of a line waits for its end."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) > MAX_LINE_BYTES:
            end = len(data)
        self._pending = data[end:]
        return redact(data[:end])

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        return redact(rest)


async def copy_output(source: trio.abc.ReceiveStream, log: AsyncWriter) -> None:
    """Copy the build's output from `source` into the open log file `log`, redacted and bounded."""
    redactor = Redactor()
    written = 0
    full = False
    async for chunk in source:
        if full:
            continue  # read on, so the build is never blocked by a full pipe
        out = redactor.feed(bytes(chunk))
        if written + len(out) > MAX_LOG_BYTES:
            out = out[: MAX_LOG_BYTES - written]
            out += FULL
            full = True
        await log.write(out)
        written += len(out)
    if not full:
        await log.write(redactor.close())
