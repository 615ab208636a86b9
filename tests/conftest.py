"""Shared fixtures live in tests/fixtures/, one module per concern, loaded as plugins."""

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
