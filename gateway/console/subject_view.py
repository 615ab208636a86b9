"""What the console's subject mode asks the gateway, as plain async functions (issue #17).

Each function takes a ``CredgateClient`` connected with the subject's own certificate and
makes ordinary, audited gRPC calls — the gateway stays the only holder of the data and every
page view is in its audit log. They return small frozen views the pages render; no identity
number is kept in any of them.

Changing a grant's state (``change_own_grant``) signs the statement here, with the subject's
key loaded from their key file (``gateway.subject_key_file``), through
``consent.state_change.sign_state_change`` — the code ``credgate consent pause|resume|withdraw``
uses (it calls this function). Only the statement and its signature travel; the key never
leaves the process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2 as objection_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as application_pb2
from credgate.api.credit_repair.v1 import workflow_pb2
from credgate.consent.state_change import sign_state_change
from credgate.gateway.certificate_qr import certificate_qr_svg
from credgate.gateway.client import CredgateClient
from credgate.gateway.repair_certificate_format import Certificate

GRANT_ACTIONS: Mapping[str, consent_pb2.ConsentState.ValueType] = {
    "pause": consent_pb2.CONSENT_STATE_PAUSED,
    "resume": consent_pb2.CONSENT_STATE_ACTIVE,
    "withdraw": consent_pb2.CONSENT_STATE_REVOKED,
}
"""Each state change a subject may ask for, and the state its signed statement names."""

_ACTIONS_BY_STATE: Mapping[int, tuple[str, ...]] = {
    consent_pb2.CONSENT_STATE_ACTIVE: ("pause", "withdraw"),
    consent_pb2.CONSENT_STATE_PAUSED: ("resume", "withdraw"),
}


def _time(stamp: Timestamp, present: bool = True) -> dt.datetime | None:
    return stamp.ToDatetime(tzinfo=dt.UTC) if present else None


def _date(date: Date) -> dt.date | None:
    return dt.date(date.year, date.month, date.day) if date.year else None


@dataclass(frozen=True)
class Access:
    """One decision that named the subject: who asked, when, why, and what they got."""

    when: dt.datetime
    institution_id: str
    role: int
    purpose: int
    action: int
    outcome: int
    reason: str
    categories: tuple[int, ...]
    consent_id: str
    keep_until: dt.datetime | None


async def own_accesses(client: CredgateClient) -> list[Access]:
    """Who accessed the subject's record, newest first (``ListOwnAccesses``)."""
    records = await client.list_own_accesses()
    accesses = [
        Access(
            when=r.decision_time.ToDatetime(tzinfo=dt.UTC),
            institution_id=r.institution_id,
            role=r.role,
            purpose=r.purpose,
            action=r.action,
            outcome=r.outcome,
            reason=r.reason,
            categories=tuple(r.categories),
            consent_id=r.consent_id,
            keep_until=_time(r.keep_until, r.HasField("keep_until")),
        )
        for r in records
    ]
    return sorted(accesses, key=lambda a: a.when, reverse=True)


@dataclass(frozen=True)
class GrantView:
    """One of the subject's grants and what the subject may do with it now."""

    consent_id: str
    grantee: str
    purposes: tuple[int, ...]
    categories: tuple[int, ...]
    state: int
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    use_count: int
    actions: tuple[str, ...]


def allowed_actions(state: int) -> tuple[str, ...]:
    """The state changes a grant in ``state`` accepts: an active grant may be paused or
    withdrawn, a paused one resumed or withdrawn; a final state accepts none."""
    return _ACTIONS_BY_STATE.get(state, ())


async def own_grants(client: CredgateClient) -> list[GrantView]:
    """The subject's grants in every state, newest first (``ListOwnConsents``)."""
    grants = await client.list_own_consents()
    views = [
        GrantView(
            consent_id=g.consent_id,
            grantee=g.terms.grantee_institution_id,
            purposes=tuple(g.terms.purposes),
            categories=tuple(g.terms.categories),
            state=g.state,
            valid_from=_time(g.terms.not_before, g.terms.HasField("not_before")),
            valid_until=_time(g.terms.not_after, g.terms.HasField("not_after")),
            use_count=g.use_count,
            actions=allowed_actions(g.state),
        )
        for g in grants
    ]
    return views[::-1]


