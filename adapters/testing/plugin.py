"""The pytest plugin of the adapter conformance kit: fixtures for ``AdapterConformance`` classes.

A project loads it explicitly (``pytest -p adapters.testing``, or ``pytest_plugins =
["adapters.testing"]`` in its top-level conftest.py; the package re-exports this module's hooks
and fixtures); installing credgate loads nothing by itself into anyone's pytest. The fixtures
read the declarations of the test class they serve (``request.cls``), which is how one suite runs
against any number of sources, each class with its own running source:

``conformance_population`` (class)
    The synthetic population the source serves (``population_seed``, ``population_size``).
``conformance_source`` (class)
    The source under test, started once for the class (a mock runs in its own thread and
    event loop) and stopped after it.
``conformance_adapter`` (function)
    A fresh adapter for each test, the source reset to healthy first, closed afterwards. On
    the way out it checks that nothing the adapter logged during the test names a subject.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from credgate.adapters.base import SourceAdapter
from credgate.adapters.mocks.population import Population, build_population
from credgate.adapters.testing.checks import ConformanceError, personal_strings
from credgate.adapters.testing.harness import RunningSource

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the plugin loads wherever credgate is installed
    pytest_asyncio = None  # type: ignore[assignment]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "conformance: a test of the adapter conformance kit (adapters.testing)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every kit test, so ``-m conformance`` selects (or ``-m 'not conformance'`` skips)
    them."""
    from credgate.adapters.testing.suite import AdapterConformance

    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, AdapterConformance):
            item.add_marker(pytest.mark.conformance)


def _suite(request: pytest.FixtureRequest) -> Any:
    cls = request.cls
    if cls is None or getattr(cls, "source", None) is None:
        raise pytest.UsageError(
            "the conformance fixtures serve subclasses of adapters.testing.AdapterConformance "
            "that declare `source`"
        )
    return cls


@pytest.fixture(scope="class")
def conformance_population(request: pytest.FixtureRequest) -> Population:
    suite = _suite(request)
    return build_population(suite.population_seed, suite.population_size)


@pytest.fixture(scope="class")
def conformance_source(
    request: pytest.FixtureRequest, conformance_population: Population
) -> Iterator[RunningSource]:
    source = _suite(request).source
    config = source.start(conformance_population)
    try:
        yield RunningSource(source, config)
    finally:
        source.stop()


async def _conformance_adapter(
    request: pytest.FixtureRequest,
    conformance_source: RunningSource,
    conformance_population: Population,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[SourceAdapter]:
    await conformance_source.source.reset()
    caplog.set_level(logging.DEBUG)
    adapter: SourceAdapter = request.instance.build_adapter(conformance_source.config)
    try:
        yield adapter
    finally:
        await adapter.aclose()
    _assert_logs_clean(caplog.records, conformance_population, conformance_source)


def _needs_pytest_asyncio() -> None:
    raise pytest.UsageError("the adapter conformance kit needs pytest-asyncio (pip install it)")


# A project may load the plugin for a whole test run, so a missing pytest-asyncio must only stop
# the kit's own tests, never the whole run.
conformance_adapter = (
    pytest_asyncio.fixture(name="conformance_adapter")(_conformance_adapter)
    if pytest_asyncio is not None
    else pytest.fixture(name="conformance_adapter")(_needs_pytest_asyncio)
)


def _assert_logs_clean(
    records: list[logging.LogRecord], population: Population, running: RunningSource
) -> None:
    """No log record written outside the source's own thread names any subject.

    Log lines reach operators and log stores that are not cleared for personal data; the source
    is outside the adapter's control, so what a mock logs in its own thread is not checked.
    """
    source_thread = running.source.thread_ident
    texts = [t for subject in population for t in personal_strings(subject.person)]
    for record in records:
        if source_thread is not None and record.thread == source_thread:
            continue
        rendered = record.getMessage()
        if record.exc_info:
            rendered += logging.Formatter().formatException(record.exc_info)
        if any(text in rendered for text in texts):
            raise ConformanceError(
                f"a {record.levelname} record of logger {record.name!r} "
                f"(thread {record.threadName}) names a subject"
            )
