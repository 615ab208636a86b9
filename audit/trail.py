"""``AuditTrail``: the one path by which a decision gets into the audit log, fail closed.

Every service that decides — a repair-status query (each batch item and each watched report on
its own), a consent action, a self-inquiry listing, a workflow step, a regulator's read of the
log and a refusal of any of these — records the decision here *before* anything is released,
allowed or refused alike::

    await trail.record(caller, READ_REPAIR_STATUS, purpose=request.purpose,
                       reason=decision.reason, subject_token=token, ...)   # then raise / answer

One path, so the failure handling cannot differ between services (it did: a regulator refusal
whose entry failed was still answered PERMISSION_DENIED). Nothing else calls
``AuditLog.append`` or ``new_entry`` (``tests/test_audit_one_path.py`` checks the source).

**Fail closed.** If the entry cannot be made durable (``AuditUnavailable``: database down, a
table missing, the log's lock not obtained in time) or cannot even be built
(``AuditEntryError``: a value shaped like an identity number — a bug, since requests are
validated first), ``record`` raises ``GatewayError`` UNAVAILABLE / ``AUDIT_UNAVAILABLE`` and
the caller must release nothing: not the answer, and not a refusal either. A denial answered
without a trace would let a caller probe (whose consent exists, whose key matches, who is a
regulator) while the log is down; answering every call the same way while it is down reveals
nothing.

**What an entry says.** Who (institution id and role from the certificate), what
(``AuditAction``), why (purpose), about whom (subject token — never the identity number or a
name; consent id and case reference as the request named them), the outcome and its reason
(``ALLOWED`` or the UPPER_SNAKE refusal reason), and for a released report what it held:
categories returned and withheld, sources consulted, chargeable, report id and digest. Trace
and request ids come from the call's context (``audit.entry.new_entry``).

Layering: this module knows no gRPC server and no telemetry; the status it raises comes from
``AuditUnavailable.to_gateway_error`` (core errors), and the gateway counts failures through
``on_failure`` (``gateway.audit_trail`` wires the metric).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import audit_pb2, report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.entry import (
    ALLOWED,
    ALLOWED_REASON,
    DENIED,
    ActionValue,
    AuditEntryError,
    new_entry,
)
from credgate.audit.log import AppendReceipt, AuditLog, AuditUnavailable, Rider
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution

log = logging.getLogger(__name__)

READ_REPAIR_STATUS = audit_pb2.AUDIT_ACTION_READ_REPAIR_STATUS
ENROLL_SUBJECT_KEY = audit_pb2.AUDIT_ACTION_ENROLL_SUBJECT_KEY
GRANT_CONSENT = audit_pb2.AUDIT_ACTION_GRANT_CONSENT
REVOKE_CONSENT = audit_pb2.AUDIT_ACTION_REVOKE_CONSENT
CHANGE_CONSENT_STATE = audit_pb2.AUDIT_ACTION_CHANGE_CONSENT_STATE
GET_GRANT_RECEIPT = audit_pb2.AUDIT_ACTION_GET_GRANT_RECEIPT
ISSUE_REPAIR_CERTIFICATE = audit_pb2.AUDIT_ACTION_ISSUE_REPAIR_CERTIFICATE
WATCH_CONSENT_EVENTS = audit_pb2.AUDIT_ACTION_WATCH_CONSENT_EVENTS
LIST_OWN_CONSENTS = audit_pb2.AUDIT_ACTION_LIST_OWN_CONSENTS
LIST_OWN_ACCESSES = audit_pb2.AUDIT_ACTION_LIST_OWN_ACCESSES
READ_AUDIT_LOG = audit_pb2.AUDIT_ACTION_READ_AUDIT_LOG
REFUSE_MALFORMED_REQUEST = audit_pb2.AUDIT_ACTION_REFUSE_MALFORMED_REQUEST
SKIPPED_SOURCE_REASON = "CIRCUIT_OPEN"
"""A source listed in a report's failures with this reason was not asked (breaker open)."""


def action_name(action: ActionValue) -> str:
    """``READ_REPAIR_STATUS`` for ``AUDIT_ACTION_READ_REPAIR_STATUS`` (logs and metrics)."""
    return audit_pb2.AuditAction.Name(action).removeprefix("AUDIT_ACTION_")


def sources_consulted(report: report_pb2.RepairStatusReport) -> list[str]:
    """The sources the gateway asked for this answer: those whose facts it shows (fresh or
    last known) and those that failed, less those skipped without a call (breaker open)."""
    skipped = {f.source_id for f in report.failures if f.reason == SKIPPED_SOURCE_REASON}
    named = {s.source_id for s in report.sources} | {f.source_id for f in report.failures}
    return sorted(named - skipped)


def _ignore(action: str) -> None:
    """The default ``on_failure``: nothing to count."""


