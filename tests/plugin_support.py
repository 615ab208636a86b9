"""The out-of-tree adapter package of docs/examples/housing_fund, as a test installs it.

The example is written with credgate's public import names (``credgate.adapters...``,
``credgate.api.credit_repair.v1``, ``credgate.gateway...``), exactly as the documentation shows
it, and is installed as it stands: a copy, so the build leaves nothing in docs/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "housing_fund"
EXAMPLE_FILES = (
    "pyproject.toml",
    "credgate_housing_fund/__init__.py",
    "credgate_housing_fund/adapter.py",
    "credgate_housing_fund/mock.py",
    "tests/conftest.py",
    "tests/test_conformance.py",
)


def example_package(destination: Path) -> Path:
    """A copy of the example package under ``destination``."""
    target = destination / "credgate-housing-fund"
    for name in EXAMPLE_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EXAMPLE / name, target / name)
    return target
