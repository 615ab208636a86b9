"""The disclosure gate, row by row of the policy table: explanations never carry a withheld
category, a consent use is spent exactly once per disclosing call (none when refused), and what
was released is what the audit entry says.

The table tests drive the real ``DisclosureGate`` (with the real ``AuditTrail`` and policy) over
a merged report that holds facts of every category — a new bank default during the observation
period among them — for every (role, purpose, consent categories) row that reaches the
eligibility and workflow RPCs; the consent register and the audit log's storage are stand-ins
that count. The integration tests do the same through the real gateway for an authorized party
acting for a subject: eligibility, filing, reading and watching an application.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.type import date_pb2

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as status_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as status_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.entry import DENIED
from credgate.audit.log import AppendReceipt, AuditUnavailable
from credgate.consent import grants, policy
from credgate.consent.register import CONSENT_VALID, ConsentRegister, EnrolledKey, GrantLookup
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.core.storage.models import ConsentGrantRow
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.audit_trail import AuditTrail
from credgate.gateway.disclosure import (
    ALL_CATEGORIES,
    PROCEDURE_PARTIES,
    Admission,
    Ask,
    DisclosureGate,
    DisclosureLedger,
    acting_purpose,
    reader_purpose,
    withheld_explanation,
)
from credgate.gateway.subject_certificate import subject_institution_id
from credgate.gateway.workflows.eligibility import CONDITION_CATEGORIES, evaluate
from tests.fixtures.subjects import Subject, enrol_subject
from tests.workflow_support import WorkflowGateway, refused, workflow_gateway

__all__ = ["workflow_gateway"]

TOKEN = SubjectTokenizer(b"k" * 32).token("11010119700101123X")
COMMERCIAL = vocab.DATA_CATEGORY_COMMERCIAL_CREDIT
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
SPECIAL = vocab.DATA_CATEGORY_SPECIAL_RECORDS
PUBLIC = vocab.DATA_CATEGORY_PUBLIC_RECORDS
EXEMPT = app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
STOP = app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE
TODAY = dt.date(2026, 11, 1)


def _d(value: str) -> date_pb2.Date:
    day = dt.date.fromisoformat(value)
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def _record(
    source: str, kind: int, category: int, day: str, summary: str, *, open_: bool = False
) -> report_pb2.CreditRecord:
    return report_pb2.CreditRecord(
        kind=kind,  # type: ignore[arg-type]
        category=category,  # type: ignore[arg-type]
        occurred_on=_d(day),
        summary=summary,
        open=open_,
        provenance=report_pb2.Provenance(source_id=source, source_record_id=f"{source}-{day}"),
    )


def full_report() -> report_pb2.RepairStatusReport:
    """A merged report with facts of every category; the bank holds a new default."""
    court = report_pb2.SourceFacts(
        source_id="court-shenzhen",
        source_kind=vocab.SOURCE_KIND_COURT,
        asserted_state=vocab.REPAIR_STATE_OBSERVATION,
        cases=[
            report_pb2.BankruptcyCase(
                case_number="(2021)粤03破申1号",
                kind=vocab.CASE_KIND_REORGANIZATION,
                stage=vocab.CASE_STAGE_CONCLUDED_UNDER_SUPERVISION,
                accepted_on=_d("2021-12-01"),
                observation_start=_d("2022-06-01"),
                observation_end=_d("2025-05-31"),
            )
        ],
    )
    court.records.append(
        _record("court-shenzhen", vocab.RECORD_KIND_LITIGATION, SPECIAL, "2022-03-14", "lawsuit X")
    )
    platform = report_pb2.SourceFacts(
        source_id="disclosure-platform", source_kind=vocab.SOURCE_KIND_DISCLOSURE_PLATFORM
    )
    platform.records.append(
        _record(
            "disclosure-platform",
            vocab.RECORD_KIND_DISHONESTY_DISCLOSURE,
            REPAIR,
            "2022-07-01",
            "publication",
            open_=True,
        )
    )
    bank = report_pb2.SourceFacts(source_id="bank-qianhai", source_kind=vocab.SOURCE_KIND_BANK)
    bank.records.append(
        _record("bank-qianhai", vocab.RECORD_KIND_PLAN_REPAYMENT, COMMERCIAL, "2024-01-15", "paid")
    )
    bank.records.append(
        _record(
            "bank-qianhai",
            vocab.RECORD_KIND_DEFAULT,
            COMMERCIAL,
            "2024-03-15",
            "default on business loan",
        )
    )
    tax = report_pb2.SourceFacts(source_id="tax-shenzhen", source_kind=vocab.SOURCE_KIND_TAX)
    tax.records.append(
        _record("tax-shenzhen", vocab.RECORD_KIND_TAX_ARREARS, PUBLIC, "2022-05-31", "arrears")
    )
    return report_pb2.RepairStatusReport(
        state=vocab.REPAIR_STATE_OBSERVATION,
        state_source_id="court-shenzhen",
        sources=[court, platform, bank, tax],
    )


def fact_marks(report: report_pb2.RepairStatusReport) -> dict[int, set[str]]:
    """Per category, strings that would betray one of its facts: a record's summary, its date,
    its record id, and the source that holds only facts of that category."""
    marks: dict[int, set[str]] = {}
    for facts in report.sources:
        kinds = {r.category for r in facts.records} | ({REPAIR} if facts.cases else set())
        for record in facts.records:
            day = record.occurred_on
            marks.setdefault(record.category, set()).update(
                {
                    record.summary,
                    f"{day.year:04d}-{day.month:02d}-{day.day:02d}",
                    record.provenance.source_record_id,
                }
            )
        if len(kinds) == 1:
            marks.setdefault(kinds.pop(), set()).add(facts.source_id)
    return marks


# -- stand-ins that count ------------------------------------------------------------------


@dataclass
class Register:
    """The consent register's two questions, answered from one grant; counts uses."""

    categories: frozenset[int] | None
    """The grant's categories; None: no grant."""
    key: EnrolledKey | None = None
    max_uses: int = 5
    uses: int = 0

    async def find_valid_grant(self, *_: object) -> GrantLookup:
        if self.categories is None:
            return GrantLookup("CONSENT_MISSING")
        grant = SimpleNamespace(
            categories=self.categories,
            consent_id="cg_" + "1" * 32,
            subject_token="st_" + "a" * 32,
            grantee_institution_id="bank-demo",
            max_uses=self.max_uses,
            limited=bool(self.max_uses),
            exhausted=self.uses >= self.max_uses > 0,
            frequency_max_uses=0,
            period_uses=0,
            retention_days=30,
        )
        return GrantLookup(CONSENT_VALID, cast(Any, grant))

    async def record_use(self, consent_id: str, purpose: int = 0) -> bool:
        self.uses += 1
        return self.uses <= self.max_uses

    async def subject_key(self, key_id: str) -> EnrolledKey | None:
        return self.key if self.key is not None and key_id == self.key.key_id else None