async def change_own_grant(
    client: CredgateClient,
    key: Ed25519PrivateKey,
    consent_id: str,
    action: str,
    *,
    now: dt.datetime | None = None,
    timeout: float = 10.0,
) -> consent_pb2.ConsentGrant:
    """Pause, resume or withdraw ``consent_id``: the statement is signed here with ``key`` and
    sent (``ChangeConsentState``); the grant as the gateway now holds it. ``KeyError`` for an
    unknown action; ``CredgateError`` when the gateway refuses."""
    signed, signature = sign_state_change(
        key, consent_id, GRANT_ACTIONS[action], now or dt.datetime.now(dt.UTC)
    )
    return await client.change_consent_state(signed, signature, timeout=timeout)


@dataclass(frozen=True)
class DeadlineView:
    """A time limit of an objection or application."""

    kind: int
    party: int
    due_on: dt.date | None
    overdue: bool
    met: dt.datetime | None
    provisional: bool


def _deadlines(deadlines: Sequence[workflow_pb2.Deadline]) -> tuple[DeadlineView, ...]:
    return tuple(
        DeadlineView(
            kind=d.kind,
            party=d.party,
            due_on=_date(d.due_on),
            overdue=d.overdue,
            met=_time(d.met_time, d.HasField("met_time")),
            provisional=d.provisional,
        )
        for d in deadlines
    )


@dataclass(frozen=True)
class ObjectionView:
    """One of the subject's objections: where it stands and who must act by when."""

    objection_id: str
    state: int
    open: bool
    overdue: bool
    responsible_party: int
    next_step: str
    filed: dt.datetime | None
    closed: dt.datetime | None
    deadlines: tuple[DeadlineView, ...]


def _objection(o: objection_pb2.Objection) -> ObjectionView:
    return ObjectionView(
        objection_id=o.objection_id,
        state=o.state,
        open=o.open,
        overdue=o.overdue,
        responsible_party=o.responsible_party,
        next_step=o.next_step,
        filed=_time(o.file_time, o.HasField("file_time")),
        closed=_time(o.close_time, o.HasField("close_time")),
        deadlines=_deadlines(o.deadlines),
    )


async def own_objections(client: CredgateClient) -> list[ObjectionView]:
    """The subject's objections, newest first (``ObjectionService.ListObjections``: a subject
    certificate lists exactly its own)."""
    return [_objection(o) for o in await client.list_objections()]


@dataclass(frozen=True)
class StageView:
    """A stage an application went through."""

    stage: int
    started: dt.datetime | None
    ended: dt.datetime | None


@dataclass(frozen=True)
class ApplicationView:
    """One of the subject's repair applications: its stages, outcome and deadlines."""

    application_id: str
    kind: int
    stage: int
    outcome: int
    open: bool
    responsible_party: int
    next_step: str
    filed: dt.datetime | None
    closed: dt.datetime | None
    stages: tuple[StageView, ...] = field(default=())
    deadlines: tuple[DeadlineView, ...] = field(default=())


def _application(a: application_pb2.RepairApplication) -> ApplicationView:
    return ApplicationView(
        application_id=a.application_id,
        kind=a.kind,
        stage=a.stage,
        outcome=a.outcome,
        open=a.open,
        responsible_party=a.responsible_party,
        next_step=a.next_step,
        filed=_time(a.file_time, a.HasField("file_time")),
        closed=_time(a.close_time, a.HasField("close_time")),
        stages=tuple(
            StageView(
                stage=s.stage,
                started=_time(s.start_time, s.HasField("start_time")),
                ended=_time(s.end_time, s.HasField("end_time")),
            )
            for s in a.stages
        ),
        deadlines=_deadlines(a.deadlines),
    )


async def own_applications(client: CredgateClient) -> list[ApplicationView]:
    """The subject's repair applications, newest first
    (``RepairApplicationService.ListRepairApplications``: a subject lists its own)."""
    return [_application(a) for a in await client.list_repair_applications()]


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate just issued: its text (the file), its QR code and what it says."""

    text: str
    qr_svg: str
    claims: Certificate


async def issue_certificate(
    client: CredgateClient, identity_number: str, *, validity_days: int = 0
) -> IssuedCertificate:
    """Ask the gateway for the subject's repair-status certificate (an audited disclosure to
    the subject), then check it as a lender would: against the published keys and the status
    list fetched now. ``CredgateError`` when refused; ``CertificateVerificationError`` if the
    gateway's answer does not verify."""
    text = await client.issue_repair_status_certificate(
        identity_number, validity_days=validity_days
    )
    claims = await client.verify_repair_certificate(text, identity_number=identity_number)
    return IssuedCertificate(text=text, qr_svg=certificate_qr_svg(text), claims=claims)
