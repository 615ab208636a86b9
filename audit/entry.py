"""Audit entries: building one per access decision, and its canonical bytes.

The query path calls ``new_entry`` at the moment it decides, allowed or denied, and hands the
result to ``AuditLog.append``. Everything personal is kept out by construction: the subject is
a token (checked for shape), and every text field is refused if it contains something shaped
like an identity number — a mistake here would put a plaintext number into a log that can, by
design, never be edited again.

    entry = new_entry(
        institution=caller, purpose=request.purpose, outcome=ALLOWED, reason="ALLOWED",
        subject_token=token, consent_id=request.consent_id, categories=decision.categories,
        source_ids=[f.source_id for f in report.sources], report=report,
    )
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import TypeAlias

from opentelemetry import trace

from credgate.api.credit_repair.v1 import audit_pb2, report_pb2, vocabulary_pb2
from credgate.core.errors import current_request_id
from credgate.core.institution import INSTITUTION_ID_SHAPE, Institution
from credgate.core.storage.issued_reports import report_digest
from credgate.core.tokens import is_subject_token

AuditEntry = audit_pb2.AuditEntry
AuditRecord = audit_pb2.AuditRecord
OutcomeValue: TypeAlias = audit_pb2.AuditOutcome.ValueType
ActionValue: TypeAlias = audit_pb2.AuditAction.ValueType
ALLOWED: OutcomeValue = audit_pb2.AUDIT_OUTCOME_ALLOWED
DENIED: OutcomeValue = audit_pb2.AUDIT_OUTCOME_DENIED
ALLOWED_REASON = "ALLOWED"
"""The reason recorded when an answer was released."""

_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,62}[A-Z0-9]")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
"""A W3C trace id. Checked for shape instead of scanned for identity numbers: 32 random hex
digits hold 18 decimal ones in a row about once in 300 traces, which must not fail a call."""
_IDENTITY_NUMBER = re.compile(r"(?<!\d)\d{17}[\dXx](?![\dXx])")
_MAX_TEXT = 256
_RPC_METHOD = re.compile(r"/[A-Za-z][A-Za-z0-9_.]{0,127}/[A-Za-z][A-Za-z0-9_]{0,63}", re.ASCII)
_FIELD_PATH = re.compile(
    r"[a-z_][a-z0-9_]{0,63}(?:\[[0-9]{1,4}\])?(?:\.[a-z_][a-z0-9_]{0,63}"
    r"(?:\[[0-9]{1,4}\])?){0,7}|request",
    re.ASCII,
)
"""A refused request's field paths as the input rules name them; ``request`` for bytes that
do not even parse."""
_ACTIONS = frozenset(audit_pb2.AuditAction.values())


class AuditEntryError(ValueError):
    """An entry is incomplete or would record personal data. Messages never echo values."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _current_trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def new_entry(
    *,
    purpose: vocabulary_pb2.Purpose.ValueType,
    outcome: OutcomeValue,
    reason: str,
    institution: Institution | None = None,
    institution_id: str = "",
    role: vocabulary_pb2.InstitutionRole.ValueType = vocabulary_pb2.INSTITUTION_ROLE_UNSPECIFIED,
    subject_token: str = "",
    consent_id: str = "",
    case_reference: str = "",
    categories: Iterable[vocabulary_pb2.DataCategory.ValueType] = (),
    source_ids: Iterable[str] = (),
    withheld_categories: Iterable[vocabulary_pb2.DataCategory.ValueType] = (),
    chargeable: bool = False,
    action: ActionValue = audit_pb2.AUDIT_ACTION_UNSPECIFIED,
    trace_id: str | None = None,
    request_id: str | None = None,
    report: report_pb2.RepairStatusReport | None = None,
    decision_time: dt.datetime | None = None,
    rpc_method: str = "",
    invalid_fields: Iterable[str] = (),
) -> audit_pb2.AuditEntry:
    """An entry for one decision, validated and in canonical form (index assigned on append).

    ``institution`` (from the certificate) fills id and role; ``trace_id`` and ``request_id``
    default to the current OpenTelemetry span and the current call's request id; ``report``
    fills report id and digest. Raises AuditEntryError for a malformed or personal value.
    """
    if institution is not None:
        institution_id, role = institution.institution_id, institution.role
    entry = audit_pb2.AuditEntry(
        institution_id=institution_id,
        role=role,
        purpose=purpose,
        consent_id=consent_id,
        case_reference=case_reference,
        subject_token=subject_token,
        categories=sorted(set(categories)),  # canonical form (``canonical``), built so
        source_ids=sorted(set(source_ids)),
        withheld_categories=sorted(set(withheld_categories)),
        chargeable=chargeable,
        action=action,
        outcome=outcome,
        reason=reason,
        trace_id=_current_trace_id() if trace_id is None else trace_id,
        request_id=(current_request_id() or "") if request_id is None else request_id,
        rpc_method=rpc_method,
        invalid_fields=invalid_fields,
    )
    if report is not None:
        entry.report_id = report.report_id
        entry.report_digest = report_digest(report)
    entry.decision_time.FromDatetime(decision_time or _now())
    validate(entry)
    return entry


