"""Benchmark insidersd against its peers: `make bench`, or `.venv/bin/python bench/run.py -h`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from insiders_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
