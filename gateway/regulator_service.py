"""RegulatorService: the regulator's window on the audit log.

Each RPC reads top to bottom: who is calling (mTLS) → is it a regulator (else
PERMISSION_DENIED / ROLE_NOT_PERMITTED, before any field is looked at: permission before
existence) → are the fields well formed → the log. Listing and exporting entries are access
decisions too, so they are appended to the log (purpose REGULATORY_AUDIT) before the answer
goes out, and refused callers are recorded as denials — both through the one audit path
(``audit.trail.AuditTrail``), so a refusal whose entry cannot be written is withheld like an
answer: UNAVAILABLE / AUDIT_UNAVAILABLE, not PERMISSION_DENIED (otherwise a caller could learn
who may read the log, untraced, while the log is down).

Wiring (composition module)::

    servicer = RegulatorServicer(AuditTrail(audit_log), CallerResolver(...),
                                page_tokens=page_tokens)
    add_regulator_service(server, servicer)      # service name: SERVICE_NAME
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2
from sqlalchemy.exc import SQLAlchemyError

from credgate.api.credit_repair.v1 import audit_pb2, vocabulary_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as pb
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as pb_grpc
from credgate.audit.checkpoint import SignedCheckpoint
from credgate.audit.log import AuditUnavailable
from credgate.audit.proof import ProofError
from credgate.audit.queries import EntryFilter, iter_entries, list_entries
from credgate.audit.signed_size import AuditRollbackError
from credgate.audit.statistics import consentless_subjects, daily_counts, denials_by_reason
from credgate.audit.storage import AuditIntegrityError, read_head, read_record
from credgate.audit.trail import READ_AUDIT_LOG, AuditTrail
from credgate.audit.unusual import Thresholds, Window, unusual_access_report
from credgate.consent.policy import PURPOSE_RULES
from credgate.core.errors import GatewayError
from credgate.core.institution import INSTITUTION_ID_SHAPE, Institution
from credgate.core.tokens import is_subject_token
from credgate.gateway.protection.page_tokens import (
    PAGE_TOKEN_VIOLATION,
    PageScope,
    PageTokenError,
    PageTokens,
)
from credgate.gateway.server import GatewayServer
from credgate.gateway.witness.status import witness_status_message, witness_statuses

log = logging.getLogger(__name__)

SERVICE_NAME = "credit_repair.v1.RegulatorService"
REGULATOR = vocabulary_pb2.INSTITUTION_ROLE_REGULATOR
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
EXPORT_BATCH = 500
DEFAULT_REPORT_WINDOW = dt.timedelta(hours=24)
DEFAULT_BASELINE_WINDOWS = 7
MAX_BASELINE_WINDOWS = 90
DEFAULT_STATISTICS_WINDOW = dt.timedelta(days=7)
MAX_STATISTICS_WINDOW = dt.timedelta(days=92)
EXEMPT_PURPOSES = frozenset(
    purpose
    for purpose, rule in PURPOSE_RULES.items()
    if not rule.consent_required and purpose != vocabulary_pb2.PURPOSE_SELF_INQUIRY
)
"""Purposes that read a subject without a consent grant (the consent policy's), the subject's
own inquiry aside: GetAccessStatistics' exempt_subjects."""
LIST_AUDIT_ENTRIES = SERVICE_NAME + "/ListAuditEntries"
_PURPOSES = frozenset(vocabulary_pb2.Purpose.values())
_OUTCOMES = frozenset(audit_pb2.AuditOutcome.values())

Violation = tuple[str, str]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _invalid(violations: list[Violation]) -> GatewayError:
    return GatewayError.invalid_request(violations)


def _inconsistent() -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.FAILED_PRECONDITION,
        "the audit log's stored data is inconsistent; run credgate audit verify",
        "AUDIT_LOG_INCONSISTENT",
    )


def _rolled_back() -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.FAILED_PRECONDITION,
        "the audit log is not an extension of what this gateway has signed (a restored backup?); "
        "no checkpoint is signed until the operator acknowledges it",
        "AUDIT_LOG_ROLLED_BACK",
    )


