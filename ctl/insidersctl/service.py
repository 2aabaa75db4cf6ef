"""`insidersctl server start|stop`, as people who knew the tool before insiders expect them.

insidersd is started by its service manager, so `start` asks systemd to start the unit when one
is installed (the user's own unit first, then the system's) and says exactly what it ran; with no
unit it says in one line how to start the daemon. `stop` stops the daemon that answers: through
systemd when systemd runs it, else with SIGTERM to the pid the daemon gave (a clean stop, never
SIGKILL). Exit status: 0 done (or nothing to do: already running, not running), 1 the action
failed, 3 no daemon and nothing here that can start one.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

from insidersctl import protocol as p
from insidersctl.client import Connection
from insidersctl.context import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, Context
from insidersctl.errors import ClientError, DaemonUnreachable

UNIT = "insiders.service"


def systemctl(*args: str, user: bool) -> list[str]:
    return ["systemctl", "--user", *args] if user else ["systemctl", *args]


def unit_loaded(*, user: bool, unit: str = UNIT) -> bool:
    """Whether that service manager answers and has the unit installed."""
    if shutil.which("systemctl") is None:
        return False
    command = systemctl("show", "--property=LoadState", "--value", unit, user=user)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "loaded"


def _run(command: list[str]) -> int:
    """Run a systemctl command in the open (its own messages and password prompt reach the user)."""
    sys.stdout.flush()
    return subprocess.call(command)


def _shown(command: list[str]) -> str:
    return " ".join(command)


def _not_running(error: DaemonUnreachable) -> bool:
    """No daemon at all, as opposed to one this user may not reach (that is an error)."""
    return error.errno in (errno.ENOENT, errno.ECONNREFUSED)


def start(ctx: Context) -> int:
    try:
        connection = ctx.connect()
    except DaemonUnreachable as error:
        # A socket this user may not use (the system service's, say) tells nothing of the
        # user's own daemon: with a user unit installed, start that one.
        if not _not_running(error) and not unit_loaded(user=True):
            raise
    else:
        print(f"insidersd is running already (pid {connection.welcome.pid}, {connection.path})")
        return EXIT_OK
    for user in (True, False):
        if unit_loaded(user=user):
            command = systemctl("start", UNIT.removesuffix(".service"), user=user)
            status = _run(command)
            if status != 0:
                from insidersctl import installation

                print(
                    f"insidersctl: `{_shown(command)}` failed (exit status {status}); "
                    f"why: `{installation.command('insidersctl')} logs`",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            print(f"started insidersd: ran `{_shown(command)}`")
            return EXIT_OK
    print(
        "insidersctl: insidersd is not running, and no insiders unit is installed for systemd: "
        f"run {without_unit(system=False)}",
        file=sys.stderr,
    )
    return EXIT_UNREACHABLE


def how_to_start(*, system: bool) -> str:
    """The command that starts the daemon here, for a hint: its unit's when one is installed,
    else insidersd itself as this installation names it."""
    if unit_loaded(user=not system):
        return "`sudo systemctl start insiders`" if system else "`systemctl --user start insiders`"
    return without_unit(system=system)


def without_unit(*, system: bool) -> str:
    """How to start the daemon with no unit installed: by hand, or by having systemd run it
    (`server enable`), each named so that it runs here (a venv's bin may not be on PATH)."""
    from insidersctl import installation

    if system:
        enable = f"sudo {installation.command('insidersctl', sudo=True)} server enable"
    else:
        enable = f"{installation.command('insidersctl')} server enable --user"
    return f"`{installation.command('insidersd')}`, or have systemd run it: `{enable}`"


def stop(ctx: Context) -> int:
    try:
        connection = ctx.connect()
    except DaemonUnreachable as error:
        if not _not_running(error):
            raise
        print("insidersd is not running")
        return EXIT_OK
    pid, path = connection.welcome.pid, connection.path
    where = ctx.call(p.Logs(), p.LogsLocation)
    ctx.close()
    if where.journal and where.unit:
        command = systemctl("stop", where.unit, user=where.user)
        status = _run(command)
        if status != 0:
            print(
                f"insidersctl: `{_shown(command)}` failed (exit status {status})", file=sys.stderr
            )
            return EXIT_FAILED
        print(f"stopped insidersd: ran `{_shown(command)}`")
        return EXIT_OK
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("insidersd is not running")  # it ended between the answer and the signal
        return EXIT_OK
    except PermissionError:
        print(
            f"insidersctl: no permission to stop insidersd (pid {pid}): it runs as another user",
            file=sys.stderr,
        )
        return EXIT_FAILED
    # It stops cleanly (it may finish a step first): wait until its socket answers no more.
    deadline = time.monotonic() + max(ctx.timeout, 1.0)
    while time.monotonic() < deadline:
        try:
            Connection.open(path, timeout=1.0).close()
        except DaemonUnreachable:
            print(f"stopped insidersd (pid {pid}) with SIGTERM")
            return EXIT_OK
        except ClientError:
            pass  # stopping: it answers no more requests
        time.sleep(0.1)
    print(
        f"insidersctl: sent SIGTERM to insidersd (pid {pid}); it has not stopped after "
        f"{ctx.timeout:g} s",
        file=sys.stderr,
    )
    return EXIT_FAILED
