#!/usr/bin/python3
"""Write the man pages of insidersd and insidersctl from their argument parsers.

Run by debian/rules after the build: python3 debian/manpages.py --version VERSION OUTDIR
(with daemon/ and ctl/ on PYTHONPATH). The parsers are the single source of the options; each
page gets the sections a parser does not know (files, exit status, see also) from
debian/NAME.1.include.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from argparse_manpage.manpage import Manpage

from insiders.__main__ import parser as daemon_parser
from insidersctl.cli import parser as ctl_parser

HERE = Path(__file__).resolve().parent
PAGES = {
    "insidersd": (daemon_parser, "self-hosted Python package index that builds new version tags"),
    "insidersctl": (ctl_parser, "control insidersd, the self-hosted Python package index"),
}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--version", required=True)
    args.add_argument("outdir", type=Path)
    options = args.parse_args()
    options.outdir.mkdir(parents=True, exist_ok=True)
    for name, (make_parser, summary) in PAGES.items():
        page = Manpage(
            make_parser(),
            _data={
                "project_name": "insiders",
                "description": summary,
                "version": options.version,
                "manual_section": 1,
                "manual_title": "insiders manual",
                "include": str(HERE / f"{name}.1.include"),
            },
        )
        (options.outdir / f"{name}.1").write_text(str(page))


if __name__ == "__main__":
    main()
