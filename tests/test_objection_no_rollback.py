"""Issue #14, item 1, end to end through the real server: an objection never rolls the index back.

The regression: after the credit registry's data provider had pushed a newer, signed fact, its
CORRECTED reply to an objection made the gateway re-fetch the registry and replace the index
with the registry's older, unsigned answer. Here the provider pushes over the real sync stream
(mTLS, signed with its registered key), replies over the objection service, and the index must
still hold the pushed fact afterwards — on SQLite and PostgreSQL. Filing an objection against
a source whose original is older than a signed push must not "correct" the index either.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population, State
from credgate.adapters.mocks.population import Subject as PopulationSubject
from credgate.adapters.mocks.providers import REGISTRY, source_facts
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.sync.signing import sign_update
from credgate.gateway.fact_index import IndexedFacts
from credgate.gateway.fact_index.models import FactHistoryRow
from credgate.gateway.sync.models import ChangeFeedRow
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, enrol_subject, subject_client
from tests.sync_support import HELLO, ensure_provider_certs, exchange, update_request
from tests.workflow_support import WorkflowGateway, desk, running_workflow_gateway

REGISTRY_ID = REGISTRY.source_id
OBSERVATION = vocab.REPAIR_STATE_OBSERVATION
SUSPENDED = vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED


@pytest.fixture
async def gw(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[WorkflowGateway]:
    """The workflow gateway, with the registry's data provider also pushing signed updates."""
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


async def _registry_facts(gw: WorkflowGateway, subject: Subject) -> report_pb2.SourceFacts:
    """The registry's facts in the subject's own (live) report; the live answer is indexed."""
    async with subject_client(gw.running, subject) as me:
        report = await me.get_repair_status(
            subject.identity_number, purpose=vocab.PURPOSE_SELF_INQUIRY
        )
    return next(s for s in report.sources if s.source_id == REGISTRY_ID)


async def _push(
    gw: WorkflowGateway,
    truth: PopulationSubject,
    state: State,
    as_of: dt.datetime,
    facts: report_pb2.SourceFacts | None = None,
) -> None:
    """The registry's provider pushes ``state`` as of ``as_of`` as its next (first) update
    (``facts``, if given, instead of the scripted provider's own)."""
    update = sync_pb2.ProviderUpdate(
        source_id=REGISTRY_ID,
        sequence=1,
        identity_number=truth.person.identity_number,
        idempotency_key=str(uuid.uuid4()),
        facts=facts or source_facts(REGISTRY, truth, state, as_of),
    )
    update.create_time.FromDatetime(as_of)
    async with gw.channel(REGISTRY.institution_id) as channel:
        responses = await exchange(
            channel, [HELLO, update_request(sign_update(REGISTRY.signing_key, update))]
        )
    acks = [r.ack.last_sequence for r in responses if r.WhichOneof("message") == "ack"]
    assert acks, responses
    assert acks[-1] == 1, responses


async def _held(gw: WorkflowGateway, subject: Subject) -> IndexedFacts:
    token = gw.tokenizer.token(subject.identity_number)
    return (await gw.fact_index.indexed(token))[REGISTRY_ID]


async def _feed_rows(gw: WorkflowGateway, subject: Subject) -> int:
    token = gw.tokenizer.token(subject.identity_number)
    async with gw.gateway.database.session() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(ChangeFeedRow)
            .where(ChangeFeedRow.subject_token == token, ChangeFeedRow.source_id == REGISTRY_ID)
        )
    return int(count or 0)


async def _history(gw: WorkflowGateway, subject: Subject) -> list[tuple[str, bool, int | None]]:
    """The registry's answers about the subject that the index did not take: (writer,
    whether it disagreed, the signed update it lost to)."""
    token = gw.tokenizer.token(subject.identity_number)
    async with gw.gateway.database.session() as session:
        rows = await session.execute(
            select(FactHistoryRow.writer, FactHistoryRow.disagrees, FactHistoryRow.held_sequence)
            .where(FactHistoryRow.subject_token == token, FactHistoryRow.source_id == REGISTRY_ID)
            .order_by(FactHistoryRow.writer)
        )
        return [(writer, disagrees, sequence) for writer, disagrees, sequence in rows]


def _newer_than(facts: report_pb2.SourceFacts) -> dt.datetime:
    """An as-of after the registry's live answer, and not in the future (the sync validator
    refuses that)."""
    as_of = facts.provenance.source_as_of.ToDatetime(tzinfo=dt.UTC) + dt.timedelta(hours=1)
    assert as_of < dt.datetime.now(dt.UTC)
    return as_of


