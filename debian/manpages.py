#!/usr/bin/python3
"""Write the man pages of insidersd and insidersctl from their argument parsers.

One generator for both ways insiders is installed:

- the wheel: hatchling runs `ManPages` below as a build hook (pyproject.toml), and the pages go
  in the wheel's data, installed to share/man/man1 (so `man insidersctl` works after pip install);
- the Debian package: debian/rules runs this file, python3 debian/manpages.py --version VERSION
  OUTDIR, and dh_installman installs the pages (debian/insiders.manpages).

The parsers are the single source of the options, so every command added to them is in the pages.
Each page gets the sections a parser does not know (files, exit status, see also) from
debian/NAME.1.include. Only the parsers are imported (insiders.options, insidersctl.cli): the
build environment has argparse-manpage and msgspec, not the daemon's dependencies.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUMMARIES = {
    "insidersd": "self-hosted Python package index that builds new version tags",
    "insidersctl": "control insidersd, the self-hosted Python package index",
}


def write_manpages(outdir: Path, version: str) -> list[Path]:
    """NAME.1 for both programs in `outdir`; their paths."""
    for folder in ("daemon", "ctl"):
        if str(ROOT / folder) not in sys.path:
            sys.path.insert(0, str(ROOT / folder))
    from argparse_manpage.manpage import Manpage

    from insiders.options import parser as daemon_parser
    from insidersctl.cli import SHARED_OPTIONS
    from insidersctl.cli import parser as ctl_parser

    parsers = {
        "insidersd": daemon_parser(),
        "insidersctl": _shared_options_once(ctl_parser(), SHARED_OPTIONS),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, parser in parsers.items():
        page = Manpage(
            parser,
            _data={
                "project_name": "insiders",
                "description": SUMMARIES[name],
                "version": version,
                "manual_section": 1,
                "manual_title": "insiders manual",
                "include": str(HERE / f"{name}.1.include"),
            },
        )
        path = outdir / f"{name}.1"
        path.write_text(str(page))
        written.append(path)
    return written


def _shared_options_once(parser: argparse.ArgumentParser, title: str) -> argparse.ArgumentParser:
    """The page of `parser` with the options every command takes (the group `title`) said once,
    before the commands, rather than again in each command's section (28 times).

    Exit status and the environment are in the include file's sections: the epilog that says the
    exit status in --help is left out of the page.
    """
    commands = [g for g in parser._action_groups if _subparsers(g)]
    for group in commands:  # the options first, then the commands, as systemctl(1) has them
        parser._action_groups.remove(group)
        parser._action_groups.append(group)
        group.title = "commands"
    parser.description = (
        f"{parser.description}\n\nThe options under {title.upper()} go before or after the "
        "command (insidersctl --json status is insidersctl status --json); the "
        "sections of the commands leave them out."
    )
    parser.epilog = None
    for group in commands:
        for action in _subparsers(group):
            for sub in action.choices.values():
                _without_group(sub, title)
    return parser


def _subparsers(group: Any) -> list[argparse._SubParsersAction[Any]]:
    return [a for a in group._group_actions if isinstance(a, argparse._SubParsersAction)]


def _without_group(parser: argparse.ArgumentParser, title: str) -> None:
    """Take the option group `title` out of `parser` and of the commands under it."""
    for group in list(parser._action_groups):
        if group.title == title:
            parser._action_groups.remove(group)
            for action in group._group_actions:
                parser._actions.remove(action)
        for action in _subparsers(group):
            for sub in action.choices.values():
                _without_group(sub, title)


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run by debian/rules, where hatchling is not needed
    BuildHookInterface = object  # type: ignore[assignment,misc]


class ManPages(BuildHookInterface):  # type: ignore[misc]
    """The wheel's man pages: share/man/man1/NAME.1 in its data (hatch's shared-data)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._pages = Path(tempfile.mkdtemp(prefix="insiders-man-"))
        for path in write_manpages(self._pages, self.metadata.version):
            build_data["shared_data"][str(path)] = f"share/man/man1/{path.name}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        shutil.rmtree(self._pages, ignore_errors=True)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--version", required=True)
    args.add_argument("outdir", type=Path)
    options = args.parse_args()
    write_manpages(options.outdir, options.version)


if __name__ == "__main__":
    main()