def checkpoint_message(signed: SignedCheckpoint) -> audit_pb2.LogCheckpoint:
    """The wire form of a signed checkpoint."""
    checkpoint = signed.checkpoint
    message = audit_pb2.LogCheckpoint(
        note=signed.note,
        origin=checkpoint.origin,
        tree_size=checkpoint.tree_size,
        root_hash=checkpoint.root_hash,
    )
    if checkpoint.time is not None:
        message.checkpoint_time.FromDatetime(checkpoint.time)
    return message


def filter_violations(message: pb.AuditEntryFilter, prefix: str = "filter.") -> list[Violation]:
    """What is wrong with a listing filter (empty when it is fine)."""
    found: list[Violation] = []
    if message.institution_id and not INSTITUTION_ID_SHAPE.fullmatch(message.institution_id):
        found.append((prefix + "institution_id", "is not an institution id"))
    if message.subject_token and not is_subject_token(message.subject_token):
        found.append((prefix + "subject_token", "must be a subject token (st_...)"))
    if message.purpose not in _PURPOSES:
        found.append((prefix + "purpose", "is not a known purpose"))
    if message.outcome not in _OUTCOMES:
        found.append((prefix + "outcome", "is not a known outcome"))
    if (
        message.HasField("start_time")
        and message.HasField("end_time")
        and message.start_time.ToDatetime() >= message.end_time.ToDatetime()
    ):
        found.append((prefix + "end_time", "must be after start_time"))
    return found


