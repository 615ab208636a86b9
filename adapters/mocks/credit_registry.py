"""Mock of the personal credit registry: the registry's own gRPC API (``cnregistry.v1``).

The registry reports every subject's loan and credit-card accounts at all reporting banks,
with its own codes: dates ``YYYYMMDD``, clock readings ``YYYYMMDDHHMMSS`` in Beijing time,
amounts in decimal yuan strings, numeric code lists, the outcome in ``result_code``. It renders
``SourceView.CREDIT_REGISTRY``, which lags behind the truth in the ``contradicted_registry_lag``
scenario (the registry still shows the observation period after the court's exemption).

The service is registered through a generic handler that returns pre-serialized bytes, so the
mock can also send what a broken registry sends: a truncated message, a name in GBK inside a
protobuf string, impossible dates, unknown codes, garbage amounts, a record flood, a report
without its header. ``down`` stops the server; coming back up builds a new one on the same port.
The ``traceparent`` metadata of every query is noted in ``received_traceparents``, as the HTTP
mocks do with the header.

``SubmitDissent`` files an objection with the registry's correction desk and ``RecordCourtRuling``
changes the annotation it reports from then on (``adapters.mocks.corrections``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
from collections import deque

import grpc

from credgate.adapters.mapping import CHINA_TZ, MAX_RECORDS
from credgate.adapters.mocks.corrections import CorrectionDesk
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.http_base import TRACEPARENT_HISTORY, note_traceparent
from credgate.adapters.mocks.population import (
    REFERENCE_TIME,
    Account,
    Case,
    Population,
    Procedure,
    SourceView,
    Stage,
    State,
    Subject,
)
from credgate.api.cnregistry.v1 import registry_pb2

SERVICE = registry_pb2.DESCRIPTOR.services_by_name["PersonalCreditService"].full_name
METHOD = "QueryPersonalReport"
DISSENT_TYPES = frozenset({"1", "2", "3", "4", "5", "9"})
RULING_ANNOTATIONS = {"22": State.DISCLOSURE_SUSPENDED, "31": State.RESTORED}
DATA_LAG = dt.timedelta(days=1)
"""The registry's data is complete up to the end of the previous day (T+1 reporting)."""

BANK_ORG_CODES = {"bank-qianhai": "B1034H24403001", "bank-pengcheng": "B2087H24403002"}
BUSINESS_TYPES = {
    "mortgage": "11", "consumer_loan": "41", "business_loan": "51", "credit_card": "71",
}
ANNOTATION_CODES = {
    State.NO_RECORD: "00", State.PROCEDURE_PENDING: "11", State.OBSERVATION: "21",
    State.DISCLOSURE_SUSPENDED: "22", State.RESTORED: "31", State.REVOKED: "41",
}
PROCEDURE_CODES = {
    Procedure.LIQUIDATION: "1", Procedure.REORGANIZATION: "2", Procedure.RECONCILIATION: "3",
}
STAGE_CODES = {
    Stage.ACCEPTED: "1", Stage.UNDER_TRIAL: "2", Stage.CONCLUDED_UNDER_SUPERVISION: "3",
    Stage.CONCLUDED: "4", Stage.FULLY_EXECUTED: "5",
}
QUERY_REASONS = frozenset({"01", "02", "03", "08", "19", "21", "31"})
_ORG_CODE = re.compile(r"[0-9A-Z]{14}")
_ID_NUMBER = re.compile(r"[0-9]{17}[0-9X]")

MALFORMED_VARIANTS = (
    "truncated", "impossible_date", "unknown_code", "negative_amount", "garbage_amount",
    "record_flood", "missing_field", "unknown_result", "foreign_subject", "gbk_name",
)
"""Every way this mock garbles an answer, cycled through in order."""


def _ymd(day: dt.date | None) -> str:
    return f"{day:%Y%m%d}" if day else ""


def _yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _stage_seen(subject: Subject, case: Case, state: State) -> Stage:
    """The stage the registry shows: the truth, unless its view lags behind it."""
    if state is subject.state:
        return case.stage
    if state is State.PROCEDURE_PENDING:
        return Stage.UNDER_TRIAL
    if state is State.RESTORED:
        return Stage.FULLY_EXECUTED
    return (Stage.CONCLUDED if case.procedure is Procedure.LIQUIDATION
            else Stage.CONCLUDED_UNDER_SUPERVISION)


