"""Consent grants and the register: canonical terms, signatures, and every lookup outcome.

The register tests run on SQLite and PostgreSQL (``database`` is parametrized over both).
The helpers at the top are shared with ``test_consent_service``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Iterable
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, update

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.consent.register import (
    CONSENT_EXHAUSTED,
    CONSENT_EXPIRED,
    CONSENT_MISSING,
    CONSENT_NOT_YET_VALID,
    CONSENT_PAUSED,
    CONSENT_REVOKED,
    CONSENT_VALID,
    PURPOSE_NOT_PERMITTED,
    ConsentRegister,
    ListCursor,
    SubjectKeyConflictError,
)
from credgate.core.storage.database import Database, create_sync_engine
from credgate.core.storage.models import Base, ConsentGrantRow, SubjectKeyRow
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.storage.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade_to_head,
)
from tests.fixtures.storage import make_identity_number

IDENTITY = make_identity_number("11010519491231002")
OTHER_IDENTITY = make_identity_number("44030519820615123")
T0 = dt.datetime(2025, 3, 1, 8, 0, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
EXISTING = vocab.PURPOSE_EXISTING_CREDIT_RELATIONSHIP
CREDIT = vocab.DATA_CATEGORY_COMMERCIAL_CREDIT
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR


class FakeClock:
    """A settable clock for the register and the servicer (TLS keeps the real one)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


def make_terms(
    key: Ed25519PrivateKey,
    *,
    grantee: str = "bank-demo",
    collector: str = "bank-demo",
    purposes: Iterable[grants.Purpose] = (REVIEW,),
    categories: Iterable[grants.Category] = (CREDIT, REPAIR),
    not_before: dt.datetime = T0 - HOUR,
    not_after: dt.datetime = T0 + 24 * HOUR,
    max_uses: int = 0,
    retention_days: int = 30,
) -> consent_pb2.ConsentTerms:
    """Terms the subject holding ``key`` would sign, with a fresh nonce."""
    terms = consent_pb2.ConsentTerms(
        subject_key_id=grants.subject_key_id(grants.raw_public_key(key)),
        grantee_institution_id=grantee,
        collecting_institution_id=collector,
        purposes=list(purposes),
        categories=list(categories),
        max_uses=max_uses,
        retention_days=retention_days,
        nonce=secrets.token_bytes(16),
    )
    terms.not_before.FromDatetime(not_before)
    terms.not_after.FromDatetime(not_after)
    return terms


# -- canonical serialization and signatures ---------------------------------------------------


def test_key_id_is_derived_from_the_public_key() -> None:
    key = Ed25519PrivateKey.generate()
    key_id = grants.subject_key_id(grants.raw_public_key(key))
    assert grants.is_subject_key_id(key_id)
    assert key_id == grants.subject_key_id(grants.raw_public_key(key))
    other = grants.subject_key_id(grants.raw_public_key(Ed25519PrivateKey.generate()))
    assert key_id != other


def test_canonical_terms_sort_and_deduplicate_sets() -> None:
    key = Ed25519PrivateKey.generate()
    terms = make_terms(key, purposes=(EXISTING, REVIEW, EXISTING), categories=(REPAIR, CREDIT))
    parsed = grants.parse_terms(grants.canonical_terms(terms))
    assert list(parsed.purposes) == [REVIEW, EXISTING]
    assert list(parsed.categories) == [CREDIT, REPAIR]


def test_signature_round_trip_and_tampering() -> None:
    key = Ed25519PrivateKey.generate()
    public = grants.raw_public_key(key)
    signed, signature = grants.sign_terms(key, make_terms(key))
    assert grants.verify_signature(public, signed, signature)
    tampered = bytearray(signed)
    tampered[-1] ^= 1
    assert not grants.verify_signature(public, bytes(tampered), signature)
    other = grants.raw_public_key(Ed25519PrivateKey.generate())
    assert not grants.verify_signature(other, signed, signature)
    assert not grants.verify_signature(public, signed, signature[:-1])
    # Without the signing context the same signature must not verify: no cross-protocol use.
    assert not grants.verify_signature(public, signed, key.sign(signed))