@dataclass
class Log:
    """Stands in for the audit log's storage: keeps the entries ``AuditTrail`` appends."""

    entries: list[Any] = field(default_factory=list)
    fail: bool = False

    async def append(
        self,
        entry: Any,
        *,
        rider: object = None,
        deadline: float | None = None,
        fresh: bool = False,
    ) -> AppendReceipt:
        if self.fail:
            raise AuditUnavailable("down")
        self.entries.append(entry)
        return cast(AppendReceipt, SimpleNamespace(index=len(self.entries) - 1))


def _subject() -> tuple[Institution, EnrolledKey]:
    key = Ed25519PrivateKey.generate()
    key_id = grants.subject_key_id(grants.raw_public_key(key))
    enrolled = EnrolledKey(key_id, TOKEN, b"", "office-demo", dt.datetime.now(dt.UTC), None)
    caller = Institution(subject_institution_id(key_id), vocab.INSTITUTION_ROLE_SUBJECT)
    return caller, enrolled


@dataclass(frozen=True)
class Row:
    """One (role, purpose, consent categories) row reaching the workflow RPCs."""

    role: int
    purpose: int
    consent: frozenset[int] | None

    def __str__(self) -> str:
        role = vocab.InstitutionRole.Name(self.role).removeprefix("INSTITUTION_ROLE_")  # type: ignore[arg-type]
        purpose = vocab.Purpose.Name(self.purpose).removeprefix("PURPOSE_")  # type: ignore[arg-type]
        names = "+".join(
            vocab.DataCategory.Name(c).removeprefix("DATA_CATEGORY_")  # type: ignore[arg-type]
            for c in sorted(self.consent or ())
        )
        return f"{role}/{purpose}/{names if self.consent is not None else '-'}"


