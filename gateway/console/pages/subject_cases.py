"""``/subject/cases``: my objections and repair applications — where each stands, who must
act, its stages and deadlines (``ListObjections`` and ``ListRepairApplications``, which list
exactly the caller's own for a subject certificate; both audited)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from credgate.api.credit_repair.v1 import objection_service_pb2 as objection_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as application_pb2
from credgate.api.credit_repair.v1 import workflow_pb2
from credgate.gateway.client import CredgateError
from credgate.gateway.console.connection import Mode
from credgate.gateway.console.pages import page
from credgate.gateway.console.rendering import connection, render
from credgate.gateway.console.subject_common import enum_labeller, refused
from credgate.gateway.console.subject_view import own_applications, own_objections


@page("/subject/cases", mode=Mode.SUBJECT, nav="nav.subject_cases", order=30)
async def cases(request: web.Request) -> web.StreamResponse:
    client = connection(request).client
    try:
        objections, applications = await asyncio.gather(
            own_objections(client), own_applications(client)
        )
    except CredgateError as error:
        return refused(request, error)
    return render(
        request,
        "subject/cases.html",
        objections=objections,
        applications=applications,
        E=enum_labeller(request),
        ObjectionState=objection_pb2.ObjectionState,
        Kind=application_pb2.RepairApplicationKind,
        Stage=application_pb2.RepairApplicationStage,
        Outcome=application_pb2.RepairApplicationOutcome,
        Party=workflow_pb2.ResponsibleParty,
        DeadlineKind=workflow_pb2.DeadlineKind,
    )
