"""The objection procedure (measures Art. 16), from filing to the source's written reply.

    file ──▶ ask the source for its original ──▶ index differs? ──yes──▶ correct index, close
                                                      │ no
                                                      ▼
              source takes objections through credgate? ──yes──▶ submitting ──▶ filed there
                                                      │ no                     (reply ≤ 10 wd)
                                                      ▼
                               the subject files with the source (≤ 5 wd) ──▶ source replies

Reading the source's original happens before the one transaction that records the outcome;
that transaction also appends the call's audit entry (``core.storage.decided_write``), so the
entry and the outcome commit together and a call that loses a race (the same objection filed
on two replicas) rolls back with nothing recorded but its one refusal. Filing with the source
is a side effect and happens only *after* the commit, from the outbox the transaction wrote
(``gateway.workflows.outbox``): the objection is ``SUBMITTING_TO_SOURCE`` until the source
receives it (``AWAITING_SOURCE_REPLY``) or refuses it (``AWAITING_SUBJECT_FILING``). A retry
with the same request id is safe: the objection id is derived from the filer and the request
id, and sources treat a repeated reference as the same filing — which is also what makes a
delivery repeated after a crash harmless.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import grpc
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.adapters.base import (
    CorrectionRefused,
    ObjectionFiling,
    SourceAdapter,
    SourceError,
    SourceReceipt,
    corrections_of,
)
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.core.errors import GatewayError
from credgate.core.storage.decided_write import decided_write
from credgate.gateway.engine.containment import contained
from credgate.gateway.engine.stamping import stamped
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.fact_index.corrections import (
    announce_dispute,
    apply_correction,
    settle_before_correction,
)
from credgate.gateway.fact_index.feed import lock_feed_async
from credgate.gateway.workdays import WorkdayCalendar
from credgate.gateway.workflows.callers import ForSubject
from credgate.gateway.workflows.common import (
    GATEWAY_ACTOR,
    Changes,
    add_steps,
    lock_subject,
    request_bound_id,
    request_digest,
)
from credgate.gateway.workflows.facts import find_fact, index_differs
from credgate.gateway.workflows.models import ObjectionRow, details_context
from credgate.gateway.workflows.objection_store import (
    AWAITING_SOURCE,
    AWAITING_SUBJECT,
    SUBMITTING,
    TABLE,
    ObjectionStore,
    ObjectionView,
    effective_state,
)
from credgate.gateway.workflows.outbox import OBJECTION_FILING, Message, Outbox, RetryLater

_T = TypeVar("_T")
SUBJECT_FILING_DAYS = 5
SOURCE_REPLY_DAYS = 10
ASPECTS = {
    obj_pb2.DISPUTED_ASPECT_REPAIR_STATE: "repair_state",
    obj_pb2.DISPUTED_ASPECT_CASE_STAGE: "case_stage",
    obj_pb2.DISPUTED_ASPECT_DATES: "dates",
    obj_pb2.DISPUTED_ASPECT_CURRENCY: "currency",
    obj_pb2.DISPUTED_ASPECT_AMOUNT: "amount",
    obj_pb2.DISPUTED_ASPECT_EXISTENCE: "existence",
    obj_pb2.DISPUTED_ASPECT_OTHER: "other",
}
RecordAllowed = Callable[[AsyncSession, vocab.DataCategory.ValueType, str], Awaitable[object]]
"""Appends the allowed decision to the audit log in the write's transaction (category and
source of the fact); it may still refuse (a category the caller may not see)."""
SUBJECT, SOURCE, GATEWAY = (
    wf.RESPONSIBLE_PARTY_SUBJECT,
    wf.RESPONSIBLE_PARTY_SOURCE,
    wf.RESPONSIBLE_PARTY_GATEWAY,
)


@dataclass(frozen=True)
class Filing:
    """What the filer asks, validated."""

    request_id: str
    source_id: str
    record_id: str
    aspect: obj_pb2.DisputedAspect.ValueType
    requested_correction: str
    report_id: str


def _index_versus(where: str, kept_newer: bool) -> str:
    """How the index stands against the source's original, for a routing step's note."""
    if kept_newer:
        return f"the index holds newer facts of {where} than its original, and keeps them"
    return f"the index matches {where}'s original"


def error(code: grpc.StatusCode, reason: str, message: str) -> GatewayError:
    return GatewayError.of(code, message, reason)


class ObjectionWorkflow:
    """Files objections and records the sources' replies."""

    def __init__(
        self,
        store: ObjectionStore,
        fact_index: FactIndex,
        adapters: Mapping[str, SourceAdapter],
        calendar: WorkdayCalendar,
        changes: Changes,
        *,
        clock: Callable[[], dt.datetime],
        id_key: bytes,
        outbox: Outbox,
        providers: Mapping[str, str] | None = None,
        source_timeout: float = 3.0,
    ) -> None:
        """``providers`` binds each data provider's institution id to the one source id it
        answers objections for (the ``[[providers]]`` configuration). Filings with sources
        go through ``outbox`` (this workflow handles its ``objection_filing`` messages)."""
        self.store = store
        self._outbox = outbox
        outbox.handle(OBJECTION_FILING, self.submit)
        self._id_key = id_key
        self._providers = dict(providers or {})
        self._db = store.database
        self._fact_index = fact_index
        self._adapters = adapters
        self.calendar = calendar
        self._changes = changes
        self._clock = clock
        self._timeout = source_timeout

    async def file(self, who: ForSubject, filing: Filing, allowed: RecordAllowed) -> ObjectionView:
        """File an objection; the answer says whether it was corrected at once or routed."""
        adapter = self._adapters.get(filing.source_id)
        if adapter is None:
            raise GatewayError.of(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the fact names no configured source",
                "UNKNOWN_SOURCE",
                field_violations=[("fact.source_id", "is not a known source")],
            )
        token, filer = who.subject_token, who.caller.institution_id
        digest = request_digest(
            token,
            filing.source_id,
            filing.record_id,
            int(filing.aspect),
            filing.requested_correction,
            filing.report_id,
        )
        objection_id = request_bound_id(self._id_key, "obj", filer, filing.request_id)
        async with self._db.session() as session:
            known = await self.store.by_request(session, filer, filing.request_id)
            already_open = known is None and await self.store.open_on_fact(
                session, token, filing.source_id, filing.record_id, self._clock()
            )
        if known is not None:
            return await self._replay(known, digest, allowed)
        if already_open:
            raise _already_open()
        original = stamped(
            await self._ask(
                adapter.fetch(who.identity_number, timeout=self._timeout), filing.source_id
            ),
            adapter.config,
            adapter.source_kind,
        )
        in_source = find_fact(original, filing.record_id)
        in_index = find_fact(
            await self._fact_index.last_known(token, filing.source_id), filing.record_id
        )
        found = in_source or in_index
        if found is None:
            raise error(
                grpc.StatusCode.NOT_FOUND,
                "FACT_NOT_FOUND",
                "neither the source nor the gateway's index holds that record",
            )
        now = self._clock()
        row = ObjectionRow(
            objection_id=objection_id,
            subject_token=token,
            filed_by=filer,
            request_id=filing.request_id,
            request_digest=digest,
            source_id=filing.source_id,
            category=int(found.category),
            aspect=int(filing.aspect),
            filed_at=now,
            version=1,
            updated_at=now,
        )
        row.details_ciphertext, row.key_id = self.store.sealer.seal(
            {
                "identity_number": who.identity_number,
                "record_id": filing.record_id,
                "requested_correction": filing.requested_correction,
                "report_id": filing.report_id,
            },
            details_context(TABLE, objection_id),
        )
        where = filing.source_id
        steps = [("OBJECTION_FILED", SUBJECT, filer, f"objection to a fact held by {where}")]
        differs = index_differs(in_index, in_source)
        if differs:
            await settle_before_correction(self._db, token)

        async def record(session: AsyncSession) -> None:
            await allowed(session, found.category, filing.source_id)

        submitting: Message | None = None
        async with decided_write(self._db, record) as session:
            await lock_subject(session, self._db.backend, token)
            if await self.store.by_request(session, filer, filing.request_id) is not None:
                raise error(
                    grpc.StatusCode.ABORTED,
                    "CONCURRENT_REQUEST",
                    "the same request is being filed concurrently; retry it",
                )
            if await self.store.open_on_fact(session, token, where, filing.record_id, now):
                raise _already_open()
            await lock_feed_async(session, self._db.backend)  # before any row: see below
            # The original corrects the index only if it wins under the index's rule: a newer
            # or signed fact the index holds is the source's own later word, so the objection
            # goes to the source instead (gateway.fact_index.corrections).
            if differs and await apply_correction(
                session, self._db.backend, self.store.sealer.cipher, token, original, now
            ):
                row.state, row.closed_at = obj_pb2.OBJECTION_STATE_CORRECTED_IN_INDEX, now
                steps.append(
                    (
                        "INDEX_CORRECTED",
                        GATEWAY,
                        GATEWAY_ACTOR,
                        f"the gateway's index differed from {where}'s original and was "
                        "corrected from it at once; the objection is closed",
                    )
                )
            else:
                steps.append(self._route(row, adapter, filing, now, kept_newer=differs))
                # The fact is DISPUTED from this commit on: its watchers must hear it.
                await announce_dispute(session, self._db.backend, token, where, now)
            session.add(row)
            await session.flush()
            await add_steps(session, objection_id, now, steps)
            if row.state == SUBMITTING:
                submitting = self._outbox.enqueue(session, OBJECTION_FILING, objection_id)
        self._changes.changed(objection_id)
        if submitting is not None:
            await self._outbox.deliver(submitting)  # at once; the outbox retries if not
        view = await self.store.get(objection_id)
        assert view is not None
        return view

    def _route(
        self,
        row: ObjectionRow,
        adapter: SourceAdapter,
        filing: Filing,
        now: dt.datetime,
        *,
        kept_newer: bool = False,
    ) -> tuple[str, wf.ResponsibleParty.ValueType, str, str]:
        """Queue the objection for its source, or tell the subject to file it; the deadlines.
        Nothing is sent here: the filing leaves only once this decision is committed.
        ``kept_newer``: the index differs from the original but holds newer (or signed) facts
        of the source, which it keeps."""
        where = filing.source_id
        row.routed_at = now
        row.filing_due_at = self.calendar.deadline(now, SUBJECT_FILING_DAYS).due_at
        if corrections_of(adapter) is not None:
            row.state, row.current_due_at = SUBMITTING, None
            return (
                "SUBMITTING_TO_SOURCE",
                GATEWAY,
                GATEWAY_ACTOR,
                f"{_index_versus(where, kept_newer)}, and {where} takes objections through "
                f"credgate: credgate is submitting the objection to {where}",
            )
        return self._to_subject(row, where, now, kept_newer=kept_newer)

    def _to_subject(
        self,
        row: ObjectionRow,
        where: str,
        now: dt.datetime,
        *,
        refused: bool = False,
        kept_newer: bool = False,
    ) -> tuple[str, wf.ResponsibleParty.ValueType, str, str]:
        due = self.calendar.deadline(now, SUBJECT_FILING_DAYS)
        row.routed_at, row.filing_due_at = now, due.due_at
        row.state, row.current_due_at = AWAITING_SUBJECT, due.due_at
        why = (
            f"{where} refused the objection through credgate"
            if refused
            else f"{_index_versus(where, kept_newer)}, and {where} takes no objections "
            "through credgate"
        )
        return (
            "ROUTED_TO_SUBJECT",
            GATEWAY,
            GATEWAY_ACTOR,
            f"{why}: the subject files in writing with {where} by {due.due_text}",
        )

    async def submit(self, message: Message) -> None:
        """Deliver an ``objection_filing`` message: file the committed objection with its
        source, then record the receipt (or the refusal) and drop the message together.

        ``RetryLater`` when the source cannot be reached: the objection stays SUBMITTING and
        the outbox tries again with backoff."""
        objection_id = message.workflow_id
        view = await self.store.get(objection_id)
        receipt: SourceReceipt | None = None
        if view is not None and view.row.state == SUBMITTING:
            where = view.row.source_id
            adapter = self._adapters.get(where)
            corrections = corrections_of(adapter) if adapter is not None else None
            if corrections is not None:
                notice = ObjectionFiling(
                    objection_id,
                    view.details["record_id"],
                    ASPECTS[obj_pb2.DisputedAspect.ValueType(view.row.aspect)],
                    view.details["requested_correction"],
                )
                try:
                    receipt = await self._ask(
                        corrections.submit_objection(
                            view.details["identity_number"], notice, timeout=self._timeout
                        ),
                        where,
                    )
                except GatewayError as failed:
                    if failed.reason != "SOURCE_REFUSED":
                        raise RetryLater(failed.reason) from None
        now = self._clock()
        async with decided_write(self._db, None) as session:
            row = await self.store.row(session, objection_id)
            if row is not None and row.state == SUBMITTING:
                await lock_subject(session, self._db.backend, row.subject_token)
                steps = [
                    self._to_subject(row, row.source_id, now, refused=True)
                    if receipt is None
                    else self._filed(row, receipt, now)
                ]
                row.version += 1
                row.updated_at = now
                await add_steps(session, objection_id, now, steps)
            await self._outbox.done(session, message)
        self._changes.changed(objection_id)

    def _filed(
        self, row: ObjectionRow, receipt: SourceReceipt, now: dt.datetime
    ) -> tuple[str, wf.ResponsibleParty.ValueType, str, str]:
        where = row.source_id
        reply = self.calendar.deadline(now, SOURCE_REPLY_DAYS)
        row.state, row.source_reference = AWAITING_SOURCE, receipt.source_reference
        row.filed_with_source_at, row.reply_due_at = now, reply.due_at
        row.current_due_at = reply.due_at
        return (
            "FILED_WITH_SOURCE",
            GATEWAY,
            GATEWAY_ACTOR,
            f"filed with {where} for the subject (its reference {receipt.source_reference}, "
            f"received {receipt.received_on}); its written reply is due by {reply.due_text}",
        )

    async def reply(
        self,
        provider: str,
        objection_id: str,
        decision: obj_pb2.SourceReplyDecision.ValueType,
        reference: str,
        allowed: RecordAllowed,
    ) -> ObjectionView:
        """Record the source's answer: received (subject filed directly), corrected or upheld."""
        view = await self.store.get(objection_id)
        now = self._clock()
        if view is None or view.row.source_id not in self.bound_sources(provider):
            raise error(grpc.StatusCode.NOT_FOUND, "OBJECTION_NOT_FOUND", "no such objection")
        state = effective_state(view.row, now)
        if state not in (AWAITING_SUBJECT, AWAITING_SOURCE, SUBMITTING):
            raise error(
                grpc.StatusCode.FAILED_PRECONDITION, "OBJECTION_CLOSED", "the objection is closed"
            )
        if decision == obj_pb2.SOURCE_REPLY_DECISION_RECEIVED and state != AWAITING_SUBJECT:
            raise error(
                grpc.StatusCode.FAILED_PRECONDITION,
                "OBJECTION_ALREADY_RECEIVED",
                "the source has already received this objection",
            )
        source_id = view.row.source_id
        fresh: report_pb2.SourceFacts | None = None
        if decision == obj_pb2.SOURCE_REPLY_DECISION_CORRECTED:
            adapter = self._adapters[source_id]
            fresh = stamped(
                await self._ask(
                    adapter.fetch(view.details["identity_number"], timeout=self._timeout),
                    source_id,
                ),
                adapter.config,
                adapter.source_kind,
            )
        if fresh is not None:
            await settle_before_correction(self._db, view.row.subject_token)

        async def record(session: AsyncSession) -> None:
            await allowed(session, vocab.DataCategory.ValueType(view.row.category), source_id)

        async with decided_write(self._db, record) as session:
            await lock_subject(session, self._db.backend, view.row.subject_token)
            # Feed lock before any row: a closing reply announces the end of the dispute.
            await lock_feed_async(session, self._db.backend)
            row = await self.store.row(session, objection_id)
            if row is None or row.version != view.row.version:
                raise error(
                    grpc.StatusCode.ABORTED,
                    "CONCURRENT_CHANGE",
                    "the objection changed meanwhile; read it and retry",
                )
            # The re-fetched record goes into the index only if it wins under the index's rule:
            # a provider that signs pushes its corrected fact itself, and an older unsigned
            # re-fetch must not overwrite it (issue #14).
            updated_index = fresh is not None and await apply_correction(
                session,
                self._db.backend,
                self.store.sealer.cipher,
                row.subject_token,
                fresh,
                now,
            )
            steps = self._apply_reply(row, decision, reference, now, updated_index=updated_index)
            if row.closed_at is not None and not updated_index:
                # Closed without a fact write: the dispute ends, its watchers must hear it.
                await announce_dispute(session, self._db.backend, row.subject_token, source_id, now)
            row.version += 1
            row.updated_at = now
            await add_steps(session, objection_id, now, steps)
            if view.row.state == SUBMITTING:
                # Answered before credgate recorded the receipt: nothing left to deliver.
                await self._outbox.done(session, _filing_message(objection_id))
        self._changes.changed(objection_id)
        updated = await self.store.get(objection_id)
        assert updated is not None
        return updated

    def _apply_reply(
        self,
        row: ObjectionRow,
        decision: obj_pb2.SourceReplyDecision.ValueType,
        reference: str,
        now: dt.datetime,
        *,
        updated_index: bool = False,
    ) -> list[tuple[str, wf.ResponsibleParty.ValueType, str, str]]:
        """Record the source's reply on ``row``; the steps to add. ``updated_index``: a
        CORRECTED reply's re-fetched record replaced the index's (otherwise the index already
        held newer or signed facts of the source, and kept them)."""
        source = row.source_id
        if decision == obj_pb2.SOURCE_REPLY_DECISION_RECEIVED:
            reply = self.calendar.deadline(now, SOURCE_REPLY_DAYS)
            row.state, row.filed_with_source_at = AWAITING_SOURCE, now
            row.reply_due_at = row.current_due_at = reply.due_at
            row.source_reference = reference
            return [
                (
                    "SOURCE_RECEIVED",
                    SOURCE,
                    source,
                    f"{source} received the subject's application ({reference}); its written "
                    f"reply is due by {reply.due_text}",
                )
            ]
        late = row.reply_due_at is not None and now >= row.reply_due_at
        when = "after its deadline" if late else "in time"
        row.replied_at, row.closed_at, row.current_due_at = now, now, None
        if row.filed_with_source_at is None:
            row.filed_with_source_at = now
        if decision == obj_pb2.SOURCE_REPLY_DECISION_CORRECTED:
            row.state = obj_pb2.OBJECTION_STATE_CORRECTED_BY_SOURCE
            index_step = (
                ("INDEX_UPDATED", f"the gateway's index now holds {source}'s corrected record")
                if updated_index
                else (
                    "INDEX_KEPT_NEWER",
                    f"the gateway's index already holds newer facts of {source} than its "
                    "re-fetched record, and keeps them",
                )
            )
            return [
                (
                    "SOURCE_REPLIED",
                    SOURCE,
                    source,
                    f"{source} replied {when} ({reference}): record corrected",
                ),
                (index_step[0], GATEWAY, GATEWAY_ACTOR, index_step[1]),
            ]
        row.state = obj_pb2.OBJECTION_STATE_UPHELD_BY_SOURCE
        return [
            (
                "SOURCE_REPLIED",
                SOURCE,
                source,
                f"{source} replied {when} ({reference}): its record is upheld",
            )
        ]

    def bound_sources(self, provider: str) -> set[str]:
        """The source ids the data provider ``provider`` answers objections for."""
        source = self._providers.get(provider)
        return {source} if source is not None else set()

    async def _replay(
        self, known: ObjectionRow, digest: str, allowed: RecordAllowed
    ) -> ObjectionView:
        """A retry: the objection already filed, answered again with an entry of its own (a
        write transaction holding only that entry, the order every write call follows)."""
        if known.request_digest != digest:
            raise error(
                grpc.StatusCode.ALREADY_EXISTS,
                "REQUEST_ID_REUSED",
                "this request_id was used for a different objection",
            )
        category = vocab.DataCategory.ValueType(known.category)

        async def record(session: AsyncSession) -> None:
            await allowed(session, category, known.source_id)

        async with decided_write(self._db, record):
            pass
        if known.state == SUBMITTING:  # still to be filed: try now, if its backoff allows
            await self._outbox.deliver(_filing_message(known.objection_id))
        view = await self.store.get(known.objection_id)
        assert view is not None
        return view

    async def _ask(self, call: Awaitable[_T], source_id: str) -> _T:
        """A source call, bounded and contained (``gateway.engine.containment``); its failure
        becomes UNAVAILABLE (or SOURCE_REFUSED), nothing kept."""
        try:
            return await contained(call, budget=self._timeout, source_id=source_id)
        except CorrectionRefused:
            raise error(
                grpc.StatusCode.FAILED_PRECONDITION,
                "SOURCE_REFUSED",
                "the source refused the request",
            ) from None
        except SourceError as exc:
            raise error(
                grpc.StatusCode.UNAVAILABLE,
                "SOURCE_UNAVAILABLE",
                f"the source could not be reached ({exc.reason}); nothing was "
                "recorded, retry later",
            ) from None


def _filing_message(objection_id: str) -> Message:
    """The outbox message that files ``objection_id`` with its source."""
    return Message(
        Outbox.message_id(OBJECTION_FILING, objection_id), OBJECTION_FILING, objection_id
    )


def _already_open() -> GatewayError:
    return error(
        grpc.StatusCode.ALREADY_EXISTS,
        "OBJECTION_ALREADY_OPEN",
        "an open objection already disputes this fact",
    )