class RegulatorServicer(pb_grpc.RegulatorServiceServicer):
    """The grpc.aio servicer over the log of an ``AuditTrail`` (which records its decisions)."""

    def __init__(
        self,
        audit: AuditTrail,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        *,
        page_tokens: PageTokens,
        thresholds: Thresholds | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._audit = audit
        self._log = audit.log
        self._db = audit.log.database
        self._identify = identify
        self._thresholds = thresholds or Thresholds()
        self._clock = clock
        self._page_tokens = page_tokens

    async def _regulator(self, context: grpc.aio.ServicerContext) -> Institution:
        """The caller, if it is a regulator; otherwise record the denial and refuse (and if
        the denial cannot be recorded, AUDIT_UNAVAILABLE instead: fail closed)."""
        caller = self._identify(context)
        if caller.role == REGULATOR:
            return caller
        raise await self._audit.refuse(
            caller,
            READ_AUDIT_LOG,
            GatewayError.of(
                grpc.StatusCode.PERMISSION_DENIED,
                "only a regulator may read the audit log",
                "ROLE_NOT_PERMITTED",
                metadata={"role": caller.role_name},
            ),
            purpose=vocabulary_pb2.PURPOSE_REGULATORY_AUDIT,
        )

    async def _record_access(self, caller: Institution, subject_token: str = "") -> None:
        """Append the regulator's own read to the log before answering (fail closed); under
        the subject the read was about, if one."""
        await self._audit.record(
            caller,
            READ_AUDIT_LOG,
            purpose=vocabulary_pb2.PURPOSE_REGULATORY_AUDIT,
            subject_token=subject_token,
        )

    def _filter(self, message: pb.AuditEntryFilter) -> EntryFilter:
        if violations := filter_violations(message):
            raise _invalid(violations)
        return EntryFilter.from_proto(message)

    async def ListAuditEntries(
        self, request: pb.ListAuditEntriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEntriesResponse:
        """A page of matching entries, oldest first."""
        caller = await self._regulator(context)
        entry_filter = self._filter(request.filter)
        if request.page_size < 0:
            raise _invalid([("page_size", "must not be negative")])
        scope = PageScope(LIST_AUDIT_ENTRIES, caller.institution_id, (entry_filter.fingerprint(),))
        after = -1
        if request.page_token:
            try:
                after = self._page_tokens.open_index(request.page_token, scope)
            except PageTokenError:
                raise _invalid([PAGE_TOKEN_VIOLATION]) from None
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        records, resume = await list_entries(self._db, entry_filter, limit=limit, after=after)
        await self._record_access(caller, entry_filter.subject_token)
        response = pb.ListAuditEntriesResponse(records=records)
        if resume is not None:
            response.next_page_token = self._page_tokens.issue(scope, (resume,))
        return response

    async def ExportAuditEntries(
        self, request: pb.ExportAuditEntriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportAuditEntriesResponse]:
        """Every matching entry up to a fresh checkpoint, which the first message carries."""
        caller = await self._regulator(context)
        entry_filter = self._filter(request.filter)
        signed = await self._checkpoint()
        await self._record_access(caller, entry_filter.subject_token)
        checkpoint = checkpoint_message(signed)
        sent = False
        async for batch in iter_entries(
            self._db, entry_filter, below=signed.checkpoint.tree_size, batch_size=EXPORT_BATCH
        ):
            message = pb.ExportAuditEntriesResponse(records=batch)
            if not sent:
                message.checkpoint.CopyFrom(checkpoint)
                sent = True
            yield message
        if not sent:
            yield pb.ExportAuditEntriesResponse(checkpoint=checkpoint)

    async def _checkpoint(self) -> SignedCheckpoint:
        try:
            return await self._log.checkpoint()
        except AuditIntegrityError:
            raise _inconsistent() from None
        except AuditRollbackError:  # logged CRITICAL where it was found (audit.signed_size)
            raise _rolled_back() from None
        except SQLAlchemyError:
            log.exception("signing an audit checkpoint failed")
            raise AuditUnavailable("no checkpoint could be made").to_gateway_error() from None

    async def GetLatestCheckpoint(
        self, request: pb.GetLatestCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLatestCheckpointResponse:
        """A checkpoint covering every entry so far, and how each witness last answered.
        Recorded like every regulator read (after the checkpoint is cut, before the answer):
        sizes and hashes name nobody, but who watched the log, and when, is on the record."""
        caller = await self._regulator(context)
        checkpoint = checkpoint_message(await self._checkpoint())
        await self._record_access(caller)
        try:
            witnesses = [witness_status_message(s) for s in await witness_statuses(self._db)]
        except SQLAlchemyError:  # the checkpoint is the answer; the status only a report
            log.exception("reading the witnesses' status failed")
            witnesses = []
        return pb.GetLatestCheckpointResponse(checkpoint=checkpoint, witnesses=witnesses)

    async def _tree_size(
        self, requested: int, field: str
    ) -> tuple[int, audit_pb2.LogCheckpoint | None]:
        """The size to prove against: the latest checkpoint's for 0, else ``requested``."""
        if requested == 0:
            signed = await self._checkpoint()
            return signed.checkpoint.tree_size, checkpoint_message(signed)
        head = await read_head(self._db)
        if requested > head.tree_size:
            raise _invalid([(field, f"exceeds the log's size ({head.tree_size})")])
        return requested, None

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetInclusionProofResponse:
        """The audit path of one entry, with the entry (a read of that entry: recorded under
        its subject, like a listing filtered to that subject)."""
        caller = await self._regulator(context)
        size, checkpoint = await self._tree_size(request.tree_size, "tree_size")
        if request.leaf_index >= size:
            raise _invalid([("leaf_index", f"must be below the tree size ({size})")])
        try:
            path = await self._log.inclusion_proof(request.leaf_index, size)
        except (AuditIntegrityError, ProofError):
            raise _inconsistent() from None
        record = await read_record(self._db, request.leaf_index)
        if record is None:  # its leaf hash is there (the proof was built) but the entry is not
            raise _inconsistent()
        await self._record_access(caller, record.entry.subject_token)
        response = pb.GetInclusionProofResponse(
            proof=audit_pb2.InclusionProof(
                leaf_index=request.leaf_index, tree_size=size, hashes=path
            ),
            record=record,
        )
        if checkpoint is not None:
            response.checkpoint.CopyFrom(checkpoint)
        return response

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConsistencyProofResponse:
        """The proof that an older tree is a prefix of a newer one (recorded, as above)."""
        caller = await self._regulator(context)
        second, checkpoint = await self._tree_size(request.second_tree_size, "second_tree_size")
        # Checked here, before any proof is built: the storage layer refuses these sizes too
        # (ProofError), but as a bad request they are the caller's, not the log's, fault.
        if request.first_tree_size == 0:
            raise _invalid([("first_tree_size", "must be at least 1 (not the empty tree)")])
        if request.first_tree_size > second:
            raise _invalid([("first_tree_size", f"must not exceed the second size ({second})")])
        try:
            path = await self._log.consistency_proof(request.first_tree_size, second)
        except (AuditIntegrityError, ProofError):
            raise _inconsistent() from None
        await self._record_access(caller)
        response = pb.GetConsistencyProofResponse(
            proof=audit_pb2.ConsistencyProof(
                first_tree_size=request.first_tree_size, second_tree_size=second, hashes=path
            )
        )
        if checkpoint is not None:
            response.checkpoint.CopyFrom(checkpoint)
        return response

    async def GetUnusualAccessReport(
        self, request: pb.GetUnusualAccessReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetUnusualAccessReportResponse:
        """Findings of unusual access in a window (docs/audit.md, "Unusual access"); a read of
        the log's entries, so recorded like a listing."""
        caller = await self._regulator(context)
        start, end = self._window(
            request.start_time,
            request.end_time,
            request.HasField("start_time"),
            request.HasField("end_time"),
            DEFAULT_REPORT_WINDOW,
        )
        windows = request.baseline_windows or DEFAULT_BASELINE_WINDOWS
        violations: list[Violation] = []
        if start >= end:
            violations.append(("end_time", "must be after start_time"))
        if not 1 <= windows <= MAX_BASELINE_WINDOWS:
            violations.append(("baseline_windows", f"must be 0 to {MAX_BASELINE_WINDOWS}"))
        if violations:
            raise _invalid(violations)
        window = Window(start, end, windows)
        try:
            window.baseline_start  # noqa: B018 - computed here only to refuse an overflow
        except OverflowError:
            raise _invalid([("start_time", "leaves no room for the baseline before it")]) from None
        findings = await unusual_access_report(self._db, window, self._thresholds)
        await self._record_access(caller)
        response = pb.GetUnusualAccessReportResponse(findings=findings)
        response.start_time.FromDatetime(start)
        response.end_time.FromDatetime(end)
        response.baseline_start_time.FromDatetime(window.baseline_start)
        return response

    def _window(
        self,
        start: Timestamp,
        end: Timestamp,
        has_start: bool,
        has_end: bool,
        default: dt.timedelta,
    ) -> tuple[dt.datetime, dt.datetime]:
        """The request's window: end unset is now, start unset is ``default`` before end (a
        start that would fall before year 1 is a bad request, not an overflow)."""
        until = end.ToDatetime(tzinfo=dt.UTC) if has_end else self._clock()
        try:
            since = start.ToDatetime(tzinfo=dt.UTC) if has_start else until - default
        except OverflowError:
            raise _invalid([("end_time", "leaves no room for the default window")]) from None
        return since, until

    async def GetAccessStatistics(
        self, request: pb.GetAccessStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAccessStatisticsResponse:
        """A window's decisions counted by the database (``audit.statistics``): per
        institution and UTC day, per denial reason, and the subjects reached without consent;
        a read of the log, so recorded like a listing before the answer."""
        caller = await self._regulator(context)
        start, end = self._window(
            request.start_time,
            request.end_time,
            request.HasField("start_time"),
            request.HasField("end_time"),
            DEFAULT_STATISTICS_WINDOW,
        )
        if start >= end:
            raise _invalid([("end_time", "must be after start_time")])
        if end - start > MAX_STATISTICS_WINDOW:
            raise _invalid([("end_time", f"must be at most {MAX_STATISTICS_WINDOW.days} days "
                                         "after start_time")])  # fmt: skip
        daily = await daily_counts(self._db, start, end)
        reasons = await denials_by_reason(self._db, start, end)
        consentless = await consentless_subjects(self._db, start, end, EXEMPT_PURPOSES)
        await self._record_access(caller)
        response = pb.GetAccessStatisticsResponse(
            daily=[
                pb.DailyAccessCount(
                    institution_id=d.institution_id,
                    day=date_pb2.Date(year=d.day.year, month=d.day.month, day=d.day.day),
                    allowed=d.allowed,
                    denied=d.denied,
                )
                for d in daily
            ],
            denial_reasons=[pb.DenialReasonCount(reason=r, denied=c) for r, c in reasons],
            subjects_without_consent=[
                pb.SubjectsWithoutConsent(
                    institution_id=c.institution_id,
                    refused_subjects=c.refused,
                    exempt_subjects=c.exempt,
                )
                for c in consentless
            ],
        )
        response.start_time.FromDatetime(start)
        response.end_time.FromDatetime(end)
        return response


def add_regulator_service(server: GatewayServer, servicer: RegulatorServicer) -> None:
    """Register the servicer on a ``GatewayServer`` (before ``start``)."""
    server.add_servicer(pb_grpc.add_RegulatorServiceServicer_to_server, servicer, SERVICE_NAME)
