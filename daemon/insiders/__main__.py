"""insidersd: run the index, the watcher and the control server in one trio process."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import msgspec
import trio

from . import __version__
from .config import (
    ConfigError,
    Settings,
    UpstreamSettings,
    default_config_path,
    load_settings,
    resolve_directories,
)
from .logs import setup_logging
from .upstream import UpstreamLoop

log = logging.getLogger("insiders")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="insidersd",
        description="A self-hosted Python package index that builds every new version tag "
        "of the git repositories it watches.",
        epilog="Settings come from the config file; flags override it. "
        "Default config file: $XDG_CONFIG_HOME/insiders/config.toml "
        "($CONFIGURATION_DIRECTORY/config.toml under systemd).",
    )
    p.add_argument("--version", action="version", version=f"insidersd {__version__}")
    p.add_argument("-c", "--config", type=Path, help="the TOML config file")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 31411; 0 picks a free one)")
    p.add_argument("--data-dir", help="packages, tokens, repos (default: XDG data dir)")
    p.add_argument("--cache-dir", help="git mirrors, upstream copies (default: XDG cache dir)")
    p.add_argument("--runtime-dir", help="the control socket (default: XDG runtime dir)")
    p.add_argument("--upstream", metavar="URL", help="the index to fall back to")
    p.add_argument(
        "--upstream-mode",
        choices=["redirect", "proxy", "none"],
        help="how to serve projects not hosted here (default redirect)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--restore-from",
        metavar="MIRROR",
        help="first fill an empty data directory from this [mirrors.MIRROR] target, then serve",
    )
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The config file, then the flags over it (again at each reload: flags keep winning)."""
    config_path: Path = args.config or default_config_path()
    settings = load_settings(config_path, required=args.config is not None)
    replace = msgspec.structs.replace
    server, paths, upstream = settings.server, settings.paths, settings.upstream
    if args.host is not None:
        server = replace(server, host=args.host)
    if args.port is not None:
        server = replace(server, port=args.port)
    for flag in ("data_dir", "cache_dir", "runtime_dir"):
        if getattr(args, flag) is not None:
            paths = replace(paths, **{flag: getattr(args, flag)})
    if args.upstream is not None:
        upstream = replace(upstream, url=args.upstream)
    if args.upstream_mode is not None:
        upstream = UpstreamSettings(
            **{**msgspec.structs.asdict(upstream), "mode": args.upstream_mode}
        )
    log_level = args.log_level or settings.log_level
    settings = replace(settings, server=server, paths=paths, upstream=upstream, log_level=log_level)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as error:
        print(f"insidersd: {error}", file=sys.stderr)
        return 2
    if args.restore_from is not None and args.restore_from not in settings.mirrors:
        known = ", ".join(sorted(settings.mirrors)) or "none"
        print(
            f"insidersd: --restore-from {args.restore_from}: no [mirrors.{args.restore_from}] "
            f"in the configuration (configured: {known})",
            file=sys.stderr,
        )
        return 2
    setup_logging(settings.log_level)
    dirs = resolve_directories(settings.paths)
    from .app import run
    from .mirror.restore import RestoreError

    status = 0
    try:
        trio.run(run, settings, dirs, partial(settings_from, args), args.restore_from)
    except* RestoreError as refused:
        for problem in refused.exceptions:
            log.critical("cannot restore: %s", problem)
        status = 1
    except* UpstreamLoop as group:
        for loop in group.exceptions:
            log.error("%s", loop)
        status = 2
    except* OSError as group:
        # Typically the port is taken or a directory is not writable: say which, no traceback.
        for failure in group.exceptions:
            log.critical("cannot start: %s", failure)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
