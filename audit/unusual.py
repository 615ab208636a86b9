"""Unusual access: four simple statistics a regulator can check by hand.

Each looks at one time window ``[start, end)`` and, where a comparison is needed, at the
``baseline_windows`` windows of the same length just before it (the institution's own past):

1. **Volume above baseline** — an institution's number of decisions in the window exceeds
   ``volume_ratio`` × its mean per baseline window (a mean below 1 counts as 1), and is at
   least ``volume_min_count``.
2. **Denial burst** — at least ``burst_min_denials`` denials for one institution within any
   ``burst_seconds`` span of the window.
3. **Subjects without consent** — one institution refused with a ``CONSENT_*`` reason for at
   least ``no_consent_min_subjects`` distinct subjects in the window: the signature of scraping
   (trying many people to see who is there).
4. **Unusual purpose** — an institution used a purpose at least ``purpose_min_count`` times in
   the window that made up under ``purpose_max_baseline_share`` of its baseline decisions,
   provided its baseline has at least ``purpose_min_baseline`` decisions to judge by.

Thresholds are deliberately round and configurable: every finding's explanation states the
numbers compared, so a finding can be argued with. No model, no hidden state.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from sqlalchemy import ColumnElement, func, select

from credgate.api.credit_repair.v1 import audit_pb2, regulator_service_pb2, vocabulary_pb2
from credgate.audit.statistics import decision_counts, distinct_subjects, refused_for_consent
from credgate.audit.store_models import AuditEntryRow
from credgate.core.storage.database import Database

UnusualAccessFinding = regulator_service_pb2.UnusualAccessFinding
KindValue: TypeAlias = regulator_service_pb2.UnusualAccessKind.ValueType
PurposeValue: TypeAlias = vocabulary_pb2.Purpose.ValueType
_E = AuditEntryRow
_SAMPLES = 20
_SEVERITY = {
    regulator_service_pb2.UNUSUAL_ACCESS_KIND_SUBJECTS_WITHOUT_CONSENT: 0,
    regulator_service_pb2.UNUSUAL_ACCESS_KIND_DENIAL_BURST: 1,
    regulator_service_pb2.UNUSUAL_ACCESS_KIND_VOLUME_ABOVE_BASELINE: 2,
    regulator_service_pb2.UNUSUAL_ACCESS_KIND_UNUSUAL_PURPOSE: 3,
}


@dataclass(frozen=True)
class Thresholds:
    """When a statistic becomes a finding (see the module docstring)."""

    volume_ratio: float = 3.0
    volume_min_count: int = 50
    burst_seconds: float = 300.0
    burst_min_denials: int = 20
    no_consent_min_subjects: int = 10
    purpose_min_count: int = 5
    purpose_min_baseline: int = 20
    purpose_max_baseline_share: float = 0.01


@dataclass(frozen=True)
class Window:
    """The window examined and its baseline."""

    start: dt.datetime
    end: dt.datetime
    baseline_windows: int

    @property
    def baseline_start(self) -> dt.datetime:
        """Where the baseline begins (it ends at ``start``)."""
        return self.start - (self.end - self.start) * self.baseline_windows


def _finding(
    kind: KindValue, institution: str, explanation: str, observed: float, expected: float
) -> UnusualAccessFinding:
    return UnusualAccessFinding(
        kind=kind,
        institution_id=institution,
        explanation=explanation,
        observed=observed,
        expected=expected,
    )


async def _counts(
    database: Database, start: dt.datetime, end: dt.datetime
) -> dict[tuple[str, PurposeValue], int]:
    """Decisions per (institution, purpose) in ``[start, end)`` (``audit.statistics``)."""
    counts = await decision_counts(database, start, end)
    return {(i, PurposeValue(p)): c for (i, p), c in counts.items()}


async def _samples(
    database: Database, window: Window, *conditions: ColumnElement[bool]
) -> tuple[list[int], dt.datetime | None, dt.datetime | None]:
    """Sample indexes and the first/last decision time of the entries meeting ``conditions``."""
    where = (_E.decision_time >= window.start, _E.decision_time < window.end, *conditions)
    async with database.session() as session:
        indexes = (
            await session.scalars(
                select(_E.entry_index).where(*where).order_by(_E.entry_index).limit(_SAMPLES)
            )
        ).all()
        first, last = (
            await session.execute(
                select(func.min(_E.decision_time), func.max(_E.decision_time)).where(*where)
            )
        ).one()
    return [int(i) for i in indexes], first, last


def _set_span(
    finding: UnusualAccessFinding, first: dt.datetime | None, last: dt.datetime | None
) -> None:
    if first is not None:
        finding.first_time.FromDatetime(first)
    if last is not None:
        finding.last_time.FromDatetime(last)


def _longest_burst(times: Sequence[tuple[dt.datetime, int]], span: dt.timedelta) -> tuple[int, int]:
    """(start, end) positions of the most denials within ``span`` (two pointers, sorted)."""
    best, best_start, start = 0, 0, 0
    for end in range(len(times)):
        while times[end][0] - times[start][0] > span:
            start += 1
        if end - start + 1 > best:
            best, best_start = end - start + 1, start
    return best_start, best_start + best


async def unusual_access_report(
    database: Database, window: Window, thresholds: Thresholds = Thresholds()
) -> list[UnusualAccessFinding]:
    """Every finding for the window, most severe kind first, largest first within a kind."""
    t = thresholds
    findings: list[UnusualAccessFinding] = []
    current = await _counts(database, window.start, window.end)
    baseline = await _counts(database, window.baseline_start, window.start)
    per_institution: dict[str, int] = defaultdict(int)
    baseline_total: dict[str, int] = defaultdict(int)
    for (institution, _), count in current.items():
        per_institution[institution] += count
    for (institution, _), count in baseline.items():
        baseline_total[institution] += count

    for institution, count in per_institution.items():
        mean = baseline_total[institution] / window.baseline_windows
        if count >= t.volume_min_count and count > t.volume_ratio * max(mean, 1.0):
            finding = _finding(
                regulator_service_pb2.UNUSUAL_ACCESS_KIND_VOLUME_ABOVE_BASELINE,
                institution,
                f"{count} decisions in the window against a baseline mean of {mean:.1f} per "
                f"window over the previous {window.baseline_windows} windows "
                f"(threshold: more than {t.volume_ratio:g}x the mean and at least "
                f"{t.volume_min_count})",
                count,
                mean,
            )
            indexes, first, last = await _samples(
                database, window, _E.institution_id == institution
            )
            finding.sample_indexes.extend(indexes)
            _set_span(finding, first, last)
            findings.append(finding)

    for (institution, purpose), count in current.items():
        total = baseline_total[institution]
        used = baseline.get((institution, purpose), 0)
        if (
            count >= t.purpose_min_count
            and total >= t.purpose_min_baseline
            and used < t.purpose_max_baseline_share * total
        ):
            name = (
                vocabulary_pb2.Purpose.Name(purpose)
                if purpose in vocabulary_pb2.Purpose.values()
                else str(purpose)
            )
            finding = _finding(
                regulator_service_pb2.UNUSUAL_ACCESS_KIND_UNUSUAL_PURPOSE,
                institution,
                f"purpose {name} used {count} times in the window but in only {used} of the "
                f"institution's {total} baseline decisions (threshold: under "
                f"{t.purpose_max_baseline_share:.0%} of the baseline and at least "
                f"{t.purpose_min_count} uses)",
                count,
                used,
            )
            finding.purpose = purpose
            indexes, first, last = await _samples(
                database, window, _E.institution_id == institution, _E.purpose == purpose
            )
            finding.sample_indexes.extend(indexes)
            _set_span(finding, first, last)
            findings.append(finding)

    findings.extend(await _denial_findings(database, window, t))
    findings.sort(key=lambda f: (_SEVERITY.get(f.kind, 9), -f.observed, f.institution_id))
    return findings


async def _denial_findings(
    database: Database, window: Window, t: Thresholds
) -> list[UnusualAccessFinding]:
    """Denial bursts, then subjects refused for lack of consent, per institution."""
    denied = _E.outcome == audit_pb2.AUDIT_OUTCOME_DENIED
    query = (
        select(_E.institution_id, _E.decision_time, _E.entry_index)
        .where(_E.decision_time >= window.start, _E.decision_time < window.end, denied)
        .order_by(_E.institution_id, _E.decision_time, _E.entry_index)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    by_institution: dict[str, list[tuple[dt.datetime, int]]] = defaultdict(list)
    for institution, time, index in rows:
        by_institution[str(institution)].append((time, int(index)))
    findings: list[UnusualAccessFinding] = []
    span = dt.timedelta(seconds=t.burst_seconds)
    for institution, denials in by_institution.items():
        start, end = _longest_burst(denials, span)
        if end - start >= t.burst_min_denials:
            burst = denials[start:end]
            finding = _finding(
                regulator_service_pb2.UNUSUAL_ACCESS_KIND_DENIAL_BURST,
                institution,
                f"{end - start} denials within {t.burst_seconds:g} seconds "
                f"(threshold: {t.burst_min_denials})",
                end - start,
                t.burst_min_denials,
            )
            finding.sample_indexes.extend(d[1] for d in burst[:_SAMPLES])
            _set_span(finding, burst[0][0], burst[-1][0])
            findings.append(finding)
    refused = await distinct_subjects(database, window.start, window.end, *refused_for_consent())
    for institution, subjects in sorted(refused.items()):
        if subjects >= t.no_consent_min_subjects:
            finding = _finding(
                regulator_service_pb2.UNUSUAL_ACCESS_KIND_SUBJECTS_WITHOUT_CONSENT,
                institution,
                f"refused for lack of consent on {subjects} distinct subjects in the window "
                f"(threshold: {t.no_consent_min_subjects})",
                subjects,
                t.no_consent_min_subjects,
            )
            indexes, first, last = await _samples(
                database, window, _E.institution_id == institution, *refused_for_consent()
            )
            finding.sample_indexes.extend(indexes)
            _set_span(finding, first, last)
            findings.append(finding)
    return findings
