"""Adapter for the personal credit registry, over the registry's own gRPC API (``cnregistry.v1``).

The registry's schema is not credgate's: dates are ``YYYYMMDD`` strings, clock readings
``YYYYMMDDHHMMSS`` in Beijing time, amounts decimal-yuan strings, and every list of values a
numeric code. This adapter is where those conventions stop; nothing past it knows them.

The response is fetched as raw bytes and decoded here, inside the mapping guard, so a
truncated or mis-encoded message is a ``MalformedPayload`` like any other broken answer rather
than an opaque gRPC INTERNAL error. The registry reports the repair state through its
bankruptcy annotation (a code list mirroring the six states), so it asserts a state; it ranks
below the court and the disclosure platform, and it is often the one that lags.

Every query carries a fresh ``request_serial`` that the registry echoes in the report header;
an answer that does not echo it is refused, so a report can never be filed under the wrong
query. The channel is plaintext (``grpc.aio.insecure_channel``): the registry is reached over
its dedicated line, and the mock on loopback; channel credentials would be the option to add
for a deployment that reaches it over a shared network.

Each attempt is a CLIENT span whose W3C ``traceparent`` travels in the call's metadata
(``core.telemetry.clients.grpc_client_call``); the span records the status code only.

The registry also takes dissents (异议) against its records and courts' repair rulings on the
bankruptcy annotation (``SubmitDissent``, ``RecordCourtRuling``: ``adapters.base``'s optional
``SourceCorrections``), answered in its own result codes; both carry the same ``request_serial``
for a retry (the gateway's reference), so the one retry on a fresh channel is safe for them too.
A channel is replaced without cutting off the calls in flight on it (``adapters.grpc_channel``).

Options:

``org_code`` (optional)
    credgate's 14-character organization code at the registry.
``query_reason`` (optional)
    The registry's query-reason code; "31" (credit-repair information sharing) by default.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from typing import TypeVar

import grpc
from google.protobuf.message import DecodeError

from credgate.adapters import mapping
from credgate.adapters.base import (
    CorrectionRefused,
    MalformedPayload,
    ObjectionFiling,
    RulingNotice,
    SourceConfig,
    SourceError,
    SourceReceipt,
    SourceTimeout,
    SourceUnavailable,
)
from credgate.adapters.grpc_channel import SharedChannel
from credgate.adapters.http import MAX_PAYLOAD_BYTES
from credgate.adapters.payload_guard import guarded, lookup
from credgate.api.cnregistry.v1 import registry_pb2
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask
from credgate.core.telemetry.clients import grpc_client_call

KIND = vocabulary_pb2.SOURCE_KIND_CREDIT_REGISTRY
METHOD = "/cnregistry.v1.PersonalCreditService/QueryPersonalReport"
DISSENT_METHOD = "/cnregistry.v1.PersonalCreditService/SubmitDissent"
RULING_METHOD = "/cnregistry.v1.PersonalCreditService/RecordCourtRuling"
DISSENT_TYPES = {
    "repair_state": "1", "case_stage": "1", "currency": "2", "dates": "3", "amount": "4",
    "existence": "5", "other": "9",
}
RULING_ANNOTATIONS: dict[vocabulary_pb2.RepairState.ValueType, str] = {
    vocabulary_pb2.REPAIR_STATE_DISCLOSURE_SUSPENDED: "22",
    vocabulary_pb2.REPAIR_STATE_RESTORED: "31",
}
DEFAULT_ORG_CODE = "Q9440300CG0001"
DEFAULT_QUERY_REASON = "31"
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_PAYLOAD_BYTES),
    # A registry that comes back must be reachable within about a second, not after gRPC's
    # default back-off (growing to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Subchannels are otherwise shared process-wide, so a fresh channel would inherit the old
    # one's back-off and a retry on it would fail the same way.
    ("grpc.use_local_subchannel_pool", 1),
)

STATES: dict[str, vocabulary_pb2.RepairState.ValueType] = {
    "00": vocabulary_pb2.REPAIR_STATE_NO_RECORD,
    "11": vocabulary_pb2.REPAIR_STATE_PROCEDURE_PENDING,
    "21": vocabulary_pb2.REPAIR_STATE_OBSERVATION,
    "22": vocabulary_pb2.REPAIR_STATE_DISCLOSURE_SUSPENDED,
    "31": vocabulary_pb2.REPAIR_STATE_RESTORED,
    "41": vocabulary_pb2.REPAIR_STATE_REVOKED,
}
CASE_KINDS: dict[str, vocabulary_pb2.CaseKind.ValueType] = {
    "1": vocabulary_pb2.CASE_KIND_LIQUIDATION,
    "2": vocabulary_pb2.CASE_KIND_REORGANIZATION,
    "3": vocabulary_pb2.CASE_KIND_RECONCILIATION,
}
CASE_STAGES: dict[str, vocabulary_pb2.CaseStage.ValueType] = {
    "1": vocabulary_pb2.CASE_STAGE_ACCEPTED,
    "2": vocabulary_pb2.CASE_STAGE_UNDER_TRIAL,
    "3": vocabulary_pb2.CASE_STAGE_CONCLUDED_UNDER_SUPERVISION,
    "4": vocabulary_pb2.CASE_STAGE_CONCLUDED,
    "5": vocabulary_pb2.CASE_STAGE_FULLY_EXECUTED,
}
PRODUCTS = {"11": "mortgage", "41": "consumer loan", "51": "business loan", "71": "credit card"}
"""Business type codes and their summary wording (the same words the bank adapter uses)."""
ACCOUNT_STATUSES = {
    "1": "normal", "2": "overdue", "3": "written off", "4": "closed", "5": "bankruptcy estate",
    "6": "transferred",
}
_ESTATE_MARK, _EXEMPTION_MARK = "01", "02"
_REFUSED = {"2001", "2002", "9999"}  # the registry refused the query or failed internally
_BUSY = {"9001"}
_DIGITS8 = re.compile(r"[0-9]{8}")
_DIGITS14 = re.compile(r"[0-9]{14}")
_YUAN = re.compile(r"[0-9]{1,13}\.[0-9]{2}")
_ORG_CODE = re.compile(r"[0-9A-Z]{14}")


class CreditRegistryAdapter:
    """Speaks ``cnregistry.v1.PersonalCreditService/QueryPersonalReport`` over gRPC."""

    def __init__(self, config: SourceConfig) -> None:
        self._org_code = config.options.get("org_code", DEFAULT_ORG_CODE)
        self._query_reason = config.options.get("query_reason", DEFAULT_QUERY_REASON)
        if not _ORG_CODE.fullmatch(self._org_code):
            raise ValueError(f"source {config.source_id!r}: option 'org_code' is not 14 characters")
        if not re.fullmatch(r"[0-9]{2}", self._query_reason):
            raise ValueError(f"source {config.source_id!r}: option 'query_reason' is not a code")
        self._config = config
        self._channels = SharedChannel(
            lambda: grpc.aio.insecure_channel(config.endpoint, options=list(CHANNEL_OPTIONS))
        )

    @property
    def config(self) -> SourceConfig:
        return self._config

    @property
    def source_kind(self) -> vocabulary_pb2.SourceKind.ValueType:
        return KIND

    async def fetch(
        self, identity_number: str, *, timeout: float
    ) -> report_pb2.SourceFacts:
        if timeout <= 0:
            raise SourceTimeout("no time left to call the source")
        serial = uuid.uuid4().hex
        raw = await self._call(self.wire_request(identity_number, serial), timeout)
        fetched_at = dt.datetime.now(dt.UTC)
        return guarded(
            "credit registry answer",
            lambda: self._map(_decode(raw), identity_number, serial, fetched_at),
        )

    def wire_request(self, identity_number: str, serial: str) -> bytes:
        """The query's bytes exactly as ``fetch`` sends them (to ``METHOD``), for a client that
        asks the registry without this adapter (``bench.sources_alone``)."""
        return registry_pb2.QueryPersonalReportRequest(
            org_code=self._org_code, query_reason=self._query_reason, id_type="0",
            id_number=identity_number, request_serial=serial,
        ).SerializeToString()

    async def submit_objection(
        self, identity_number: str, filing: ObjectionFiling, *, timeout: float
    ) -> SourceReceipt:
        request = registry_pb2.SubmitDissentRequest(
            org_code=self._org_code, id_type="0", id_number=identity_number,
            record_no=filing.source_record_id,
            dissent_type=DISSENT_TYPES.get(filing.aspect, "9"),
            dissent_text=filing.requested_correction, request_serial=filing.reference,
        )
        raw = await self._call(request.SerializeToString(), timeout, DISSENT_METHOD)

        def receipt() -> SourceReceipt:
            answer = _decode_as(registry_pb2.SubmitDissentResponse, raw)
            _require_done(answer.result_code)
            return SourceReceipt(
                mapping.text(answer.dissent_no, "dissent_no", max_length=64),
                _date(answer.accept_date, "accept_date"),
            )

        return guarded("credit registry receipt", receipt)

    async def apply_ruling(
        self, identity_number: str, ruling: RulingNotice, *, timeout: float
    ) -> SourceReceipt:
        if ruling.outcome not in RULING_ANNOTATIONS:
            raise CorrectionRefused("the credit registry records no such ruling")
        request = registry_pb2.RecordCourtRulingRequest(
            org_code=self._org_code, id_type="0", id_number=identity_number,
            case_no=ruling.case_number, annotation_code=RULING_ANNOTATIONS[ruling.outcome],
            ruling_no=ruling.ruling_number, ruling_date=f"{ruling.ruled_on:%Y%m%d}",
            request_serial=ruling.reference,
        )
        raw = await self._call(request.SerializeToString(), timeout, RULING_METHOD)

        def receipt() -> SourceReceipt:
            answer = _decode_as(registry_pb2.RecordCourtRulingResponse, raw)
            _require_done(answer.result_code)
            return SourceReceipt(
                mapping.text(answer.change_no, "change_no", max_length=64),
                _date(answer.update_date, "update_date"),
            )

        return guarded("credit registry receipt", receipt)

    async def _call(self, request: bytes, budget: float, method: str = METHOD) -> bytes:
        """One query, its gRPC status translated; the status details are never passed on (a
        server may put anything in them). The query is a read, so an UNAVAILABLE answer from a
        channel that may have been holding a dead connection is retried once on a fresh one;
        the old channel is only *retired* (``adapters.grpc_channel``), so the other calls in
        flight on it finish there instead of being cancelled."""
        deadline = time.monotonic() + budget
        code = await self._attempt(request, budget, method)
        if code == grpc.StatusCode.UNAVAILABLE and deadline - time.monotonic() > 0.01:
            code = await self._attempt(request, deadline - time.monotonic(), method)
        if isinstance(code, bytes):
            return code
        # Raised outside the handler, so the RPC error (and its server-supplied details) is not
        # attached as __context__ for a log to print.
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise SourceTimeout(f"source did not answer within {budget:.3f}s")
        if code == grpc.StatusCode.UNAVAILABLE:
            raise SourceUnavailable("credit registry is unavailable")
        raise SourceError(f"credit registry call failed ({code.name})")

    async def _attempt(
        self, request: bytes, budget: float, method: str = METHOD
    ) -> bytes | grpc.StatusCode:
        """One call; an UNAVAILABLE answer retires the channel it came on for new calls."""
        self._replace_if_backing_off()
        async with self._channels.call() as channel:
            call = channel.unary_unary(method)  # bytes: decoded under guard
            with grpc_client_call(method, self._config.endpoint) as traced:
                try:
                    raw = await call(request, timeout=budget, metadata=traced.metadata)
                except grpc.aio.AioRpcError as exc:
                    code: grpc.StatusCode = exc.code()
                    traced.set_code(code)
                    if code == grpc.StatusCode.UNAVAILABLE:
                        self._channels.retire(channel)
                    return code
                traced.set_code(grpc.StatusCode.OK)
        if not isinstance(raw, bytes):
            raise MalformedPayload("credit registry answer is not a message")
        return raw

    def _replace_if_backing_off(self) -> None:
        """Retire the channel if it is waiting out a reconnect backoff.

        After a failed connection attempt gRPC fails every call at once until its backoff timer
        (growing to two minutes) expires, so a registry that is back would still look down. A
        new channel connects on its first call instead; while the registry really is down that
        call is refused just as fast, so nothing is lost. The old channel is retired, not
        closed: a call still running on it keeps running until it ends.
        """
        channel = self._channels.current()
        if channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            self._channels.retire(channel)

    async def aclose(self) -> None:
        await self._channels.aclose()

    def _map(
        self,
        response: registry_pb2.QueryPersonalReportResponse,
        identity_number: str,
        serial: str,
        fetched_at: dt.datetime,
    ) -> report_pb2.SourceFacts:
        code = response.result_code
        if code in _BUSY:
            raise SourceUnavailable(f"credit registry is busy (result code {code})")
        if code in _REFUSED:
            raise SourceError(f"credit registry refused the query (result code {code})")
        if code not in ("0000", "1001"):
            raise MalformedPayload("result_code: unknown code")
        report = response.report
        if not report.HasField("header"):
            raise MalformedPayload("report.header: missing")
        if report.header.request_serial != serial:
            raise MalformedPayload("header.request_serial: answer to another query")
        as_of = _timestamp(report.header.data_as_of, "header.data_as_of")
        _timestamp(report.header.report_time, "header.report_time")
        report_no = mapping.text(report.header.report_no, "header.report_no", max_length=64)
        if not report_no:
            raise MalformedPayload("header.report_no: missing")

        origin = mapping.Origin(self._config, KIND, as_of, fetched_at)

        facts = report_pb2.SourceFacts(
            source_id=self._config.source_id,
            source_kind=KIND,
            display_name=self._config.display_name,
            asserted_state=vocabulary_pb2.REPAIR_STATE_NO_RECORD,
            provenance=origin(report_no, "header.report_no"),
        )
        if code == "1001":
            if report.HasField("identity") or report.accounts:
                raise MalformedPayload("report: records sent with 'no record'")
            return facts
        if not report.HasField("identity") or not report.HasField("bankruptcy_annotation"):
            raise MalformedPayload("report: identity or bankruptcy annotation missing")
        identity = report.identity
        if identity.id_type != "0" or identity.id_number != identity_number:
            raise MalformedPayload("report.identity: report is about another subject")
        name = mapping.text(identity.name, "identity.name", max_length=64)
        if not name.strip():
            raise MalformedPayload("identity.name: empty")
        facts.identity.CopyFrom(report_pb2.SubjectIdentity(
            masked_identity_number=mask(identity_number), name=name
        ))
        mapping.bounded(list(report.accounts), "accounts")
        for account in report.accounts:
            facts.records.extend(_account_records(account, origin))
        annotation = report.bankruptcy_annotation
        facts.asserted_state = mapping.code(
            annotation.annotation_code, STATES, "annotation.annotation_code"
        )
        if facts.asserted_state != vocabulary_pb2.REPAIR_STATE_NO_RECORD:
            facts.cases.append(_case(annotation, origin(annotation.annotation_no, "annotation_no")))
        return facts


def _decode(raw: bytes) -> registry_pb2.QueryPersonalReportResponse:
    try:
        return registry_pb2.QueryPersonalReportResponse.FromString(raw)
    except DecodeError:
        # Truncated, or a string field that is not UTF-8 (a name written in GBK).
        raise MalformedPayload("credit registry answer is not a valid message") from None


_M = TypeVar("_M", registry_pb2.SubmitDissentResponse, registry_pb2.RecordCourtRulingResponse)


def _decode_as(message: type[_M], raw: bytes) -> _M:
    try:
        return message.FromString(raw)
    except DecodeError:
        raise MalformedPayload("credit registry answer is not a valid message") from None


def _require_done(code: str) -> None:
    """Map a correction's result code: done, busy, refused, or nonsense."""
    if code in _BUSY:
        raise SourceUnavailable(f"credit registry is busy (result code {code})")
    if code in _REFUSED or code == "1001":
        raise CorrectionRefused(f"credit registry refused the request (result code {code})")
    if code != "0000":
        raise MalformedPayload("result_code: unknown code")


