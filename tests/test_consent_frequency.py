"""Fetch type and frequency limits of consent grants (issue #13, item 2).

Directly against ``consent/register.py`` on real SQLite and PostgreSQL databases, with two
registers on two ``Database`` objects standing for two replicas, and a settable clock. The
guarantee attacked: at most ``frequency_max_uses`` queries per calendar period (Asia/Shanghai)
however many arrive at once, a new allowance when the next period begins, a ONE_TIME grant
spent by its first use, and terms without a frequency counting as before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.consent import grants
from credgate.consent.frequency import period_start
from credgate.consent.register import (
    CONSENT_EXHAUSTED,
    CONSENT_FREQUENCY_EXCEEDED,
    CONSENT_VALID,
    ConsentRegister,
)
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from tests.test_consent_register import (
    IDENTITY,
    REVIEW,
    FakeClock,
    make_terms,
)

DAY = consent_pb2.FREQUENCY_PERIOD_DAY
# 23:59:59.999 on 1 March 2025 in Asia/Shanghai (UTC+8): the last instant of a Beijing day.
BEFORE_MIDNIGHT = dt.datetime(2025, 3, 1, 15, 59, 59, 999_000, tzinfo=dt.UTC)
MIDNIGHT = dt.datetime(2025, 3, 1, 16, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
CONCURRENT = 50


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(BEFORE_MIDNIGHT)


@pytest.fixture
async def replicas(
    migrated_database_url: str, clock: FakeClock
) -> AsyncIterator[tuple[ConsentRegister, ConsentRegister]]:
    """Two registers on two connection pools to one database: two replicas."""
    first, second = (
        Database.from_url(migrated_database_url),
        Database.from_url(migrated_database_url),
    )
    try:
        yield ConsentRegister(first, clock=clock), ConsentRegister(second, clock=clock)
    finally:
        await first.dispose()
        await second.dispose()


async def _grant(
    register: ConsentRegister, tokenizer: SubjectTokenizer, **overrides: object
) -> tuple[str, grants.Grant]:
    key = Ed25519PrivateKey.generate()
    token = tokenizer.token(IDENTITY)
    await register.enroll_key(token, grants.raw_public_key(key), "enrol-office")
    terms = make_terms(key, not_before=BEFORE_MIDNIGHT - HOUR, not_after=MIDNIGHT + 48 * HOUR)
    for name, value in overrides.items():
        setattr(terms, name, value)
    signed, signature = grants.sign_terms(key, terms)
    parsed = grants.parse_terms(signed)
    assert grants.term_violations(parsed, now=BEFORE_MIDNIGHT) == []
    grant, created = await register.record_grant(token, parsed, signed, signature)
    assert created
    return token, grant


async def _spend_at_once(replicas: tuple[ConsentRegister, ConsentRegister], consent_id: str) -> int:
    """``CONCURRENT`` uses at once, alternating between the replicas; how many were spent."""
    results = await asyncio.gather(
        *(replicas[i % 2].record_use(consent_id) for i in range(CONCURRENT))
    )
    return sum(results)


async def _reason(
    register: ConsentRegister, token: str, grant: grants.Grant, now: dt.datetime
) -> str:
    lookup = await register.find_valid_grant(token, "bank-demo", REVIEW, grant.consent_id, now)
    return lookup.reason


async def test_exactly_n_per_period_under_concurrency_at_a_period_boundary(
    replicas: tuple[ConsentRegister, ConsentRegister],
    subject_tokenizer: SubjectTokenizer,
    clock: FakeClock,
) -> None:
    register = replicas[0]
    token, grant = await _grant(
        register, subject_tokenizer, frequency_period=DAY, frequency_max_uses=3
    )
    assert grant.limited

    assert await _spend_at_once(replicas, grant.consent_id) == 3
    assert await _reason(register, token, grant, clock.now) == CONSENT_FREQUENCY_EXCEEDED

    clock.now = MIDNIGHT  # the next Beijing day begins
    assert await _reason(register, token, grant, clock.now) == CONSENT_VALID
    assert await _spend_at_once(replicas, grant.consent_id) == 3
    assert await _reason(register, token, grant, clock.now) == CONSENT_FREQUENCY_EXCEEDED

    # A replica whose clock still reads the old day counts in the new one: no fresh allowance.
    clock.now = BEFORE_MIDNIGHT
    assert not await register.record_use(grant.consent_id)

    after = await register.get_grant(grant.consent_id, "bank-demo")
    assert after is not None
    assert (after.use_count, after.period_start, after.period_uses) == (6, MIDNIGHT, 3)


async def test_frequency_and_max_uses_both_hold(
    replicas: tuple[ConsentRegister, ConsentRegister],
    subject_tokenizer: SubjectTokenizer,
    clock: FakeClock,
) -> None:
    register = replicas[0]
    token, grant = await _grant(
        register, subject_tokenizer, frequency_period=DAY, frequency_max_uses=3, max_uses=4
    )
    assert await _spend_at_once(replicas, grant.consent_id) == 3
    clock.now = MIDNIGHT
    assert await _spend_at_once(replicas, grant.consent_id) == 1
    assert await _reason(register, token, grant, clock.now) == CONSENT_EXHAUSTED


async def test_one_time_grant_is_exhausted_after_its_first_use(
    replicas: tuple[ConsentRegister, ConsentRegister],
    subject_tokenizer: SubjectTokenizer,
    clock: FakeClock,
) -> None:
    register = replicas[0]
    token, grant = await _grant(
        register, subject_tokenizer, fetch_type=consent_pb2.FETCH_TYPE_ONE_TIME
    )
    assert grant.max_uses == 1
    assert await _spend_at_once(replicas, grant.consent_id) == 1
    assert await _reason(register, token, grant, clock.now) == CONSENT_EXHAUSTED
    clock.now = MIDNIGHT + 24 * HOUR
    assert not await register.record_use(grant.consent_id)


async def test_terms_without_frequency_count_as_before(
    replicas: tuple[ConsentRegister, ConsentRegister],
    subject_tokenizer: SubjectTokenizer,
    clock: FakeClock,
) -> None:
    register = replicas[0]
    token, unlimited = await _grant(register, subject_tokenizer)
    assert not unlimited.limited
    assert await _spend_at_once(replicas, unlimited.consent_id) == CONCURRENT
    assert await _reason(register, token, unlimited, clock.now) == CONSENT_VALID

    _, limited = await _grant(register, subject_tokenizer, max_uses=7)
    assert await _spend_at_once(replicas, limited.consent_id) == 7


@pytest.mark.parametrize(
    ("period", "start"),
    [
        (consent_pb2.FREQUENCY_PERIOD_HOUR, dt.datetime(2025, 3, 1, 15, tzinfo=dt.UTC)),
        (consent_pb2.FREQUENCY_PERIOD_DAY, dt.datetime(2025, 2, 28, 16, tzinfo=dt.UTC)),
        (consent_pb2.FREQUENCY_PERIOD_MONTH, dt.datetime(2025, 2, 28, 16, tzinfo=dt.UTC)),
        (consent_pb2.FREQUENCY_PERIOD_YEAR, dt.datetime(2024, 12, 31, 16, tzinfo=dt.UTC)),
    ],
)
def test_periods_are_calendar_periods_in_shanghai_time(period: int, start: dt.datetime) -> None:
    assert period_start(BEFORE_MIDNIGHT, period) == start
    assert period_start(start, period) == start


def test_a_beijing_day_begins_at_1600_utc() -> None:
    assert period_start(MIDNIGHT, DAY) == MIDNIGHT


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"fetch_type": 7}, "terms.fetch_type"),
        ({"fetch_type": consent_pb2.FETCH_TYPE_ONE_TIME, "max_uses": 2}, "terms.max_uses"),
        ({"frequency_period": 9, "frequency_max_uses": 1}, "terms.frequency_period"),
        ({"frequency_period": DAY}, "terms.frequency_max_uses"),
        ({"frequency_max_uses": 3}, "terms.frequency_max_uses"),
    ],
)
def test_malformed_fetch_terms_are_violations(fields: dict[str, int], path: str) -> None:
    terms = make_terms(
        Ed25519PrivateKey.generate(), not_before=BEFORE_MIDNIGHT, not_after=MIDNIGHT + HOUR
    )
    for name, value in fields.items():
        setattr(terms, name, value)
    violations = grants.term_violations(terms, now=BEFORE_MIDNIGHT)
    assert [field for field, _ in violations] == [path]
