"""ConsentService through the real gateway server: real mTLS identities, SQLite and PostgreSQL.

Each test starts a ``GatewayServer`` serving only the ConsentService over a migrated database
(``database`` is parametrized over both backends) and calls it as different institutions,
each presenting its own client certificate from the session's dev PKI.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credgate.audit import AuditLog, load_or_create_signer
from credgate.consent import grants
from credgate.consent.register import (
    CONSENT_EXPIRED,
    CONSENT_REVOKED,
    CONSENT_VALID,
    ConsentRegister,
)
from credgate.core.institution import InstitutionRole
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.audit_trail import AuditTrail
from credgate.gateway.caller_certificate import CallerResolver
from credgate.gateway.consent_service import ConsentServicer
from credgate.gateway.pki import CertKeyPaths, issue_institution_cert, load_certified_key
from credgate.gateway.pki import write_certified_key as write_pair
from credgate.gateway.protection.page_tokens import PageTokens
from credgate.gateway.server import GatewayServer
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.pki import DevPki, mtls_channel
from tests.test_consent_register import (
    IDENTITY,
    OTHER_IDENTITY,
    REVIEW,
    FakeClock,
    make_terms,
)
from tests.test_storage import raw_database_contents

SERVICE_NAME = "credit_repair.v1.ConsentService"
HOUR = dt.timedelta(hours=1)
ENROLMENT_OFFICE = "enrol-office"
EXTRA_INSTITUTIONS = {
    "bank-other": InstitutionRole.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
    ENROLMENT_OFFICE: InstitutionRole.INSTITUTION_ROLE_STATUTORY_ORGAN,
    "agency-demo": InstitutionRole.INSTITUTION_ROLE_AUTHORIZED_PARTY,
}


@pytest.fixture(scope="session")
def consent_certs(
    dev_pki: DevPki, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CertKeyPaths]:
    """Every dev institution's certificate, plus a second bank and two would-be offices."""
    ca = load_certified_key(dev_pki.paths.ca_cert, dev_pki.paths.ca_key)
    directory: Path = tmp_path_factory.mktemp("consent-pki")
    certs = dict(dev_pki.paths.institutions)
    for institution_id, role in EXTRA_INSTITUTIONS.items():
        certs[institution_id] = write_pair(
            issue_institution_cert(ca, institution_id, role),
            directory / f"{institution_id}.pem",
            directory / f"{institution_id}.key",
        )
    return certs


@dataclass
class ConsentGateway:
    """A running gateway with the ConsentService, and a stub per calling institution."""

    port: int
    pki: DevPki
    certs: dict[str, CertKeyPaths]
    clock: FakeClock
    register: ConsentRegister
    tokenizer: SubjectTokenizer
    database_url: str
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def stub(self, institution_id: str) -> Any:
        """A ConsentService stub presenting ``institution_id``'s client certificate."""
        channel = self._channels.get(institution_id)
        if channel is None:
            channel = mtls_channel(self.pki, self.port, self.certs[institution_id])
            self._channels[institution_id] = channel
        return consent_grpc.ConsentServiceStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def enrol(self, identity: str = IDENTITY) -> Ed25519PrivateKey:
        """Enrol a fresh key for ``identity`` at the enrolment office."""
        key = Ed25519PrivateKey.generate()
        await self.stub(ENROLMENT_OFFICE).EnrollSubjectKey(
            consent_pb2.EnrollSubjectKeyRequest(
                identity_number=identity, public_key=grants.raw_public_key(key)
            ),
            timeout=5,
        )
        return key

    def terms(self, key: Ed25519PrivateKey, **overrides: Any) -> consent_pb2.ConsentTerms:
        """Terms valid for a day from the gateway clock's now (overridable)."""
        overrides.setdefault("not_before", self.clock.now - HOUR)
        overrides.setdefault("not_after", self.clock.now + 24 * HOUR)
        return make_terms(key, **overrides)

    async def grant(
        self,
        key: Ed25519PrivateKey,
        *,
        identity: str = IDENTITY,
        caller: str = "bank-demo",
        **overrides: Any,
    ) -> consent_pb2.ConsentGrant:
        """Sign terms with ``key`` and record them as ``caller``."""
        signed, signature = grants.sign_terms(key, self.terms(key, **overrides))
        response = await self.stub(caller).GrantConsent(
            consent_pb2.GrantConsentRequest(
                identity_number=identity, signed_terms=signed, signature=signature
            ),
            timeout=5,
        )
        grant: consent_pb2.ConsentGrant = response.grant
        return grant


