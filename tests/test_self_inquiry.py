"""Self-inquiry (measures Art. 15): the subject reads their own record and their own grants.

The subject authenticates with a certificate naming their current enrolled consent key
(``subject.<key id without sk_>``, role ``subject``); anything short of that is the same
PERMISSION_DENIED, never revealing whether records exist.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2 as self_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2_grpc as self_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants, policy
from credgate.consent.register import ConsentRegister, ListCursor
from credgate.consent.subject_grants import list_subject_grants
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.client import CredgateClient, CredgateError
from credgate.gateway.pki import add_institution
from credgate.gateway.subject_certificate import (
    SubjectCertificates,
    named_key_id,
    subject_institution_id,
)
from tests.fixtures.mocks import RunningGateway, unstale
from tests.fixtures.pki import mtls_channel
from tests.fixtures.subjects import (
    Subject,
    enrol_subject,
    issue_subject_certificate,
    record_grant,
    subject_client,
)
from tests.test_consent_register import (
    HOUR,
    IDENTITY,
    OTHER_IDENTITY,
    T0,
    FakeClock,
    _enrolled,
    _record,
)

SELF = vocab.PURPOSE_SELF_INQUIRY
REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
ACTIVE = consent_pb2.CONSENT_STATE_ACTIVE
REVOKED = consent_pb2.CONSENT_STATE_REVOKED
EXPIRED = consent_pb2.CONSENT_STATE_EXPIRED


async def _denied(client: CredgateClient, number: str) -> tuple[grpc.StatusCode, str, str]:
    async with client:
        with pytest.raises(CredgateError) as caught:
            await client.get_repair_status(number, purpose=SELF)
    return caught.value.code, caught.value.reason, caught.value.message


def _issue(
    gateway: RunningGateway, institution_id: str, role: vocab.InstitutionRole.ValueType
) -> CredgateClient:
    add_institution(gateway.pki.paths.directory, Institution(institution_id, role, "x"))
    return gateway.client(institution_id)


def test_subject_institution_ids_name_the_key() -> None:
    key_id = grants.subject_key_id(grants.raw_public_key(Ed25519PrivateKey.generate()))
    institution_id = subject_institution_id(key_id)
    assert institution_id == "subject." + key_id.removeprefix("sk_")
    assert named_key_id(Institution(institution_id, vocab.INSTITUTION_ROLE_SUBJECT)) == key_id
    bank = Institution(institution_id, vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION)
    assert named_key_id(bank) is None
    for odd in ("subject.", "subject.abc", "subjectx" + key_id[3:], key_id):
        assert named_key_id(Institution(odd, vocab.INSTITUTION_ROLE_SUBJECT)) is None
    with pytest.raises(ValueError):
        subject_institution_id("not-a-key-id")


async def test_the_subject_reads_their_own_full_report(
    gateway: RunningGateway, population: Population
) -> None:
    person = population.scenarios["gb18030_name"].person
    subject = await enrol_subject(gateway, person.identity_number)
    async with subject_client(gateway, subject) as me:
        verified = await me.get_signed_repair_status(person.identity_number, purpose=SELF)
    report = verified.report
    assert report.state == vocab.REPAIR_STATE_OBSERVATION
    assert set(report.categories) == policy.ALL_CATEGORIES
    assert not report.withheld_categories
    assert report.chargeable is False
    assert report.consent_id == ""
    assert report.recipient_institution_id == subject.institution_id
    names = {s.identity.name for s in report.sources if s.HasField("identity")}
    assert person.name in names  # their own identity, as the sources hold it


async def test_another_persons_record_is_refused_the_same_whether_or_not_it_exists(
    gateway: RunningGateway, population: Population
) -> None:
    me = await enrol_subject(gateway, population.scenarios["observation"].person.identity_number)
    answers = {
        scenario: await _denied(
            subject_client(gateway, me), population.scenarios[scenario].person.identity_number
        )
        for scenario in ("restored_reorganization", "no_record")
    }
    assert answers["restored_reorganization"] == answers["no_record"]
    code, reason, message = answers["no_record"]
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "SUBJECT_MISMATCH")
    for scenario in ("restored_reorganization", "no_record"):
        assert population.scenarios[scenario].person.identity_number not in message


async def test_re_enrolment_retires_the_old_certificate(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["revoked"].person.identity_number
    lost_phone = await enrol_subject(gateway, number)
    issue_subject_certificate(gateway, lost_phone)
    new_phone = await enrol_subject(gateway, number)  # retires the first key

    assert (await _denied(subject_client(gateway, lost_phone), number))[1] == "SUBJECT_MISMATCH"
    async with subject_client(gateway, lost_phone) as old:
        with pytest.raises(CredgateError) as caught:
            await old.list_own_consents()
    assert caught.value.reason == "SUBJECT_MISMATCH"
    async with subject_client(gateway, new_phone) as new:
        report = await unstale(lambda: new.get_repair_status(number, purpose=SELF))
    assert report.state == vocab.REPAIR_STATE_REVOKED


async def test_certificates_that_name_no_enrolled_key_are_refused(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    await enrol_subject(gateway, number)
    never_enrolled = Subject(number, Ed25519PrivateKey.generate())
    assert (await _denied(subject_client(gateway, never_enrolled), number))[1] == (
        "SUBJECT_MISMATCH"
    )
    odd = _issue(gateway, "subject.not-a-key", vocab.INSTITUTION_ROLE_SUBJECT)
    assert (await _denied(odd, number))[1] == "SUBJECT_MISMATCH"


async def test_a_subject_shaped_id_does_not_make_an_institution_a_subject(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    bank = _issue(
        gateway,
        subject.institution_id.replace("subject.", "subject-bank."),
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
    )
    assert (await _denied(bank, number))[1] == "ROLE_NOT_PERMITTED"
    async with gateway.client("bank-demo") as other:
        with pytest.raises(CredgateError) as caught:
            await other.list_own_consents()
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_PERMITTED",
    )


async def test_the_subject_lists_their_own_grants_in_every_state(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    earlier = await enrol_subject(gateway, number)
    old_grant = await record_grant(
        gateway, earlier, grantee="lessor-demo", purposes=[REVIEW], categories=[REPAIR]
    )
    subject = await enrol_subject(gateway, number)  # a new key; old grants stay theirs
    kept = await record_grant(
        gateway, subject, grantee="bank-demo", purposes=[REVIEW], categories=[REPAIR]
    )
    revoked = await record_grant(
        gateway, subject, grantee="agency-demo", purposes=[REVIEW], categories=[REPAIR]
    )
    lapsing = await record_grant(
        gateway,
        subject,
        grantee="bank-demo",
        purposes=[vocab.PURPOSE_EXISTING_CREDIT_RELATIONSHIP],
        categories=[REPAIR],
        valid_for=dt.timedelta(seconds=1.5),
    )
    async with gateway.client("agency-demo") as agency:
        await agency.revoke_consent(revoked.consent_id)
    stranger = await enrol_subject(
        gateway, population.scenarios["no_record"].person.identity_number
    )
    await record_grant(
        gateway, stranger, grantee="bank-demo", purposes=[REVIEW], categories=[REPAIR]
    )
    await asyncio.sleep(1.6)

    async with subject_client(gateway, subject) as me:
        every = await me.list_own_consents()
        active = await me.list_own_consents(state=ACTIVE)
    states = {g.consent_id: g.state for g in every}
    assert states == {
        old_grant.consent_id: ACTIVE,
        kept.consent_id: ACTIVE,
        revoked.consent_id: REVOKED,
        lapsing.consent_id: EXPIRED,
    }
    assert [g.consent_id for g in every] == [
        old_grant.consent_id,
        kept.consent_id,
        revoked.consent_id,
        lapsing.consent_id,
    ]
    assert {g.consent_id for g in active} == {old_grant.consent_id, kept.consent_id}
    for grant in every:  # the subject can check their own signature on each
        key = earlier.key if grant.terms.subject_key_id == earlier.key_id else subject.key
        assert grants.verify_signature(
            grants.raw_public_key(key), grant.signed_terms, grant.signature
        )


async def test_own_grants_are_paged_and_tokens_do_not_cross_subjects(
    gateway: RunningGateway, population: Population
) -> None:
    mine = await enrol_subject(gateway, population.scenarios["observation"].person.identity_number)
    theirs = await enrol_subject(gateway, population.scenarios["no_record"].person.identity_number)
    for grantee in ("bank-demo", "lessor-demo", "agency-demo"):
        await record_grant(gateway, mine, grantee=grantee, purposes=[REVIEW], categories=[REPAIR])
    my_cert = issue_subject_certificate(gateway, mine)
    their_cert = issue_subject_certificate(gateway, theirs)

    seen: list[str] = []
    token = ""
    async with mtls_channel(gateway.pki, gateway.port, my_cert) as channel:
        stub = self_grpc.SelfInquiryServiceStub(channel)
        while True:
            page = await stub.ListOwnConsents(
                self_pb2.ListOwnConsentsRequest(page_size=2, page_token=token)
            )
            seen += [g.consent_id for g in page.grants]
            token = page.next_page_token
            if not token:
                break
            first_token = token
    assert len(seen) == len(set(seen)) == 3

    async with mtls_channel(gateway.pki, gateway.port, their_cert) as channel:
        stub = self_grpc.SelfInquiryServiceStub(channel)
        assert not (await stub.ListOwnConsents(self_pb2.ListOwnConsentsRequest())).grants
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListOwnConsents(self_pb2.ListOwnConsentsRequest(page_token=first_token))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- the register side, on SQLite and PostgreSQL ------------------------------------------------


async def test_subject_grants_are_listed_by_token_on_every_backend(
    database: Database, subject_tokenizer: SubjectTokenizer
) -> None:
    clock = FakeClock(T0)
    register = ConsentRegister(database, clock=clock)
    token, key = await _enrolled(register, subject_tokenizer)
    other_token, other_key = await _enrolled(register, subject_tokenizer, OTHER_IDENTITY)
    mine = []
    for grantee in ("bank-demo", "bank-other", "lessor-demo"):
        clock.advance(dt.timedelta(seconds=1))
        mine.append(await _record(register, token, key, grantee=grantee, collector=grantee))
    await _record(register, other_token, other_key)
    await register.revoke(mine[1].consent_id, "bank-other")

    seen: list[str] = []
    after = None
    while True:
        page, more = await list_subject_grants(database, token, limit=2, after=after, now=T0)
        seen += [g.consent_id for g in page]
        if not more:
            break
        after = ListCursor(page[-1].created_at, page[-1].consent_id)
    assert seen == [g.consent_id for g in mine]
    revoked, _ = await list_subject_grants(database, token, limit=10, state=REVOKED, now=T0)
    assert [g.consent_id for g in revoked] == [mine[1].consent_id]
    expired, _ = await list_subject_grants(
        database, token, limit=10, state=EXPIRED, now=T0 + 48 * HOUR
    )
    assert [g.consent_id for g in expired] == [mine[0].consent_id, mine[2].consent_id]
    with pytest.raises(ValueError, match="subject token"):
        await list_subject_grants(database, IDENTITY, limit=1)

    subjects = SubjectCertificates(register)
    caller = Institution(
        subject_institution_id(grants.subject_key_id(grants.raw_public_key(key))),
        vocab.INSTITUTION_ROLE_SUBJECT,
    )
    assert await subjects.is_subject(caller, token)
    assert not await subjects.is_subject(caller, other_token)
