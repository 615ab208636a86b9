"""Walk the three repair scenarios end to end and print each as it happens.

Correcting wrong information (objection), stopping the disclosure of dishonest behaviour and
marking bankruptcy information as exempted: each with its scenario subject (`credgate
scenarios`), from filing through review, announcement and ruling (or the source's reply) to
the changed status a watcher sees. The mock sources and the gateway run in this process on
loopback with mutual TLS; only the repair workflows' clock is moved forward, so 10 working
days pass in a second (``credgate.gateway.demo_repair``; docs/workflows.md).

    .venv/bin/python scripts/repair_scenarios.py               # in a temporary directory
    .venv/bin/python scripts/repair_scenarios.py --dir var/repair   # keep the workspace

``tests/test_repair_scenarios.py`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from credgate.gateway.demo_repair import walk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, help="keep the workspace here (default: temporary)")
    args = parser.parse_args(argv)
    if args.dir is not None and (args.dir / "gateway.toml").exists():
        parser.error(f"{args.dir} already holds a workspace; give a new directory")
    asyncio.run(walk(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