def _account(account: Account, case: Case | None, state: State) -> registry_pb2.LoanAccount:
    org = BANK_ORG_CODES[account.bank_id]
    number = org + hashlib.sha256(account.account_id.encode()).hexdigest()[:10].upper()
    if account.closed_on:
        status = "4"
    elif account.in_bankruptcy and state is not State.NO_RECORD:
        status = "5"
    elif account.default_on:
        status = "2"
    else:
        status = "1"
    marks = []
    if case is not None and account.in_bankruptcy and state is not State.NO_RECORD:
        marks.append(registry_pb2.AccountMark(
            mark_no=number + "B01", mark_type="01", mark_date=_ymd(case.accepted_on)))
    discharged = account.in_bankruptcy or account.default_on is not None
    if case is not None and state is State.RESTORED and discharged:
        marks.append(registry_pb2.AccountMark(
            mark_no=number + "E02", mark_type="02", mark_date=_ymd(case.restored_on)))
    return registry_pb2.LoanAccount(
        account_no=number,
        org_code=org,
        business_type=BUSINESS_TYPES[account.product],
        open_date=_ymd(account.opened_on),
        close_date=_ymd(account.closed_on),
        credit_limit=_yuan(account.credit_limit_fen),
        balance=_yuan(account.balance_fen),
        account_status=status,
        default_date=_ymd(account.default_on),
        marks=marks,
    )


def _annotation(subject: Subject, state: State) -> registry_pb2.BankruptcyAnnotation:
    number = "PA" + hashlib.sha256(subject.person.identity_number.encode()).hexdigest()[:12].upper()
    case = subject.case
    if case is None or state is State.NO_RECORD:
        return registry_pb2.BankruptcyAnnotation(
            annotation_no=number, annotation_code="00", update_date=_ymd(REFERENCE_TIME.date()))
    restored = case.restored_on if state is State.RESTORED else None
    events = [case.accepted_on, case.observation_start, restored,
              case.disclosure_suspended_on if state is State.DISCLOSURE_SUSPENDED else None,
              case.revoked_on if state is State.REVOKED else None]
    started = case.observation_start if state is not State.PROCEDURE_PENDING else None
    return registry_pb2.BankruptcyAnnotation(
        annotation_no=number,
        annotation_code=ANNOTATION_CODES[state],
        procedure_type=PROCEDURE_CODES[case.procedure],
        procedure_stage=STAGE_CODES[_stage_seen(subject, case, state)],
        case_no=case.case_number,
        court_name=case.court,
        accept_date=_ymd(case.accepted_on),
        observation_start=_ymd(started),
        observation_end=_ymd(case.observation_end if started else None),
        exemption_date=_ymd(restored),
        update_date=_ymd(max(d for d in events if d is not None)),
    )


def render_report(
    subject: Subject, header: registry_pb2.ReportHeader
) -> registry_pb2.PersonalReport:
    """The registry's report on one subject, as the registry currently sees them."""
    state = subject.state_seen_by(SourceView.CREDIT_REGISTRY)
    person = subject.person
    return registry_pb2.PersonalReport(
        header=header,
        identity=registry_pb2.IdentityInfo(
            name=person.name, id_type="0", id_number=person.identity_number,
            birth_date=_ymd(person.birth_date),
            gender="1" if int(person.identity_number[16]) % 2 else "2",
        ),
        accounts=[_account(a, subject.case, state) for a in subject.accounts],
        bankruptcy_annotation=_annotation(subject, state),
    )


