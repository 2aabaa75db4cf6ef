"""The control server: one task per insidersctl connection, each request handed to a `Handler`.

Each connection is its own task: a greeting within `Limits.handshake`, then requests until the
client closes or idles past `Limits.idle`; a frame that began must end within `Limits.frame`.
When every slot is taken, a newcomer takes the slot of the connection that has waited for its
client the longest (told so, then closed), whether it waits between frames or inside one, rather
than hearing "busy" while silent clients hold the daemon; only a request being answered holds its
slot. A malformed or unknown frame (one nested deeper than the protocol's MAX_DEPTH included)
gets an error reply and the connection goes on; an oversized or stalled one gets an error reply
and is closed; a bug in a handler is logged with its traceback and answered "internal". Every
refusal is a reply. Nothing a client sends stops the daemon.

Who may connect is insiders.control.access; the socket file is insiders.control.socket; what a
request does is insiders.control.commands.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from insiders import __version__
from insiders.errors import ControlSocketError, Reclaimed, Stalled
from insiders.fsutil import is_disk_full
from insidersctl import protocol as p

from .access import Access, Peer, group_name, peer_of, system_mode
from .socket import bind_control_socket

log = logging.getLogger(__name__)

SendEvent = Callable[[p.Progress], Awaitable[None]]
# What answers one request: the reply, after any number of progress events.
Handler = Callable[[p.Request, SendEvent], Awaitable[p.Reply]]


@dataclass(frozen=True)
class Limits:
    handshake: float = 5.0  # seconds for a new connection's greeting
    idle: float = 60.0  # seconds a connection may wait between requests
    # Seconds a frame that began has to arrive whole: insidersctl writes one at once, over a
    # local socket, so a frame still partial after this is a client that stalled.
    frame: float = 5.0
    send: float = 10.0  # seconds a client may take to accept a reply
    connections: int = 64  # connections served at once; more are answered "busy"
    linger: float = 1.0  # seconds to drain a refused client's input before closing


async def serve_control(
    handle: Handler,
    *,
    path: Path,
    sock: socket.socket | None = None,
    system: bool | None = None,
    group: int | None = None,
    limits: Limits = Limits(),
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve insidersctl until cancelled; `task_status.started(path)` once it accepts.

    `sock`: an already listening socket (socket activation); otherwise the socket is bound at
    `path`. `system`: None detects the mode from the environment; `group` (system mode) defaults
    to the daemon's own gid.
    """
    system = system_mode() if system is None else system
    access = Access(
        uid=os.geteuid(), group=(os.getgid() if group is None else group) if system else None
    )
    with ExitStack() as stack:
        if sock is None:
            bound = await trio.to_thread.run_sync(
                partial(bind_control_socket, path, system=system, group=access.group)
            )
            stack.callback(bound.close)
            listening = bound.sock
            how = "0660, group " + group_name(access.group) if access.group is not None else "0600"
        else:
            if sock.family != socket.AF_UNIX:
                raise ControlSocketError(
                    f"the socket handed over for control is not a Unix socket: {sock}"
                )
            listening = sock
            stack.callback(sock.close)
            path = Path(str(sock.getsockname()))
            how = "socket activation"
        server = ControlServer(handle, access, limits)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(listening))
        log.info("control socket %s (%s)", path, how)
        task_status.started(path)
        await trio.serve_listeners(server.handle, [listener])


def _reclaimed() -> p.Error:
    return p.Error(
        code=p.TIMEOUT,
        message="closing this idle connection: another client needed its slot",
    )


