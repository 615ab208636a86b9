"""The subject controls their consent (issue #13): pause, resume and withdraw by signed statement.

Two gateway replicas share one database (SQLite: one file; PostgreSQL: one schema), each a full
``build_gateway`` with mutual TLS and the mock sources, as in ``test_write_races``. The subject
signs a ``ConsentStateChange`` with their enrolled key and sends it with their own certificate
or has an institution relay it; the grantee's very next query, on either replica, sees the new
state. Refusals are attacked: another subject's key, a replay, an older statement after a newer
one, a retired key after re-enrolment, a grant that does not exist (answered exactly like
another subject's). The derived states EXHAUSTED and PAUSED are shown to grantee and subject.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.store_models import AuditEntryRow
from credgate.consent import grants
from credgate.consent.state_change import sign_statement
from credgate.gateway.client import CredgateError
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, enrol_subject, subject_client
from tests.workflow_support import WorkflowGateway, running_workflow_gateway

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
ACTIVE = consent_pb2.CONSENT_STATE_ACTIVE
PAUSED = consent_pb2.CONSENT_STATE_PAUSED
REVOKED = consent_pb2.CONSENT_STATE_REVOKED
EXHAUSTED = consent_pb2.CONSENT_STATE_EXHAUSTED
NOT_PERMITTED = "CONSENT_STATEMENT_NOT_PERMITTED"
Pair = tuple[WorkflowGateway, WorkflowGateway]


@pytest.fixture
async def replicas(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[Pair]:
    """Two gateways on one database (and one keyring: replicas share it)."""
    async with (
        running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as a,
        running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as b,
    ):
        yield a, b


def person(population: Population, scenario: str = "observation") -> str:
    return population.scenarios[scenario].person.identity_number


async def grant(gw: WorkflowGateway, subject: Subject, *, max_uses: int = 0) -> str:
    """The subject signs terms for bank-demo, which records them; the grant's id."""
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=subject.key_id,
        grantee_institution_id="bank-demo",
        collecting_institution_id="bank-demo",
        purposes=[REVIEW],
        categories=[REPAIR],
        max_uses=max_uses,
        retention_days=30,
        nonce=secrets.token_bytes(16),
    )
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + dt.timedelta(days=30))
    signed, signature = grants.sign_terms(subject.key, terms)
    async with gw.running.client("bank-demo") as bank:
        recorded = await bank.grant_consent(subject.identity_number, signed, signature)
    return recorded.consent_id


_last_issue = [dt.datetime.now(dt.UTC)]


def statement(
    key: Ed25519PrivateKey,
    consent_id: str,
    new_state: consent_pb2.ConsentState.ValueType,
    *,
    issued: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """The subject's signed statement; issue times strictly increase unless given."""
    if issued is None:
        issued = max(dt.datetime.now(dt.UTC), _last_issue[0] + dt.timedelta(microseconds=1))
        _last_issue[0] = issued
    change = consent_pb2.ConsentStateChange(
        consent_id=consent_id,
        subject_key_id=grants.subject_key_id(grants.raw_public_key(key)),
        new_state=new_state,
    )
    change.issue_time.FromDatetime(issued)
    return sign_statement(key, change)


async def change(
    gw: WorkflowGateway, caller: str | Subject, signed: tuple[bytes, bytes]
) -> consent_pb2.ConsentGrant:
    """Send the statement as ``caller`` (an institution id, or the subject's own certificate)."""
    client = (
        subject_client(gw.running, caller)
        if isinstance(caller, Subject)
        else gw.running.client(caller)
    )
    async with client:
        return await client.change_consent_state(*signed)


async def refusal(
    gw: WorkflowGateway, caller: str | Subject, signed: tuple[bytes, bytes]
) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(CredgateError) as caught:
        await change(gw, caller, signed)
    return caught.value.code, caught.value.reason, str(caught.value)


async def query(gw: WorkflowGateway, number: str, consent_id: str) -> str:
    """The grantee's query under the grant: "ALLOWED" or the refusal's reason."""
    async with gw.running.client("bank-demo") as bank:
        try:
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=consent_id)
        except CredgateError as error:
            refused = error
        else:
            return "ALLOWED"
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    return refused.reason


async def seen_by_grantee(gw: WorkflowGateway, consent_id: str) -> consent_pb2.ConsentGrant:
    async with gw.channel("bank-demo") as channel:
        response = await consent_grpc.ConsentServiceStub(channel).GetConsent(
            consent_pb2.GetConsentRequest(consent_id=consent_id)
        )
    found: consent_pb2.ConsentGrant = response.grant
    return found


