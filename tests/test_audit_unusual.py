"""The unusual-access report flags a seeded scraping pattern and stays quiet on normal traffic.

A week of baseline and one day of window are seeded with a fixed random seed: three
institutions with their own daily volumes, purposes and a trickle of consent denials spread
over the day — the kind of noise a real log has — then the patterns are added on top.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as pb
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit import ALLOWED, DENIED, AuditLog
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.unusual import Thresholds, Window, _longest_burst, unusual_access_report
from credgate.core.storage.database import Database
from tests.test_audit_log import ORIGIN, make_entry

WINDOW_START = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
WINDOW = Window(WINDOW_START, WINDOW_START + DAY, baseline_windows=7)
NORMAL = {
    # institution: (role, purpose, decisions per day)
    "bank-demo": (
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
        vocab.PURPOSE_CREDIT_APPLICATION_REVIEW,
        40,
    ),
    "bank-other": (
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
        vocab.PURPOSE_EXISTING_CREDIT_RELATIONSHIP,
        20,
    ),
    "court-demo": (vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN, vocab.PURPOSE_JUDICIAL_INVESTIGATION, 10),
}


@pytest.fixture
async def audit_log(database: Database, tmp_path: Path) -> AsyncIterator[AuditLog]:
    log = AuditLog(database, load_or_create_signer(tmp_path / "audit-log.key", ORIGIN))
    yield log
    await log.aclose()


async def seed_normal_traffic(log: AuditLog) -> None:
    """Eight days (baseline + window) of ordinary traffic, volumes varying by +-20%."""
    rng = random.Random(7)
    entries = []
    subject = 0
    for day in range(-7, 1):
        day_start = WINDOW_START + day * DAY
        for institution, (role, purpose, per_day) in NORMAL.items():
            for _ in range(int(per_day * rng.uniform(0.8, 1.2))):
                subject += 1
                denied = rng.random() < 0.08
                when = day_start + dt.timedelta(seconds=rng.uniform(0, DAY.total_seconds()))
                entries.append(
                    make_entry(
                        subject,
                        institution=institution,
                        role=role,
                        purpose=purpose,
                        outcome=DENIED if denied else ALLOWED,
                        when=when,
                    )
                )
    for first in range(0, len(entries), 100):
        await asyncio.gather(*(log.append(e) for e in entries[first : first + 100]))


async def test_normal_traffic_is_quiet(audit_log: AuditLog) -> None:
    await seed_normal_traffic(audit_log)
    assert await unusual_access_report(audit_log.database, WINDOW) == []


async def test_a_scraping_pattern_is_flagged_and_nothing_else(audit_log: AuditLog) -> None:
    await seed_normal_traffic(audit_log)
    burst_start = WINDOW_START + dt.timedelta(hours=3)
    scrape = [
        make_entry(
            10_000 + i,
            institution="bank-other",
            purpose=vocab.PURPOSE_EXISTING_CREDIT_RELATIONSHIP,
            outcome=ALLOWED if i % 10 == 0 else DENIED,
            reason=None if i % 10 == 0 else ("CONSENT_MISSING", "CONSENT_EXPIRED")[i % 2],
            when=burst_start + dt.timedelta(seconds=10 * i),
        )
        for i in range(80)
    ]
    for entry in scrape:
        await audit_log.append(entry)

    findings = await unusual_access_report(audit_log.database, WINDOW)
    assert {f.institution_id for f in findings} == {"bank-other"}
    kinds = [f.kind for f in findings]
    assert kinds == [
        pb.UNUSUAL_ACCESS_KIND_SUBJECTS_WITHOUT_CONSENT,
        pb.UNUSUAL_ACCESS_KIND_DENIAL_BURST,
        pb.UNUSUAL_ACCESS_KIND_VOLUME_ABOVE_BASELINE,
    ]
    no_consent, burst, volume = findings
    assert no_consent.observed == 72
    assert "72 distinct subjects" in no_consent.explanation
    assert no_consent.first_time.ToDatetime(dt.UTC) == burst_start + dt.timedelta(seconds=10)
    assert len(no_consent.sample_indexes) == 20
    assert burst.observed >= 20
    assert volume.observed > 3 * volume.expected
    assert "baseline mean" in volume.explanation


async def test_a_purpose_new_to_an_institution_is_flagged(audit_log: AuditLog) -> None:
    await seed_normal_traffic(audit_log)
    for i in range(6):
        await audit_log.append(
            make_entry(
                20_000 + i,
                institution="bank-demo",
                purpose=vocab.PURPOSE_SUBJECT_AUTHORIZED,
                when=WINDOW_START + dt.timedelta(hours=i + 1),
            )
        )
    findings = await unusual_access_report(audit_log.database, WINDOW)
    assert [(f.kind, f.institution_id, f.purpose) for f in findings] == [
        (
            pb.UNUSUAL_ACCESS_KIND_UNUSUAL_PURPOSE,
            "bank-demo",
            vocab.PURPOSE_SUBJECT_AUTHORIZED,
        )
    ]
    assert "PURPOSE_SUBJECT_AUTHORIZED used 6 times" in findings[0].explanation
    # Stricter thresholds silence it: the statistics are explainable and tunable.
    quiet = Thresholds(purpose_min_count=10)
    assert await unusual_access_report(audit_log.database, WINDOW, quiet) == []


def test_longest_burst_finds_the_densest_span() -> None:
    base = WINDOW_START
    times = [(base + dt.timedelta(seconds=s), i) for i, s in enumerate([0, 400, 401, 402, 900])]
    assert _longest_burst(times, dt.timedelta(seconds=300)) == (1, 4)
    assert _longest_burst([], dt.timedelta(seconds=300)) == (0, 0)


def test_outcome_constants_match_the_schema() -> None:
    assert DENIED == audit_pb2.AUDIT_OUTCOME_DENIED
