"""The sandbox a build runs in: the build sees the system, its Python and its scratch directory,
and nothing of the daemon's.

A watched repository's build runs that repository's code (a `setup.py`, a build hook), and the
repository is often someone else's: a sponsor watches a maintainer's private fork, a team its
colleagues' repositories. So a build gets only the authority its job needs, the way Flatpak and
the build farms that run strangers' code give it: new user, mount, PID and IPC namespaces
made by bubblewrap (`bwrap`, Debian's `bubblewrap` package), in which

- the system is read-only and partial: /usr, the few files of /etc a build needs (name
  resolution, certificates, the dynamic linker), and the Python that runs the build;
- the scratch directory is the one writable place, and the daemon's directories (data, cache,
  runtime, configuration, credentials) are not there at all: no tokens, no control socket, no
  other repository's mirror, no $HOME, no SSH agent;
- /proc shows the build's own processes only (not the daemon's environment), /dev is minimal,
  /tmp is empty and private;
- the network stays: build dependencies resolve through this index.

Why not the other two mechanisms real farms use: a separate build user needs root (setuid) to
switch to it, which the hardened system unit does not have and a user daemon never has; a
transient systemd unit needs the service manager's D-Bus and a polkit rule. bubblewrap needs only
unprivileged user namespaces, on by default on Debian; the system unit allows exactly the
namespaces and mount calls it needs. Where it cannot run, builds are refused with a message
that says what to install, unless `[watcher] sandbox = "none"` accepts the risk (the choice and
its trial run are insiders.watcher.builder's: this module only says what the sandbox is).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

BWRAP = "bwrap"

# What of /etc a build reads: name resolution, TLS certificates, the dynamic linker, user names,
# time zones, git's and Python's system configuration. Nothing else of /etc is there (not the
# daemon's configuration, not a credential store, not a pip.conf with an index password).
ETC = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    "passwd",
    "group",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "crypto-policies",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "gitconfig",
    "mime.types",
    "os-release",
    "debian_version",
    f"python{sys.version_info.major}",
    f"python{sys.version_info.major}.{sys.version_info.minor}",
)
PRIVATE_KEYS = "/etc/ssl/private"
# Top-level names that are /usr's on a merged-/usr system (symbolic links) or directories of their
# own elsewhere.
SYSTEM = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

# The variables a build gets from the daemon's environment: the locale, and how to reach the
# network (a proxy, its own certificates). Everything else it gets is set by the builder.
PASSED_ENV = frozenset(
    {
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)


@dataclass(frozen=True)
class Sandbox:
    """How builds run: `kind` is what each build log's first line and `insidersctl status` say."""

    kind: Literal["bubblewrap", "none"]
    # The daemon's own directories: absent from the sandbox.
    hidden: tuple[Path, ...] = ()
    python: str = sys.executable
    bwrap: str = BWRAP  # where the daemon's PATH finds it

    def describe(self) -> str:
        if self.kind == "bubblewrap":
            return (
                "bubblewrap: reads only the system and its Python, writes only its scratch "
                "directory, sees none of the daemon's files, processes or secrets"
            )
        return (
            'none ([watcher] sandbox = "none"): the build runs with the daemon\'s authority '
            "(it can read its files and use its control socket); only its writes are confined"
        )

    def wrap(
        self, command: Sequence[str], scratch: Path, readable: Sequence[Path] = ()
    ) -> list[str]:
        """`command` as run in the sandbox, with `scratch` its one writable directory and
        `readable` shown read-only."""
        if self.kind == "none":
            return list(command)
        roots = python_roots(self.python)
        return [self.bwrap, *bwrap_arguments(scratch, self.hidden, roots, readable), *command]


def python_roots(python: str) -> list[Path]:
    """The directories the Python that runs builds lives in: its venv and the installation
    beneath it (`build` is imported from the one, the standard library from the other)."""
    real = Path(os.path.realpath(python))
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), real.parent.parent}
    if python != sys.executable:
        roots.add(Path(python).parent.parent)
    # /usr is there anyway; a root of / would show everything.
    return sorted(r for r in roots if r != Path("/") and not _beneath(r, Path("/usr")))


def _beneath(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def bwrap_arguments(
    scratch: Path, hidden: Iterable[Path], roots: Sequence[Path], readable: Iterable[Path] = ()
) -> list[str]:
    """bwrap's arguments up to `--` (pure but for looking at which system paths exist)."""
    args = [
        # Not UTS or cgroup namespaces: the host name and cgroup paths are no secret, and each
        # namespace the system unit allows costs it in `systemd-analyze security`.
        *("--unshare-user", "--unshare-pid", "--unshare-ipc"),
        # No TIOCSTI into a terminal; the build dies with the supervisor that started it.
        *("--new-session", "--die-with-parent", "--cap-drop", "ALL"),
        *("--ro-bind", "/usr", "/usr"),
    ]
    for name in SYSTEM:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC:
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    if Path(PRIVATE_KEYS).is_dir():
        # Certificates yes, the machine's TLS keys no (readable to a daemon that runs as root).
        args += ["--tmpfs", PRIVATE_KEYS]
    resolv = Path("/etc/resolv.conf")
    if resolv.is_symlink() and resolv.exists():
        # systemd-resolved's stub file lives in /run, which is not there otherwise.
        target = Path(os.path.realpath(resolv))
        args += ["--ro-bind", str(target), str(target)]
    for root in roots:
        if root.exists():
            args += ["--ro-bind", str(root), str(root)]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
    for path in hidden:
        # A daemon directory beneath a Python root (a venv inside the data directory, say).
        if any(_beneath(path, root) for root in roots):
            args += ["--tmpfs", str(path)]
    for path in readable:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(scratch), str(scratch), "--chdir", str(scratch)]
    # Nothing else is writable: not even the directories made to hold the mounts above (/tmp and
    # /var/tmp are the build's own, empty and thrown away with it).
    args += ["--remount-ro", "/", "--"]
    return args


def python_version(python: str) -> str:
    """The version of the Python that runs builds: this one's, unless another was set."""
    if python == sys.executable:
        return platform.python_version()
    return "another interpreter"