def _subsets() -> Iterator[frozenset[int]]:
    every = sorted(ALL_CATEGORIES)
    for size in range(len(every) + 1):
        for chosen in itertools.combinations(every, size):
            yield frozenset(chosen)


def workflow_rows() -> list[Row]:
    """Every row that can reach eligibility and the workflows: the subject, an authorized party
    under every possible grant, and each procedure party reading (purpose UNSPECIFIED)."""
    rows = [Row(vocab.INSTITUTION_ROLE_SUBJECT, vocab.PURPOSE_SELF_INQUIRY, None)]
    rows += [
        Row(vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY, vocab.PURPOSE_SUBJECT_AUTHORIZED, c)
        for c in _subsets()
    ]
    rows += [Row(role, vocab.PURPOSE_UNSPECIFIED, None) for role in PROCEDURE_PARTIES]
    return rows


def query_rows() -> list[Row]:
    """Every (role, purpose, consent) of the policy table (for the report and uses)."""
    rows = []
    for purpose, rule in policy.PURPOSE_RULES.items():
        for role in rule.roles:
            grants_ = list(_subsets()) if rule.consent_required else [None]
            rows += [Row(role, purpose, c) for c in grants_]
    return rows


def _gate(row: Row) -> tuple[DisclosureGate, Register, Log, Institution]:
    caller, key = _subject()
    if row.role != vocab.INSTITUTION_ROLE_SUBJECT:
        caller = Institution("agency-demo", row.role)  # type: ignore[arg-type]
    register = Register(row.consent, key=key)
    log = Log()
    gate = DisclosureGate(
        cast(ConsentRegister, register), AuditTrail(cast(Any, log)), ledger=DisclosureLedger()
    )
    return gate, register, log, caller


def _admitted(row: Row) -> frozenset[int]:
    """What the row may see, from the table itself (not from the gate under test)."""
    if row.purpose == vocab.PURPOSE_UNSPECIFIED:
        return PROCEDURE_PARTIES[row.role].categories  # type: ignore[index]
    rule = policy.PURPOSE_RULES[row.purpose]  # type: ignore[index]
    return rule.categories & (row.consent if row.consent is not None else ALL_CATEGORIES)


def _texts(content: Any) -> list[str]:
    """Every string a caller reads in an eligibility, application or objection."""
    if isinstance(content, app_pb2.RepairApplication):
        content = content.eligibility
    if isinstance(content, app_pb2.Eligibility):
        return [t for c in content.conditions for t in (c.explanation, *c.source_ids)]
    if isinstance(content, obj_pb2.Objection):
        return [content.fact.source_record_id, content.requested_correction]
    raise AssertionError(type(content))


def _contents(report: report_pb2.RepairStatusReport) -> list[Any]:
    eligibility = evaluate(EXEMPT, report, TODAY)
    stop = evaluate(STOP, report, TODAY)
    application = app_pb2.RepairApplication(application_id="app_1", eligibility=stop)
    objection = obj_pb2.Objection(
        objection_id="obj_1",
        category=COMMERCIAL,
        fact=obj_pb2.FactReference(
            source_id="bank-qianhai", source_record_id="bank-qianhai-2024-03-15"
        ),
        requested_correction="the default on business loan of 2024-03-15 was repaid",
    )
    return [eligibility, application, objection]


