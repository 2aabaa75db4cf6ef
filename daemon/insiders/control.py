"""The control server: insidersctl's Unix socket, who may use it, and one task per connection.

The socket is $RUNTIME_DIR/control.sock: mode 0600 in user mode; 0660 with the daemon's group in
system mode (a system service: systemd set $RUNTIME_DIRECTORY and no $XDG_RUNTIME_DIR). Whatever
the file's mode, each peer's credentials (SO_PEERCRED, SO_PEERGROUPS) are checked: the daemon's
own uid, root, and in system mode members of its group; anyone else gets a "forbidden" reply.

A lock file beside the socket (flock, held for the daemon's life) makes a second daemon refuse to
start with "already running, pid N"; a socket file left by a daemon that died is replaced. With
socket activation systemd owns the socket and none of that applies.

Each connection is its own task: a greeting within `Limits.handshake`, then requests until the
client closes or idles past `Limits.idle`. When every slot is taken, a newcomer takes the slot of
the connection idle the longest (told so, then closed) rather than hearing "busy" while idle
clients hold the daemon. A malformed or unknown frame gets an error reply and
the connection goes on; an oversized or stalled one gets an error reply and is closed; a bug in a
handler is logged with its traceback and answered "internal". Nothing a client sends stops the
daemon.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from insiders import __version__
from insiders.commands import Commands, log_location
from insiders.errors import AlreadyRunning, ControlSocketError, InsidersError
from insiders.logfile import LOG_FILE, log_to_file
from insiders.logs import stderr_is_journal
from insiders.repos import Repos
from insiders.store import is_disk_full
from insidersctl import protocol as p
from insidersctl.client import ClientError, Connection, DaemonUnreachable, Refused
from insidersctl.paths import SOCKET_NAME, unix_address

if TYPE_CHECKING:
    from insiders.app import Daemon

__all__ = [
    "AlreadyRunning",
    "ControlSocketError",
    "Limits",
    "Peer",
    "serve_control",
    "system_mode",
]

log = logging.getLogger(__name__)

LOCK_NAME = "control.lock"
# Linux: SO_PEERGROUPS (since 4.13) is not exported by every Python's socket module.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


@dataclass(frozen=True)
class Limits:
    handshake: float = 5.0  # seconds for a new connection's greeting
    idle: float = 60.0  # seconds a connection may wait between requests
    send: float = 10.0  # seconds a client may take to accept a reply
    connections: int = 64  # connections served at once; more are answered "busy"
    linger: float = 1.0  # seconds to drain a refused client's input before closing


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def peer_of(sock: socket.socket | trio.socket.SocketType) -> Peer:
    """The credentials the kernel recorded for the other end when it connected."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    groups: tuple[int, ...] = ()
    for size in (4 * 64, 4 * 65536):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as error:
            if error.errno == errno.ERANGE:
                continue
            break  # an old kernel: the primary gid must do
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
        break
    return Peer(pid=pid, uid=uid, gid=gid, groups=groups)


@dataclass(frozen=True)
class Access:
    """Who may use the daemon: its own uid and root; in system mode, members of `group` too."""

    uid: int
    group: int | None = None

    def allows(self, peer: Peer) -> bool:
        if peer.uid in (0, self.uid):
            return True
        return self.group is not None and (peer.gid == self.group or self.group in peer.groups)

    def refusal(self, peer: Peer) -> str:
        allowed = f"its own user (uid {self.uid}) and root"
        if self.group is not None:
            allowed = (
                f"root, its user (uid {self.uid}) and members of the group {_group(self.group)}"
            )
        return f"uid {peer.uid} may not use this insidersd: only {allowed} may"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def system_mode(env: Mapping[str, str] = os.environ) -> bool:
    """A system service: systemd's RuntimeDirectory= without a user session's runtime dir."""
    return bool(env.get("RUNTIME_DIRECTORY")) and not env.get("XDG_RUNTIME_DIR")


# -- setting the socket up (blocking: run in a thread) -------------------------------------------


@dataclass
class Bound:
    sock: socket.socket
    path: Path
    inode: int
    lock_fd: int

    def close(self) -> None:
        """Remove the socket file if it is still ours, then let the lock go."""
        self.sock.close()
        try:
            if os.stat(self.path).st_ino == self.inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.lock_fd)


def bind_control_socket(path: Path, *, system: bool, group: int | None) -> Bound:
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o750 if system else 0o700)
    owner = directory.stat().st_uid
    if owner not in (os.geteuid(), 0):
        raise ControlSocketError(
            f"{directory} belongs to uid {owner}, not to this user: "
            "refusing to put the control socket there"
        )
    lock_fd = _take_lock(path)
    try:
        _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(path) as address:
                sock.bind(address)
        except BaseException:
            sock.close()
            raise
        try:
            # The file has the daemon's gid already, unless told otherwise: the system unit's
            # seccomp filter (~@privileged) refuses chown() even to one's own group.
            if system and group is not None and os.stat(path).st_gid != group:
                os.chown(path, -1, group)
            os.chmod(path, 0o660 if system else 0o600)
            sock.listen(128)
            return Bound(sock=sock, path=path, inode=os.stat(path).st_ino, lock_fd=lock_fd)
        except BaseException:
            sock.close()
            path.unlink(missing_ok=True)
            raise
    except BaseException:
        os.close(lock_fd)
        raise


