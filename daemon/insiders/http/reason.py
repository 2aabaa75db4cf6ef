"""The reason phrase of the HTTP/1.1 status line, for clients that show nothing else of a refusal.

hatch, pdm and flit print a refused upload as its status line alone ("Client error '403 '"), and
twine does without --verbose; the public index puts its message there ("400 File already exists").
ASGI has no field for a reason phrase, and hypercorn builds `h11.Response(status_code, headers)`
without one. So the app names the phrase in the private response header `x-insiders-reason`, and
hypercorn's HTTP/1.1 protocol is given one small wrapper around the method that hands h11 its
events: a response carrying that header loses it and gets the phrase instead. (HTTP/2 has no
reason phrase; there the header reaches the client as it is, beside the same text in the body.)

The same kind of replacement as `graceful`, for the same reason: hypercorn offers no hook.
tests/test_access.py reads the raw status line, so a hypercorn that changed shape fails there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import h11
from hypercorn.protocol import h11 as hypercorn_h11

log = logging.getLogger(__name__)

REASON_HEADER = b"x-insiders-reason"
MAX_REASON = 1000
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def reason_header(message: str) -> tuple[bytes, bytes]:
    """The header that puts `message` (its first line, printable ASCII) in the status line."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    return REASON_HEADER, _NOT_PRINTABLE.sub("?", first)[:MAX_REASON].encode("ascii")


SendEvent = Callable[[Any, Any], Awaitable[None]]


def _with_reason(original: SendEvent) -> SendEvent:
    async def send_h11_event(self: Any, event: Any) -> None:
        if isinstance(event, h11.Response):
            reason = b""
            headers = []
            for name, value in event.headers:
                if name == REASON_HEADER:
                    reason = value
                else:
                    headers.append((name, value))
            if reason:
                event = h11.Response(
                    status_code=event.status_code,
                    headers=headers,
                    http_version=event.http_version,
                    reason=reason,
                )
        await original(self, event)

    send_h11_event.__wrapped__ = original  # type: ignore[attr-defined]
    return send_h11_event


def install() -> None:
    """Wrap hypercorn's h11 event writer once; a hypercorn that changed shape is left alone."""
    protocol = hypercorn_h11.H11Protocol
    current = getattr(protocol, "_send_h11_event", None)
    if current is None:
        log.warning("hypercorn changed: refusals go out without a reason phrase")
        return
    if not hasattr(current, "__wrapped__"):
        protocol._send_h11_event = _with_reason(current)  # type: ignore[method-assign,assignment]
