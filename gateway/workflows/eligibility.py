"""Eligibility for a repair application, condition by condition, from what the sources hold.

The Shenzhen regulations set the conditions of credit repair: an observation period of 3 to 5
years, the repayment obligations under the plan met, no new default during the observation
period (study §2.3.1); stopping the disclosure of dishonest behaviour needs a procedure that
has concluded and a publication still running, exemption needs the period elapsed or the plan /
agreement fully executed (§2.3.2). Each condition is judged from the merged report the query
engine produces — the same facts, precedence and contradictions a query shows — and each
verdict says in plain words which source and which dates decided it, so an applicant who is
refused knows exactly what is missing. Pure: no I/O, ``today`` is passed in.
"""

from __future__ import annotations

import datetime as dt

from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab

STOP = app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE
EXEMPT = app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
PLAN_INSTALMENT_GRACE_DAYS = 100
"""Plans are repaid in (at most) quarterly instalments: a plan with no repayment recorded for
longer than a quarter and a grace period is not being met."""
MIN_OBSERVATION_DAYS = 3 * 365
MAX_OBSERVATION_DAYS = 5 * 366
_REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
CONDITION_CATEGORIES: dict[int, frozenset[vocab.DataCategory.ValueType]] = {
    app_pb2.REPAIR_CONDITION_REPAIRABLE_STATE: frozenset({_REPAIR}),
    app_pb2.REPAIR_CONDITION_OBSERVATION_PERIOD: frozenset({_REPAIR}),
    app_pb2.REPAIR_CONDITION_PLAN_OBLIGATIONS: frozenset(
        {_REPAIR, vocab.DATA_CATEGORY_COMMERCIAL_CREDIT}
    ),
    app_pb2.REPAIR_CONDITION_NO_NEW_DEFAULT: frozenset(
        {_REPAIR, vocab.DATA_CATEGORY_COMMERCIAL_CREDIT}
    ),
}
"""The data categories each condition's verdict and explanation rest on: the state and case
(BANKRUPTCY_REPAIR; dishonesty publications are tagged so too) and, for the plan and new
defaults, the repayment and default records (COMMERCIAL_CREDIT). The disclosure gate
(``gateway.disclosure``) replaces the explanation of a condition resting on a category the
reader may not see; a condition missing here is treated as resting on every category."""
_NOT_REPAIRABLE = {
    vocab.REPAIR_STATE_UNSPECIFIED: "no source could be asked, so the state is unknown",
    vocab.REPAIR_STATE_NO_RECORD: "no bankruptcy procedure is on record",
    vocab.REPAIR_STATE_PROCEDURE_PENDING: "the bankruptcy procedure is still under trial",
    vocab.REPAIR_STATE_RESTORED: "the information is already marked as exempted",
    vocab.REPAIR_STATE_REVOKED: "the exemption was revoked by a court",
}


def _date(value: object) -> dt.date | None:
    year, month, day = (getattr(value, k, 0) for k in ("year", "month", "day"))
    return dt.date(year, month, day) if year and month and day else None


def case_of(report: report_pb2.RepairStatusReport) -> tuple[report_pb2.BankruptcyCase, str] | None:
    """The case the prevailing source describes (else the first source, by precedence)."""
    ordered = sorted(report.sources, key=lambda s: s.source_id != report.state_source_id)
    for facts in ordered:
        if facts.cases:
            return max(
                facts.cases, key=lambda c: _date(c.accepted_on) or dt.date.min
            ), facts.source_id
    return None


def _result(
    condition: app_pb2.RepairCondition.ValueType, met: bool, why: str, *sources: str
) -> app_pb2.ConditionResult:
    return app_pb2.ConditionResult(
        condition=condition, met=met, explanation=why, source_ids=sorted(set(sources))
    )


def _records(report: report_pb2.RepairStatusReport, kind: int) -> list[report_pb2.CreditRecord]:
    return [r for s in report.sources for r in s.records if r.kind == kind]


def _repairable(kind: int, report: report_pb2.RepairStatusReport) -> app_pb2.ConditionResult:
    cond, state, source = (
        app_pb2.REPAIR_CONDITION_REPAIRABLE_STATE,
        report.state,
        (report.state_source_id),
    )
    if state in _NOT_REPAIRABLE:
        return _result(cond, False, _NOT_REPAIRABLE[state], source)
    if kind == EXEMPT:
        return _result(cond, True, f"{source} shows the observation period running", source)
    if state == vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED:
        return _result(
            cond, False, "the disclosure of dishonest behaviour is already stopped", source
        )
    running = [r for r in _records(report, vocab.RECORD_KIND_DISHONESTY_DISCLOSURE) if r.open]
    if not running:
        return _result(cond, False, "no publication of dishonest behaviour is running", source)
    return _result(
        cond,
        True,
        "a publication of dishonest behaviour is running",
        *(r.provenance.source_id for r in running),
    )