def _non_canonical_encodings(terms: consent_pb2.ConsentTerms) -> dict[str, bytes]:
    canonical = grants.canonical_terms(terms)
    unsorted = consent_pb2.ConsentTerms()
    unsorted.CopyFrom(terms)
    del unsorted.purposes[:]
    unsorted.purposes.extend([EXISTING, REVIEW])
    duplicated = consent_pb2.ConsentTerms()
    duplicated.CopyFrom(terms)
    duplicated.purposes.append(duplicated.purposes[0])
    return {
        "unsorted": unsorted.SerializeToString(deterministic=True),
        "duplicated": duplicated.SerializeToString(deterministic=True),
        "unknown field": canonical + b"\xa0\x06\x01",  # field 100, varint 1
        "explicit default": canonical + b"\x48\x00",  # max_uses = 0 written out
        "field order": canonical[-18:] + canonical[:-18],  # nonce moved to the front
    }


@pytest.mark.parametrize(
    "case", ["unsorted", "duplicated", "unknown field", "explicit default", "field order"]
)
def test_parse_refuses_non_canonical_encodings(case: str) -> None:
    key = Ed25519PrivateKey.generate()
    terms = make_terms(key, purposes=(REVIEW, EXISTING))
    with pytest.raises(grants.TermsError) as caught:
        grants.parse_terms(_non_canonical_encodings(terms)[case])
    assert caught.value.field == "signed_terms"


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff", b"\x00" * 5000])
def test_parse_refuses_garbage(data: bytes) -> None:
    with pytest.raises(grants.TermsError):
        grants.parse_terms(data)


def test_term_violations_name_each_problem() -> None:
    key = Ed25519PrivateKey.generate()
    good = make_terms(key)
    assert grants.term_violations(good, now=T0) == []
    bad = consent_pb2.ConsentTerms(
        subject_key_id="11010519491231002X",
        grantee_institution_id="Bank Demo!",
        collecting_institution_id="bank-demo",
        purposes=[vocab.PURPOSE_UNSPECIFIED],
        max_uses=-1,
        nonce=b"short",
    )
    bad.not_before.FromDatetime(T0)
    bad.not_after.FromDatetime(T0 - HOUR)
    fields = {field for field, _ in grants.term_violations(bad, now=T0)}
    assert fields == {
        "terms.subject_key_id",
        "terms.grantee_institution_id",
        "terms.purposes[0]",
        "terms.categories",
        "terms.not_after",
        "terms.max_uses",
        "terms.nonce",
    }
    expired = make_terms(key, not_before=T0 - 2 * HOUR, not_after=T0 - HOUR)
    assert grants.term_violations(expired, now=T0) == [("terms.not_after", "has already passed")]


# -- storage: migrations, keys and grants -----------------------------------------------------


def test_migration_0002_matches_the_models(migrated_database_url: str) -> None:
    assert current_revision(migrated_database_url) == head_revision()
    engine = create_sync_engine(migrated_database_url, writer=False)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def register(database: Database, clock: FakeClock) -> ConsentRegister:
    return ConsentRegister(database, clock=clock)


