"""The audit step as the gateway wires it: ``audit.trail.AuditTrail`` with failures counted.

The one path every decision takes into the audit log — fail closed, ``AUDIT_UNAVAILABLE`` and
nothing released when an entry cannot be made durable — lives in ``audit.trail`` (so the
regulator's service in ``audit/`` uses it without importing upward). This module adds only
what belongs to the gateway: each failure counted in ``credgate.audit.append_failures``. The
app builds one ``AuditTrail`` and hands it to every service, so all of them record the same
way and fail closed together (docs/audit.md).
"""

from __future__ import annotations

from credgate.audit.log import AuditLog
from credgate.audit.trail import (
    CHANGE_CONSENT_STATE,
    ENROLL_SUBJECT_KEY,
    GET_GRANT_RECEIPT,
    GRANT_CONSENT,
    ISSUE_REPAIR_CERTIFICATE,
    LIST_OWN_ACCESSES,
    LIST_OWN_CONSENTS,
    READ_AUDIT_LOG,
    READ_REPAIR_STATUS,
    REFUSE_MALFORMED_REQUEST,
    REVOKE_CONSENT,
    SKIPPED_SOURCE_REASON,
    WATCH_CONSENT_EVENTS,
    action_name,
    sources_consulted,
)
from credgate.audit.trail import AuditTrail as _AuditTrail
from credgate.gateway import call_deadline
from credgate.gateway.telemetry import record_audit_failure

__all__ = [
    "CHANGE_CONSENT_STATE",
    "ENROLL_SUBJECT_KEY",
    "GET_GRANT_RECEIPT",
    "GRANT_CONSENT",
    "ISSUE_REPAIR_CERTIFICATE",
    "LIST_OWN_ACCESSES",
    "LIST_OWN_CONSENTS",
    "READ_AUDIT_LOG",
    "READ_REPAIR_STATUS",
    "REFUSE_MALFORMED_REQUEST",
    "REVOKE_CONSENT",
    "SKIPPED_SOURCE_REASON",
    "WATCH_CONSENT_EVENTS",
    "AuditTrail",
    "action_name",
    "sources_consulted",
]


class AuditTrail(_AuditTrail):
    """``audit.trail.AuditTrail`` whose failures are counted (``record_audit_failure``) and
    whose appends are bounded by the call's deadline (``gateway.call_deadline``)."""

    def __init__(self, audit_log: AuditLog) -> None:
        super().__init__(
            audit_log, on_failure=record_audit_failure, deadline=call_deadline.audit_deadline
        )
