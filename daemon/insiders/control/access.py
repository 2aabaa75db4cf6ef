"""Who may use the control socket: the peer's credentials as the kernel recorded them, and the rule.

The daemon's own uid and root always may; in system mode, members of the daemon's group too.
Whatever the socket file's mode, each peer is checked (SO_PEERCRED, SO_PEERGROUPS).
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import trio

# Linux: SO_PEERGROUPS (since 4.13) is not exported by every Python's socket module.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


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
                f"root, its user (uid {self.uid}) and members of the group {group_name(self.group)}"
            )
        return f"uid {peer.uid} may not use this insidersd: only {allowed} may"


def group_name(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def system_mode(env: Mapping[str, str] = os.environ) -> bool:
    """A system service: systemd's RuntimeDirectory= without a user session's runtime dir."""
    return bool(env.get("RUNTIME_DIRECTORY")) and not env.get("XDG_RUNTIME_DIR")