@pytest.fixture
async def gateway(
    dev_pki: DevPki,
    consent_certs: dict[str, CertKeyPaths],
    database: Database,
    migrated_database_url: str,
    subject_tokenizer: SubjectTokenizer,
    tmp_path: Path,
) -> AsyncIterator[ConsentGateway]:
    clock = FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    register = ConsentRegister(database, clock=clock)
    audit_log = AuditLog(database, load_or_create_signer(tmp_path / "audit-log.key"))
    service = ConsentServicer(
        register,
        subject_tokenizer,
        CallerResolver(),
        audit=AuditTrail(audit_log),
        page_tokens=PageTokens(secrets.token_bytes(32)),
        enrolment_offices={ENROLMENT_OFFICE},
        clock=clock,
    )
    server = GatewayServer(listen="127.0.0.1:0", tls=dev_pki.server_tls)
    server.add_servicer(consent_grpc.add_ConsentServiceServicer_to_server, service, SERVICE_NAME)
    port = await server.start()
    running = ConsentGateway(
        port, dev_pki, consent_certs, clock, register, subject_tokenizer, migrated_database_url
    )
    try:
        yield running
    finally:
        await running.close()
        await server.stop(0)
        await audit_log.aclose()


async def expect_error(
    call: Awaitable[Any], code: grpc.StatusCode, reason: str
) -> tuple[str, list[str]]:
    """Await a call that must fail; return its message and the BadRequest field names."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    parsed = parse_error(caught.value)
    assert parsed.code == code
    assert parsed.error_info is not None
    assert (parsed.error_info.reason, parsed.error_info.domain) == (reason, "credgate")
    fields = [v.field for v in parsed.bad_request.field_violations] if parsed.bad_request else []
    return str(caught.value.details()), fields


# -- the whole lifecycle ----------------------------------------------------------------------


async def test_grant_get_list_revoke_and_the_next_lookup_sees_it(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    granted = [await gateway.grant(key) for _ in range(5)]
    first = granted[0]
    assert first.state == consent_pb2.CONSENT_STATE_ACTIVE
    assert first.subject_token == gateway.tokenizer.token(IDENTITY)
    assert first.terms.grantee_institution_id == "bank-demo"
    assert grants.verify_signature(grants.raw_public_key(key), first.signed_terms, first.signature)

    got = await gateway.stub("bank-demo").GetConsent(
        consent_pb2.GetConsentRequest(consent_id=first.consent_id), timeout=5
    )
    assert got.grant == first

    listed: list[str] = []
    pages = 0
    token = ""
    while True:
        page = await gateway.stub("bank-demo").ListConsents(
            consent_pb2.ListConsentsRequest(page_size=2, page_token=token), timeout=5
        )
        pages += 1
        listed += [g.consent_id for g in page.grants]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert sorted(listed) == sorted(g.consent_id for g in granted)

    subject = gateway.tokenizer.token(IDENTITY)
    before = await gateway.register.find_valid_grant(
        subject, "bank-demo", REVIEW, first.consent_id, gateway.clock.now
    )
    assert before.reason == CONSENT_VALID

    revoked = await gateway.stub("bank-demo").RevokeConsent(
        consent_pb2.RevokeConsentRequest(consent_id=first.consent_id), timeout=5
    )
    assert revoked.grant.state == consent_pb2.CONSENT_STATE_REVOKED
    assert revoked.grant.revoked_by_institution_id == "bank-demo"

    # A second register on its own connection pool stands in for another replica.
    replica_db = Database.from_url(gateway.database_url)
    try:
        replica = ConsentRegister(replica_db)
        after = await replica.find_valid_grant(
            subject, "bank-demo", REVIEW, first.consent_id, gateway.clock.now
        )
    finally:
        await replica_db.dispose()
    assert after.reason == CONSENT_REVOKED

    only_revoked = await gateway.stub("bank-demo").ListConsents(
        consent_pb2.ListConsentsRequest(state=consent_pb2.CONSENT_STATE_REVOKED), timeout=5
    )
    assert [g.consent_id for g in only_revoked.grants] == [first.consent_id]


async def test_an_expired_window_reads_as_expired(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    grant = await gateway.grant(key, not_after=gateway.clock.now + HOUR)

    gateway.clock.advance(2 * HOUR)

    got = await gateway.stub("bank-demo").GetConsent(
        consent_pb2.GetConsentRequest(consent_id=grant.consent_id), timeout=5
    )
    assert got.grant.state == consent_pb2.CONSENT_STATE_EXPIRED
    lookup = await gateway.register.find_valid_grant(
        gateway.tokenizer.token(IDENTITY),
        "bank-demo",
        REVIEW,
        grant.consent_id,
        gateway.clock.now,
    )
    assert lookup.reason == CONSENT_EXPIRED


async def test_replaying_revoked_terms_does_not_revive_them(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    signed, signature = grants.sign_terms(key, gateway.terms(key))
    request = consent_pb2.GrantConsentRequest(
        identity_number=IDENTITY, signed_terms=signed, signature=signature
    )
    bank = gateway.stub("bank-demo")
    first = (await bank.GrantConsent(request, timeout=5)).grant
    await bank.RevokeConsent(
        consent_pb2.RevokeConsentRequest(consent_id=first.consent_id), timeout=5
    )

    replay = (await bank.GrantConsent(request, timeout=5)).grant

    assert replay.consent_id == first.consent_id
    assert replay.state == consent_pb2.CONSENT_STATE_REVOKED


# -- refused grants ---------------------------------------------------------------------------


async def test_a_grant_signed_by_the_wrong_key_is_refused(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    impostor = Ed25519PrivateKey.generate()
    signed = grants.canonical_terms(gateway.terms(key))  # names the subject's key id
    signature = impostor.sign(grants.signing_message(signed))

    _, fields = await expect_error(
        gateway.stub("bank-demo").GrantConsent(
            consent_pb2.GrantConsentRequest(
                identity_number=IDENTITY, signed_terms=signed, signature=signature
            ),
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONSENT_SIGNATURE_INVALID",
    )
    assert fields == ["signature"]


async def test_an_unsigned_grant_is_refused(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    signed = grants.canonical_terms(gateway.terms(key))

    await expect_error(
        gateway.stub("bank-demo").GrantConsent(
            consent_pb2.GrantConsentRequest(identity_number=IDENTITY, signed_terms=signed),
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONSENT_SIGNATURE_INVALID",
    )


async def test_terms_altered_after_signing_are_refused(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    _, signature = grants.sign_terms(key, gateway.terms(key))
    widened = grants.canonical_terms(gateway.terms(key, max_uses=0, retention_days=3650))

    await expect_error(
        gateway.stub("bank-demo").GrantConsent(
            consent_pb2.GrantConsentRequest(
                identity_number=IDENTITY, signed_terms=widened, signature=signature
            ),
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONSENT_SIGNATURE_INVALID",
    )


@pytest.mark.parametrize("whose", ["unknown key", "another subject's key", "retired key"])
async def test_a_key_not_enrolled_for_the_subject_is_refused(
    gateway: ConsentGateway, whose: str
) -> None:
    if whose == "unknown key":
        key = Ed25519PrivateKey.generate()
    elif whose == "another subject's key":
        key = await gateway.enrol(OTHER_IDENTITY)
    else:
        key = await gateway.enrol()
        await gateway.enrol()  # the subject enrols a new key, retiring the first

    await expect_error(
        gateway.grant(key),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SUBJECT_NOT_ENROLLED",
    )


async def test_non_canonical_terms_are_refused(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    signed = grants.canonical_terms(gateway.terms(key)) + b"\xa0\x06\x01"  # unknown field
    signature = key.sign(grants.signing_message(signed))

    _, fields = await expect_error(
        gateway.stub("bank-demo").GrantConsent(
            consent_pb2.GrantConsentRequest(
                identity_number=IDENTITY, signed_terms=signed, signature=signature
            ),
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONSENT_TERMS_INVALID",
    )
    assert fields == ["signed_terms"]


async def test_signed_but_unacceptable_terms_are_refused(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    _, fields = await expect_error(
        gateway.grant(
            key,
            not_before=gateway.clock.now - 3 * HOUR,
            not_after=gateway.clock.now - HOUR,
            categories=(),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONSENT_TERMS_INVALID",
    )
    assert sorted(fields) == ["terms.categories", "terms.not_after"]


async def test_only_the_collecting_institution_may_record(gateway: ConsentGateway) -> None:
    key = await gateway.enrol()
    await expect_error(
        gateway.grant(key, caller="bank-other"),  # the terms name bank-demo as collector
        grpc.StatusCode.PERMISSION_DENIED,
        "COLLECTOR_MISMATCH",
    )


@pytest.mark.parametrize("caller", ["regulator-demo", "provider-disclosure", "court-demo"])
async def test_roles_that_do_not_collect_consent_cannot_record(
    gateway: ConsentGateway, caller: str
) -> None:
    key = await gateway.enrol()
    await expect_error(
        gateway.grant(key, caller=caller, collector=caller),
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_PERMITTED",
    )


async def test_an_invalid_identity_number_is_refused_without_echoing_it(
    gateway: ConsentGateway,
) -> None:
    key = await gateway.enrol()
    wrong = IDENTITY[:-1] + ("0" if IDENTITY[-1] != "0" else "1")
    message, fields = await expect_error(
        gateway.grant(key, identity=wrong),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert fields == ["identity_number"]
    assert wrong not in message


# -- enrolment --------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["bank-demo", "agency-demo", "court-demo"])
async def test_only_a_configured_enrolment_office_may_enrol(
    gateway: ConsentGateway, caller: str
) -> None:
    key = Ed25519PrivateKey.generate()
    await expect_error(
        gateway.stub(caller).EnrollSubjectKey(
            consent_pb2.EnrollSubjectKeyRequest(
                identity_number=IDENTITY, public_key=grants.raw_public_key(key)
            ),
            timeout=5,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "ENROLMENT_NOT_PERMITTED",
    )


async def test_enrolment_checks_the_key_and_refuses_a_key_of_another_subject(
    gateway: ConsentGateway,
) -> None:
    office = gateway.stub(ENROLMENT_OFFICE)
    _, fields = await expect_error(
        office.EnrollSubjectKey(
            consent_pb2.EnrollSubjectKeyRequest(identity_number=IDENTITY, public_key=b"short"),
            timeout=5,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert fields == ["public_key"]

    key = await gateway.enrol(IDENTITY)
    response = await office.EnrollSubjectKey(
        consent_pb2.EnrollSubjectKeyRequest(
            identity_number=IDENTITY, public_key=grants.raw_public_key(key)
        ),
        timeout=5,
    )
    assert response.subject_key_id == grants.subject_key_id(grants.raw_public_key(key))
    await expect_error(
        office.EnrollSubjectKey(
            consent_pb2.EnrollSubjectKeyRequest(
                identity_number=OTHER_IDENTITY, public_key=grants.raw_public_key(key)
            ),
            timeout=5,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "SUBJECT_KEY_CONFLICT",
    )


# -- visibility -------------------------------------------------------------------------------


async def test_another_institution_can_neither_read_nor_revoke_nor_list(
    gateway: ConsentGateway,
) -> None:
    key = await gateway.enrol()
    grant = await gateway.grant(key)
    other = gateway.stub("bank-other")
    nonexistent = "cg_" + "0" * 32

    calls: list[Callable[[str], Awaitable[Any]]] = [
        lambda cid: other.GetConsent(consent_pb2.GetConsentRequest(consent_id=cid), timeout=5),
        lambda cid: other.RevokeConsent(
            consent_pb2.RevokeConsentRequest(consent_id=cid), timeout=5
        ),
    ]
    for call in calls:
        hidden = await expect_error(
            call(grant.consent_id), grpc.StatusCode.NOT_FOUND, "CONSENT_NOT_FOUND"
        )
        missing = await expect_error(
            call(nonexistent), grpc.StatusCode.NOT_FOUND, "CONSENT_NOT_FOUND"
        )
        assert hidden == missing, "a hidden grant must look exactly like a missing one"

    listed = await other.ListConsents(consent_pb2.ListConsentsRequest(), timeout=5)
    assert list(listed.grants) == []
    still = await gateway.stub("bank-demo").GetConsent(
        consent_pb2.GetConsentRequest(consent_id=grant.consent_id), timeout=5
    )
    assert still.grant.state == consent_pb2.CONSENT_STATE_ACTIVE


async def test_the_grantee_sees_and_may_revoke_what_another_collected(
    gateway: ConsentGateway,
) -> None:
    key = await gateway.enrol()
    grant = await gateway.grant(key, grantee="bank-other")
    other = gateway.stub("bank-other")

    listed = await other.ListConsents(
        consent_pb2.ListConsentsRequest(identity_number=IDENTITY), timeout=5
    )
    assert [g.consent_id for g in listed.grants] == [grant.consent_id]
    revoked = await other.RevokeConsent(
        consent_pb2.RevokeConsentRequest(consent_id=grant.consent_id), timeout=5
    )
    assert revoked.grant.revoked_by_institution_id == "bank-other"


async def test_page_tokens_grant_no_access_and_are_bound_to_their_filters(
    gateway: ConsentGateway,
) -> None:
    key = await gateway.enrol()
    for _ in range(3):
        await gateway.grant(key)
    first = await gateway.stub("bank-demo").ListConsents(
        consent_pb2.ListConsentsRequest(page_size=1), timeout=5
    )
    assert first.next_page_token

    requests: Iterable[tuple[str, consent_pb2.ListConsentsRequest]] = [
        ("bank-other", consent_pb2.ListConsentsRequest(page_token=first.next_page_token)),
        (
            "bank-demo",
            consent_pb2.ListConsentsRequest(
                page_token=first.next_page_token, state=consent_pb2.CONSENT_STATE_ACTIVE
            ),
        ),
        ("bank-demo", consent_pb2.ListConsentsRequest(page_token="not-a-token")),
    ]
    for caller, request in requests:
        _, fields = await expect_error(
            gateway.stub(caller).ListConsents(request, timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
        )
        assert fields == ["page_token"]


# -- at rest ----------------------------------------------------------------------------------


async def test_the_raw_database_holds_no_identity_number(
    gateway: ConsentGateway, database: Database
) -> None:
    key = await gateway.enrol(IDENTITY)
    other_key = await gateway.enrol(OTHER_IDENTITY)
    await gateway.grant(key)
    await gateway.grant(other_key, identity=OTHER_IDENTITY, grantee="bank-other")
    await database.dispose()

    dump = raw_database_contents(gateway.database_url)

    assert gateway.tokenizer.token(IDENTITY).encode() in dump, "the scan must see the grants"
    for number in (IDENTITY, OTHER_IDENTITY):
        assert number.encode() not in dump
        assert number.encode().hex().encode() not in dump


# -- receipts -------------------------------------------------------------------------------------


async def test_without_a_receipt_signer_no_receipt_is_issued(gateway: ConsentGateway) -> None:
    """This servicer is built without ``sign_receipt`` (the app always passes the report
    signer's): it says so, and never answers with an unsigned receipt."""
    key = await gateway.enrol()
    grant = await gateway.grant(key)
    await expect_error(
        gateway.stub("bank-demo").GetGrantReceipt(
            consent_pb2.GetGrantReceiptRequest(consent_id=grant.consent_id), timeout=5
        ),
        grpc.StatusCode.UNIMPLEMENTED,
        "RECEIPTS_NOT_CONFIGURED",
    )
