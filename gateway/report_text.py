"""Human-readable and JSON renderings of a repair-status report, for the CLI and the demo."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab


def enum_label(enum: object, value: int, prefix: str) -> str:
    name: str = enum.Name(value)  # type: ignore[attr-defined]
    return name.removeprefix(prefix)


def _time(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _date(value: date_pb2.Date) -> str:
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}" if value.year else "-"


def _money(amount: report_pb2.MoneyAmount) -> str:
    if not amount.currency_code:
        return ""
    return f"{amount.minor_units / 100:,.2f} {amount.currency_code}"


def _categories(values: Iterable[int]) -> str:
    return ", ".join(enum_label(vocab.DataCategory, c, "DATA_CATEGORY_") for c in values)


def data_life_to_text(life: report_pb2.DataLife) -> str:
    """A report's signed data life in words: the date, or why there is none."""
    if life.basis == vocab.DATA_LIFE_BASIS_CONSENT_PERIOD:
        return f"{_time(life.keep_until)} ({life.retention_days} days under the consent grant)"
    if life.basis == vocab.DATA_LIFE_BASIS_CONSENT_NO_PERIOD:
        return "no period set by the consent grant"
    if life.basis == vocab.DATA_LIFE_BASIS_WITHOUT_CONSENT:
        return "no consent relied on; the purpose's legal basis governs"
    return "not stated"


def signature_to_text(signed: report_pb2.SignedReport) -> str:
    """One line saying who signed a report and what request it is bound to."""
    return (
        f"signed by gateway key {signed.key_id}; bound to request digest "
        f"{signed.request_digest.hex()[:16]}...; signature verified"
    )


def report_to_json(report: report_pb2.RepairStatusReport) -> str:
    return json_format.MessageToJson(report, indent=2, ensure_ascii=False)


def report_to_text(report: report_pb2.RepairStatusReport) -> str:
    """A report as an operator would want to read it: the answer first, then the evidence."""
    state = enum_label(vocab.RepairState, report.state, "REPAIR_STATE_")
    flags = ", ".join(enum_label(vocab.StatusFlag, f, "STATUS_FLAG_") for f in report.flags)
    lines = [
        f"Repair status: {state}" + (f"  [{flags}]" if flags else ""),
        f"  basis: {report.state_basis}",
        f"  subject token: {report.subject_token}",
        f"  purpose: {enum_label(vocab.Purpose, report.purpose, 'PURPOSE_')}",
        "  categories: " + _categories(report.categories),
    ]
    if report.withheld_categories:
        lines.append("  withheld (not allowed): " + _categories(report.withheld_categories))
    lines += [
        f"  issued to: {report.recipient_institution_id or '-'}"
        f"; chargeable: {'yes' if report.chargeable else 'no'}"
        + (f"; consent: {report.consent_id}" if report.consent_id else ""),
        f"  legal basis: {report.legal_basis or '-'}",
        f"  may be kept until: {data_life_to_text(report.data_life)}",
        f"  report {report.report_id} generated {_time(report.generated_at)}",
        "",
        "Sources:",
    ]
    for source in report.sources:
        asserted = (
            enum_label(vocab.RepairState, source.asserted_state, "REPAIR_STATE_")
            if source.asserted_state
            else "(no view)"
        )
        signature = enum_label(
            report_pb2.SignatureStatus, source.provenance.signature, "SIGNATURE_STATUS_"
        )
        lines.append(
            f"  {source.source_id:<30} {asserted:<22} as of "
            f"{_time(source.provenance.source_as_of)}  signature {signature}"
            + ("  STALE" if source.stale else "")
        )
        if source.HasField("identity"):
            lines.append(f"      identity: {source.identity.masked_identity_number}")
        for case in source.cases:
            lines.append(
                f"      case {case.case_number}: "
                f"{enum_label(vocab.CaseKind, case.kind, 'CASE_KIND_')} / "
                f"{enum_label(vocab.CaseStage, case.stage, 'CASE_STAGE_')}, accepted "
                f"{_date(case.accepted_on)}, observation {_date(case.observation_start)} .. "
                f"{_date(case.observation_end)}"
            )
        for record in source.records:
            status = (
                "open"
                if record.open
                else f"resolved {_date(record.resolved_on)}"
                if record.resolved_on.year
                else "closed"
            )
            lines.append(
                f"      - {record.summary} ({_date(record.occurred_on)}, {status}) "
                f"{_money(record.amount)}".rstrip()
            )
    if report.contradictions:
        lines += ["", "Contradictions:"]
        for c in report.contradictions:
            lines.append(
                f"  {c.subject_matter}: {c.prevailing_source_id} says {c.prevailing_value}, "
                f"{c.dissenting_source_id} says {c.dissenting_value}"
            )
            lines.append(f"      {c.explanation}")
    if report.failures:
        lines += ["", "Sources that failed:"]
        for f in report.failures:
            known = _time(f.last_known_as_of)
            lines.append(f"  {f.source_id}: {f.reason} - {f.message} (last known {known})")
    return "\n".join(lines)