class CreditRegistryMock:
    """The credit registry as a grpc.aio server on loopback (plaintext; a mock source)."""

    kind = "credit_registry"

    def __init__(
        self,
        source_id: str,
        population: Population,
        faults: FaultInjector | None = None,
        *,
        malformed_variants: tuple[str, ...] = MALFORMED_VARIANTS,
        **_options: str,
    ) -> None:
        unknown = set(malformed_variants) - set(MALFORMED_VARIANTS)
        if unknown or not malformed_variants:
            raise ValueError(f"unknown malformed variants: {sorted(unknown)}")
        self.source_id = source_id
        self.population = population
        self.faults = faults or FaultInjector()
        self.malformed_variants = malformed_variants
        self.host = "127.0.0.1"
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._lock = asyncio.Lock()
        self._query_count = 0
        self._malformed_count = 0
        self.received_traceparents: deque[str] = deque(maxlen=TRACEPARENT_HISTORY)
        """The ``traceparent`` of each query received, newest last (failed ones too)."""
        self.desk = CorrectionDesk("YY")
        """Dissents received and rulings recorded (``adapters.mocks.corrections``)."""

    @property
    def endpoint(self) -> str:
        """A gRPC target (host:port), as the adapter's ``SourceConfig.endpoint``."""
        return f"{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.host = host
        await self._serve(port)
        if self.faults.settings.down:
            await self._halt()
        return self.port

    async def set_down(self, down: bool) -> None:
        """Stop the server (connections refused), or build a new one on the same port."""
        self.faults.settings = self.faults.settings.updated({"down": down})
        async with self._lock:
            if down:
                await self._halt()
            elif self._server is None:
                await self._serve(self.port)

    async def stop(self) -> None:
        await self._halt()

    async def _serve(self, port: int) -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(
            self._query,
            request_deserializer=registry_pb2.QueryPersonalReportRequest.FromString,
            response_serializer=None,  # the handler returns bytes, broken ones included
        )
        dissent = grpc.unary_unary_rpc_method_handler(
            self._dissent,
            request_deserializer=registry_pb2.SubmitDissentRequest.FromString,
            response_serializer=registry_pb2.SubmitDissentResponse.SerializeToString,
        )
        ruling = grpc.unary_unary_rpc_method_handler(
            self._ruling,
            request_deserializer=registry_pb2.RecordCourtRulingRequest.FromString,
            response_serializer=registry_pb2.RecordCourtRulingResponse.SerializeToString,
        )
        methods = {METHOD: handler, "SubmitDissent": dissent, "RecordCourtRuling": ruling}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        bound = server.add_insecure_port(f"{self.host}:{port}")
        if bound == 0:
            raise OSError(f"credit registry mock cannot bind {self.host}:{port}")
        await server.start()
        self._server, self.port = server, bound

    async def _halt(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace=None)

    async def _query(
        self, request: registry_pb2.QueryPersonalReportRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        traceparent = metadata.get("traceparent")
        note_traceparent(
            self.received_traceparents, traceparent if isinstance(traceparent, str) else None
        )
        await self.faults.delay()
        if self.faults.should_fail():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "registry temporarily unavailable")
        response = self.answer(request)
        if self.faults.should_malform():
            variant = self.malformed_variants[self._malformed_count % len(self.malformed_variants)]
            self._malformed_count += 1
            return self._malformed(response, variant)
        return response.SerializeToString()

    def answer(
        self, request: registry_pb2.QueryPersonalReportRequest
    ) -> registry_pb2.QueryPersonalReportResponse:
        """The registry's answer, refusals included, in its own result codes."""
        if request.id_type != "0" or not _ID_NUMBER.fullmatch(request.id_number):
            return registry_pb2.QueryPersonalReportResponse(
                result_code="2001", result_message="证件类型或证件号码不合法")
        if not _ORG_CODE.fullmatch(request.org_code) or request.query_reason not in QUERY_REASONS:
            return registry_pb2.QueryPersonalReportResponse(
                result_code="2002", result_message="机构代码或查询原因不合法")
        self._query_count += 1
        as_of = REFERENCE_TIME.astimezone(CHINA_TZ)
        data_as_of = (as_of - DATA_LAG).replace(hour=23, minute=59, second=59)
        header = registry_pb2.ReportHeader(
            report_no=f"{as_of:%Y%m%d}{self._query_count:012d}",
            report_time=f"{as_of:%Y%m%d%H%M%S}",
            data_as_of=f"{data_as_of:%Y%m%d%H%M%S}",
            query_org_code=request.org_code,
            query_reason=request.query_reason,
            request_serial=request.request_serial,
        )
        subject = self.desk.subject(self.population, request.id_number)
        if subject is None or not (subject.accounts or subject.case):
            return registry_pb2.QueryPersonalReportResponse(
                result_code="1001", result_message="查无此人信用记录",
                report=registry_pb2.PersonalReport(header=header),
            )
        return registry_pb2.QueryPersonalReportResponse(
            result_code="0000", result_message="查询成功", report=render_report(subject, header)
        )

    async def _dissent(
        self, request: registry_pb2.SubmitDissentRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.SubmitDissentResponse:
        await self.faults.delay()
        if self.faults.should_fail():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "registry temporarily unavailable")
        refused = _check_org(request.org_code, request.id_type, request.id_number)
        if refused is None and (request.dissent_type not in DISSENT_TYPES
                                or not request.request_serial or not request.record_no):
            refused = ("2002", "异议类型或流水号不合法")
        subject = self.desk.subject(self.population, request.id_number)
        if refused is None and subject is None:
            refused = ("1001", "查无此人信用记录")
        if refused is not None:
            return registry_pb2.SubmitDissentResponse(
                result_code=refused[0], result_message=refused[1])
        filed = self.desk.file_objection(
            request.request_serial, request.id_number, request.record_no, request.dissent_type,
            request.dissent_text,
        )
        return registry_pb2.SubmitDissentResponse(
            result_code="0000", result_message="异议已受理", dissent_no=filed.source_reference,
            accept_date=_ymd(filed.received_on))

    async def _ruling(
        self, request: registry_pb2.RecordCourtRulingRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RecordCourtRulingResponse:
        await self.faults.delay()
        if self.faults.should_fail():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "registry temporarily unavailable")
        refused = _check_org(request.org_code, request.id_type, request.id_number)
        try:
            ruled_on = dt.datetime.strptime(request.ruling_date, "%Y%m%d").date()
        except ValueError:
            ruled_on = None
        if refused is None and (request.annotation_code not in RULING_ANNOTATIONS
                                or ruled_on is None or not request.request_serial):
            refused = ("2002", "注记代码或裁定日期不合法")
        subject = self.desk.subject(self.population, request.id_number)
        if refused is None and (subject is None or subject.case is None
                                or subject.case.case_number != request.case_no):
            refused = ("1001", "查无此案件")
        if refused is not None or subject is None or ruled_on is None:
            code, message = refused or ("9999", "内部错误")
            return registry_pb2.RecordCourtRulingResponse(result_code=code, result_message=message)
        change = self.desk.record_ruling(
            request.request_serial, subject, RULING_ANNOTATIONS[request.annotation_code], ruled_on)
        return registry_pb2.RecordCourtRulingResponse(
            result_code="0000", result_message="注记已更新", change_no=change,
            update_date=_ymd(ruled_on))

    def _malformed(self, response: registry_pb2.QueryPersonalReportResponse, variant: str) -> bytes:
        """Break the answer one realistic way; see ``MALFORMED_VARIANTS``."""
        report = response.report
        account = report.accounts[0] if report.accounts else None
        if variant == "truncated":
            return response.SerializeToString()[:-1]
        if response.result_code != "0000":
            response.result_code = "7777"  # the other breakages need a report to break
        elif variant == "gbk_name":
            # A legacy system wrote the name in GBK into a UTF-8 protobuf string.
            name = report.identity.name
            encoded = name.encode("gb18030")
            report.identity.name = "\x07" * len(encoded)
            return response.SerializeToString().replace(b"\x07" * len(encoded), encoded, 1)
        elif variant == "impossible_date":
            if account is not None:
                account.open_date = "20230230"
            else:
                report.header.report_time = "20261301080000"
        elif variant == "unknown_code":
            if account is not None:
                account.account_status = "9"
            else:
                report.bankruptcy_annotation.annotation_code = "99"
        elif variant == "negative_amount":
            if account is not None:
                account.balance = "-120.00"
            else:
                response.result_code = "7777"
        elif variant == "garbage_amount":
            if account is not None:
                account.balance = "12,3OO.5x"
            else:
                response.result_code = "7777"
        elif variant == "record_flood":
            template = account or _account(
                Account("bank-qianhai", "QH-FLOOD", "credit_card", dt.date(2020, 1, 1), 100, 0),
                None, State.NO_RECORD,
            )
            report.accounts.extend([template] * (MAX_RECORDS + 1 - len(report.accounts)))
        elif variant == "missing_field":
            report.ClearField("header")
        elif variant == "unknown_result":
            response.result_code = "7777"
        elif variant == "foreign_subject":
            report.identity.id_number = "110101199001010011"
        return response.SerializeToString()


def _check_org(org_code: str, id_type: str, id_number: str) -> tuple[str, str] | None:
    """The registry's refusal for a malformed organization or identity document, if any."""
    if id_type != "0" or not _ID_NUMBER.fullmatch(id_number):
        return ("2001", "证件类型或证件号码不合法")
    if not _ORG_CODE.fullmatch(org_code):
        return ("2002", "机构代码不合法")
    return None
