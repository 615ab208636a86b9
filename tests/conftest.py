"""Shared fixtures live in tests/fixtures/, one module per concern, loaded as plugins."""

import os
from pathlib import Path

pytest_plugins = [
    "tests.fixtures.pki",
    "tests.fixtures.storage",
    "tests.fixtures.mocks",
    "tests.fixtures.logging_state",
    "tests.fixtures.namespace",
    "tests.fixtures.console",
    # The adapter conformance kit's fixtures: opt-in, as in any project that uses the kit.
    "credgate.adapters.testing",
]


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Leave proof that the run reached its end: ``scripts/test`` fails a run without it, so a
    test that ends the process early (an ``os._exit`` reached in-process) cannot pass for a
    green run — one once ended the suite at 13 % with status 0."""
    marker = os.environ.get("TESTS_FINISHED_FILE")
    if marker and not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller's session only
        Path(marker).write_text(f"{int(exitstatus)}\n", encoding="utf-8")
