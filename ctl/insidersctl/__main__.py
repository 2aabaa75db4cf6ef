"""`insidersctl` and `python -m insidersctl`."""

from __future__ import annotations

import sys

from insidersctl.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