def test_the_fixture_cites_the_bank_default_so_the_table_can_fail() -> None:
    """Unminimized, the eligibility explains the new default with the bank's own words."""
    report = full_report()
    eligibility = evaluate(EXEMPT, report, TODAY)
    texts = " ".join(_texts(eligibility))
    assert "default on business loan" in texts
    assert "bank-qianhai" in texts
    assert "2024-03-15" in texts


@pytest.mark.parametrize("row", workflow_rows(), ids=str)
async def test_workflow_explanations_never_carry_a_withheld_category(row: Row) -> None:
    report = full_report()
    marks = fact_marks(report)
    required = frozenset({REPAIR})
    for content in _contents(report):
        gate, register, log, caller = _gate(row)
        produced: list[object] = []

        async def produce(
            _: Admission, content: Any = content, produced: list[object] = produced
        ) -> Any:
            produced.append(content)
            copy = type(content)()
            copy.CopyFrom(content)
            return copy

        ask = Ask(caller, 23, TOKEN, row.purpose, required=required)  # type: ignore[arg-type]
        admitted = _admitted(row)
        if row.role not in (vocab.INSTITUTION_ROLE_SUBJECT,) and not required <= admitted:
            with pytest.raises(GatewayError) as refused:
                await gate.disclose(ask, produce)
            assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
            assert not produced  # nothing was even gathered
            assert register.uses == 0  # a refused call spends nothing
            [entry] = log.entries
            assert entry.outcome == DENIED
            assert not list(entry.categories)
            continue
        shown = await gate.disclose(ask, produce)
        withheld = ALL_CATEGORIES - admitted
        text = "\n".join(_texts(shown))
        for category in withheld:
            for mark in marks.get(category, ()):
                assert mark not in text, (str(row), vocab.DataCategory.Name(category), mark)
        if isinstance(shown, app_pb2.Eligibility | app_pb2.RepairApplication):
            conditions = (
                shown.conditions
                if isinstance(shown, app_pb2.Eligibility)
                else shown.eligibility.conditions
            )
            for condition in conditions:
                missing = CONDITION_CATEGORIES[condition.condition] - admitted
                if missing:
                    assert condition.explanation == withheld_explanation(missing)
                    assert not condition.source_ids
        expected_uses = 1 if row.consent is not None else 0
        assert register.uses == expected_uses, str(row)  # exactly once where uses count
        [entry] = log.entries
        assert set(entry.categories) == admitted
        if withheld & {COMMERCIAL} and not isinstance(shown, obj_pb2.Objection | type(None)):
            assert COMMERCIAL in set(entry.withheld_categories)


@pytest.mark.parametrize("row", query_rows(), ids=str)
async def test_every_policy_row_spends_one_use_when_allowed_and_none_when_refused(
    row: Row,
) -> None:
    """The report path: each row of the table, under every grant, through the gate."""
    gate, register, _, caller = _gate(row)
    calls: list[frozenset[int]] = []

    async def produce(admission: Admission) -> report_pb2.RepairStatusReport:
        calls.append(admission.categories)
        return full_report()

    ask = Ask(
        caller,
        1,  # type: ignore[arg-type]
        TOKEN,
        row.purpose,  # type: ignore[arg-type]
        case_reference="(2026)粤03执1号",
    )
    decision = policy.decide(
        row.role,  # type: ignore[arg-type]
        row.purpose,  # type: ignore[arg-type]
        (),
        case_reference=ask.case_reference,
        consent=await register.find_valid_grant(),
        subject_match=True,
    )
    if not decision.allowed:
        with pytest.raises(GatewayError):
            await gate.disclose(ask, produce)
        assert (calls, register.uses) == ([], 0)
        return
    shown = await gate.disclose(ask, produce)
    assert calls == [decision.categories]
    assert register.uses == (1 if row.consent is not None else 0)
    kept = {r.category for s in shown.sources for r in s.records}
    assert kept <= decision.categories  # facts of a withheld category never leave
    assert {s.source_id for s in shown.sources} == {s.source_id for s in full_report().sources}


