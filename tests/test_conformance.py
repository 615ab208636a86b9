"""Every source of the demo fleet passes the conformance kit (``credgate.adapters.testing``).

Each class declares only which fleet source it runs against; the source kind's profile (what
it must say about each scenario subject) and the adapter (from ``adapters.catalog``) follow
from the fleet's configuration, exactly as the gateway would build them.
"""

from __future__ import annotations

import pytest

from credgate.adapters.mocks import tax as tax_mock
from credgate.adapters.mocks.fleet import DEFAULT_FLEET
from credgate.adapters.mocks.population import SCENARIO_NAMES
from credgate.adapters.testing import AdapterConformance, fleet_source

pytest_plugins = ("pytester",)


class TestDisclosurePlatform(AdapterConformance):
    source = fleet_source("disclosure-platform")


class TestCreditRegistry(AdapterConformance):
    source = fleet_source("credit-registry")


class TestCourt(AdapterConformance):
    source = fleet_source("court-shenzhen")


class TestBankQianhaiXml(AdapterConformance):
    source = fleet_source("bank-qianhai")


class TestBankPengchengCsv(AdapterConformance):
    source = fleet_source("bank-pengcheng")


class TestTax(AdapterConformance):
    source = fleet_source("tax-shenzhen")


class TestSocialInsurance(AdapterConformance):
    source = fleet_source("social-insurance-shenzhen")


class TestMarketSupervision(AdapterConformance):
    source = fleet_source("market-supervision-shenzhen")


def test_every_fleet_source_runs_the_kit() -> None:
    covered = {
        cls.source.source_id  # type: ignore[attr-defined]
        for cls in AdapterConformance.__subclasses__()
        if cls.__module__ == __name__
    }
    assert covered == {spec.source_id for spec in DEFAULT_FLEET}


# --- the kit itself: it must fail adapters that break the seam ------------------------------

BROKEN_ADAPTERS = '''
import asyncio
from credgate.api.credit_repair.v1 import vocabulary_pb2
from credgate.adapters.base import MalformedPayload, SourceError, SourceTimeout
from credgate.adapters.tax import TaxAdapter
from credgate.adapters.testing import AdapterConformance, fleet_source


class LeakyErrors(TaxAdapter):
    async def fetch(self, identity_number, *, timeout):
        try:
            return await super().fetch(identity_number, timeout=timeout)
        except SourceError as exc:
            raise type(exc)(f"{exc} (subject {identity_number})") from None


class LeakyChain(TaxAdapter):
    async def fetch(self, identity_number, *, timeout):
        try:
            return await super().fetch(identity_number, timeout=timeout)
        except MalformedPayload as exc:
            try:
                raise ValueError("while mapping " + identity_number)
            except ValueError:
                raise MalformedPayload("tax answer could not be mapped") from exc


class IgnoresBudget(TaxAdapter):
    async def fetch(self, identity_number, *, timeout):
        return await super().fetch(identity_number, timeout=max(timeout, 2.0))


class SwallowsCancel(TaxAdapter):
    async def fetch(self, identity_number, *, timeout):
        try:
            return await super().fetch(identity_number, timeout=timeout)
        except asyncio.CancelledError:
            raise SourceTimeout("cancelled") from None


class LeavesTask(TaxAdapter):
    async def fetch(self, identity_number, *, timeout):
        inner = asyncio.create_task(super().fetch(identity_number, timeout=timeout))
        inner.add_done_callback(lambda t: t.cancelled() or t.exception())  # quiet at exit
        return await asyncio.shield(inner)


class Miscategorized(TaxAdapter):
    async def fetch(self, identity_number, *, timeout):
        facts = await super().fetch(identity_number, timeout=timeout)
        for record in facts.records:
            record.category = vocabulary_pb2.DATA_CATEGORY_COMMERCIAL_CREDIT
        return facts


class NamesInSummary(TaxAdapter):
    async def fetch(self, identity_number, *, timeout):
        facts = await super().fetch(identity_number, timeout=timeout)
        for record in facts.records:
            record.summary += " of " + facts.identity.name
        return facts


class TestBroken(AdapterConformance):
    source = fleet_source("tax-shenzhen")
    adapter_class = {adapter}
'''

INNER_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
"""The inner runs use pytest-asyncio's strict mode, as a third party's project may."""


@pytest.mark.parametrize(
    ("adapter", "selection", "failure"),
    [
        ("LeakyErrors", "malformed and truncated or error_rate",
         "personal data in MalformedPayload"),
        ("LeakyChain", "malformed and truncated", "personal data in ValueError"),
        ("IgnoresBudget", "latency or exhausted", "expected SourceTimeout, got an answer"),
        ("SwallowsCancel", "cancelled", "must end cancelled, not with SourceTimeout"),
        ("LeavesTask", "cancelled", "tasks left behind by the cancelled fetch"),
        ("Miscategorized", "scenario and observation", "TAX_ARREARS filed under DATA_CATEGORY_"),
        ("NamesInSummary", "scenario and observation", "summary contains the subject"),
    ],
)
def test_kit_fails_an_adapter_that_breaks_the_seam(
    pytester: pytest.Pytester, adapter: str, selection: str, failure: str
) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_broken=BROKEN_ADAPTERS.replace("{adapter}", adapter))
    result = pytester.runpytest_inprocess(
        "-p", "credgate.adapters.testing", "-k", selection,
        "-p", "no:cacheprovider",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, result.stdout.str()
    assert "passed" not in outcomes or outcomes.get("failed", 0) >= 1
    result.stdout.fnmatch_lines([f"*{failure}*"])


def test_kit_passes_the_same_adapter_unbroken(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_broken=BROKEN_ADAPTERS.replace("{adapter}", "TaxAdapter"))
    result = pytester.runpytest_inprocess(
        "-p", "credgate.adapters.testing", "-p", "no:cacheprovider",
        "-k", "malformed or cancelled or latency or scenario",
    )
    result.assert_outcomes(passed=len(tax_mock.VARIANTS) + 2 + len(SCENARIO_NAMES))
