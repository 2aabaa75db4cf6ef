"""Where the control socket is: found by the client exactly as the daemon chooses it.

The daemon's order (insiders.config.resolve_directories): the `paths.runtime-dir` setting, then
systemd's $RUNTIME_DIRECTORY, then $XDG_RUNTIME_DIR/insiders (or /tmp/insiders-UID/insiders).
The client adds its own overrides in front (--socket, $INSIDERS_SOCKET, --runtime-dir) and, when
nothing was named, falls back to the system service's socket, so a member of the `insiders` group
reaches the system daemon without flags.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

SOCKET_NAME = "control.sock"
SYSTEM_SOCKET = Path("/run/insiders") / SOCKET_NAME
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_SUN_PATH = 107


def default_config_path(env: Mapping[str, str]) -> Path:
    """The daemon's default config file (insiders.config.default_config_path)."""
    if directory := env.get("CONFIGURATION_DIRECTORY"):
        return Path(directory.split(":")[0]) / "config.toml"
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / "insiders" / "config.toml"


def default_data_dir(env: Mapping[str, str]) -> Path:
    """The daemon's data directory when no setting names one (where its log file is)."""
    if value := env.get("STATE_DIRECTORY"):
        return Path(value.split(":")[0])
    return _xdg(env, "XDG_DATA_HOME", ".local/share") / "insiders"


def runtime_dir(env: Mapping[str, str], setting: str | None = None) -> Path:
    """The daemon's runtime directory for this environment and `paths.runtime-dir` setting."""
    if setting:
        return Path(setting).expanduser()
    if value := env.get("RUNTIME_DIRECTORY"):
        return Path(value.split(":")[0])
    base = env.get("XDG_RUNTIME_DIR") or f"/tmp/insiders-{os.getuid()}"
    return Path(base) / "insiders"


def socket_candidates(
    *,
    socket_path: str | None = None,
    runtime: str | None = None,
    config: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> list[Path]:
    """Paths to try: the one the user named, else the daemon's choice, then the system's."""
    if socket_path:
        return [Path(socket_path).expanduser()]
    if value := env.get("INSIDERS_SOCKET"):
        return [Path(value).expanduser()]
    if runtime:
        return [Path(runtime).expanduser() / SOCKET_NAME]
    config_path = Path(config).expanduser() if config else default_config_path(env)
    first = runtime_dir(env, _runtime_setting(config_path)) / SOCKET_NAME
    return [first] if first == SYSTEM_SOCKET else [first, SYSTEM_SOCKET]


def _runtime_setting(config_path: Path) -> str | None:
    """`paths.runtime-dir` from the daemon's config file, if it has one (tomllib only if needed)."""
    try:
        data = config_path.read_bytes()
    except OSError:
        return None
    import tomllib

    try:
        paths = tomllib.loads(data.decode()).get("paths", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None  # the daemon refuses such a file; it says why when it starts
    value = paths.get("runtime-dir") if isinstance(paths, dict) else None
    return value if isinstance(value, str) else None


def _xdg(env: Mapping[str, str], var: str, fallback: str) -> Path:
    value = env.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or Path.home()) / fallback


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
