"""A blocking connection to insidersd's control socket: handshake, requests, progress, replies.

Blocking sockets on purpose: the client does one thing at a time and must start fast, so no event
loop is imported. Its exceptions are the `ClientError` branch of insidersctl.errors, named here too.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path

from insidersctl import __version__
from insidersctl.errors import ClientError, ConnectionFailed, DaemonUnreachable, Refused
from insidersctl.paths import connect_unix
from insidersctl.protocol import (
    MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    Error,
    FrameReader,
    Hello,
    Progress,
    ProtocolError,
    Reply,
    Request,
    ServerMessage,
    Welcome,
    decode_server_message,
    encode_frame,
)

__all__ = ["ClientError", "Connection", "ConnectionFailed", "DaemonUnreachable", "Refused"]


class Connection:
    """One open, greeted connection; use as a context manager."""

    def __init__(self, sock: socket.socket, path: Path) -> None:
        self._sock = sock
        self.path = path
        self._reader = FrameReader(MAX_FRAME_SIZE)
        self.welcome = Welcome()

    @classmethod
    def open(cls, path: Path, *, timeout: float | None = 10.0) -> Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            connect_unix(sock, path)
        except OSError as error:
            sock.close()
            raise _unreachable(path, error) from None
        connection = cls(sock, path)
        try:
            connection.send(Hello(client=__version__))
            first = connection.receive()
        except ClientError:
            connection.close()
            raise
        if isinstance(first, Error):
            connection.close()
            raise Refused(first)
        if not isinstance(first, Welcome):
            connection.close()
            raise ConnectionFailed(
                f"insidersd answered the greeting with {first.__class__.__name__}"
            )
        if first.protocol != PROTOCOL_VERSION:
            connection.close()
            raise ConnectionFailed(
                f"insidersd {first.daemon} speaks control protocol {first.protocol}, this "
                f"insidersctl {__version__} speaks {PROTOCOL_VERSION}: use the insidersctl that "
                "was installed with the daemon"
            )
        connection.welcome = first
        return connection

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def send(self, message: Request | Hello) -> None:
        try:
            self._sock.sendall(encode_frame(message))
        except TimeoutError:
            raise ConnectionFailed("insidersd stopped reading the connection") from None
        except OSError as error:
            raise ConnectionFailed(f"insidersd closed the connection ({error.strerror})") from None

    def receive(self, idle: Callable[[], None] | None = None) -> ServerMessage:
        """The next message; the socket's timeout bounds the wait, or, with `idle`, is the
        interval at which `idle` is called while nothing arrives (a live view's clock)."""
        while True:
            try:
                body = self._reader.next_frame()
            except ProtocolError as error:
                raise ConnectionFailed(f"insidersd sent a bad frame: {error}") from None
            if body is not None:
                try:
                    return decode_server_message(body)
                except ProtocolError as error:
                    raise ConnectionFailed(
                        f"cannot read insidersd's reply ({error}); is it a newer version?"
                    ) from None
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                if idle is None:
                    raise ConnectionFailed("insidersd did not answer in time") from None
                idle()
                continue
            except OSError as error:
                raise ConnectionFailed(f"connection to insidersd lost ({error.strerror})") from None
            if not data:
                raise ConnectionFailed("insidersd closed the connection without a reply")
            self._reader.feed(data)

    def call(
        self,
        request: Request,
        *,
        progress: Callable[[Progress], None] | None = None,
        timeout: float | None = 60.0,
        idle: Callable[[], None] | None = None,
        idle_every: float = 0.5,
    ) -> Reply:
        """Send `request`, pass progress events on, return the final reply; Error -> Refused.

        `timeout` bounds each wait for the next message, not the whole operation. `idle` (only
        without a timeout) is called every `idle_every` seconds while nothing arrives.
        """
        if idle is not None and timeout is not None:
            raise ValueError("idle calls are for waits without a timeout")
        self._sock.settimeout(idle_every if idle is not None else timeout)
        self.send(request)
        while True:
            message = self.receive(idle)
            if isinstance(message, Progress):
                if progress is not None:
                    progress(message)
                continue
            if isinstance(message, Error):
                raise Refused(message)
            if isinstance(message, Welcome):
                raise ConnectionFailed("insidersd greeted twice")
            return message


def _unreachable(path: Path, error: OSError) -> DaemonUnreachable:
    code = error.errno
    if isinstance(error, FileNotFoundError):
        reason = "insidersd is not running: there is no control socket"
    elif isinstance(error, ConnectionRefusedError):
        reason = "insidersd is not running: nothing listens on the control socket"
    elif isinstance(error, PermissionError):
        reason = "no permission to use insidersd's control socket"
    elif isinstance(error, TimeoutError):
        reason = "insidersd does not accept connections"
    elif code == errno.ENOTSOCK:
        reason = "the control socket path is not a socket"
    else:
        reason = f"cannot connect to insidersd: {error.strerror or error}"
    return DaemonUnreachable(path, reason, code)