async def listed(gw: WorkflowGateway, state: consent_pb2.ConsentState.ValueType) -> list[str]:
    """The ids of bank-demo's grants in ``state`` (ListConsents' filter)."""
    async with gw.channel("bank-demo") as channel:
        response = await consent_grpc.ConsentServiceStub(channel).ListConsents(
            consent_pb2.ListConsentsRequest(state=state)
        )
    return [g.consent_id for g in response.grants]


async def seen_by_subject(
    gw: WorkflowGateway, subject: Subject, consent_id: str
) -> consent_pb2.ConsentGrant:
    async with subject_client(gw.running, subject) as own:
        return next(g for g in await own.list_own_consents() if g.consent_id == consent_id)


async def actions(gw: WorkflowGateway) -> list[tuple[int, str]]:
    """(action, reason) of every CHANGE_CONSENT_STATE entry, in log order."""
    async with gw.gateway.database.session() as session:
        blobs = await session.scalars(select(AuditEntryRow.entry_bytes))
        entries = [audit_pb2.AuditEntry.FromString(b) for b in blobs]
    return [
        (e.outcome, e.reason)
        for e in entries
        if e.action == audit_pb2.AUDIT_ACTION_CHANGE_CONSENT_STATE
    ]


# -- pause, resume, withdraw ----------------------------------------------------------------------


async def test_a_pause_on_one_replica_refuses_the_next_query_on_the_other_and_resume_lifts_it(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a.running, number)
    consent_id = await grant(a, subject)
    assert await query(b, number, consent_id) == "ALLOWED"

    paused = await change(a, subject, statement(subject.key, consent_id, PAUSED))  # own cert
    assert paused.state == PAUSED
    assert paused.HasField("pause_time")
    assert await query(b, number, consent_id) == "CONSENT_PAUSED"
    assert (await seen_by_grantee(b, consent_id)).state == PAUSED
    assert (await seen_by_subject(b, subject, consent_id)).state == PAUSED
    assert await listed(b, PAUSED) == [consent_id]
    assert await listed(b, ACTIVE) == []

    resumed = await change(b, "court-demo", statement(subject.key, consent_id, ACTIVE))  # relayed
    assert resumed.state == ACTIVE
    assert not resumed.HasField("pause_time")
    assert await query(a, number, consent_id) == "ALLOWED"
    assert await actions(a) == [(audit_pb2.AUDIT_OUTCOME_ALLOWED, "ALLOWED")] * 2


async def test_the_subject_withdraws_and_nothing_brings_the_grant_back(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population, "restored_reorganization")
    subject = await enrol_subject(a.running, number)
    consent_id = await grant(a, subject)

    revoked = await change(a, subject, statement(subject.key, consent_id, REVOKED))
    assert revoked.state == REVOKED
    assert revoked.revoked_by_subject_key_id == subject.key_id
    assert revoked.revoked_by_institution_id == ""
    assert await query(b, number, consent_id) == "CONSENT_REVOKED"
    code, reason, _ = await refusal(b, subject, statement(subject.key, consent_id, ACTIVE))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_STATE_FINAL")
    assert (await seen_by_subject(a, subject, consent_id)).state == REVOKED


async def test_the_grantee_still_revokes_on_its_own(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population, "no_record")
    subject = await enrol_subject(a.running, number)
    consent_id = await grant(a, subject)
    async with a.running.client("bank-demo") as bank:
        revoked = await bank.revoke_consent(consent_id)
    assert (revoked.state, revoked.revoked_by_institution_id) == (REVOKED, "bank-demo")
    assert await query(b, number, consent_id) == "CONSENT_REVOKED"


# -- refusals -------------------------------------------------------------------------------------


async def test_another_subjects_statement_is_refused_like_a_grant_that_does_not_exist(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a.running, number)
    other = await enrol_subject(a.running, person(population, "restored_reorganization"))
    consent_id = await grant(a, subject)

    theirs = await refusal(a, "bank-demo", statement(other.key, consent_id, REVOKED))
    missing = await refusal(a, "bank-demo", statement(other.key, "cg_" + "a" * 26, REVOKED))
    assert theirs == missing  # same code, reason and message: existence is not revealed
    assert theirs[:2] == (grpc.StatusCode.PERMISSION_DENIED, NOT_PERMITTED)
    # The subject's own valid statement, carried by another subject's certificate.
    carried = await refusal(b, other, statement(subject.key, consent_id, PAUSED))
    assert carried[:2] == (grpc.StatusCode.PERMISSION_DENIED, NOT_PERMITTED)
    # The statement names the subject's key but another key signed it.
    signed, _ = statement(subject.key, consent_id, REVOKED)
    _, forged = statement(other.key, consent_id, REVOKED)
    code, reason, _ = await refusal(a, "bank-demo", (signed, forged))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONSENT_SIGNATURE_INVALID")

    assert (await seen_by_grantee(b, consent_id)).state == ACTIVE
    assert await query(b, number, consent_id) == "ALLOWED"
    denied = [r for o, r in await actions(a) if o == audit_pb2.AUDIT_OUTCOME_DENIED]
    assert denied == [NOT_PERMITTED] * 3