def _account_records(
    account: registry_pb2.LoanAccount, origin: mapping.Origin
) -> list[report_pb2.CreditRecord]:
    """An account, its default, and the registry's estate and exemption marks on it."""
    if not _ORG_CODE.fullmatch(account.org_code):
        raise MalformedPayload("account.org_code: not an organization code")
    label = lookup(PRODUCTS, account.business_type, "account.business_type")
    status = lookup(ACCOUNT_STATUSES, account.account_status, "account.account_status")
    opened = _date(account.open_date, "account.open_date")
    closed = _optional_date(account.close_date, "account.close_date")
    defaulted = _optional_date(account.default_date, "account.default_date")
    _yuan(account.credit_limit, "account.credit_limit")
    balance = _yuan(account.balance, "account.balance")
    if (status == "closed") != (closed is not None):
        raise MalformedPayload("account: close date and status disagree")
    if status in ("overdue", "written off") and defaulted is None:
        raise MalformedPayload("account: defaulted status without a default date")
    if any(later < opened for later in (closed, defaulted) if later is not None):
        raise MalformedPayload("account: dates out of order")
    marks: dict[str, tuple[dt.date, str]] = {}
    mapping.bounded(list(account.marks), "account.marks")
    for mark in account.marks:
        if mark.mark_type not in (_ESTATE_MARK, _EXEMPTION_MARK):
            raise MalformedPayload("mark.mark_type: unknown code")
        if mark.mark_type in marks:
            raise MalformedPayload("account.marks: a mark type is repeated")
        marks[mark.mark_type] = (_date(mark.mark_date, "mark.mark_date"), mark.mark_no)
    exempted = marks[_EXEMPTION_MARK][0] if _EXEMPTION_MARK in marks else None
    records = [mapping.credit_record(
        vocabulary_pb2.RECORD_KIND_CREDIT_ACCOUNT, vocabulary_pb2.DATA_CATEGORY_COMMERCIAL_CREDIT,
        f"{label} account", balance, opened, closed, is_open=closed is None,
        origin=origin(account.account_no, "account.account_no"),
    )]
    # The exemption discharges the debt: default and estate mark stop being current on the day
    # it took effect, as far as the registry has recorded it on the account.
    if defaulted is not None:
        records.append(mapping.credit_record(
            vocabulary_pb2.RECORD_KIND_DEFAULT, vocabulary_pb2.DATA_CATEGORY_COMMERCIAL_CREDIT,
            f"default on {label}", balance, defaulted, exempted, is_open=exempted is None,
            origin=origin(account.account_no + "#default", "account.account_no"),
        ))
    if _ESTATE_MARK in marks:
        marked_on, mark_no = marks[_ESTATE_MARK]
        records.append(mapping.credit_record(
            vocabulary_pb2.RECORD_KIND_BANKRUPTCY_MARK,
            vocabulary_pb2.DATA_CATEGORY_BANKRUPTCY_REPAIR,
            f"{label} in bankruptcy estate", balance, marked_on, exempted,
            is_open=exempted is None, origin=origin(mark_no, "mark.mark_no"),
        ))
    if exempted is not None:
        records.append(mapping.credit_record(
            vocabulary_pb2.RECORD_KIND_EXEMPTION_MARK,
            vocabulary_pb2.DATA_CATEGORY_BANKRUPTCY_REPAIR,
            f"{label} debt exempted", None, exempted, None, is_open=True,
            origin=origin(marks[_EXEMPTION_MARK][1], "mark.mark_no"),
        ))
    return records


