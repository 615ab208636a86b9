"""``python -m bench``: run the benchmark suite (the guard matters: workers are spawned)."""

from __future__ import annotations

import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
