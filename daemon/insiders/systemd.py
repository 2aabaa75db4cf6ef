"""systemd integration: readiness and status (sd_notify), the watchdog, and socket activation.

Everything here degrades to nothing outside systemd: without NOTIFY_SOCKET the notifier is silent,
without WATCHDOG_USEC there is no watchdog task, and without LISTEN_FDS the daemon binds its own
sockets.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from typing import Any

import sdnotify
import trio

from insiders.errors import SocketActivationError

__all__ = ["Notifier", "SocketActivationError", "keep_watchdog", "listen_fds", "watchdog_interval"]

logger = logging.getLogger(__name__)

# sd_listen_fds(3): passed file descriptors start right after stdin, stdout and stderr.
LISTEN_FDS_START = 3


class Notifier:
    """sd_notify through the `sdnotify` package; a no-op when NOTIFY_SOCKET is unset.

    sdnotify swallows every error unless debug=True, which would hide a broken setup for ever; it is
    used with debug=True and the errors are handled here instead: a failed send is logged once (the
    daemon keeps serving: losing the notify socket must not take the index down). Like sd_notify(3),
    each message gets a socket of its own, so nothing is left open and the notifier recovers by
    itself when systemd re-creates its socket (daemon-reexec).
    """

    def __init__(self) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET") or None
        self._failing = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager asked for notifications (NOTIFY_SOCKET was set)."""
        return self._address is not None

    def ready(self, status: str) -> None:
        """Startup (or a reload) is complete: systemd moves the unit to `active`."""
        self._send("READY=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> None:
        """The line `systemctl status` shows under the unit."""
        self._send(f"STATUS={_one_line(status)}")

    def reloading(self) -> None:
        """A reload began; READY=1 ends it.

        MONOTONIC_USEC lets systemd match it with the reload it asked for (Type=notify-reload).
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "stopping") -> None:
        """Shutdown began: systemd shows `deactivating` instead of treating the exit as a crash."""
        self._send("STOPPING=1", f"STATUS={_one_line(status)}")

    def watchdog(self) -> None:
        """Still alive: resets systemd's watchdog timer (WatchdogSec=)."""
        self._send("WATCHDOG=1")

    def _send(self, *assignments: str) -> None:
        if self._address is None:
            return
        # One datagram carries all the assignments: systemd sees READY=1 and its STATUS= together.
        message = "\n".join(assignments)
        notifier: Any = None
        try:
            # sdnotify reads NOTIFY_SOCKET itself and understands the abstract "@name" form. When
            # its connect fails it drops the socket unclosed: that ResourceWarning is noise here.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                notifier = sdnotify.SystemdNotifier(debug=True)
            notifier.notify(message)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                logger.warning(
                    "cannot notify systemd through NOTIFY_SOCKET=%s (%s); "
                    "status and watchdog messages are lost until it answers again",
                    self._address,
                    exc,
                )
        else:
            if self._failing:
                self._failing = False
                logger.info("notifying systemd works again")
        finally:
            if notifier is not None and notifier.socket is not None:
                notifier.socket.close()


def _one_line(text: str) -> str:
    # A newline would start a new assignment in the datagram.
    return " ".join(text.splitlines())


def watchdog_interval() -> float | None:
    """Seconds between pings: half of WATCHDOG_USEC, when the watchdog is on for this pid.

    None when there is no watchdog, or when WATCHDOG_PID names another process.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    try:
        if pid and int(pid) != os.getpid():
            return None  # meant for the process that forked us
        value = int(usec)
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC=%r WATCHDOG_PID=%r: not numbers", usec, pid)
        return None
    if value <= 0:
        return None
    return value / 2 / 1_000_000


async def keep_watchdog(
    notifier: Notifier, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Ping from the event loop forever (so a hung loop is caught); returns at once if no watchdog.

    The ping comes from a task rather than a thread on purpose: a thread would go on pinging while
    the event loop hangs, and systemd would never restart a daemon that no longer serves anything.
    """
    interval = watchdog_interval() if notifier.enabled else None
    task_status.started()
    if interval is None:
        return
    logger.debug("watchdog: pinging systemd every %.3gs", interval)
    while True:
        notifier.watchdog()
        await trio.sleep(interval)


def listen_fds() -> dict[str, list[socket.socket]]:
    """Sockets handed over by socket activation, keyed by FileDescriptorName= (`http`, `control`).

    Follows sd_listen_fds_with_names(3): only when LISTEN_PID is our pid; the fds are 3 ..
    3+LISTEN_FDS-1; LISTEN_FDNAMES names them in order (without it every socket is keyed `unknown`).
    The three variables are unset in any case so that children (git, builds) do not inherit them,
    and every fd gets FD_CLOEXEC. Returns an empty dict when the process was not socket-activated.

    To hand a socket to hypercorn as an `fd://N` bind, pass `sock.detach()` as N: hypercorn wraps
    the fd in a socket object of its own, and two objects owning one fd would close it twice.
    """
    pid = os.environ.pop("LISTEN_PID", None)
    count = os.environ.pop("LISTEN_FDS", None)
    names_value = os.environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None:
        return {}
    try:
        if int(pid) != os.getpid():
            return {}
        n = int(count)
    except ValueError:
        raise SocketActivationError(
            f"malformed socket activation variables LISTEN_PID={pid!r} LISTEN_FDS={count!r}"
        ) from None
    if n <= 0:
        return {}
    names = names_value.split(":") if names_value else []
    if names and len(names) != n:
        raise SocketActivationError(f"LISTEN_FDS={n} but LISTEN_FDNAMES={names_value!r}")
    sockets: dict[str, list[socket.socket]] = {}
    for index, fd in enumerate(range(LISTEN_FDS_START, LISTEN_FDS_START + n)):
        name = names[index] if names and names[index] else "unknown"
        try:
            os.set_inheritable(fd, False)
            # Family, type and protocol are read from the fd itself.
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            for taken in sockets.values():
                for other in taken:
                    other.close()
            raise SocketActivationError(f"fd {fd} ({name}) is not a usable socket: {exc}") from exc
        sockets.setdefault(name, []).append(sock)
    logger.debug(
        "socket activation: %s",
        ", ".join(f"{name}={[s.fileno() for s in socks]}" for name, socks in sockets.items()),
    )
    return sockets


def own_unit(cgroup_file: str = "/proc/self/cgroup") -> tuple[str | None, bool]:
    """The service unit this process runs in, and whether a user's service manager runs it."""
    try:
        with open(cgroup_file) as file:
            lines = file.read().splitlines()
    except OSError:
        return None, False
    for line in lines:
        path = line.split(":", 2)[-1]
        units = [part for part in path.split("/") if part.endswith(".service")]
        if units:
            return units[-1], any(part.startswith("user@") for part in path.split("/"))
    return None, False