async def test_a_watch_update_spends_no_use_and_an_exhausted_grant_refuses() -> None:
    row = Row(
        vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY, vocab.PURPOSE_SUBJECT_AUTHORIZED, ALL_CATEGORIES
    )
    gate, register, _, caller = _gate(row)
    register.max_uses = 1

    async def produce(_: Admission) -> app_pb2.Eligibility:
        return evaluate(EXEMPT, full_report(), TODAY)

    ask = Ask(caller, 23, TOKEN, row.purpose)  # type: ignore[arg-type]
    await gate.disclose(ask, produce)
    update = Ask(caller, 23, TOKEN, row.purpose, spend_use=False)  # type: ignore[arg-type]
    await gate.disclose(update, produce)
    assert register.uses == 1
    with pytest.raises(GatewayError) as refused:
        await gate.disclose(ask, produce)
    assert refused.value.reason == "CONSENT_EXHAUSTED"


async def test_a_grant_paused_between_decision_and_use_is_refused_as_paused() -> None:
    """The subject pauses after the gate decided but before the use is spent: the refusal
    says CONSENT_PAUSED (what the institution must ask the subject about), not EXHAUSTED."""
    row = Row(
        vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY, vocab.PURPOSE_SUBJECT_AUTHORIZED, ALL_CATEGORIES
    )
    gate, register, log, caller = _gate(row)
    paused: list[bool] = []
    decided = register.find_valid_grant

    async def find_valid_grant(*args: object) -> GrantLookup:
        return GrantLookup("CONSENT_PAUSED") if paused else await decided(*args)

    async def record_use(consent_id: str, purpose: int = 0) -> bool:
        paused.append(True)  # the pause lands here, after the decision
        return False

    register.find_valid_grant = find_valid_grant  # type: ignore[method-assign]
    register.record_use = record_use  # type: ignore[method-assign]

    async def produce(_: Admission) -> app_pb2.Eligibility:
        raise AssertionError("nothing may be produced")

    with pytest.raises(GatewayError) as refused:
        await gate.disclose(Ask(caller, 23, TOKEN, row.purpose), produce)  # type: ignore[arg-type]
    assert refused.value.reason == "CONSENT_PAUSED"
    assert [e.reason for e in log.entries] == ["CONSENT_PAUSED"]


async def test_nothing_is_released_when_the_release_cannot_be_recorded() -> None:
    row = Row(vocab.INSTITUTION_ROLE_SUBJECT, vocab.PURPOSE_SELF_INQUIRY, None)
    gate, _, log, caller = _gate(row)
    log.fail = True

    async def produce(_: Admission) -> app_pb2.Eligibility:
        return evaluate(EXEMPT, full_report(), TODAY)

    with pytest.raises(GatewayError) as failed:
        await gate.disclose(Ask(caller, 23, TOKEN, row.purpose), produce)  # type: ignore[arg-type]
    assert failed.value.reason == "AUDIT_UNAVAILABLE"


def test_purposes_of_workflow_callers() -> None:
    assert acting_purpose(vocab.INSTITUTION_ROLE_SUBJECT) == vocab.PURPOSE_SELF_INQUIRY
    assert acting_purpose(vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION) == (
        vocab.PURPOSE_SUBJECT_AUTHORIZED  # whose row refuses the role
    )
    assert reader_purpose(vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN) == vocab.PURPOSE_UNSPECIFIED


