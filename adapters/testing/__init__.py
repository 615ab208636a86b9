"""The adapter conformance kit: one reusable suite that proves an adapter keeps the seam.

Any adapter — built into credgate or written by a source operator elsewhere — runs the same
tests against a real server over the network: the mock source for its kind (with fault
injection) or the operator's own test endpoint seeded with the synthetic population. Passing
them is what "this adapter may be configured as a source" means; see docs/writing-an-adapter.md.

    from credgate.adapters.testing import AdapterConformance, MockedSource

    class TestHousingFund(AdapterConformance):
        source = MockedSource("housing-fund", "housing_fund", HousingFundMock)
        adapter_class = HousingFundAdapter
        profile = KindProfile(SOURCE_KIND_HOUSING_FUND, expect_housing_fund)

This package is also the kit's pytest plugin (its hooks and fixtures live in
``adapters.testing.plugin`` and are re-exported here). It is opt-in — installing credgate loads
nothing into other projects' pytest runs: ``pytest -p adapters.testing``, or
``pytest_plugins = ["adapters.testing"]`` in the project's top-level conftest.py.
"""

from credgate.adapters.testing import plugin as _plugin
from credgate.adapters.testing.checks import (
    ConformanceError,
    assert_facts_as_expected,
    assert_no_personal_data_in_error,
    assert_no_personal_data_in_facts,
    personal_strings,
)
from credgate.adapters.testing.expectations import (
    AT_LEAST_ONE,
    BUILTIN_PROFILES,
    CATEGORY_OF_KIND,
    Expectation,
    KindProfile,
    record_counts,
    unified,
)
from credgate.adapters.testing.harness import (
    EndpointSource,
    MockedSource,
    RunningSource,
    SourceUnderTest,
    fleet_source,
)
from credgate.adapters.testing.suite import AdapterConformance, Tolerances

# The pytest plugin, re-exported: `-p adapters.testing` (or `pytest_plugins`) loads the kit.
pytest_configure = _plugin.pytest_configure
pytest_collection_modifyitems = _plugin.pytest_collection_modifyitems
conformance_population = _plugin.conformance_population
conformance_source = _plugin.conformance_source
conformance_adapter = _plugin.conformance_adapter

__all__ = [
    "AT_LEAST_ONE",
    "BUILTIN_PROFILES",
    "CATEGORY_OF_KIND",
    "AdapterConformance",
    "ConformanceError",
    "EndpointSource",
    "Expectation",
    "KindProfile",
    "MockedSource",
    "RunningSource",
    "SourceUnderTest",
    "Tolerances",
    "assert_facts_as_expected",
    "assert_no_personal_data_in_error",
    "assert_no_personal_data_in_facts",
    "fleet_source",
    "personal_strings",
    "record_counts",
    "unified",
]
