"""Consent-backed queries end to end: enrol → grant → query → revoke, over real mTLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Iterable

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.gateway.client import CredgateError
from tests.fixtures.mocks import ENROLMENT_OFFICE, RunningGateway, unstale

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
CREDIT = vocab.DATA_CATEGORY_COMMERCIAL_CREDIT


async def grant_consent(
    gateway: RunningGateway,
    identity_number: str,
    *,
    grantee: str = "bank-demo",
    purposes: Iterable[vocab.Purpose.ValueType] = (REVIEW,),
    categories: Iterable[vocab.DataCategory.ValueType] = (REPAIR, CREDIT),
    valid_for: dt.timedelta = dt.timedelta(days=30),
    starts: dt.timedelta = dt.timedelta(hours=-1),
    max_uses: int = 0,
    fetch_type: consent_pb2.FetchType.ValueType = consent_pb2.FETCH_TYPE_UNSPECIFIED,
    frequency_period: consent_pb2.FrequencyPeriod.ValueType = (
        consent_pb2.FREQUENCY_PERIOD_UNSPECIFIED
    ),
    frequency_max_uses: int = 0,
) -> consent_pb2.ConsentGrant:
    """What happens at a branch: the office enrols the subject's key, the subject signs the
    terms on their own device, the collecting institution records the grant."""
    key = Ed25519PrivateKey.generate()
    async with gateway.client(ENROLMENT_OFFICE) as office:
        await office.enroll_subject_key(identity_number, grants.raw_public_key(key))
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=grants.subject_key_id(grants.raw_public_key(key)),
        grantee_institution_id=grantee,
        collecting_institution_id=grantee,
        purposes=sorted(set(purposes)),
        categories=sorted(set(categories)),
        max_uses=max_uses,
        retention_days=30,
        nonce=secrets.token_bytes(16),
        fetch_type=fetch_type,
        frequency_period=frequency_period,
        frequency_max_uses=frequency_max_uses,
    )
    terms.not_before.FromDatetime(now + starts)
    terms.not_after.FromDatetime(now + starts + valid_for)
    signed, signature = grants.sign_terms(key, terms)
    async with gateway.client(grantee) as collector:
        return await collector.grant_consent(identity_number, signed, signature)


async def test_consented_query_returns_only_consented_categories(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    grant = await grant_consent(gateway, number, categories=(REPAIR,))
    async with gateway.client("bank-demo") as bank:
        report = await unstale(
            lambda: bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
        )
    assert report.state == vocab.REPAIR_STATE_OBSERVATION
    assert list(report.categories) == [REPAIR]
    assert all(
        not s.records or all(r.category == REPAIR for r in s.records) for s in report.sources
    )
    assert not any(s.HasField("identity") for s in report.sources)


async def test_revoked_consent_denies_the_very_next_request(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["restored_reorganization"].person.identity_number
    grant = await grant_consent(gateway, number)
    async with gateway.client("bank-demo") as bank:
        await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
        await bank.revoke_consent(grant.consent_id)
        with pytest.raises(CredgateError) as caught:
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CONSENT_REVOKED",
    )


async def test_expired_consent_is_refused(gateway: RunningGateway, population: Population) -> None:
    number = population.scenarios["no_record"].person.identity_number
    grant = await grant_consent(
        gateway, number, starts=dt.timedelta(seconds=-1), valid_for=dt.timedelta(seconds=2)
    )
    await asyncio.sleep(1.2)  # a grant cannot be recorded already expired; let this one lapse
    async with gateway.client("bank-demo") as bank:
        with pytest.raises(CredgateError) as caught:
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
    assert caught.value.reason == "CONSENT_EXPIRED"


async def test_asking_for_a_category_outside_the_consent_is_refused(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    grant = await grant_consent(gateway, number, categories=(REPAIR,))
    async with gateway.client("bank-demo") as bank:
        with pytest.raises(CredgateError) as caught:
            await bank.get_repair_status(
                number, purpose=REVIEW, consent_id=grant.consent_id, categories=[CREDIT]
            )
    assert caught.value.reason == "CATEGORY_NOT_CONSENTED"


async def test_consent_to_another_institution_does_not_help(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    await grant_consent(gateway, number, grantee="lessor-demo")
    async with gateway.client("bank-demo") as bank:
        with pytest.raises(CredgateError) as caught:
            await bank.get_repair_status(number, purpose=REVIEW)
    assert caught.value.reason == "CONSENT_MISSING"


async def test_a_grant_limited_in_uses_is_exhausted(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["revoked"].person.identity_number
    grant = await grant_consent(gateway, number, max_uses=1)
    async with gateway.client("bank-demo") as bank:
        await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
        with pytest.raises(CredgateError) as caught:
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
    assert caught.value.reason == "CONSENT_EXHAUSTED"


async def test_a_grant_limited_per_period_refuses_beyond_its_frequency(
    gateway: RunningGateway, population: Population
) -> None:
    """Over real mTLS: two uses this (Beijing) year, the third refused with its own reason.
    The exact count under concurrency at a period boundary is in test_consent_frequency."""
    number = population.scenarios["observation"].person.identity_number
    grant = await grant_consent(
        gateway,
        number,
        frequency_period=consent_pb2.FREQUENCY_PERIOD_YEAR,
        frequency_max_uses=2,
    )
    async with gateway.client("bank-demo") as bank:
        for _ in range(2):
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
        with pytest.raises(CredgateError) as caught:
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CONSENT_FREQUENCY_EXCEEDED",
    )


async def test_a_one_time_grant_is_spent_by_its_first_query(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    grant = await grant_consent(gateway, number, fetch_type=consent_pb2.FETCH_TYPE_ONE_TIME)
    async with gateway.client("bank-demo") as bank:
        await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
        with pytest.raises(CredgateError) as caught:
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=grant.consent_id)
    assert caught.value.reason == "CONSENT_EXHAUSTED"
