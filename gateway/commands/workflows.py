"""``credgate objections`` and ``credgate applications``: a subject's workflows, readably.

Both list what the calling certificate may see (a subject sees their own, a provider the
objections routed to it, a judicial organ every application) with every step and deadline;
``--json`` prints the API's messages instead, as one JSON array (``[]`` when none). Hooked
into the ``credgate`` parser by ``workflows.register(sub)``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as app_grpc
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.gateway.commands.common import command, print_json

EXIT_OK, EXIT_DENIED = 0, 3


def _name(enum: object, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()  # type: ignore[attr-defined]


def _day(value: object) -> str:
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"  # type: ignore[attr-defined]


def deadline_text(d: wf.Deadline) -> str:
    """One deadline line: met once the party acted (an announcement: once it ended), else
    OVERDUE or running until its day; a provisional one says which year's calendar is
    missing."""
    if d.HasField("met_time"):
        state = "met"
    elif d.overdue:
        state = "OVERDUE"
    else:
        state = f"running until {_day(d.due_on)}"
    if d.provisional:
        state += f" (provisional: {d.unpublished_calendar_year} calendar not published)"
    party = _name(wf.ResponsibleParty, d.party, "RESPONSIBLE_PARTY_")
    return (
        f"  deadline {_name(wf.DeadlineKind, d.kind, 'DEADLINE_KIND_')}: "
        f"{f'{party} {d.party_id}'.rstrip()} by {_day(d.due_on)} "
        f"({d.working_days} working days) — {state}"
    )


def _history(deadlines: Sequence[wf.Deadline], steps: Sequence[wf.WorkflowStep]) -> list[str]:
    lines = []
    for d in deadlines:
        lines.append(deadline_text(d))
    for s in steps:
        lines.append(f"  {s.time.ToDatetime():%Y-%m-%d %H:%M} {s.action} [{s.actor_id}] {s.note}")
    return lines


def objection_text(o: obj_pb2.Objection) -> str:
    flags = ("open" if o.open else "closed") + (", OVERDUE" if o.overdue else "")
    head = [
        f"{o.objection_id}  {_name(obj_pb2.ObjectionState, o.state, 'OBJECTION_STATE_')} ({flags})",
        f"  fact: {o.fact.source_id} {o.fact.source_record_id}".rstrip(),
        f"  next: {o.next_step}",
    ]
    return "\n".join(head + _history(o.deadlines, o.steps))


def application_text(a: app_pb2.RepairApplication) -> str:
    kind = _name(app_pb2.RepairApplicationKind, a.kind, "REPAIR_APPLICATION_KIND_")
    stage = _name(app_pb2.RepairApplicationStage, a.stage, "REPAIR_APPLICATION_STAGE_")
    outcome = _name(app_pb2.RepairApplicationOutcome, a.outcome, "REPAIR_APPLICATION_OUTCOME_")
    head = [
        f"{a.application_id}  {kind}: {stage}" + ("" if a.open else f" ({outcome})"),
        f"  next: {a.next_step}",
    ]
    return "\n".join(head + _history(a.deadlines, a.steps))


def announcement_text(a: app_pb2.RepairAnnouncement) -> str:
    """One announced application as a creditor sees it: only what the announcement publishes."""
    kind = _name(app_pb2.RepairApplicationKind, a.kind, "REPAIR_APPLICATION_KIND_")
    objections = "objections open" if a.objections_open else "objections closed"
    return "\n".join(
        [
            f"{a.application_id}  {kind}: case {a.case_number}, {a.masked_identity_number}",
            f"  announced {a.announcement_start_time.ToDatetime():%Y-%m-%d %H:%M} UTC; "
            f"{objections}",
            deadline_text(a.announcement_period),
        ]
    )


STAGE_FILTERS = {
    "all": app_pb2.REPAIR_APPLICATION_STAGE_UNSPECIFIED,
    "running": app_pb2.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT,
    "ended": app_pb2.REPAIR_APPLICATION_STAGE_RULING,
}
"""``credgate announcements --stage``: the listing's stage filter."""


async def _run(args: argparse.Namespace, which: str) -> int:
    from credgate.gateway.client import CredgateClient
    from credgate.gateway.wire_errors import parse_error

    client = CredgateClient.from_pki_dir(args.target, Path(args.pki_dir), args.institution)
    channel = client._channel  # the client's mTLS channel; these stubs are not wrapped (yet)
    texts: list[str] = []
    messages: Sequence[Message] = []
    try:
        if which == "objections":
            objections = (
                await obj_grpc.ObjectionServiceStub(channel).ListObjections(
                    obj_pb2.ListObjectionsRequest(open_only=args.open, page_size=200),
                    timeout=args.timeout,
                )
            ).objections
            messages = objections
            texts = [objection_text(o) for o in objections]
        elif which == "announcements":
            announcements = (
                await app_grpc.RepairApplicationServiceStub(
                    channel
                ).ListAnnouncedRepairApplications(
                    app_pb2.ListAnnouncedRepairApplicationsRequest(
                        stage=STAGE_FILTERS[args.stage], page_size=200
                    ),
                    timeout=args.timeout,
                )
            ).announcements
            messages = announcements
            texts = [announcement_text(a) for a in announcements]
        else:
            applications = (
                await app_grpc.RepairApplicationServiceStub(channel).ListRepairApplications(
                    app_pb2.ListRepairApplicationsRequest(open_only=args.open, page_size=200),
                    timeout=args.timeout,
                )
            ).applications
            messages = applications
            texts = [application_text(a) for a in applications]
    except grpc.aio.AioRpcError as error:
        parsed = parse_error(error)
        reason = parsed.error_info.reason if parsed.error_info else ""
        print(f"refused: {parsed.code.name} {reason}", file=sys.stderr)
        return EXIT_DENIED
    finally:
        await client.close()
    if args.json:  # one JSON array, empty when there are none: always parseable
        print_json([json_format.MessageToDict(message) for message in messages])
    else:
        print("\n".join(texts) if texts else f"no {which}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``objections``, ``applications`` and ``announcements`` to the ``credgate``
    subcommands."""
    for which, what in (
        ("objections", "objections to facts and their deadlines"),
        ("applications", "repair applications and their stages"),
        ("announcements", "announced repair applications (creditors: to object in time)"),
    ):
        announced = which == "announcements"
        p = command(
            sub,
            which,
            help=f"list {what}",
            examples=(
                [
                    "credgate announcements --institution bank-demo --stage running",
                    "credgate announcements --institution bank-demo --json",
                ]
                if announced
                else [
                    f"credgate {which} --institution subject.<key> --open",
                    f"credgate {which} --institution agency-demo --json",
                ]
            ),
        )
        if announced:
            p.add_argument(
                "--stage",
                choices=sorted(STAGE_FILTERS),
                default="all",
                help="running: objections open; ended: awaiting the ruling",
            )
        else:
            p.add_argument("--open", action="store_true", help="only open ones")
        p.add_argument("--target", default="127.0.0.1:50051")
        p.add_argument("--pki-dir", default="var/demo/pki")
        p.add_argument("--institution", required=True, help="whose certificate to use")
        p.add_argument("--timeout", type=float, default=10.0)
        p.add_argument("--json", action="store_true", help="print the API messages as JSON")
        p.set_defaults(func=lambda args, which=which: asyncio.run(_run(args, which)))