async def test_a_corrected_reply_does_not_replace_a_newer_signed_push_with_an_older_refetch(
    gw: WorkflowGateway, observed: Subject, truth: PopulationSubject
) -> None:
    live = await _registry_facts(gw, observed)
    assert live.asserted_state == OBSERVATION
    record_id = live.cases[0].provenance.source_record_id
    async with gw.subject_channel(observed) as channel:
        objection = (
            await gw.objections(channel).FileObjection(
                obj_pb2.FileObjectionRequest(
                    request_id="req-no-rollback",
                    identity_number=observed.identity_number,
                    fact=obj_pb2.FactReference(source_id=REGISTRY_ID, source_record_id=record_id),
                    aspect=obj_pb2.DISPUTED_ASPECT_REPAIR_STATE,
                    requested_correction="the registry shows a state already left behind",
                )
            )
        ).objection
    assert objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
    assert objection.objection_id in desk(gw, REGISTRY_ID).objections

    # The registry corrects its record and its provider pushes the correction, signed and
    # newer than anything the gateway fetched; the registry's query interface still answers
    # its older data (it lags, as the mock registry's does: DATA_LAG).
    pushed_as_of = _newer_than(live)
    await _push(gw, truth, State.DISCLOSURE_SUSPENDED, pushed_as_of)
    pushed = await _held(gw, observed)
    assert (pushed.sequence, pushed.facts.asserted_state) == (1, SUSPENDED)
    feed_before = await _feed_rows(gw, observed)

    async with gw.channel(REGISTRY.institution_id) as channel:
        closed = (
            await gw.objections(channel).RecordSourceReply(
                obj_pb2.RecordSourceReplyRequest(
                    objection_id=objection.objection_id,
                    decision=obj_pb2.SOURCE_REPLY_DECISION_CORRECTED,
                    reply_reference="YYHF-0042",
                )
            )
        ).objection

    assert closed.state == obj_pb2.OBJECTION_STATE_CORRECTED_BY_SOURCE
    assert [s.action for s in closed.steps][-2:] == ["SOURCE_REPLIED", "INDEX_KEPT_NEWER"]
    held = await _held(gw, observed)
    assert held.sequence == 1  # still the provider-signed original
    assert held.source_as_of == pushed_as_of
    assert held.facts.asserted_state == SUSPENDED
    assert held.facts == pushed.facts
    # Two announcements, no fact written: the dispute ended (watchers drop the DISPUTED flag),
    # and the re-fetch is a new older answer that disagrees (the reconciler lists it as an
    # outdated answer: tests/test_outdated_answer.py).
    assert await _feed_rows(gw, observed) == feed_before + 2
    # The older re-fetch is not lost: it is in the index's history, marked as disagreeing
    # with the signed fact it lost to.
    assert await _history(gw, observed) == [("correction", True, 1)]

    # A later live query fetches the registry's older answer again: it is not stored either.
    assert (await _registry_facts(gw, observed)).asserted_state == OBSERVATION
    assert (await _held(gw, observed)).facts == pushed.facts
    assert await _history(gw, observed) == [("correction", True, 1), ("live", True, 1)]


async def test_an_objection_against_an_older_original_keeps_a_newer_signed_push_and_goes_on(
    gw: WorkflowGateway, observed: Subject, truth: PopulationSubject
) -> None:
    live = await _registry_facts(gw, observed)
    record_id = live.cases[0].provenance.source_record_id
    # The pushed fact is the same record in another state (so it differs from the registry's
    # original), and newer.
    as_of = _newer_than(live)
    differing = report_pb2.SourceFacts()
    differing.CopyFrom(live)
    differing.asserted_state = SUSPENDED
    differing.provenance.source_as_of.FromDatetime(as_of)
    await _push(gw, truth, State.DISCLOSURE_SUSPENDED, as_of, differing)
    pushed = await _held(gw, observed)

    async with gw.subject_channel(observed) as channel:
        objection = (
            await gw.objections(channel).FileObjection(
                obj_pb2.FileObjectionRequest(
                    request_id="req-older-original",
                    identity_number=observed.identity_number,
                    fact=obj_pb2.FactReference(source_id=REGISTRY_ID, source_record_id=record_id),
                    aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
                    requested_correction="the case stage shown is not the court's",
                )
            )
        ).objection

    # Not "corrected in index" from an older original: the source answers it.
    assert objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
    routed = next(s for s in objection.steps if s.action == "SUBMITTING_TO_SOURCE")
    assert "holds newer facts" in routed.note
    assert (await _held(gw, observed)).facts == pushed.facts
