"""insidersd's command line: the parser alone, without the daemon's imports.

Apart from __main__ so that the man page can be generated from it in a build environment that has
none of the daemon's dependencies (debian/manpages.py, run by the wheel's build hook).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__


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
        choices=["redirect", "proxy", "cache", "none"],
        help="how to serve projects not hosted here (default redirect)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--restore-from",
        metavar="MIRROR",
        help="first fill an empty data directory from this [mirrors.MIRROR] target, then serve",
    )
    return p
