"""Where insidersd keeps things, decided in one place for both commands, and the control socket.

The daemon's directories (insiders.config uses `resolve_directories` from here): a `[paths]`
setting wins, then systemd's $STATE_DIRECTORY, $CACHE_DIRECTORY and $RUNTIME_DIRECTORY, then the
XDG base directories ($XDG_RUNTIME_DIR/insiders, or /tmp/insiders-UID/insiders). The client finds
the socket the same way, reading `paths.runtime-dir` from the daemon's config file, adds its own
overrides in front (--socket, $INSIDERS_SOCKET, --runtime-dir) and, when nothing was named, falls
back to the system service's socket, so a member of the `insiders` group reaches the system daemon
without flags.

Standard library and msgspec only: the client imports this at every start.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import msgspec

SOCKET_NAME = "control.sock"
SYSTEM_SOCKET = Path("/run/insiders") / SOCKET_NAME
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_SUN_PATH = 107


class PathSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    """The `[paths]` table of the daemon's config file (part of insiders.config.Settings)."""

    data_dir: str | None = None
    cache_dir: str | None = None
    runtime_dir: str | None = None


class Directories(msgspec.Struct, frozen=True, kw_only=True):
    data: Path
    cache: Path
    runtime: Path
    credentials: Path | None  # systemd's $CREDENTIALS_DIRECTORY, when it hands secrets over


def resolve_directories(paths: PathSettings, env: Mapping[str, str] = os.environ) -> Directories:
    """Settings win, then systemd's *_DIRECTORY variables, then the XDG base directories."""
    credentials = env.get("CREDENTIALS_DIRECTORY")
    return Directories(
        data=data_dir(env, paths.data_dir),
        cache=_pick(paths.cache_dir, env, "CACHE_DIRECTORY", "XDG_CACHE_HOME", ".cache"),
        runtime=runtime_dir(env, paths.runtime_dir),
        credentials=Path(credentials) if credentials else None,
    )


def data_dir(env: Mapping[str, str], setting: str | None = None) -> Path:
    """The daemon's data directory (where its store and its log file are)."""
    return _pick(setting, env, "STATE_DIRECTORY", "XDG_DATA_HOME", ".local/share")


def runtime_dir(env: Mapping[str, str], setting: str | None = None) -> Path:
    """The daemon's runtime directory (where its control socket is)."""
    if setting:
        return Path(setting).expanduser()
    if value := env.get("RUNTIME_DIRECTORY"):
        return Path(value.split(":")[0])
    base = env.get("XDG_RUNTIME_DIR") or f"/tmp/insiders-{os.getuid()}"
    return Path(base) / "insiders"


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """The daemon's config file when none is named."""
    if directory := env.get("CONFIGURATION_DIRECTORY"):
        return Path(directory.split(":")[0]) / "config.toml"
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "insiders" / "config.toml"


def _pick(
    setting: str | None, env: Mapping[str, str], systemd_var: str, xdg_var: str, fallback: str
) -> Path:
    if setting:
        return Path(setting).expanduser()
    if value := env.get(systemd_var):
        return Path(value.split(":")[0])  # systemd lists one directory per setting, colon-separated
    return _xdg(env, xdg_var, fallback) / "insiders"


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or Path.home()) / fallback


# -- the client's way to the socket -------------------------------------------------------------


def socket_candidates(
    *,
    socket_path: str | None = None,
    runtime: str | None = None,
    config: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> list[Path]:
    """Paths to try: the one the user named, else the daemon's choice, then the system's.

    OSError when `config` (a file named on the command line) cannot be read; the default config
    file may be absent.
    """
    if socket_path:
        return [Path(socket_path).expanduser()]
    if value := env.get("INSIDERS_SOCKET"):
        return [Path(value).expanduser()]
    if runtime:
        return [Path(runtime).expanduser() / SOCKET_NAME]
    if config:
        # A file named on the command line must be there: OSError says why it cannot be read.
        setting = _paths_setting(Path(config).expanduser().read_bytes())
    else:
        try:
            data = default_config_path(env).read_bytes()
        except OSError:
            data = b""  # the default file may be absent: the daemon then runs on its defaults
        setting = _paths_setting(data)
    first = runtime_dir(env, setting.runtime_dir) / SOCKET_NAME
    return [first] if first == SYSTEM_SOCKET else [first, SYSTEM_SOCKET]


class _PathsOnly(msgspec.Struct):
    """The part of the daemon's config file the client reads; the daemon checks the rest."""

    paths: PathSettings = msgspec.field(default_factory=PathSettings)


def _paths_setting(data: bytes) -> PathSettings:
    """`[paths]` of the daemon's config file; the defaults if the file is broken."""
    try:
        return msgspec.toml.decode(data, type=_PathsOnly).paths
    except msgspec.DecodeError:  # (a ValidationError too)
        return PathSettings()  # the daemon refuses such a file; it says why when it starts


@contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind() or connect() that fits sun_path however long `path` is.

    A longer path is reached through /proc/self/fd/N of its directory, opened with O_PATH;
    the directory's permissions are checked as for the plain path.
    """
    if len(os.fsencode(path)) <= _MAX_SUN_PATH:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


def connect_unix(sock: socket.socket, path: Path) -> None:
    with unix_address(path) as address:
        sock.connect(address)
