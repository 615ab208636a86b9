"""The out-of-tree adapter package of docs/examples/housing_fund, as a test installs it.

The example is written with credgate's public import names (``credgate.adapters...``,
``credgate.api.credit_repair.v1``, ``credgate.gateway...``), exactly as the documentation shows
it. ``example_package`` copies it and rewrites those imports to the names this checkout really
has, read from the modules themselves: once credgate's packages live under ``credgate.``, the
rewrite is the identity and the example runs as written.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from credit_repair.v1 import report_pb2

import adapters.base

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "housing_fund"
EXAMPLE_FILES = (
    "pyproject.toml",
    "credgate_housing_fund/__init__.py",
    "credgate_housing_fund/adapter.py",
    "credgate_housing_fund/mock.py",
    "tests/conftest.py",
    "tests/test_conformance.py",
)

HAND_WRITTEN_PREFIX = adapters.base.__name__.removesuffix("adapters.base")
"""What precedes ``adapters.`` / ``gateway.`` in this checkout: "" today, "credgate." after."""
GENERATED_PREFIX = report_pb2.__name__.removesuffix("credit_repair.v1.report_pb2")
"""What precedes ``credit_repair.v1``: "" today, "credgate.api." after."""

_PUBLIC_NAME = re.compile(r"""(?P<lead>\bfrom |\bimport |["'])credgate\.(?P<api>api\.)?""")


def local_imports(source: str) -> str:
    """``source`` with credgate's public module names replaced by this checkout's."""

    def replace(match: re.Match[str]) -> str:
        prefix = GENERATED_PREFIX if match.group("api") else HAND_WRITTEN_PREFIX
        return match.group("lead") + prefix

    return _PUBLIC_NAME.sub(replace, source)


def example_package(destination: Path) -> Path:
    """A copy of the example package under ``destination``, importable in this checkout."""
    target = destination / "credgate-housing-fund"
    for name in EXAMPLE_FILES:
        source = EXAMPLE / name
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".py":
            (target / name).write_text(local_imports(source.read_text("utf-8")), "utf-8")
        else:
            shutil.copyfile(source, target / name)
    return target