def canonical(entry: audit_pb2.AuditEntry) -> audit_pb2.AuditEntry:
    """A validated copy with repeated fields sorted and de-duplicated (one entry, one encoding)."""
    validate(entry)
    copy = audit_pb2.AuditEntry()
    copy.CopyFrom(entry)
    categories = sorted(set(copy.categories))
    withheld = sorted(set(copy.withheld_categories))
    sources = sorted(set(copy.source_ids))
    del copy.categories[:]
    copy.categories.extend(categories)
    del copy.withheld_categories[:]
    copy.withheld_categories.extend(withheld)
    del copy.source_ids[:]
    copy.source_ids.extend(sources)
    return copy


def entry_bytes(entry: audit_pb2.AuditEntry) -> bytes:
    """The canonical serialization the leaf hash is computed over."""
    return entry.SerializeToString(deterministic=True)


def validate(entry: audit_pb2.AuditEntry) -> None:
    """Raise AuditEntryError unless ``entry`` is complete and holds no personal data."""
    problems: list[str] = []
    if not INSTITUTION_ID_SHAPE.fullmatch(entry.institution_id):
        problems.append("institution_id is not an institution id")
    if entry.outcome not in (ALLOWED, DENIED):
        problems.append("outcome must be ALLOWED or DENIED")
    if entry.action not in _ACTIONS:
        problems.append("action is not a known action")
    if not _REASON.fullmatch(entry.reason):
        problems.append("reason must be an UPPER_SNAKE reason code")
    if entry.subject_token and not is_subject_token(entry.subject_token):
        problems.append("subject_token is not a subject token")
    if entry.report_digest and not _DIGEST.fullmatch(entry.report_digest):
        problems.append("report_digest must be lower-case hex SHA-256")
    if entry.trace_id and not _TRACE_ID.fullmatch(entry.trace_id):
        problems.append("trace_id must be 32 lower-case hex digits")
    if entry.rpc_method and not _RPC_METHOD.fullmatch(entry.rpc_method):
        problems.append("rpc_method is not a gRPC method name")
    if any(not _FIELD_PATH.fullmatch(path) for path in entry.invalid_fields):
        problems.append("invalid_fields must be field paths")
    if not entry.HasField("decision_time"):
        problems.append("decision_time is required")
    texts = {
        "consent_id": entry.consent_id,
        "case_reference": entry.case_reference,
        "request_id": entry.request_id,
        "report_id": entry.report_id,
        **{f"source_ids[{i}]": s for i, s in enumerate(entry.source_ids)},
    }
    for name, value in texts.items():
        if len(value) > _MAX_TEXT:
            problems.append(f"{name} is longer than {_MAX_TEXT} characters")
        if _IDENTITY_NUMBER.search(value):
            problems.append(f"{name} contains something shaped like an identity number")
    if problems:
        raise AuditEntryError("invalid audit entry: " + "; ".join(problems))
