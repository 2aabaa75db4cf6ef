"""The control socket's file: bound once per daemon, guarded by a lock, a stale one replaced.

The socket is $RUNTIME_DIR/control.sock: mode 0600 in user mode; 0660 with the daemon's group in
system mode. A lock file beside it (flock, held for the daemon's life) makes a second daemon refuse
to start with "already running, pid N"; a socket file left by a daemon that died is replaced. With
socket activation systemd owns the socket and none of this applies. Everything here blocks: run it
in a thread.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from insiders.errors import AlreadyRunning, ControlSocketError
from insidersctl.client import ClientError, Connection, DaemonUnreachable, Refused
from insidersctl.paths import unix_address

log = logging.getLogger(__name__)

LOCK_NAME = "control.lock"


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