async def test_a_replayed_or_overtaken_statement_is_refused(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a.running, number)
    consent_id = await grant(a, subject)
    pause = statement(subject.key, consent_id, PAUSED)
    resume = statement(subject.key, consent_id, ACTIVE)
    await change(a, "bank-demo", pause)
    await change(a, "bank-demo", resume)

    replayed = await refusal(b, "bank-demo", pause)  # would pause the grant again
    assert replayed[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "CONSENT_STATEMENT_STALE")
    again = await refusal(b, "bank-demo", resume)
    assert again[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "CONSENT_STATEMENT_STALE")
    old = statement(
        subject.key, consent_id, PAUSED, issued=dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    )
    assert (await refusal(b, "bank-demo", old))[1] == "CONSENT_STATEMENT_STALE"
    assert await query(b, number, consent_id) == "ALLOWED"


# -- derived states -------------------------------------------------------------------------------


async def test_a_used_up_grant_shows_exhausted_and_cannot_be_resumed(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a.running, number)
    consent_id = await grant(a, subject, max_uses=2)
    assert await query(a, number, consent_id) == "ALLOWED"
    assert (await seen_by_grantee(b, consent_id)).state == ACTIVE
    assert await query(b, number, consent_id) == "ALLOWED"  # the last use

    assert (await seen_by_grantee(a, consent_id)).state == EXHAUSTED
    assert (await seen_by_subject(b, subject, consent_id)).state == EXHAUSTED
    assert await listed(a, EXHAUSTED) == [consent_id]
    assert await listed(a, ACTIVE) == []
    assert await query(a, number, consent_id) == "CONSENT_EXHAUSTED"
    code, reason, _ = await refusal(a, subject, statement(subject.key, consent_id, PAUSED))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_STATE_FINAL")


async def test_a_paused_grant_spends_no_use(replicas: Pair, population: Population) -> None:
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a.running, number)
    consent_id = await grant(a, subject, max_uses=1)
    await change(a, subject, statement(subject.key, consent_id, PAUSED))
    assert await query(b, number, consent_id) == "CONSENT_PAUSED"
    await change(b, subject, statement(subject.key, consent_id, ACTIVE))
    assert (await seen_by_grantee(a, consent_id)).use_count == 0
    assert await query(a, number, consent_id) == "ALLOWED"


async def test_every_answer_under_a_grant_counts_in_its_use_count_limited_or_not(
    replicas: Pair, population: Population
) -> None:
    """``use_count`` says how many queries relied on the grant, whichever way the uses are
    kept: on the row of a grant limited in uses, as USED events for one without a limit. Read
    by the grantee and by the subject, through the other replica, and listed."""
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a.running, number)
    unlimited, limited = await grant(a, subject), await grant(a, subject, max_uses=5)
    for consent_id in (unlimited, limited):
        for _ in range(2):
            assert await query(a, number, consent_id) == "ALLOWED"
    for consent_id in (unlimited, limited):
        assert (await seen_by_grantee(b, consent_id)).use_count == 2
        assert (await seen_by_subject(b, subject, consent_id)).use_count == 2


# -- re-enrolment ---------------------------------------------------------------------------------


async def test_after_re_enrolment_the_new_key_withdraws_an_old_grant_and_the_old_key_cannot(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    old = await enrol_subject(a.running, number)
    consent_id = await grant(a, old)
    new = await enrol_subject(b.running, number)  # a lost phone: the old key is retired

    assert await query(a, number, consent_id) == "ALLOWED"  # the grant itself stays valid
    retired = await refusal(a, "bank-demo", statement(old.key, consent_id, REVOKED))
    assert retired[:2] == (grpc.StatusCode.PERMISSION_DENIED, NOT_PERMITTED)
    revoked = await change(b, new, statement(new.key, consent_id, REVOKED))
    assert (revoked.state, revoked.revoked_by_subject_key_id) == (REVOKED, new.key_id)
    assert await query(a, number, consent_id) == "CONSENT_REVOKED"