async def _enrolled(
    register: ConsentRegister, tokenizer: SubjectTokenizer, identity: str = IDENTITY
) -> tuple[str, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    token = tokenizer.token(identity)
    await register.enroll_key(token, grants.raw_public_key(key), "enrol-office")
    return token, key


async def _record(
    register: ConsentRegister, token: str, key: Ed25519PrivateKey, **overrides: object
) -> grants.Grant:
    terms = make_terms(key, **overrides)  # type: ignore[arg-type]
    signed, signature = grants.sign_terms(key, terms)
    grant, created = await register.record_grant(
        token, grants.parse_terms(signed), signed, signature
    )
    assert created
    return grant


async def test_enrolment_is_idempotent_and_a_new_key_retires_the_old(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer
) -> None:
    token, first = await _enrolled(register, subject_tokenizer)
    first_id = grants.subject_key_id(grants.raw_public_key(first))
    again = await register.enroll_key(token, grants.raw_public_key(first), "enrol-office")
    assert again.key_id == first_id
    assert again.current

    second = Ed25519PrivateKey.generate()
    new = await register.enroll_key(token, grants.raw_public_key(second), "enrol-office")
    old = await register.subject_key(first_id)
    assert new.current
    assert old is not None
    assert not old.current


async def test_concurrent_enrolments_leave_one_current_key(
    register: ConsentRegister, database: Database, subject_tokenizer: SubjectTokenizer
) -> None:
    token = subject_tokenizer.token(IDENTITY)
    keys = [grants.raw_public_key(Ed25519PrivateKey.generate()) for _ in range(4)]
    await asyncio.gather(*(register.enroll_key(token, k, "enrol-office") for k in keys))
    states = [await register.subject_key(grants.subject_key_id(k)) for k in keys]
    assert sum(1 for key in states if key is not None and key.current) == 1

    shared = grants.raw_public_key(Ed25519PrivateKey.generate())
    outcomes = await asyncio.gather(
        register.enroll_key(token, shared, "enrol-office"),
        register.enroll_key(subject_tokenizer.token(OTHER_IDENTITY), shared, "enrol-office"),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["EnrolledKey", "SubjectKeyConflictError"]


async def test_one_key_cannot_belong_to_two_subjects(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer
) -> None:
    _, key = await _enrolled(register, subject_tokenizer)
    with pytest.raises(SubjectKeyConflictError):
        await register.enroll_key(
            subject_tokenizer.token(OTHER_IDENTITY), grants.raw_public_key(key), "enrol-office"
        )


async def test_identity_number_is_refused_where_a_token_belongs(
    register: ConsentRegister,
) -> None:
    with pytest.raises(ValueError, match="subject token") as caught:
        await register.enroll_key(IDENTITY, b"\x00" * 32, "enrol-office")
    assert IDENTITY not in str(caught.value)
    with pytest.raises(ValueError, match="subject token"):
        await register.find_valid_grant(IDENTITY, "bank-demo", REVIEW, None, T0)


async def test_recording_the_same_terms_twice_returns_the_first_grant(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer
) -> None:
    token, key = await _enrolled(register, subject_tokenizer)
    signed, signature = grants.sign_terms(key, make_terms(key))
    first, created = await register.record_grant(
        token, grants.parse_terms(signed), signed, signature
    )
    assert created
    await register.revoke(first.consent_id, "bank-demo")
    replay, created_again = await register.record_grant(
        token, grants.parse_terms(signed), signed, signature
    )
    assert not created_again
    assert replay.consent_id == first.consent_id
    assert replay.state(T0) == consent_pb2.CONSENT_STATE_REVOKED


async def test_find_valid_grant_allows_and_returns_categories(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer
) -> None:
    token, key = await _enrolled(register, subject_tokenizer)
    grant = await _record(register, token, key)

    lookup = await register.find_valid_grant(token, "bank-demo", REVIEW, grant.consent_id, T0)

    assert lookup.allowed
    assert lookup.reason == CONSENT_VALID
    assert lookup.categories == {CREDIT, REPAIR}
    assert lookup.consent_id == grant.consent_id
    anyone = await register.find_valid_grant(token, "bank-demo", REVIEW, None, T0)
    assert anyone.allowed
    assert anyone.consent_id == grant.consent_id


async def test_find_valid_grant_reasons(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer, clock: FakeClock
) -> None:
    token, key = await _enrolled(register, subject_tokenizer)
    other_token, _ = await _enrolled(register, subject_tokenizer, OTHER_IDENTITY)
    grant = await _record(register, token, key)
    later = await _record(register, token, key, not_before=T0 + 2 * HOUR)

    async def reason(
        purpose: grants.Purpose = REVIEW,
        consent_id: str | None = grant.consent_id,
        *,
        subject: str = token,
        institution: str = "bank-demo",
        now: dt.datetime = T0,
    ) -> str:
        lookup = await register.find_valid_grant(subject, institution, purpose, consent_id, now)
        if not lookup.allowed:
            assert lookup.categories == frozenset()
        return lookup.reason

    assert await reason() == CONSENT_VALID
    assert await reason(EXISTING) == PURPOSE_NOT_PERMITTED
    assert await reason(consent_id="cg_" + "0" * 32) == CONSENT_MISSING
    assert await reason(institution="bank-other") == CONSENT_MISSING
    assert await reason(subject=other_token) == CONSENT_MISSING
    assert await reason(now=T0 + 24 * HOUR) == CONSENT_EXPIRED
    assert await reason(consent_id=later.consent_id) == CONSENT_NOT_YET_VALID

    await register.revoke(grant.consent_id, "bank-demo")
    assert await reason() == CONSENT_REVOKED
    # With no id, the grant closest to allowing the query explains the denial.
    assert await reason(consent_id=None) == CONSENT_NOT_YET_VALID
    assert await reason(consent_id=None, now=T0 + 3 * HOUR) == CONSENT_VALID


async def test_a_paused_grant_refuses_and_no_use_is_spent_under_it(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer
) -> None:
    """The pause is checked where the use is spent too, so a query decided just before the
    pause cannot spend a use after it."""
    token, key = await _enrolled(register, subject_tokenizer)
    grant = await _record(register, token, key, max_uses=2)
    enrolled = await register.subject_key(grants.subject_key_id(grants.raw_public_key(key)))
    assert enrolled is not None
    await register.change_state(
        grant.consent_id, enrolled, consent_pb2.CONSENT_STATE_PAUSED, T0
    )
    lookup = await register.find_valid_grant(token, "bank-demo", REVIEW, grant.consent_id, T0)
    assert lookup.reason == CONSENT_PAUSED
    assert not await register.record_use(grant.consent_id)
    resumed = await register.change_state(
        grant.consent_id, enrolled, consent_pb2.CONSENT_STATE_ACTIVE, T0 + HOUR
    )
    assert (resumed.use_count, resumed.state(T0)) == (0, consent_pb2.CONSENT_STATE_ACTIVE)
    assert await register.record_use(grant.consent_id)


async def test_max_uses_are_counted_atomically(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer
) -> None:
    token, key = await _enrolled(register, subject_tokenizer)
    grant = await _record(register, token, key, max_uses=2)

    assert await register.record_use(grant.consent_id)
    assert await register.record_use(grant.consent_id)
    assert not await register.record_use(grant.consent_id)

    lookup = await register.find_valid_grant(token, "bank-demo", REVIEW, grant.consent_id, T0)
    assert lookup.reason == CONSENT_EXHAUSTED


@pytest.mark.parametrize(
    "edit", ["grantee column", "signed terms", "window", "max uses", "terms and every copy"]
)
async def test_a_grant_edited_in_the_database_authorizes_nothing(
    register: ConsentRegister,
    database: Database,
    subject_tokenizer: SubjectTokenizer,
    edit: str,
) -> None:
    token, key = await _enrolled(register, subject_tokenizer)
    grant = await _record(register, token, key, grantee="bank-other")
    forged = grants.canonical_terms(make_terms(key, grantee="bank-demo"))
    edits: dict[str, dict[str, object]] = {
        "grantee column": {"grantee_institution_id": "bank-demo"},
        "signed terms": {"signed_terms": forged},
        "window": {"not_after": T0 + 1000 * HOUR},
        "max uses": {"max_uses": 5},
        # Consistent copies, but the subject never signed these bytes.
        "terms and every copy": {
            "signed_terms": forged,
            "grantee_institution_id": "bank-demo",
            "terms_digest": grants.terms_digest(forged),
        },
    }
    async with database.write() as session:
        await session.execute(
            update(ConsentGrantRow)
            .where(ConsentGrantRow.consent_id == grant.consent_id)
            .values(edits[edit])
        )
    for institution in ("bank-demo", "bank-other"):
        lookup = await register.find_valid_grant(token, institution, REVIEW, None, T0)
        assert lookup.reason == CONSENT_MISSING


async def test_list_grants_pages_and_filters(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer, clock: FakeClock
) -> None:
    token, key = await _enrolled(register, subject_tokenizer)
    other_token, other_key = await _enrolled(register, subject_tokenizer, OTHER_IDENTITY)
    recorded = []
    for index in range(5):  # two share a timestamp, so the id breaks the tie
        if index != 3:
            clock.advance(dt.timedelta(seconds=1))
        recorded.append(await _record(register, token, key))
    await _record(register, other_token, other_key, grantee="bank-other", collector="bank-other")
    await _record(register, token, key, grantee="bank-other", collector="bank-other")
    collected = await _record(register, other_token, other_key, grantee="bank-other")

    seen: list[str] = []
    after = None
    while True:
        page, more = await register.list_grants("bank-demo", limit=2, after=after)
        seen += [g.consent_id for g in page]
        if not more:
            break
        after = ListCursor(page[-1].created_at, page[-1].consent_id)
    expected = sorted([*recorded, collected], key=lambda g: (g.created_at, g.consent_id))
    assert seen == [g.consent_id for g in expected]

    await register.revoke(recorded[0].consent_id, "bank-demo")
    revoked, _ = await register.list_grants(
        "bank-demo", limit=10, state=consent_pb2.CONSENT_STATE_REVOKED
    )
    assert [g.consent_id for g in revoked] == [recorded[0].consent_id]
    active, _ = await register.list_grants(
        "bank-demo", limit=10, state=consent_pb2.CONSENT_STATE_ACTIVE
    )
    assert len(active) == 5  # four of its own plus the one it collected for bank-other
    expired, _ = await register.list_grants(
        "bank-demo", limit=10, state=consent_pb2.CONSENT_STATE_EXPIRED, now=T0 + 48 * HOUR
    )
    assert len(expired) == 5
    theirs, _ = await register.list_grants("bank-demo", limit=10, subject_token=other_token)
    assert [g.consent_id for g in theirs] == [collected.consent_id]


async def test_revoke_is_limited_to_grantee_and_collector(
    register: ConsentRegister, subject_tokenizer: SubjectTokenizer, clock: FakeClock
) -> None:
    token, key = await _enrolled(register, subject_tokenizer)
    grant = await _record(register, token, key, grantee="bank-other")

    assert await register.revoke(grant.consent_id, "court-demo") is None
    assert await register.get_grant(grant.consent_id, "court-demo") is None
    clock.advance(HOUR)
    revoked = await register.revoke(grant.consent_id, "bank-demo")  # the collector
    assert revoked is not None
    assert revoked.revoked_by == "bank-demo"
    clock.advance(HOUR)
    again = await register.revoke(grant.consent_id, "bank-other")
    assert again is not None
    assert (again.revoked_by, again.revoked_at) == ("bank-demo", T0 + HOUR)


async def test_grants_recorded_before_migration_0008_keep_their_state_and_can_be_paused(
    database_url: str, subject_tokenizer: SubjectTokenizer
) -> None:
    """A grant written by the 0007 schema: after the upgrade it is ACTIVE (not paused, no
    statement applied), and the subject can pause it; the migration also downgrades."""
    def migrate(step: str, revision: str) -> None:
        engine = create_sync_engine(database_url)
        try:
            with engine.begin() as connection:
                config = alembic_config()
                config.attributes["connection"] = connection
                getattr(command, step)(config, revision)
        finally:
            engine.dispose()

    migrate("upgrade", "0007")
    key = Ed25519PrivateKey.generate()
    token = subject_tokenizer.token(IDENTITY)
    signed, signature = grants.sign_terms(key, make_terms(key))
    terms = grants.parse_terms(signed)
    consent_id = "cg_" + "b" * 26
    old_grant: dict[str, Any] = {
        "consent_id": consent_id,
        "subject_token": token,
        "subject_key_id": terms.subject_key_id,
        "grantee_institution_id": "bank-demo",
        "collecting_institution_id": "bank-demo",
        "not_before": T0 - HOUR,
        "not_after": T0 + 24 * HOUR,
        "ongoing_updates": False,
        "max_uses": 0,
        "use_count": 0,
        "signed_terms": signed,
        "terms_digest": grants.terms_digest(signed),
        "signature": signature,
        "created_at": T0 - HOUR,
        "revoked_at": None,
        "revoked_by": None,
    }
    engine = create_sync_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(SubjectKeyRow).values(
                    key_id=terms.subject_key_id,
                    subject_token=token,
                    public_key=grants.raw_public_key(key),
                    enrolled_by="enrol-office",
                    enrolled_at=T0 - 2 * HOUR,
                    retired_at=None,
                )
            )
            # Only the 0007 columns are named: the new ones do not exist yet.
            connection.execute(insert(ConsentGrantRow).values(old_grant))
    finally:
        engine.dispose()

    upgrade_to_head(database_url)
    database = Database.from_url(database_url)
    try:
        register = ConsentRegister(database, clock=FakeClock(T0))
        found = await register.get_grant(consent_id, "bank-demo")
        assert found is not None
        assert (found.state(T0), found.paused_at, found.statement_issued_at) == (
            consent_pb2.CONSENT_STATE_ACTIVE, None, None
        )
        enrolled = await register.subject_key(terms.subject_key_id)
        assert enrolled is not None
        paused = await register.change_state(
            found.consent_id, enrolled, consent_pb2.CONSENT_STATE_PAUSED, T0
        )
        assert paused.state(T0) == consent_pb2.CONSENT_STATE_PAUSED
    finally:
        await database.dispose()
    migrate("downgrade", "0007")
    upgrade_to_head(database_url)