def _take_lock(path: Path) -> int:
    lock_path = path.with_name(LOCK_NAME)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise AlreadyRunning(int(text) if text.isdigit() else None, path) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _clear_stale(path: Path) -> None:
    """Refuse if a live daemon answers on `path`; remove it if nothing listens there."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(f"{path} exists and is not a socket: move it away")
    try:
        with Connection.open(path, timeout=2.0) as other:
            pid = other.welcome.pid
    except DaemonUnreachable as error:
        if error.errno in (errno.ECONNREFUSED, errno.ENOENT):
            log.info("replacing the stale control socket %s (its daemon is gone)", path)
            path.unlink(missing_ok=True)
            return
        raise ControlSocketError(f"cannot check {path}: {error.reason}") from None
    except Refused:
        raise AlreadyRunning(None, path) from None  # an insidersd answered, if only to refuse
    except ClientError as error:
        raise ControlSocketError(
            f"something that is not insidersd listens on {path}: {error}"
        ) from None
    raise AlreadyRunning(pid, path)


# -- serving -----------------------------------------------------------------------------------


async def serve_control(
    daemon: Daemon,
    *,
    sock: socket.socket | None = None,
    system: bool | None = None,
    group: int | None = None,
    limits: Limits = Limits(),
    log_file: bool = True,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve insidersctl until cancelled; `task_status.started(path)` once it accepts.

    `sock`: an already listening socket (socket activation); otherwise the socket is bound at
    daemon.dirs.runtime / control.sock. `system`: None detects the mode from the environment;
    `group` (system mode) defaults to the daemon's own gid.
    """
    system = system_mode() if system is None else system
    access = Access(
        uid=os.geteuid(), group=(os.getgid() if group is None else group) if system else None
    )
    repos: Repos | None = getattr(daemon, "repos", None)
    if repos is None:
        # A daemon without a registry of its own (an older app.py): the control plane opens it.
        repos = await trio.to_thread.run_sync(Repos.open, daemon.dirs.data)
    with ExitStack() as stack:
        if sock is None:
            path = daemon.dirs.runtime / SOCKET_NAME
            bound = await trio.to_thread.run_sync(
                partial(bind_control_socket, path, system=system, group=access.group)
            )
            stack.callback(bound.close)
            listening = bound.sock
            how = "0660, group " + _group(access.group) if access.group is not None else "0600"
        else:
            if sock.family != socket.AF_UNIX:
                raise ControlSocketError(
                    f"the socket handed over for control is not a Unix socket: {sock}"
                )
            listening = sock
            stack.callback(sock.close)
            path = Path(str(sock.getsockname()))
            how = "socket activation"
        log_path = None
        if log_file and not stderr_is_journal():
            log_path = stack.enter_context(log_to_file(daemon.dirs.data / LOG_FILE))
        commands = Commands(
            daemon,
            repos,
            socket_path=path,
            logs=log_location(log_path, builds=daemon.dirs.data / "logs"),
        )
        server = ControlServer(commands, access, limits)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(listening))
        log.info("control socket %s (%s)", path, how)
        task_status.started(path)
        await trio.serve_listeners(server.handle, [listener])


class Reclaimed(InsidersError):
    """An idle connection's slot went to a newcomer."""


def _reclaimed() -> p.Error:
    return p.Error(
        code=p.TIMEOUT,
        message="closing this idle connection: another client needed its slot",
    )


class ControlServer:
    def __init__(self, commands: Commands, access: Access, limits: Limits) -> None:
        self.commands = commands
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
            finally:
                self._slots.release()

    async def _converse(self, stream: trio.SocketStream, peer: Peer) -> None:
        reader = p.FrameReader(p.MAX_REQUEST_SIZE)
        try:
            body = await self._receive(stream, reader, self.limits.handshake)
        except Reclaimed:
            await self._refuse(stream, _reclaimed())
            return
        except trio.TooSlowError:
            message = f"no greeting within {self.limits.handshake:g} s"
            await self._refuse(stream, p.Error(code=p.TIMEOUT, message=message))
            return
        except p.FrameTooLarge as error:
            await self._refuse(stream, p.Error(code=p.TOO_LARGE, message=str(error)))
            return
        if body is None:
            return
        if not self.access.allows(peer):
            log.warning("control: refused pid %d uid %d", peer.pid, peer.uid)
            message = self.access.refusal(peer)
            await self._refuse(stream, p.Error(code=p.FORBIDDEN, message=message))
            return
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
            return
        if hello.protocol != p.PROTOCOL_VERSION:
            message = (
                f"insidersctl {hello.client or '(unknown version)'} speaks control protocol "
                f"{hello.protocol}, this insidersd {__version__} speaks {p.PROTOCOL_VERSION}: use "
                "the insidersctl installed with the daemon"
            )
            await self._refuse(stream, p.Error(code=p.INCOMPATIBLE, message=message))
            return
        await self._send(stream, p.Welcome(daemon=__version__, pid=os.getpid()))
        while True:
            try:
                body = await self._receive(stream, reader, self.limits.idle)
            except Reclaimed:
                await self._refuse(stream, _reclaimed())
                return
            except trio.TooSlowError:
                message = f"no request for {self.limits.idle:g} s: closing"
                await self._refuse(stream, p.Error(code=p.TIMEOUT, message=message))
                return
            except p.FrameTooLarge as error:
                await self._refuse(stream, p.Error(code=p.TOO_LARGE, message=str(error)))
                return
            if body is None:
                return
            await self._send(stream, await self._answer(stream, peer, body))

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
            return await self.commands.handle(request, progress)
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

        Raises Reclaimed when the wait was for a client that sent nothing and its slot was
        given to another.
        """
        with trio.fail_after(within):
            while (body := reader.next_frame()) is None:
                key = object()
                with trio.CancelScope() as idle:
                    if not reader.pending:
                        self._idle[key] = idle
                    try:
                        data = await stream.receive_some(1 << 16)
                    finally:
                        self._idle.pop(key, None)
                if idle.cancelled_caught:
                    raise Reclaimed
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
