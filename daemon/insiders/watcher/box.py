"""The box a build runs in: nothing of it outlives it.

insidersd runs every build as

    python -I box.py --lifeline FD -- bwrap ... -- nice -n 10 python -m build ...

and this small supervisor (standard library only, so it starts fast and imports nothing of the
daemon) runs the command, then kills whatever the command left behind. What the build may see
and write is the sandbox's inside it (insiders.watcher.sandbox: bubblewrap).

Why this design, and not the others:

- `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process: trio
  starts subprocesses from a worker thread that ends after idling, which would kill healthy builds.
  It also covers the direct child only, not the build backend that `build` starts.
- A process group is left by any `setsid` (a build hook that starts a daemon does exactly that).
- A cgroup (a systemd scope) needs the service manager's D-Bus and delegation, which the hardened
  system unit does not have.
- So the supervisor makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`): every process of the
  build, one that calls `setsid` or forks twice included, stays its descendant (inside the
  sandbox, bubblewrap's PID namespace holds them too: its first process dying kills them all). It
  holds the read end of a pipe whose write end only insidersd holds. End-of-file on that pipe
  (insidersd cancelled the build, or insidersd died, `kill -9` included: the kernel closes its
  descriptors) makes it kill every descendant and exit. When the command ends on its own,
  leftovers are killed too.
- Before it runs the command the box puts itself in a Landlock domain, which an unprivileged
  process applies to itself and every descendant inherits. With Linux 6.12+ (Landlock ABI 6) the
  domain is scoped: the build can neither connect to an abstract Unix socket made outside it
  (D-Bus, X11, a container runtime's: they have no file that a mount could hide, and the build
  keeps the network namespace, since its dependencies come from the index) nor signal a process
  outside it (without a sandbox, the daemon runs as the same user and would take a SIGKILL).
- Without a sandbox (`[watcher] sandbox = "none"`, the operator's choice: `--writable SCRATCH`)
  the same domain confines writes (Linux 5.13+): everything stays readable, but files can be
  created, written, renamed or removed only under the scratch directory (and /dev/null). Inside
  the sandbox bubblewrap's mounts do that, and a domain that handles file access would forbid
  them. Whatever the kernel cannot do is said on the build log's first lines.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence

PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

# Landlock's system calls have the same numbers on every architecture (asm-generic table).
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6
SCOPES_SINCE_ABI = 6

_WRITES = (
    ACCESS_FS_WRITE_FILE
    | ACCESS_FS_REMOVE_DIR
    | ACCESS_FS_REMOVE_FILE
    | ACCESS_FS_MAKE_CHAR
    | ACCESS_FS_MAKE_DIR
    | ACCESS_FS_MAKE_REG
    | ACCESS_FS_MAKE_SOCK
    | ACCESS_FS_MAKE_FIFO
    | ACCESS_FS_MAKE_BLOCK
    | ACCESS_FS_MAKE_SYM
)
_FILE_WRITES = ACCESS_FS_WRITE_FILE | ACCESS_FS_TRUNCATE

KILLED_BY_LIFELINE = 128 + signal.SIGKILL


class _RulesetAttr(ctypes.Structure):
    # An older kernel takes the longer struct as long as what it does not know is zero.
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")
    return result


def confine(writable: Sequence[str]) -> list[str]:
    """Put this process (and so the build) in a Landlock domain: no abstract Unix socket and no
    signal outside it, and, when `writable` is given, writes under `writable` (and to /dev/null)
    only. What the kernel could not do, in words for the build log."""
    wanted = ["writes are not confined to the scratch directory"] if writable else []
    wanted.append("abstract sockets and signals outside the build are not refused")
    try:
        abi = _check(
            _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION),
            "landlock",
        )
    except OSError as error:
        return [f"{what}: no Landlock in this kernel ({error.strerror})" for what in wanted]
    scoped = abi >= SCOPES_SINCE_ABI
    handled = (
        _WRITES | (ACCESS_FS_REFER if abi >= 2 else 0) | (ACCESS_FS_TRUNCATE if abi >= 3 else 0)
    )
    attr = _RulesetAttr(
        handled_access_fs=handled if writable else 0,
        scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if scoped else 0,
    )
    not_done = [] if scoped else [f"{wanted.pop()}: Landlock ABI {abi} (6 needs Linux 6.12)"]
    try:
        if attr.handled_access_fs or attr.scoped:
            _restrict_self(attr, writable, handled)
    except OSError as error:
        return [f"{what}: {error}" for what in wanted] + not_done
    return not_done


def _restrict_self(attr: _RulesetAttr, writable: Sequence[str], handled: int) -> None:
    ruleset = _check(
        _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0),
        "landlock_create_ruleset",
    )
    try:
        rules = [(path, handled) for path in writable] + [("/dev/null", _FILE_WRITES & handled)]
        for path, access in rules if writable else []:
            _allow(ruleset, path, access)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _allow(ruleset: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        _check(
            _libc.syscall(
                SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0
            ),
            f"landlock_add_rule {path}",
        )
    finally:
        os.close(fd)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc/PID/task/TID/children."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as file:
                    children = [int(c) for c in file.read().split()]
            except OSError:
                continue
            found.extend(children)
            stack.extend(children)
    return found


def kill_descendants() -> None:
    """SIGKILL every descendant and reap them all; orphans come to us (we are their subreaper)."""
    me = os.getpid()
    while True:
        for pid in descendants(me):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def supervise(command: Sequence[str], lifeline: int, writable: Sequence[str]) -> int:
    try:
        _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
    except OSError as error:
        # insidersd still kills the build's process group; only a setsid child could escape.
        print(f"insiders: not a subreaper: {error}", flush=True)
    for not_done in confine(writable):
        print(f"insiders: {not_done}", flush=True)
    try:
        child = subprocess.Popen(command)
    except OSError as error:
        print(f"insiders: cannot run {command[0]}: {error.strerror}", flush=True)
        return 127
    pidfd = os.pidfd_open(child.pid)
    poller = select.poll()
    poller.register(lifeline, select.POLLIN | select.POLLHUP)
    poller.register(pidfd, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if pidfd in ready:
            status = child.wait()
            kill_descendants()
            return status if status >= 0 else 128 - status
        if lifeline in ready:
            kill_descendants()
            return KILLED_BY_LIFELINE


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="insiders-box")
    parser.add_argument("--lifeline", type=int, required=True)
    parser.add_argument("--writable", action="append", default=[])
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    return supervise(args.command, args.lifeline, args.writable)


if __name__ == "__main__":
    sys.exit(main())