def _no_deadline() -> float | None:
    """The default ``deadline``: wait as long as the log's write timeout."""
    return None


class AuditTrail:
    """Records decisions in an ``AuditLog``, fail closed; counts what is in flight.

    ``on_failure`` is called with the action's name each time a decision could not be
    recorded (the gateway counts them in ``credgate.audit.append_failures``). ``deadline``
    says, for the call being served, by when (``time.monotonic()``) its entry must be committed
    for the answer to be in time (the gateway's call deadline); None waits the write timeout.
    """

    def __init__(
        self,
        audit_log: AuditLog,
        *,
        on_failure: Callable[[str], None] = _ignore,
        deadline: Callable[[], float | None] = _no_deadline,
    ) -> None:
        self.log = audit_log
        self._on_failure = on_failure
        self._deadline = deadline
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Entries handed to the log whose commit has not returned yet (the backlog gauge:
        answers waiting on the audit log)."""
        return self._in_flight

    async def record(
        self,
        caller: Institution,
        action: ActionValue,
        *,
        purpose: vocab.Purpose.ValueType = vocab.PURPOSE_UNSPECIFIED,
        reason: str = ALLOWED_REASON,
        subject_token: str = "",
        consent_id: str = "",
        case_reference: str = "",
        categories: Iterable[vocab.DataCategory.ValueType] = (),
        withheld_categories: Iterable[vocab.DataCategory.ValueType] = (),
        chargeable: bool = False,
        source_ids: Iterable[str] = (),
        report: report_pb2.RepairStatusReport | None = None,
        decision_time: dt.datetime | None = None,
        rider: Rider | None = None,
        rpc_method: str = "",
        invalid_fields: Sequence[str] = (),
        within: AsyncSession | None = None,
    ) -> AppendReceipt:
        """Append one decision and return once it is durable; ``GatewayError`` (UNAVAILABLE,
        ``AUDIT_UNAVAILABLE``) if it cannot be, in which case the caller releases nothing.

        ``reason`` ``ALLOWED`` records an allowed decision, anything else a refusal for that
        reason. ``report``, for an answer about to be released, fills what it holds (categories
        returned and withheld, sources consulted, chargeable, report id and digest) in place of
        ``categories``, ``withheld_categories``, ``chargeable`` and ``source_ids``, which say
        the same of a release that is not a report (an eligibility verdict, an objection, a
        listing) — so such an entry carries no report digest that matches no report.
        ``rider`` writes more rows in the entry's transaction (``audit.log.Rider``).
        ``within`` appends the entry in that write transaction instead of a group commit of
        its own (``AuditLog.append_within``), so it commits exactly when the change does: the
        order every write RPC follows (``core.storage.decided_write``).
        """
        try:
            entry = new_entry(
                institution=caller,
                action=action,
                purpose=purpose,
                outcome=ALLOWED if reason == ALLOWED_REASON else DENIED,
                reason=reason,
                subject_token=subject_token,
                consent_id=consent_id,
                case_reference=case_reference,
                categories=report.categories if report is not None else categories,
                withheld_categories=(
                    report.withheld_categories if report is not None else withheld_categories
                ),
                chargeable=report.chargeable if report is not None else chargeable,
                source_ids=sources_consulted(report) if report is not None else source_ids,
                report=report,
                decision_time=decision_time,
                rpc_method=rpc_method,
                invalid_fields=invalid_fields,
            )
            self._in_flight += 1
            try:
                if within is not None:
                    return await self.log.append_within(within, entry)
                return await self.log.append(
                    entry, rider=rider, deadline=self._deadline(), fresh=True
                )
            finally:
                self._in_flight -= 1
        except (AuditUnavailable, AuditEntryError) as exc:
            # Neither message carries a value from the entry; the cause stays out of the line.
            log.error(
                "audit entry for %s by %s not recorded (%s: %s); withholding the answer",
                action_name(action),
                caller.institution_id,
                type(exc).__name__,
                exc,
            )
            self._on_failure(action_name(action))
            failure = AuditUnavailable("the decision could not be recorded")
            raise failure.to_gateway_error() from None

    async def refuse(
        self,
        caller: Institution,
        action: ActionValue,
        refusal: GatewayError,
        *,
        purpose: vocab.Purpose.ValueType = vocab.PURPOSE_UNSPECIFIED,
        subject_token: str = "",
        consent_id: str = "",
    ) -> GatewayError:
        """Record ``refusal`` (under its ErrorInfo reason) as the decision on the call, then
        hand it back to raise: the log holds the refusal before the caller hears it, and a
        refusal that cannot be recorded is AUDIT_UNAVAILABLE like any other decision."""
        await self.record(
            caller,
            action,
            purpose=purpose,
            reason=refusal.reason,
            subject_token=subject_token,
            consent_id=consent_id,
        )
        return refusal
