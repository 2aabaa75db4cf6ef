"""`--expires`: a lifetime (30d, 12h, 2w) or a date (2027-01-31, or a full ISO 8601 time).

Read by the client, which sends the daemon an absolute time: "30d" means thirty days from the
moment the person typed it. A date without a time means the start of that day in UTC.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from insidersctl.errors import BadExpiry, Usage

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LIFETIME = re.compile(r"^(\d+)\s*([mhdw])$")


def parse_expiry(text: str, now: float | None = None) -> float:
    """The wall-clock time `text` names; BadExpiry with a message a person can act on."""
    now = time.time() if now is None else now
    text = text.strip()
    if match := _LIFETIME.match(text.lower()):
        amount = int(match.group(1))
        if amount == 0:
            raise BadExpiry(f"--expires {text}: a lifetime must be more than zero")
        return now + amount * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadExpiry(
            f"--expires {text!r}: give a lifetime (30d, 12h, 2w, 90m) "
            "or a date (2027-01-31, or 2027-01-31T18:00+01:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when.timestamp() <= now:
        raise BadExpiry(f"--expires {text}: that is in the past")
    return when.timestamp()


def parse_age(text: str) -> float:
    """`--older-than`: a span (90m, 12h, 30d, 2w) in seconds; Usage with what to write instead."""
    match = _LIFETIME.match(text.strip().lower())
    if match is None:
        raise Usage(f"--older-than {text!r}: give a span of time (90m, 12h, 30d, 2w)")
    return float(int(match.group(1)) * _UNITS[match.group(2)])