class ControlServer:
    def __init__(self, answer: Handler, access: Access, limits: Limits) -> None:
        self.answer = answer
        self.access = access
        self.limits = limits
        self._slots = trio.Semaphore(limits.connections)
        # Connections waiting for a client that sends nothing, oldest wait first: a newcomer
        # that finds no free slot closes the first of them.
        self._idle: dict[object, trio.CancelScope] = {}

    async def handle(self, stream: trio.SocketStream) -> None:
        """One connection, start to end; never raises (bar cancellation)."""
        async with stream:
            # A burst waits briefly for a slot; a flood is told "busy" instead of piling up.
            with trio.move_on_after(self.limits.handshake) as waiting:
                if self._slots.value == 0 and self._idle:
                    oldest = next(iter(self._idle))
                    self._idle.pop(oldest).cancel()
                await self._slots.acquire()
            if waiting.cancelled_caught:
                message = (
                    f"insidersd serves {self.limits.connections} connections at once: try again"
                )
                await self._refuse(stream, p.Error(code=p.BUSY, message=message))
                return
            try:
                await self._converse(stream, peer_of(stream.socket))
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                log.debug("control: a client went away or stopped reading")
            except Exception:
                log.exception("control: unexpected error on a connection (it is closed)")
                message = "insidersd failed on this connection: this is a bug; its log has more"
                await self._refuse(stream, p.Error(code=p.INTERNAL, message=message))
            finally:
                self._slots.release()

    async def _converse(self, stream: trio.SocketStream, peer: Peer) -> None:
        reader = p.FrameReader(p.MAX_REQUEST_SIZE)
        greeting = f"no greeting within {self.limits.handshake:g} s"
        body = await self._next(stream, reader, self.limits.handshake, greeting)
        if body is None or not await self._greet(stream, peer, body):
            return
        silence = f"no request for {self.limits.idle:g} s: closing"
        while (body := await self._next(stream, reader, self.limits.idle, silence)) is not None:
            await self._send(stream, await self._answer(stream, peer, body))

    async def _next(
        self, stream: trio.SocketStream, reader: p.FrameReader, within: float, silence: str
    ) -> bytes | None:
        """The next frame's body; None once the connection is over (the client left, or was
        told why it is closed: `silence` when nothing came `within` seconds)."""
        try:
            return await self._receive(stream, reader, within)
        except Reclaimed:
            error = _reclaimed()
        except Stalled:
            message = f"a frame began and did not end within {self.limits.frame:g} s: closing"
            error = p.Error(code=p.TIMEOUT, message=message)
        except trio.TooSlowError:
            error = p.Error(code=p.TIMEOUT, message=silence)
        except p.FrameTooLarge as too_large:
            error = p.Error(code=p.TOO_LARGE, message=str(too_large))
        await self._refuse(stream, error)
        return None

    async def _greet(self, stream: trio.SocketStream, peer: Peer, body: bytes) -> bool:
        """Check the peer and its hello, and welcome it; False when it was refused."""
        if not self.access.allows(peer):
            log.warning("control: refused pid %d uid %d", peer.pid, peer.uid)
            message = self.access.refusal(peer)
            await self._refuse(stream, p.Error(code=p.FORBIDDEN, message=message))
            return False
        try:
            hello = p.decode_client_message(body)
        except p.ProtocolError as error:
            hello = None
            problem = str(error)
        if not isinstance(hello, p.Hello):
            if hello is not None:
                problem = f"it began with {type(hello).__name__}"
            message = f"a connection opens with hello: {problem}"
            await self._refuse(stream, p.Error(code=p.BAD_REQUEST, message=message))
            return False
        if hello.protocol != p.PROTOCOL_VERSION:
            message = (
                f"insidersctl {hello.client or '(unknown version)'} speaks control protocol "
                f"{hello.protocol}, this insidersd {__version__} speaks {p.PROTOCOL_VERSION}: use "
                "the insidersctl installed with the daemon"
            )
            await self._refuse(stream, p.Error(code=p.INCOMPATIBLE, message=message))
            return False
        await self._send(stream, p.Welcome(daemon=__version__, pid=os.getpid()))
        return True

    async def _answer(self, stream: trio.SocketStream, peer: Peer, body: bytes) -> p.Reply:
        try:
            request = p.decode_client_message(body)
        except p.UnknownMessage as error:
            return p.Error(
                code=p.UNKNOWN_REQUEST,
                message=f"this insidersd ({__version__}) does not know the request {error.tag!r}; "
                "is insidersctl newer than the daemon?",
            )
        except p.ProtocolError as error:
            return p.Error(code=p.BAD_REQUEST, message=str(error))
        if isinstance(request, p.Hello):
            return p.Error(code=p.BAD_REQUEST, message="hello was said already")
        log.debug("control: pid %d uid %d: %s", peer.pid, peer.uid, type(request).__name__)
        gone = False

        async def progress(event: p.Progress) -> None:
            # A client that left or stalls misses the events; the operation itself goes on.
            nonlocal gone
            if gone:
                return
            try:
                await self._send(stream, event)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                gone = True

        try:
            return await self.answer(request, progress)
        except OSError as error:
            # The disk, not the request: say what failed where, not "this is a bug".
            log.error("control: %s failed: %s", type(request).__name__, error)
            if is_disk_full(error):
                return p.Error(
                    code=p.NO_SPACE,
                    message=f"no space left on the disk of {error.filename or 'the data'}: "
                    "nothing was changed; free some space and try again",
                )
            return p.Error(
                code=p.UNAVAILABLE,
                message=f"insidersd could not {type(request).__name__}: {error.strerror} "
                f"({error.filename or 'no file'})",
            )
        except Exception:
            log.exception("control: %s failed", type(request).__name__)
            return p.Error(
                code=p.INTERNAL,
                message=f"insidersd failed on {type(request).__name__}: "
                "this is a bug; the daemon's log has the details",
            )

    async def _receive(
        self, stream: trio.SocketStream, reader: p.FrameReader, within: float
    ) -> bytes | None:
        """The next frame's body, None at end of stream (a truncated frame is dropped).

        Every wait for the client, between frames or inside one, may lose its slot to a newcomer
        (Reclaimed): a slot is held against others only while a request is answered. A frame that
        began has `Limits.frame` seconds to end (Stalled).
        """
        frame_deadline = trio.current_time() + self.limits.frame if reader.pending else math.inf
        with trio.fail_after(within):
            while (body := reader.next_frame()) is None:
                if reader.pending and frame_deadline == math.inf:
                    frame_deadline = trio.current_time() + self.limits.frame
                key = object()
                with trio.CancelScope(deadline=frame_deadline) as waiting:
                    self._idle[key] = waiting
                    try:
                        data = await stream.receive_some(1 << 16)
                    finally:
                        self._idle.pop(key, None)
                if waiting.cancelled_caught:
                    raise Stalled if trio.current_time() >= frame_deadline else Reclaimed
                if not data:
                    if reader.pending:
                        log.debug("control: a client left in the middle of a frame")
                    return None
                reader.feed(data)
            return body

    async def _send(
        self, stream: trio.SocketStream, message: p.Reply | p.Welcome | p.Progress
    ) -> None:
        try:
            frame = p.encode_frame(message)
        except p.FrameTooLarge as error:
            frame = p.encode_frame(
                p.Error(code=p.TOO_LARGE, message=f"the reply is too large: {error}")
            )
        with trio.fail_after(self.limits.send):
            await stream.send_all(frame)

    async def _refuse(self, stream: trio.SocketStream, error: p.Error) -> None:
        """Send a last error, then close gently.

        Best effort: a client that does not read is not waited for. What the client sent and we
        did not read is drained (briefly) before closing, because closing a Unix socket with
        unread data makes the client's next read fail with ECONNRESET instead of end-of-file.
        """
        try:
            await self._send(stream, error)
            with trio.move_on_after(self.limits.linger):
                await stream.send_eof()
                while await stream.receive_some(1 << 16):
                    pass  # discarded on purpose: the connection is being closed
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            log.debug("control: the client left before the error %s", error.code)
