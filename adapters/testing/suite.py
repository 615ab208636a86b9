"""``AdapterConformance``: the reusable test suite every adapter runs to prove it keeps the seam.

Subclass it in a test module (the class name must start with ``Test``) and declare the source
side; the tests come with the base class::

    class TestHousingFund(AdapterConformance):
        source = MockedSource("housing-fund", "housing_fund", HousingFundMock)
        adapter_class = HousingFundAdapter
        profile = KindProfile(SOURCE_KIND_HOUSING_FUND, expect_housing_fund)

What is proven, against a real server over the network:

* mapping — every scenario subject (and a sample of the population) gives the state, cases,
  records and identity the source kind should give; everything carries provenance; record
  kinds sit in their data category; nothing but ``identity.name`` names the person;
* an unknown subject gives an empty answer, not an error;
* every variant of the mock's malformed-payload corpus is a ``MalformedPayload`` (or, for a
  forged signature, facts flagged INVALID), never another exception;
* deadlines, cancellation, error rate and downtime map to the seam's errors promptly;
* no error (with its whole chain) and no log line of the adapter carries personal data.

The fixtures come from the kit's pytest plugin, which a project loads explicitly:
``pytest -p adapters.testing`` or ``pytest_plugins = ["adapters.testing"]`` in its conftest.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest

from credgate.adapters.base import (
    MalformedPayload,
    SourceAdapter,
    SourceConfig,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
)
from credgate.adapters.catalog import build_adapter
from credgate.adapters.mocks.population import (
    DEFAULT_SEED,
    SCENARIO_NAMES,
    Population,
    Subject,
    build_population,
    make_identity_number,
)
from credgate.adapters.testing.checks import (
    ConformanceError,
    assert_facts_as_expected,
    assert_no_personal_data_in_error,
)
from credgate.adapters.testing.expectations import BUILTIN_PROFILES, Expectation, KindProfile
from credgate.adapters.testing.harness import RunningSource, SourceUnderTest
from credgate.api.credit_repair.v1 import report_pb2

_INVALID = report_pb2.SIGNATURE_STATUS_INVALID


@dataclass(frozen=True)
class Tolerances:
    """Timing allowances. The defaults are what every built-in adapter meets on loopback; a
    class that needs looser ones should say why next to them."""

    fetch_timeout: float = 2.0
    """The budget of an ordinary fetch."""
    deadline_budget: float = 0.3
    """The budget given in the deadline test (the source answers a second later)."""
    deadline_margin: float = 0.1
    """How long after its budget a ``SourceTimeout`` may arrive. The gateway cancels an adapter
    ``gateway.engine.fanout.GRACE_SECONDS`` past its budget, so this must stay small."""
    cancel_after: float = 0.2
    """How long the fetch runs (the request sits at the slow source) before it is cancelled."""
    cancel_margin: float = 0.1
    """How long a cancelled fetch may take to finish."""
    recovery_fetches: int = 1
    """Fetches allowed, once a down source is back, before one must succeed."""


class AdapterConformance:
    """The conformance suite; see the module docstring. Class attributes declare the source."""

    source: ClassVar[SourceUnderTest]
    """The source side: ``MockedSource``, ``fleet_source(...)`` or ``EndpointSource``."""
    profile: ClassVar[KindProfile | None] = None
    """What the source kind should say; ``None``: the built-in profile of ``source.kind``."""
    adapter_class: ClassVar[type | None] = None
    """The adapter class to test (called with the ``SourceConfig``); ``None``: whatever
    ``adapters.catalog`` builds for the kind."""
    scenarios: ClassVar[tuple[str, ...]] = SCENARIO_NAMES
    corpus_scenario: ClassVar[str | None] = None
    """The subject the fault tests ask about; ``None``: the one with the most facts here."""
    population_seed: ClassVar[int] = DEFAULT_SEED
    population_size: ClassVar[int] = 200
    population_sample: ClassVar[int] = 25
    """How many non-scenario subjects the sample test fetches."""
    unknown_identity_number: ClassVar[str] = make_identity_number(
        "440305", dt.date(1999, 9, 9), 999
    )
    """A valid identity number that names nobody in the population."""
    tolerances: ClassVar[Tolerances] = Tolerances()

    # --- declarations, for subclasses to override -----------------------------------------

    def build_adapter(self, config: SourceConfig) -> SourceAdapter:
        """The adapter under test, for the running source's configuration."""
        if self.adapter_class is not None:
            adapter: SourceAdapter = self.adapter_class(config)
            return adapter
        return build_adapter(config)

    def kind_profile(self) -> KindProfile:
        """The declared profile, or the built-in one of the source's kind."""
        if self.profile is not None:
            return self.profile
        try:
            return BUILTIN_PROFILES[self.source.kind]
        except KeyError:
            raise TypeError(
                f"{type(self).__name__}: source kind {self.source.kind!r} has no built-in "
                "profile; declare `profile = KindProfile(...)`"
            ) from None

    # --- parametrization --------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Scenario and corpus tests get one test per scenario and per malformed variant."""
        if "scenario" in metafunc.fixturenames:
            metafunc.parametrize("scenario", self.scenarios)
        if "malformed_variant" in metafunc.fixturenames:
            population = build_population(self.population_seed, self.population_size)
            metafunc.parametrize("malformed_variant", self.source.malformed_variants(population))

    # --- helpers ------------------------------------------------------------------------------

    def expectation(self, subject: Subject | None, config: SourceConfig) -> Expectation:
        return self.kind_profile().expect(subject, config)

    def corpus_subject(self, population: Population, config: SourceConfig) -> Subject:
        """The subject with the most facts at this source: what a malformed variant corrupts."""
        if self.corpus_scenario is not None:
            return population.scenarios[self.corpus_scenario]

        def weight(subject: Subject) -> int:
            expected = self.expectation(subject, config)
            return (sum(1 if n is None else n for n in expected.records.values())
                    + len(expected.case_numbers) + expected.knows_subject)

        return max((population.scenarios[name] for name in self.scenarios), key=weight)

    async def fetch_and_check(
        self, adapter: SourceAdapter, running: RunningSource, subject: Subject,
        timeout: float | None = None,
    ) -> report_pb2.SourceFacts:
        """Fetch one subject and hold the answer to its expectation."""
        started = dt.datetime.now(dt.UTC)
        budget = self.tolerances.fetch_timeout if timeout is None else timeout
        facts = await adapter.fetch(subject.person.identity_number, timeout=budget)
        assert_facts_as_expected(
            facts, self.expectation(subject, running.config), person=subject.person,
            config=running.config, source_kind=self.kind_profile().source_kind,
            window=(started, dt.datetime.now(dt.UTC)),
        )
        return facts

    @staticmethod
    def require_fault_control(running: RunningSource) -> None:
        """Skip a fault test when the source cannot be made to misbehave (a real endpoint)."""
        if not running.source.fault_control:
            pytest.skip("the source under test has no fault injection")

    async def expect_error(
        self, adapter: SourceAdapter, subject: Subject, error: type[SourceError],
        timeout: float | None = None,
    ) -> SourceError:
        """Fetch and demand ``error``; any other outcome fails, naming only types."""
        budget = self.tolerances.fetch_timeout if timeout is None else timeout
        try:
            await adapter.fetch(subject.person.identity_number, timeout=budget)
        except error as exc:
            assert_no_personal_data_in_error(exc, subject.person)
            return exc
        except Exception as exc:
            outcome = type(exc).__name__
        else:
            outcome = "an answer"
        raise ConformanceError(f"expected {error.__name__}, got {outcome}")

    # --- the suite ----------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_adapter_speaks_for_its_configured_source(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource
    ) -> None:
        assert isinstance(conformance_adapter, SourceAdapter)
        assert conformance_adapter.config == conformance_source.config
        assert conformance_adapter.source_kind == self.kind_profile().source_kind

    @pytest.mark.asyncio
    async def test_latency_beyond_the_budget_is_a_prompt_source_timeout(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population,
    ) -> None:
        self.require_fault_control(conformance_source)
        budget, margin = self.tolerances.deadline_budget, self.tolerances.deadline_margin
        subject = self.corpus_subject(conformance_population, conformance_source.config)
        await conformance_source.source.set_faults(latency_ms=(budget + 0.5) * 1000)
        started = time.monotonic()
        await self.expect_error(conformance_adapter, subject, SourceTimeout, timeout=budget)
        elapsed = time.monotonic() - started
        if elapsed > budget + margin:
            raise ConformanceError(f"SourceTimeout came {elapsed - budget:.3f}s past the budget")
        if elapsed < budget * 0.8:
            raise ConformanceError(f"gave up after {elapsed:.3f}s of a {budget}s budget")

    @pytest.mark.asyncio
    async def test_cancelled_fetch_stops_promptly_and_leaves_no_task(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population,
    ) -> None:
        self.require_fault_control(conformance_source)
        subject = self.corpus_subject(conformance_population, conformance_source.config)
        await self.fetch_and_check(conformance_adapter, conformance_source, subject)  # warm up
        slow = self.tolerances.cancel_after + self.tolerances.cancel_margin + 0.3
        await conformance_source.source.set_faults(latency_ms=slow * 1000)
        before = asyncio.all_tasks()
        task = asyncio.create_task(
            conformance_adapter.fetch(subject.person.identity_number, timeout=5.0)
        )
        await asyncio.sleep(self.tolerances.cancel_after)
        task.cancel()
        await asyncio.wait({task}, timeout=self.tolerances.cancel_margin)
        if not task.done():
            raise ConformanceError("the fetch was still running after being cancelled")
        if not task.cancelled():
            outcome = "an answer" if task.exception() is None else type(task.exception()).__name__
            raise ConformanceError(f"a cancelled fetch must end cancelled, not with {outcome}")
        for _ in range(3):
            await asyncio.sleep(0)
        stray = asyncio.all_tasks() - before - {task}
        if stray:
            names = sorted(t.get_name() for t in stray)
            raise ConformanceError(f"tasks left behind by the cancelled fetch: {names}")
        await conformance_source.source.reset()
        await self.fetch_and_check(conformance_adapter, conformance_source, subject)

    @pytest.mark.asyncio
    async def test_scenario_subject_maps_as_expected(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population, scenario: str,
    ) -> None:
        subject = conformance_population.scenarios[scenario]
        await self.fetch_and_check(conformance_adapter, conformance_source, subject)

    @pytest.mark.asyncio
    async def test_population_sample_maps_as_expected(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population,
    ) -> None:
        others = [s for s in conformance_population if s.scenario is None]
        stride = max(1, len(others) // max(1, self.population_sample))
        for subject in others[::stride][: self.population_sample]:
            await self.fetch_and_check(conformance_adapter, conformance_source, subject)

    @pytest.mark.asyncio
    async def test_unknown_subject_gets_an_empty_answer(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population,
    ) -> None:
        number = self.unknown_identity_number
        assert conformance_population.get(number) is None, "the unknown number names a subject"
        started = dt.datetime.now(dt.UTC)
        facts = await conformance_adapter.fetch(number, timeout=self.tolerances.fetch_timeout)
        if facts.records or facts.cases or facts.HasField("identity"):
            raise ConformanceError("an unknown subject must get an answer without facts")
        assert_facts_as_expected(
            facts, self.expectation(None, conformance_source.config), person=None,
            config=conformance_source.config, source_kind=self.kind_profile().source_kind,
            window=(started, dt.datetime.now(dt.UTC)),
        )
        if number in facts.SerializeToString().decode("utf-8", "replace"):
            raise ConformanceError("the answer for an unknown subject echoes the number")

    @pytest.mark.asyncio
    async def test_malformed_payload_is_refused_cleanly(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population, malformed_variant: str,
    ) -> None:
        self.require_fault_control(conformance_source)
        subject = self.corpus_subject(conformance_population, conformance_source.config)
        await conformance_source.source.select_malformed(malformed_variant)
        await conformance_source.source.set_faults(malformed_rate=1.0)
        if malformed_variant in self.kind_profile().signed_variants:
            try:
                facts = await conformance_adapter.fetch(
                    subject.person.identity_number, timeout=self.tolerances.fetch_timeout
                )
            except SourceError as exc:
                raise ConformanceError(
                    f"a forged record must be kept and flagged INVALID, not refused with "
                    f"{type(exc).__name__}"
                ) from None
            flagged: list[report_pb2.BankruptcyCase | report_pb2.CreditRecord] = [
                *facts.cases, *facts.records
            ]
            if not flagged or any(f.provenance.signature != _INVALID for f in flagged):
                raise ConformanceError("a forged record must be kept and flagged INVALID")
            if facts.provenance.signature != _INVALID:
                raise ConformanceError("an answer with a forged record must be flagged INVALID")
            return
        await self.expect_error(conformance_adapter, subject, MalformedPayload)

    @pytest.mark.asyncio
    async def test_exhausted_budget_is_an_immediate_source_timeout(
        self, conformance_adapter: SourceAdapter, conformance_population: Population,
    ) -> None:
        subject = conformance_population.scenarios[self.scenarios[0]]
        started = time.monotonic()
        await self.expect_error(conformance_adapter, subject, SourceTimeout, timeout=0.0)
        if time.monotonic() - started > self.tolerances.deadline_margin:
            raise ConformanceError("a fetch with no time left must fail at once")

    @pytest.mark.asyncio
    async def test_error_rate_one_is_source_unavailable(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population,
    ) -> None:
        self.require_fault_control(conformance_source)
        subject = self.corpus_subject(conformance_population, conformance_source.config)
        await conformance_source.source.set_faults(error_rate=1.0)
        for _ in range(3):
            await self.expect_error(conformance_adapter, subject, SourceUnavailable)

    @pytest.mark.asyncio
    async def test_flaky_source_gives_correct_facts_or_unavailable(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population,
    ) -> None:
        self.require_fault_control(conformance_source)
        subject = self.corpus_subject(conformance_population, conformance_source.config)
        await conformance_source.source.set_faults(error_rate=0.5)
        answered = 0
        for _ in range(12):
            try:
                await self.fetch_and_check(conformance_adapter, conformance_source, subject)
            except SourceUnavailable as exc:
                assert_no_personal_data_in_error(exc, subject.person)
            except SourceError as exc:
                raise ConformanceError(
                    f"a flaky source gave {type(exc).__name__}, not SourceUnavailable"
                ) from None
            else:
                answered += 1
        if not answered:
            raise ConformanceError("no fetch got through a source that is up half the time")

    @pytest.mark.asyncio
    async def test_down_source_is_unavailable_then_recovers_at_once(
        self, conformance_adapter: SourceAdapter, conformance_source: RunningSource,
        conformance_population: Population,
    ) -> None:
        self.require_fault_control(conformance_source)
        subject = self.corpus_subject(conformance_population, conformance_source.config)
        await self.fetch_and_check(conformance_adapter, conformance_source, subject)  # pooled
        await conformance_source.source.set_faults(down=True)
        for _ in range(3):  # the first breaks the pooled connection, the next meet any backoff
            await self.expect_error(conformance_adapter, subject, SourceUnavailable)
        await conformance_source.source.set_faults(down=False)
        for attempt in range(1, self.tolerances.recovery_fetches + 1):
            try:
                await self.fetch_and_check(conformance_adapter, conformance_source, subject)
                return
            except SourceUnavailable:
                if attempt == self.tolerances.recovery_fetches:
                    raise ConformanceError(
                        f"still unavailable {attempt} fetch(es) after the source came back"
                    ) from None
