"""What every command works with: its arguments, the connection to insidersd, and where it prints.

Its own module so that the command modules (cli, service) share it without importing each other.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from insidersctl import protocol as p
from insidersctl.client import Connection
from insidersctl.errors import ConnectionFailed, DaemonUnreachable, Usage
from insidersctl.output import to_json
from insidersctl.paths import socket_candidates

# Exit statuses (the --help epilog and the README list them).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

R = TypeVar("R", bound=p.Reply)


class Context:
    """What a command needs: its arguments, the way to the daemon, and where to print."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = args.json
        self.timeout: float = args.timeout
        self._connection: Connection | None = None

    def candidates(self) -> list[Path]:
        """The control sockets to try; Usage if the config file named by -c cannot be read."""
        args = self.args
        try:
            return socket_candidates(
                socket_path=args.socket, runtime=args.runtime_dir, config=args.config
            )
        except OSError as error:
            raise Usage(f"cannot read the config file {args.config}: {error.strerror}") from None

    def connect(self) -> Connection:
        if self._connection is None:
            failures: list[DaemonUnreachable] = []
            for path in self.candidates():
                try:
                    self._connection = Connection.open(path, timeout=self.timeout)
                    break
                except DaemonUnreachable as error:
                    failures.append(error)
            else:
                # The first path is the one this user's daemon would use: report it, unless a
                # later one exists and said something more useful (e.g. no permission).
                present = [f for f in failures if f.errno != errno.ENOENT]
                raise (present or failures)[0]
        return self._connection

    def call(
        self,
        request: p.Request,
        expect: type[R],
        *,
        progress: Callable[[p.Progress], None] | None = None,
        long: bool = False,
        idle: Callable[[], None] | None = None,
    ) -> R:
        """The reply to `request`, of type `expect`; `long`: no time limit between messages
        (`idle` is then called twice a second while none comes)."""
        timeout = None if long else self.timeout
        reply = self.connect().call(
            request, progress=progress, timeout=timeout, idle=idle if long else None
        )
        if not isinstance(reply, expect):
            raise ConnectionFailed(
                f"insidersd answered {reply.__class__.__name__} to {request.__class__.__name__}"
            )
        return reply

    def answer(
        self, request: p.Request, expect: type[R], show: Callable[[R], None], *, long: bool = False
    ) -> int:
        """Ask, then print the reply: as JSON with --json, else as `show` words it.

        The whole of most commands: each differs only in what it asks and how it words the reply.
        """
        reply = self.call(request, expect, long=long)
        if self.json:
            self.emit(reply)
        else:
            show(reply)
        return EXIT_OK

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def emit(self, message: p.Reply) -> None:
        print(to_json(message))


def out(text: str = "") -> None:
    print(text)


def note(text: str) -> None:
    print(text, file=sys.stderr)
