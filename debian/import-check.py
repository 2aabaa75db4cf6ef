#!/usr/bin/python3
"""Import every module of the named packages: proves that trixie's libraries satisfy the code.

Run by debian/rules as the build's test: python3 debian/import-check.py PACKAGE...
"""

from __future__ import annotations

import importlib
import pkgutil
import sys


def main(packages: list[str]) -> int:
    count = 0
    for name in packages:
        package = importlib.import_module(name)
        count += 1
        for module in pkgutil.walk_packages(package.__path__, f"{name}."):
            importlib.import_module(module.name)
            count += 1
    print(f"imported {count} modules of {', '.join(packages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