def _observation(
    kind: int, case: report_pb2.BankruptcyCase | None, source: str, today: dt.date
) -> app_pb2.ConditionResult:
    cond = app_pb2.REPAIR_CONDITION_OBSERVATION_PERIOD
    if case is None:
        return _result(cond, False, "no bankruptcy case is on record")
    start, end = _date(case.observation_start), _date(case.observation_end)
    if kind == STOP:
        if start is None or start > today:
            return _result(
                cond,
                False,
                "the procedure has not concluded: no observation period has begun",
                source,
            )
        return _result(cond, True, f"the observation period began on {start}", source)
    if case.stage == vocab.CASE_STAGE_FULLY_EXECUTED:
        return _result(cond, True, "the plan or agreement is recorded as fully executed", source)
    if start is None or end is None:
        return _result(cond, False, "no observation period is on record", source)
    length = (end - start).days + 1
    if not MIN_OBSERVATION_DAYS <= length <= MAX_OBSERVATION_DAYS:
        return _result(
            cond, False, f"the observation period {start} to {end} is not 3 to 5 years long", source
        )
    if end >= today:
        return _result(
            cond,
            False,
            f"the observation period runs until {end}: {(end - today).days + 1} days remain",
            source,
        )
    return _result(cond, True, f"the observation period {start} to {end} has elapsed", source)


def _plan(
    report: report_pb2.RepairStatusReport,
    case: report_pb2.BankruptcyCase | None,
    source: str,
    today: dt.date,
) -> app_pb2.ConditionResult:
    cond = app_pb2.REPAIR_CONDITION_PLAN_OBLIGATIONS
    if case is None:
        return _result(cond, False, "no bankruptcy case is on record")
    if case.stage == vocab.CASE_STAGE_FULLY_EXECUTED:
        return _result(cond, True, "the plan or agreement is recorded as fully executed", source)
    if case.kind == vocab.CASE_KIND_LIQUIDATION:
        if case.stage == vocab.CASE_STAGE_CONCLUDED:
            return _result(
                cond,
                True,
                "a liquidation has no repayment plan; the estate was "
                "distributed when the procedure concluded",
                source,
            )
        return _result(cond, False, "the liquidation has not concluded", source)
    paid = [r for r in _records(report, vocab.RECORD_KIND_PLAN_REPAYMENT) if _date(r.occurred_on)]
    if not paid:
        return _result(cond, False, "no repayment under the plan is on record", source)
    latest = max(paid, key=lambda r: _date(r.occurred_on) or dt.date.min)
    last_day = _date(latest.occurred_on) or dt.date.min
    gap = (today - last_day).days
    if gap > PLAN_INSTALMENT_GRACE_DAYS:
        return _result(
            cond,
            False,
            f"no repayment under the plan is recorded since {last_day} "
            f"({gap} days; instalments are due at least quarterly)",
            latest.provenance.source_id,
        )
    return _result(
        cond,
        True,
        f"repayments under the plan are recorded up to {last_day}",
        latest.provenance.source_id,
    )


def _no_new_default(
    report: report_pb2.RepairStatusReport, case: report_pb2.BankruptcyCase | None, source: str
) -> app_pb2.ConditionResult:
    cond = app_pb2.REPAIR_CONDITION_NO_NEW_DEFAULT
    if case is None:
        return _result(cond, False, "no bankruptcy case is on record")
    since = _date(case.observation_start) or _date(case.accepted_on)
    if since is None:
        return _result(cond, False, "the case has no date to count new defaults from", source)
    new = [
        r
        for r in _records(report, vocab.RECORD_KIND_DEFAULT)
        if (_date(r.occurred_on) or dt.date.min) >= since
    ]
    if new:
        found = "; ".join(
            sorted(
                f"{r.provenance.source_id}: {r.summary} arising {_date(r.occurred_on)}" for r in new
            )
        )
        return _result(
            cond,
            False,
            f"new default during the observation period (from {since}): {found}",
            *(r.provenance.source_id for r in new),
        )
    return _result(cond, True, f"no default arose on or after {since}", source)


def evaluate(
    kind: app_pb2.RepairApplicationKind.ValueType,
    report: report_pb2.RepairStatusReport,
    today: dt.date,
) -> app_pb2.Eligibility:
    """Every condition for ``kind``, in a fixed order, judged from ``report`` on ``today``."""
    found = case_of(report)
    case, source = found if found is not None else (None, "")
    conditions = [
        _repairable(kind, report),
        _observation(kind, case, source, today),
        _plan(report, case, source, today),
        _no_new_default(report, case, source),
    ]
    eligibility = app_pb2.Eligibility(
        eligible=all(c.met for c in conditions),
        conditions=conditions,
        state=report.state,
        stale_source_ids=sorted({f.source_id for f in report.failures}),
    )
    if report.HasField("generated_at"):
        eligibility.evaluate_time.CopyFrom(report.generated_at)
    return eligibility
