"""Logging to stderr: `<N>` priority prefixes when journald holds stderr, timestamps otherwise."""

from __future__ import annotations

import logging
import os
import sys

# syslog priorities (sd-daemon(3)): what `journalctl -p` filters on.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """Every line of a record carries the priority: journald splits a traceback into lines."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def stderr_is_journal() -> bool:
    """JOURNAL_STREAM names the device and inode of the journal's stream (systemd.exec(5))."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
    # The libraries' own chatter is only useful when debugging.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


SHOWN = 200  # characters of a request's value that a log line (or a refusal) quotes


def shown(value: object, limit: int = SHOWN) -> str:
    """`value` as text, cut to `limit` characters with an ellipsis: a request's path or field
    can be 60 KB long, and a line per request would then fill the log and rotate its history
    away."""
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
