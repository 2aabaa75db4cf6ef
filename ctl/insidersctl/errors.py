"""Every exception insidersctl raises on purpose, under one base; each message is for a person.

The tree (the module that raises each in brackets):

    InsidersctlError
    ├── ProtocolError            a frame or message that cannot be understood [protocol]
    │   ├── FrameTooLarge        a frame over the size limit, refused from its header
    │   ├── BadMessage           a whole frame whose body is no valid message
    │   └── UnknownMessage       a valid message of a type this side does not know (newer peer)
    ├── ClientError              what kept a request from its reply [client]
    │   ├── DaemonUnreachable    nothing answers at the control socket (exit status 3)
    │   ├── Refused              the daemon answered with an Error reply (its code is kept)
    │   └── ConnectionFailed     the daemon closed early, stalled, or spoke nonsense
    ├── UnitError                why `server enable|disable` cannot do it here: no service
    │                            manager, a unit file someone else wrote, a path the unit cannot
    │                            run [unitfiles]
    └── Usage                    a command line that parses but makes no sense (exit status 2)
        ├── BadExpiry            a --expires that names no future time [expiry]; also a ValueError
        ├── LogOptionError       a --priority, --since or --until not understood [logs]; also a
        │                        ValueError
        └── BadLine              argparse's error in the partial parser: the full one words it [cli]

The daemon speaks the same protocol and catches the protocol errors (and, for its stale-socket
probe, the client errors) from here; its own errors have their own base, insiders.errors.
`cli.main` is the one place that turns these into a message and an exit status.

Standard library only: imported by every command, which must start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class InsidersctlError(Exception):
    """Anything insidersctl refuses or fails at on purpose; the message is meant for a person."""


# -- the protocol ------------------------------------------------------------------------------


class ProtocolError(InsidersctlError):
    """A frame or message that cannot be understood; the message says what was wrong."""


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"a frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class BadMessage(ProtocolError):
    """A complete frame whose body is not a valid message."""


class UnknownMessage(ProtocolError):
    """A well-formed message of a type this side does not know (the peer is newer)."""

    def __init__(self, tag: str) -> None:
        super().__init__(f"unknown message type {tag!r}")
        self.tag = tag


# -- the connection ----------------------------------------------------------------------------


class ClientError(InsidersctlError):
    """Anything that kept a request from getting its reply."""


class DaemonUnreachable(ClientError):
    def __init__(self, path: Path, reason: str, code: int | None = None) -> None:
        super().__init__(f"{reason} ({path})")
        self.path = path
        self.reason = reason
        self.errno = code


class ErrorReply(Protocol):
    """The shape of protocol.Error (named here as a shape: the protocol imports this module)."""

    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...


class Refused(ClientError):
    """The daemon's Error reply, kept whole: `error.code` is for scripts."""

    def __init__(self, error: ErrorReply) -> None:
        super().__init__(error.message)
        self.error = error


class ConnectionFailed(ClientError):
    """The connection broke, stalled, or carried something this client cannot read."""


# -- the service manager ------------------------------------------------------------------------


class UnitError(InsidersctlError):
    """Why the units cannot be written, enabled or removed for this installation (exit status 1)."""


# -- the command line --------------------------------------------------------------------------


class Usage(InsidersctlError):
    """A command line that parses but makes no sense; exit status 2."""


class BadExpiry(Usage, ValueError):
    """A --expires value that names no future time."""


class LogOptionError(Usage, ValueError):
    """A log option's value that cannot be understood."""


class BadLine(Usage):
    """The partial parser's error: the full parser is asked to say it properly."""