def test_condition_categories_cover_what_the_adapters_tag_the_records_they_read() -> None:
    """Each condition's declared categories include those of the record kinds it reads, as
    the adapters tag them (the conformance kit's table)."""
    from credgate.adapters.testing.expectations import CATEGORY_OF_KIND

    reads = {
        app_pb2.REPAIR_CONDITION_REPAIRABLE_STATE: [vocab.RECORD_KIND_DISHONESTY_DISCLOSURE],
        app_pb2.REPAIR_CONDITION_PLAN_OBLIGATIONS: [vocab.RECORD_KIND_PLAN_REPAYMENT],
        app_pb2.REPAIR_CONDITION_NO_NEW_DEFAULT: [vocab.RECORD_KIND_DEFAULT],
    }
    for condition, kinds in reads.items():
        for kind in kinds:
            assert CATEGORY_OF_KIND[kind] in CONDITION_CATEGORIES[condition]
    assert set(CONDITION_CATEGORIES) == set(app_pb2.RepairCondition.values()) - {0}


# -- through the real gateway: an authorized party acting for a subject ---------------------


async def _grant(gw: WorkflowGateway, subject: Subject, max_uses: int) -> str:
    """The subject authorizes agency-demo for IDENTITY and BANKRUPTCY_REPAIR only."""
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=subject.key_id,
        grantee_institution_id="agency-demo",
        collecting_institution_id="agency-demo",
        purposes=[vocab.PURPOSE_SUBJECT_AUTHORIZED],
        categories=sorted({vocab.DATA_CATEGORY_IDENTITY, REPAIR}),
        retention_days=30,
        nonce=secrets.token_bytes(16),
        max_uses=max_uses,
        ongoing_updates=True,
    )
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + dt.timedelta(days=4 * 366))  # past the travel clock
    signed, signature = grants.sign_terms(subject.key, terms)
    async with gw.running.client("agency-demo") as agency:
        grant = await agency.grant_consent(subject.identity_number, signed, signature)
    return grant.consent_id


async def _uses(gw: WorkflowGateway, consent_id: str) -> int:
    async with gw.gateway.database.session() as session:
        row = await session.get(ConsentGrantRow, consent_id)
        assert row is not None
        return row.use_count


def _grounds(eligibility: app_pb2.Eligibility) -> dict[int, tuple[str, list[str]]]:
    return {c.condition: (c.explanation, list(c.source_ids)) for c in eligibility.conditions}


async def test_an_authorized_party_sees_eligibility_without_its_withheld_grounds_and_spends_one_use_per_call(  # noqa: E501
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    consent_id = await _grant(gw, subject, max_uses=10)
    gw.clock.set(2028, 9, 5)  # the observation period has elapsed
    neutral = withheld_explanation({COMMERCIAL})
    credit_bound = [c for c, cats in CONDITION_CATEGORIES.items() if COMMERCIAL in cats]
    evaluate_request = app_pb2.EvaluateRepairEligibilityRequest(identity_number=number, kind=EXEMPT)

    async with gw.subject_channel(subject) as channel:
        own = (
            await gw.applications(channel).EvaluateRepairEligibility(evaluate_request)
        ).eligibility
    for condition in credit_bound:  # the subject sees every ground (and the test can fail)
        assert _grounds(own)[condition][0] != neutral

    async with gw.channel("agency-demo") as channel:
        stub = gw.applications(channel)
        seen = (await stub.EvaluateRepairEligibility(evaluate_request)).eligibility
        assert seen.eligible == own.eligible
        assert [c.met for c in seen.conditions] == [c.met for c in own.conditions]
        for condition in credit_bound:
            assert _grounds(seen)[condition] == (neutral, [])
        assert await _uses(gw, consent_id) == 1

        bogus = app_pb2.EvaluateRepairEligibilityRequest()
        bogus.CopyFrom(evaluate_request)
        bogus.consent_id = "cg_" + "f" * 32  # names no grant: refused, spends nothing
        assert (await refused(stub.EvaluateRepairEligibility(bogus)))[:2] == (
            grpc.StatusCode.PERMISSION_DENIED,
            "CONSENT_MISSING",
        )
        assert await _uses(gw, consent_id) == 1

        filed = (
            await stub.FileRepairApplication(
                app_pb2.FileRepairApplicationRequest(
                    request_id="agency-1", identity_number=number, kind=EXEMPT
                )
            )
        ).application
        assert await _uses(gw, consent_id) == 2
        got = (
            await stub.GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id=filed.application_id)
            )
        ).application
        assert await _uses(gw, consent_id) == 3
        watch = stub.WatchRepairApplication(
            app_pb2.WatchRepairApplicationRequest(application_id=filed.application_id)
        )
        watched = (await watch.read()).application
        watch.cancel()
        assert await _uses(gw, consent_id) == 4
        listed = (
            await stub.ListRepairApplications(app_pb2.ListRepairApplicationsRequest())
        ).applications
        assert await _uses(gw, consent_id) == 5
        for shown in (filed, got, watched, *listed):
            for condition in credit_bound:
                assert _grounds(shown.eligibility)[condition] == (neutral, []), shown

    async with gw.subject_channel(subject) as channel:
        stub = gw.applications(channel)
        watch = stub.WatchRepairApplication(
            app_pb2.WatchRepairApplicationRequest(application_id=filed.application_id)
        )
        theirs = (await watch.read()).application
        watch.cancel()
    for condition in credit_bound:
        assert _grounds(theirs.eligibility)[condition][0] != neutral
    assert await _uses(gw, consent_id) == 5  # the subject's own reads spend the agency's none


