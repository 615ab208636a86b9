"""WatchRepairStatus: the current report, then a new one after every change of the subject.

Each report of a stream is produced by the very path a GetRepairStatus answer takes — policy,
consent, engine, minimization, signature, audit, issued-report record — handed in as ``answer``
by ``RepairStatusServicer``, so a stream can never show more than the same query would. What
this module adds is the watching:

* **Who may watch.** A purpose that needs consent needs a grant that allows *ongoing updates*
  (``ConsentTerms.ongoing_updates``), named in the query (``consent_id``): the stream is tied to
  that one grant. Ex officio purposes (which need no consent and carry a case reference) and
  self-inquiry may watch as they may query: the same institution could poll with the same
  query, and each report is decided and audited on its own all the same.
* **Consent checks.** Every report is decided afresh, so a revoked or expired grant ends the
  stream with the query's own refusal (PERMISSION_DENIED CONSENT_REVOKED, ...) at the next
  change; a quiet stream re-checks every ``recheck_seconds``. The caller's certificate is
  checked again at the same moments: one that has expired or been revoked since the stream
  opened ends it UNAUTHENTICATED (``core.institution``). The first report counts as one
  use of a grant limited in uses; the updates are what ``ongoing_updates`` granted.
* **Limits.** A replica serves at most ``max_watchers`` streams and one caller at most
  ``max_watchers_per_caller`` of them, counted atomically (``gateway.watch.slots``): one
  institution or subject cannot take every slot and lock the others out of watching.
* **Slow watchers.** Changes wait in the subscription's bounded queue (``gateway.watch.feed``),
  never in the feed reader; a watcher whose client stops reading falls behind, its queue fills
  and the stream ends RESOURCE_EXHAUSTED WATCHER_TOO_SLOW (the write it is stuck in is
  abandoned), as it does when one report waits longer than ``max_write_seconds``.

Changes that arrive while a report is prepared are answered by the next report together; every
change appears in exactly one report's ``changes``, in feed order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc

from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.consent import policy
from credgate.consent.register import ConsentRegister, GrantLookup
from credgate.core import identity_number
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.audit_trail import READ_REPAIR_STATUS
from credgate.gateway.disclosure import Ask, decide
from credgate.gateway.telemetry import record_invalid_request
from credgate.gateway.watch.feed import Change, ChangeFeed, Subscription
from credgate.gateway.watch.settings import WatchSettings
from credgate.gateway.watch.slots import WatchSlots

WATCH_METHOD = "/credit_repair.v1.RepairStatusService/WatchRepairStatus"
ONGOING_UPDATES_NOT_CONSENTED = "ONGOING_UPDATES_NOT_CONSENTED"
WATCHER_TOO_SLOW = "WATCHER_TOO_SLOW"

Report = report_pb2.RepairStatusReport
Signed = report_pb2.SignedReport


class Answer(Protocol):
    """``RepairStatusServicer._answer``: decide, build, sign, audit and record one report."""

    async def __call__(
        self,
        institution: Institution,
        request: service_pb2.GetRepairStatusRequest,
        deadline: float,
        *,
        prefix: str = "",
        spend_use: bool = True,
    ) -> tuple[Report, Signed]: ...


class Refuse(Protocol):
    """``RepairStatusServicer._record``: audit a refusal before the caller hears it."""

    async def __call__(
        self,
        institution: Institution,
        request: service_pb2.GetRepairStatusRequest,
        token: str,
        consent: GrantLookup | None,
        reason: str,
        report: Report | None = None,
    ) -> None: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class WatchStreams:
    """Serves WatchRepairStatus streams on one replica over its ``ChangeFeed``."""

    def __init__(
        self,
        feed: ChangeFeed,
        consents: ConsentRegister,
        tokenizer: SubjectTokenizer,
        settings: WatchSettings,
        *,
        deadline_seconds: float,
        clock: Callable[[], dt.datetime] = _utcnow,
        identify: Callable[[grpc.aio.ServicerContext], Institution] | None = None,
    ) -> None:
        self._feed = feed
        self._identify = identify
        self._consents = consents
        self._tokenizer = tokenizer
        self._settings = settings
        self._deadline_seconds = deadline_seconds
        self._clock = clock
        self._slots = WatchSlots.from_settings(settings)

    @property
    def slots(self) -> WatchSlots:
        """The replica's watch slots (open streams, in total and per caller)."""
        return self._slots

    async def serve(
        self,
        institution: Institution,
        request: service_pb2.WatchRepairStatusRequest,
        context: grpc.aio.ServicerContext,
        *,
        answer: Answer,
        refuse: Refuse,
    ) -> None:
        """Run one stream until the caller leaves or a check ends it (by raising its status)."""
        query = request.query  # well-formed: the input boundary checked every field of it
        number = identity_number.normalize(query.identity_number)
        if policy.requires_consent(query.purpose) and not query.consent_id:
            record_invalid_request(WATCH_METHOD)
            raise GatewayError.of(
                grpc.StatusCode.INVALID_ARGUMENT,
                "a watch relies on one named consent grant that allows ongoing updates",
                "CONSENT_ID_REQUIRED",
                field_violations=[("query.consent_id", "is required to watch this purpose")],
            )
        token = self._tokenizer.token(number)
        await self._check_ongoing(institution, query, token, refuse)
        # Taken in one synchronous step before the first await that follows, released however
        # the stream ends (``gateway.watch.slots``).
        slot = self._slots.take(institution.institution_id)
        try:
            subscription = await self._feed.subscribe(token)
            try:
                report, signed = await answer(institution, query, self._deadline())
                await self._send(context, subscription, _response(report, signed, ()))
                await self._follow(institution, query, token, subscription, context, answer)
            finally:
                self._feed.unsubscribe(subscription)
        finally:
            slot.release()

    async def _follow(
        self,
        institution: Institution,
        query: service_pb2.GetRepairStatusRequest,
        token: str,
        subscription: Subscription,
        context: grpc.aio.ServicerContext,
        answer: Answer,
    ) -> None:
        loop = asyncio.get_running_loop()
        recheck_at = loop.time() + self._settings.recheck_seconds
        while True:
            changes = await subscription.next_changes(recheck_at - loop.time())
            if subscription.overflowed.is_set():
                raise _too_slow("fell behind the subject's changes")
            if subscription.closed:
                raise GatewayError.of(
                    grpc.StatusCode.UNAVAILABLE,
                    "the gateway replica is stopping; reconnect to keep watching",
                    "GATEWAY_STOPPING",
                )
            if not changes and loop.time() < recheck_at:
                continue
            if self._identify is not None:
                # The caller's certificate, checked again: one that has expired or been revoked
                # since the stream opened ends it (UNAUTHENTICATED), as it would end a call.
                self._identify(context)
            if changes or not await self._still_allowed(institution, query, token):
                # A refusal raises here, audited like any refusal of the query.
                report, signed = await answer(institution, query, self._deadline(), spend_use=False)
                await self._send(context, subscription, _response(report, signed, changes))
            recheck_at = loop.time() + self._settings.recheck_seconds

    async def _check_ongoing(
        self,
        institution: Institution,
        query: service_pb2.GetRepairStatusRequest,
        token: str,
        refuse: Refuse,
    ) -> None:
        """Refuse a consent-based watch whose (otherwise valid) grant is for single queries."""
        if not policy.requires_consent(query.purpose):
            return
        ask = _ask(institution, query, token)
        decision, consent = await decide(ask, self._consents, now=self._clock())
        grant = consent.grant if consent is not None else None
        if decision.allowed and grant is not None and not grant.ongoing_updates:
            await refuse(institution, query, token, consent, ONGOING_UPDATES_NOT_CONSENTED)
            raise GatewayError.of(
                grpc.StatusCode.PERMISSION_DENIED,
                "the consent grant allows single queries, not ongoing updates",
                ONGOING_UPDATES_NOT_CONSENTED,
                metadata={"role": institution.role_name},
            )

    async def _still_allowed(
        self, institution: Institution, query: service_pb2.GetRepairStatusRequest, token: str
    ) -> bool:
        """The periodic check of a quiet stream: would the query still be allowed? (The
        disclosure gate's own decision, taken without releasing or recording anything.)"""
        ask = _ask(institution, query, token)
        decision, _ = await decide(ask, self._consents, now=self._clock())
        return decision.allowed

    async def _send(
        self,
        context: grpc.aio.ServicerContext,
        subscription: Subscription,
        response: service_pb2.WatchRepairStatusResponse,
    ) -> None:
        """Write one response unless the watcher falls behind (or stalls) meanwhile."""
        if subscription.overflowed.is_set():
            raise _too_slow("fell behind the subject's changes")
        subscription.writing = True
        write = asyncio.ensure_future(context.write(response))
        overflow = asyncio.ensure_future(subscription.overflowed.wait())
        try:
            done, _ = await asyncio.wait(
                {write, overflow},
                timeout=self._settings.max_write_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:  # the call was cancelled (the client left): drop the write too
            _abandon(write)
            raise
        finally:
            subscription.writing = False
            overflow.cancel()
        if write in done:
            write.result()
            return
        _abandon(write)
        raise _too_slow("does not read its stream")

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._deadline_seconds


def _ask(institution: Institution, query: service_pb2.GetRepairStatusRequest, token: str) -> Ask:
    """The query as the disclosure gate weighs it (``RepairStatusServicer`` asks the same)."""
    return Ask(
        institution,
        READ_REPAIR_STATUS,
        token,
        query.purpose,
        categories=query.categories,
        consent_id=query.consent_id,
        case_reference=query.case_reference,
    )


def _response(
    report: Report, signed: Signed, changes: Sequence[Change]
) -> service_pb2.WatchRepairStatusResponse:
    response = service_pb2.WatchRepairStatusResponse(report=report, signed_report=signed)
    for change in changes:
        item = response.changes.add(
            change_id=change.change_id, source_id=change.source_id, sequence=change.sequence
        )
        item.change_time.FromDatetime(change.changed_at)
    return response


def _abandon(write: asyncio.Future[None]) -> None:
    """Cancel a write the client will never take; its late failure is expected, not logged."""
    write.cancel()
    write.add_done_callback(lambda done: done.cancelled() or done.exception())


def _too_slow(what: str) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the watcher {what}; it was dropped so that it cannot slow the gateway down. "
        "Reconnect to receive the current report",
        WATCHER_TOO_SLOW,
    )
