"""ReconciliationService: open contradictions for the operators who can fix them.

Contradictions between two sources, and a source's outdated answer that disagrees with the
newer facts the index keeps from it (``outdated_answer``, ``evaluate.outdated_answers``). A data
provider (its certificate bound to one source by ``[[providers]]``) sees the contradictions its
source is part of; a regulator sees all; nobody else sees any. Subjects are
named by token. The explanation of each contradiction is worded afresh from the subject's
current indexed facts (``gateway.reconciliation.models`` says why it is not stored); a subject
whose facts changed after the last evaluation shows the stored summary until the reconciler
catches up, a matter of a poll interval.

Pages follow AIP-158 with the gateway's one page-token codec (``gateway.protection.page_tokens``):
authenticated, bound to this RPC, the caller and the filter, and holding only a position.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Mapping

import grpc
from google.protobuf import duration_pb2

from credgate.api.credit_repair.v1 import audit_pb2, report_pb2
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as pb
from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as pb_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.trail import AuditTrail
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.gateway.disclosure import Admission, Ask, DisclosureGate
from credgate.gateway.protection.page_tokens import (
    PAGE_TOKEN_VIOLATION,
    PageScope,
    PageTokenError,
    PageTokens,
)
from credgate.gateway.reconciliation.evaluate import Observed
from credgate.gateway.reconciliation.models import ContradictionRow, RestorationRow
from credgate.gateway.reconciliation.restorations import Summary, list_restorations, summarize
from credgate.gateway.reconciliation.store import ContradictionStore

SERVICE_NAME = "credit_repair.v1.ReconciliationService"
LIST_OPEN_CONTRADICTIONS = SERVICE_NAME + "/ListOpenContradictions"
LIST_ACTION = audit_pb2.AUDIT_ACTION_READ_CONTRADICTIONS
"""The audit action a listing is recorded under, once per subject on the page: it reads
subjects' facts (the values two sources hold)."""
LIST_RESTORATION_TIMES = SERVICE_NAME + "/ListRestorationTimes"
RESTORATIONS_ACTION = audit_pb2.AUDIT_ACTION_READ_RESTORATION_TIMES
"""The audit action of a restoration listing (or a refused one): once per call, no subject."""
Produce = Callable[[Admission], Awaitable[pb.OpenContradiction]]
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
STALE_EXPLANATION = (
    "the subject's facts have changed since this was recorded; the reconciler is re-evaluating it"
)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ReconciliationServicer(pb_grpc.ReconciliationServiceServicer):
    """Lists open contradictions by caller role."""

    def __init__(
        self,
        store: ContradictionStore,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        provider_sources: Mapping[str, str],
        page_tokens: PageTokens,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._identify = identify
        self._provider_sources = dict(provider_sources)
        """Data provider institution id → the one source it is registered for."""
        self._page_tokens = page_tokens
        self._clock = clock
        self.gate: DisclosureGate | None = None
        """Set when the gateway is composed (``gateway.app``): the audit trail it records on
        is made after the change followers. Until then the listing releases nothing."""
        self.audit: AuditTrail | None = None
        """Set with ``gate``: records restoration listings (and refusals of them)."""

    async def ListOpenContradictions(
        self, request: pb.ListOpenContradictionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOpenContradictionsResponse:
        """A page of open contradictions, oldest first."""
        caller = self._identify(context)
        source_id = self._source_filter(caller, request.source_id)
        scope = PageScope(LIST_OPEN_CONTRADICTIONS, caller.institution_id, (source_id,))
        after, limit = self._page(request.page_size, request.page_token, scope)
        rows = await self._store.open_rows(source_id=source_id, after=after, limit=limit + 1)
        page = rows[:limit]
        response = pb.ListOpenContradictionsResponse(
            contradictions=await self._disclose(caller, page, self._clock())
        )
        if len(rows) > limit:
            response.next_page_token = self._page_tokens.issue(scope, (page[-1].contradiction_id,))
        return response

    async def _disclose(
        self, caller: Institution, page: list[ContradictionRow], now: dt.datetime
    ) -> list[pb.OpenContradiction]:
        """The page through the disclosure gate, one decision per subject on it (each is
        recorded against that subject, as the caller's part allows), in the page's order."""
        if self.gate is None:
            raise GatewayError.of(
                grpc.StatusCode.UNAVAILABLE,
                "the listing is not available yet",
                "DISCLOSURE_GATE_UNAVAILABLE",
            )

        of_subject: dict[str, list[ContradictionRow]] = {}
        for row in page:
            of_subject.setdefault(row.subject_token, []).append(row)
        described: dict[str, list[pb.OpenContradiction]] = {}

        def produce(row: ContradictionRow) -> Produce:
            async def one(_: Admission) -> pb.OpenContradiction:
                rows = of_subject[row.subject_token]
                if row.subject_token not in described:  # the subject's facts, evaluated once
                    described[row.subject_token] = await describe(self._store, rows, now)
                return described[row.subject_token][rows.index(row)]

            return one

        return await self.gate.disclose_each(
            [
                (
                    Ask(caller, LIST_ACTION, row.subject_token, vocab.PURPOSE_UNSPECIFIED),
                    produce(row),
                )
                for row in page
            ]
        )

    async def ListRestorationTimes(
        self, request: pb.ListRestorationTimesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRestorationTimesResponse:
        """A page of restorations with their durations, and the summary over all: regulators
        only, the call recorded before the answer (a refusal too), permission first."""
        caller = self._identify(context)
        audit = self._audit_trail()
        if caller.role != vocab.INSTITUTION_ROLE_REGULATOR:
            raise await audit.refuse(
                caller,
                RESTORATIONS_ACTION,
                _denied(caller, "ROLE_NOT_PERMITTED", "only a regulator may list restorations"),
                purpose=vocab.PURPOSE_REGULATORY_AUDIT,
            )
        scope = PageScope(
            LIST_RESTORATION_TIMES, caller.institution_id, ("open" if request.open_only else "",)
        )
        after, limit = self._page(request.page_size, request.page_token, scope)
        database = self._store.database
        rows = await list_restorations(
            database, after=after, limit=limit + 1, open_only=request.open_only
        )
        summary = await summarize(database)
        await audit.record(caller, RESTORATIONS_ACTION, purpose=vocab.PURPOSE_REGULATORY_AUDIT)
        now = self._clock()
        page = rows[:limit]
        response = pb.ListRestorationTimesResponse(
            restorations=[restoration_message(row, now) for row in page],
            summary=summary_message(summary, now),
        )
        if len(rows) > limit:
            response.next_page_token = self._page_tokens.issue(scope, (page[-1].restoration_id,))
        return response

    def _audit_trail(self) -> AuditTrail:
        if self.audit is None:
            raise GatewayError.of(
                grpc.StatusCode.UNAVAILABLE,
                "the listing is not available yet",
                "AUDIT_UNAVAILABLE",
            )
        return self.audit

    def _page(self, page_size: int, page_token: str, scope: PageScope) -> tuple[int, int]:
        """(the index the page starts after, how many rows it holds) for an AIP-158 request;
        INVALID_ARGUMENT for a negative size or a token not issued for this listing."""
        if page_size < 0:
            raise _invalid([("page_size", "must not be negative")])
        after = 0
        if page_token:
            try:
                after = self._page_tokens.open_index(page_token, scope)
            except PageTokenError:
                raise _invalid([PAGE_TOKEN_VIOLATION]) from None
        return after, min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)

    def _source_filter(self, caller: Institution, requested: str) -> str:
        """The source the caller may list: its own for a provider, any for a regulator."""
        if caller.role == vocab.INSTITUTION_ROLE_REGULATOR:
            return requested
        if caller.role != vocab.INSTITUTION_ROLE_DATA_PROVIDER:
            raise _denied(
                caller, "ROLE_NOT_PERMITTED", "only data providers and regulators may list these"
            )
        own = self._provider_sources.get(caller.institution_id)
        if own is None:
            raise _denied(caller, "PROVIDER_NOT_REGISTERED", "this data provider is not registered")
        if requested and requested != own:
            raise _denied(
                caller, "SOURCE_NOT_PERMITTED", "a data provider may list only its own source"
            )
        return own


async def describe(
    store: ContradictionStore, rows: Iterable[ContradictionRow], now: dt.datetime
) -> list[pb.OpenContradiction]:
    """The rows as API messages, explained from their subjects' current facts."""
    rows = list(rows)
    current: dict[str, dict[str, Observed]] = {}
    for token in dict.fromkeys(row.subject_token for row in rows):
        current[token] = {o.key: o for o in await store.try_evaluate(token) or ()}
    described = []
    for row in rows:
        found = current[row.subject_token].get(row.contradiction_key)
        contradiction = report_pb2.Contradiction(
            subject_matter=row.subject_matter,
            prevailing_source_id=row.prevailing_source_id,
            prevailing_value=row.prevailing_value,
            dissenting_source_id=row.dissenting_source_id,
            dissenting_value=row.dissenting_value,
            explanation=found.contradiction.explanation if found else STALE_EXPLANATION,
        )
        item = pb.OpenContradiction(subject_token=row.subject_token, contradiction=contradiction)
        item.first_seen_time.FromDatetime(row.first_seen)
        item.last_seen_time.FromDatetime(row.last_seen)
        item.age.FromTimedelta(max(now - row.first_seen, dt.timedelta(0)))
        described.append(item)
    return described


def _span(value: dt.timedelta) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromTimedelta(max(value, dt.timedelta(0)))
    return message


def restoration_message(row: RestorationRow, now: dt.datetime) -> pb.RestorationTime:
    """A row as the API shows it: while open, the duration is the age so far."""
    item = pb.RestorationTime(
        subject_token=row.subject_token,
        ruling_source_id=row.ruling_source_id,
        open=row.agreed_at is None,
        lagging_source_ids=row.lagging.split(),
    )
    item.ruling_time.FromDatetime(row.ruled_at)
    item.first_seen_time.FromDatetime(row.first_seen)
    if row.agreed_at is not None and row.duration_micros is not None:
        item.agreed_time.FromDatetime(row.agreed_at)
        item.duration.CopyFrom(_span(dt.timedelta(microseconds=row.duration_micros)))
    else:
        item.duration.CopyFrom(_span(now - row.ruled_at))
    return item


def summary_message(summary: Summary, now: dt.datetime) -> pb.RestorationSummary:
    """The summary figures; a figure with nothing to measure is left unset."""
    message = pb.RestorationSummary(agreed_count=summary.agreed, open_count=summary.open)
    if summary.median is not None:
        message.median.CopyFrom(_span(summary.median))
    if summary.p90 is not None:
        message.p90.CopyFrom(_span(summary.p90))
    if summary.longest is not None:
        message.max.CopyFrom(_span(summary.longest))
    if summary.oldest_open_ruling is not None:
        message.oldest_open_age.CopyFrom(_span(now - summary.oldest_open_ruling))
    for bound, count in summary.histogram:
        bucket = message.histogram.add(count=count)
        if bound is not None:
            bucket.upper_bound.CopyFrom(_span(bound))
    return message


def _denied(caller: Institution, reason: str, message: str) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.PERMISSION_DENIED, message, reason, metadata={"role": caller.role_name}
    )


def _invalid(violations: list[tuple[str, str]]) -> GatewayError:
    return GatewayError.invalid_request(violations)