def _case(
    annotation: registry_pb2.BankruptcyAnnotation, provenance: report_pb2.Provenance
) -> report_pb2.BankruptcyCase:
    case_number = mapping.text(annotation.case_no, "annotation.case_no", max_length=64)
    if not case_number:
        raise MalformedPayload("annotation.case_no: missing")
    return report_pb2.BankruptcyCase(
        case_number=case_number,
        kind=mapping.code(annotation.procedure_type, CASE_KINDS, "annotation.procedure_type"),
        stage=mapping.code(annotation.procedure_stage, CASE_STAGES, "annotation.procedure_stage"),
        court=mapping.text(annotation.court_name, "annotation.court_name", max_length=128),
        accepted_on=mapping.to_date(_date(annotation.accept_date, "annotation.accept_date")),
        observation_start=mapping.to_date(
            _optional_date(annotation.observation_start, "annotation.observation_start")
        ),
        observation_end=mapping.to_date(
            _optional_date(annotation.observation_end, "annotation.observation_end")
        ),
        restored_on=mapping.to_date(
            _optional_date(annotation.exemption_date, "annotation.exemption_date")
        ),
        provenance=provenance,
    )



def _date(value: str, field: str) -> dt.date:
    if not _DIGITS8.fullmatch(value):
        raise MalformedPayload(f"{field}: expected a YYYYMMDD date")
    return mapping.parse_date(value, "%Y%m%d", field)


def _optional_date(value: str, field: str) -> dt.date | None:
    return _date(value, field) if value else None


def _timestamp(value: str, field: str) -> dt.datetime:
    """``YYYYMMDDHHMMSS``, Beijing time (the registry's clock never names its zone)."""
    if not _DIGITS14.fullmatch(value):
        raise MalformedPayload(f"{field}: expected a YYYYMMDDHHMMSS timestamp")
    return mapping.parse_timestamp(value, "%Y%m%d%H%M%S", field, mapping.CHINA_TZ)


def _yuan(value: str, field: str) -> int:
    """Decimal yuan with exactly two decimals, to fen; anything looser is refused."""
    if not _YUAN.fullmatch(value):
        raise MalformedPayload(f"{field}: not a decimal yuan amount")
    return mapping.yuan_to_fen(value, field)