async def test_an_authorized_party_cannot_probe_facts_outside_its_grant_by_objecting(
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    """Objecting to a bank's record answers as for a record that does not exist."""
    gw = workflow_gateway
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    await _grant(gw, subject, max_uses=0)
    gw.clock.set(2027, 6, 1)  # inside the grant's window
    async with gw.channel("court-demo") as channel:
        report = (
            await status_grpc.RepairStatusServiceStub(channel).GetRepairStatus(
                status_pb2.GetRepairStatusRequest(
                    identity_number=number,
                    purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
                    case_reference="(2028)粤03执9号",
                )
            )
        ).report
    bank_record = next(
        (s.source_id, r.provenance.source_record_id)
        for s in report.sources
        for r in s.records
        if r.category == COMMERCIAL
    )

    def filing(source_id: str, record_id: str) -> obj_pb2.FileObjectionRequest:
        return obj_pb2.FileObjectionRequest(
            request_id="probe-" + secrets.token_hex(4),
            identity_number=number,
            fact=obj_pb2.FactReference(source_id=source_id, source_record_id=record_id),
            aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
            requested_correction="not so",
        )

    async with gw.channel("agency-demo") as channel:
        stub = gw.objections(channel)
        real = await refused(stub.FileObjection(filing(*bank_record)))
        absent = await refused(stub.FileObjection(filing(bank_record[0], "NO-SUCH-RECORD")))
    assert real[:2] == absent[:2] == (grpc.StatusCode.NOT_FOUND, "FACT_NOT_FOUND")


async def test_a_listing_spends_one_use_of_a_subjects_grant_however_many_items_it_shows(
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    consent_id = await _grant(gw, subject, max_uses=10)
    gw.clock.set(2027, 6, 1)
    async with gw.channel("court-demo") as channel:
        report = (
            await status_grpc.RepairStatusServiceStub(channel).GetRepairStatus(
                status_pb2.GetRepairStatusRequest(
                    identity_number=number,
                    purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
                    case_reference="(2028)粤03执9号",
                )
            )
        ).report
    cases = [
        (s.source_id, s.cases[0].provenance.source_record_id) for s in report.sources if s.cases
    ]
    assert len(cases) >= 2
    async with gw.channel("agency-demo") as channel:
        stub = gw.objections(channel)
        for index, (source_id, record_id) in enumerate(cases[:2]):
            await stub.FileObjection(
                obj_pb2.FileObjectionRequest(
                    request_id=f"list-{index}",
                    identity_number=number,
                    fact=obj_pb2.FactReference(source_id=source_id, source_record_id=record_id),
                    aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
                    requested_correction="the stage is not the court's",
                )
            )
        assert await _uses(gw, consent_id) == 2
        listed = (await stub.ListObjections(obj_pb2.ListObjectionsRequest())).objections
        assert len(listed) == 2
        assert await _uses(gw, consent_id) == 3
