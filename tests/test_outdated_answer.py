"""Issue #14, item 1: a source's older answer that disagrees surfaces as a contradiction.

After the registry's data provider pushed a newer, signed fact, a live query fetches the
registry's older answer (its query interface lags). The index keeps the signed fact and the
older answer goes to the history; the reconciliation listing then shows, to the regulator and
to the registry's own provider, one "outdated_answer" contradiction naming the registry and both
as-of times. When the registry's answer agrees again (it catches up) the contradiction clears;
an older answer that agrees never opens one. Real gateway and mock sources, SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population, State
from credgate.adapters.mocks.population import Subject as PopulationSubject
from credgate.adapters.mocks.providers import REGISTRY
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as pb
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.reconciliation.evaluate import OUTDATED_ANSWER
from credgate.gateway.sync.models import ChangeFeedRow
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, enrol_subject
from tests.sync_support import ensure_provider_certs
from tests.test_objection_no_rollback import (
    REGISTRY_ID,
    _held,
    _history,
    _newer_than,
    _push,
    _registry_facts,
)
from tests.test_reconciliation import list_open
from tests.workflow_support import WorkflowGateway, desk, running_workflow_gateway

WAIT = 20.0
REGULATOR = "regulator-demo"
SUSPENDED = vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED
OBSERVATION = vocab.REPAIR_STATE_OBSERVATION


@pytest.fixture
async def gw(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[WorkflowGateway]:
    ensure_provider_certs(dev_pki)
    async with running_workflow_gateway(
        mock_fleet, dev_pki, tmp_path, database_url, pushing=[REGISTRY]
    ) as gateway:
        yield gateway


@pytest.fixture
def truth(population: Population) -> PopulationSubject:
    return population.scenarios["observation"]


@pytest.fixture
async def observed(gw: WorkflowGateway, truth: PopulationSubject) -> Subject:
    return await enrol_subject(gw.running, truth.person.identity_number)


def _outdated(found: list[pb.OpenContradiction], token: str) -> list[report_pb2.Contradiction]:
    return [
        item.contradiction
        for item in found
        if item.subject_token == token and item.contradiction.subject_matter == OUTDATED_ANSWER
    ]


async def _settled(gw: WorkflowGateway) -> None:
    """Everything written so far is committed and evaluated: the reconciler's own step, run
    here (safe beside the background one: the cursor moves by compare-and-set)."""
    await gw.fact_index.flush()
    followers = gw.gateway.followers
    assert followers is not None
    await followers.reconciler.catch_up()


async def _listed(gw: WorkflowGateway, token: str, count: int) -> list[report_pb2.Contradiction]:
    """The regulator's outdated-answer contradictions of ``token`` once there are ``count``."""
    async with asyncio.timeout(WAIT):
        while True:
            found = _outdated(await list_open(gw.running, REGULATOR), token)
            if len(found) == count:
                return found
            await asyncio.sleep(0.1)


def _iso(value: dt.datetime) -> str:
    return f"{value.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"


async def test_an_older_disagreeing_answer_is_listed_and_clears_when_the_source_catches_up(
    gw: WorkflowGateway, observed: Subject, truth: PopulationSubject, population: Population
) -> None:
    token = gw.tokenizer.token(observed.identity_number)
    registry = desk(gw, REGISTRY_ID)
    # What the registry answers once it has recorded the suspension (its catch-up): one live
    # query while it shows it, indexed as an unsigned answer.
    registry.record_ruling("catch-up", truth, State.DISCLOSURE_SUSPENDED, dt.date(2026, 10, 30))
    shown = registry.subject(population, truth.person.identity_number)
    assert shown is not None
    caught_up = await _registry_facts(gw, observed)
    assert caught_up.asserted_state == SUSPENDED
    older_as_of = caught_up.provenance.source_as_of.ToDatetime(tzinfo=dt.UTC)

    # Its provider pushes the same facts, signed and newer.
    newer_as_of = _newer_than(caught_up)
    signed = report_pb2.SourceFacts()
    signed.CopyFrom(caught_up)
    signed.provenance.source_as_of.FromDatetime(newer_as_of)
    await _push(gw, truth, State.DISCLOSURE_SUSPENDED, newer_as_of, signed)
    assert (await _held(gw, observed)).sequence == 1

    # The registry's query interface falls back to its older data (a lagging replica): the
    # live answer, older and disagreeing, is kept in history, not in the index ...
    registry.set_subject(truth)
    assert (await _registry_facts(gw, observed)).asserted_state == OBSERVATION
    await _settled(gw)
    held = await _held(gw, observed)
    assert (held.sequence, held.source_as_of, held.facts.asserted_state) == (
        1, newer_as_of, SUSPENDED)  # fmt: skip
    assert await _history(gw, observed) == [("live", True, 1)]

    # ... and listed as one outdated-answer contradiction, to the regulator and to the
    # registry's own provider, naming the registry and both as-of times.
    await _settled(gw)
    [listed] = await _listed(gw, token, 1)
    assert (listed.prevailing_source_id, listed.dissenting_source_id) == (REGISTRY_ID, REGISTRY_ID)
    assert (listed.prevailing_value, listed.dissenting_value) == (
        f"as of {_iso(newer_as_of)}", f"as of {_iso(older_as_of)}")  # fmt: skip
    assert _iso(newer_as_of) in listed.explanation
    assert _iso(older_as_of) in listed.explanation
    assert "signed update 1" in listed.explanation
    assert observed.identity_number not in str(listed)
    assert truth.person.name not in str(listed)
    by_provider = _outdated(await list_open(gw.running, REGISTRY.institution_id), token)
    assert by_provider == [listed]

    # The same lagging answer again: still one, and no new announcement per query.
    before = await _feed_rows_of(gw, token)
    assert (await _registry_facts(gw, observed)).asserted_state == OBSERVATION
    await _settled(gw)
    assert await _feed_rows_of(gw, token) == before
    assert len(await _listed(gw, token, 1)) == 1

    # The registry catches up again: its answer (as old as before) now agrees with the
    # signed fact; the contradiction clears.
    registry.set_subject(shown)
    assert (await _registry_facts(gw, observed)).asserted_state == SUSPENDED
    await _settled(gw)
    assert await _history(gw, observed) == [("live", False, 1)]
    assert _outdated(await list_open(gw.running, REGULATOR), token) == []
    assert (await _held(gw, observed)).sequence == 1


async def test_an_older_answer_that_agrees_opens_no_contradiction(
    gw: WorkflowGateway, observed: Subject, truth: PopulationSubject
) -> None:
    token = gw.tokenizer.token(observed.identity_number)
    live = await _registry_facts(gw, observed)
    signed = report_pb2.SourceFacts()
    signed.CopyFrom(live)
    signed.provenance.source_as_of.FromDatetime(_newer_than(live))
    await _push(gw, truth, State.OBSERVATION, _newer_than(live), signed)
    assert (await _registry_facts(gw, observed)).asserted_state == OBSERVATION
    await _settled(gw)
    assert await _history(gw, observed) == [("live", False, 1)]
    assert _outdated(await list_open(gw.running, REGULATOR), token) == []


async def _feed_rows_of(gw: WorkflowGateway, token: str) -> int:
    """The change-feed rows announcing the registry's facts about ``token``."""
    async with gw.gateway.database.session() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(ChangeFeedRow)
            .where(ChangeFeedRow.subject_token == token, ChangeFeedRow.source_id == REGISTRY_ID)
        )
    return int(count or 0)
