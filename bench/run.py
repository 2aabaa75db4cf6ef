"""Benchmark insidersd against its peers: `make bench`, or `.venv/bin/python bench/run.py -h`."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# insiders_bench, and the project template the tests build too (tests.projects).
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from insiders_bench.cli import main  # noqa: E402 (after the path)

if __name__ == "__main__":
    sys.exit(main())
