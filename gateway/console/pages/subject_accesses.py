"""``/subject/accesses``: who accessed my record — when, which institution, why, the outcome
(``SelfInquiryService.ListOwnAccesses``, itself an audited call)."""

from __future__ import annotations

from aiohttp import web

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.client import CredgateError
from credgate.gateway.console.connection import Mode
from credgate.gateway.console.pages import page
from credgate.gateway.console.rendering import connection, render
from credgate.gateway.console.subject_common import enum_labeller, refused
from credgate.gateway.console.subject_view import own_accesses


@page("/subject/accesses", mode=Mode.SUBJECT, nav="nav.subject_accesses", order=10)
async def accesses(request: web.Request) -> web.StreamResponse:
    try:
        rows = await own_accesses(connection(request).client)
    except CredgateError as error:
        return refused(request, error)
    return render(
        request,
        "subject/accesses.html",
        accesses=rows,
        E=enum_labeller(request),
        Purpose=vocab.Purpose,
        Role=vocab.InstitutionRole,
        Category=vocab.DataCategory,
        Outcome=audit_pb2.AuditOutcome,
        Action=audit_pb2.AuditAction,
        ALLOWED=audit_pb2.AUDIT_OUTCOME_ALLOWED,
    )
