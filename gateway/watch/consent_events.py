"""WatchConsentEvents: a grantee's or a subject's consent events, live, from a resumable cursor.

The events themselves are written by whoever changes a grant, in the change's own transaction,
numbered in commit order on every backend (``consent.events``). What this module adds:

* **Who may watch what.** An institution of a role that can hold grants (the roles that collect
  consent) sees the events of the grants naming it as *grantee*; a subject (role SUBJECT, a
  certificate naming their current enrolled key, ``gateway.subject_certificate``) sees the events
  of the grants they signed. Every other caller is refused PERMISSION_DENIED, recorded first
  (deny by default). A ``consent_id`` filter must name one of the caller's grants; another's,
  or none, answers NOT_FOUND CONSENT_NOT_FOUND alike, so ids cannot be probed.
* **Cursor.** Each response carries ``cursor``: a page token (``gateway.protection.page_tokens``,
  MACed under the key every replica derives) holding the id of its last event, bound to this
  RPC, the caller (a subject by their token, so the cursor survives a key re-enrolment) and
  the filter. A reconnecting client sends it back and the stream continues
  with the next event: ids are commit-ordered, so nothing is skipped and nothing repeated. A
  forged, altered or foreign cursor is INVALID_ARGUMENT, the same for every cause.
* **Across replicas.** Replicas share the database and nothing else: one reader per replica
  (``ConsentEventHub``) reads the events committed since its last read every
  ``[watch] poll_seconds`` and wakes the streams of their grantees and subjects, which each
  read their own events by id. The hub also runs the expiry sweep that
  writes EXPIRED events (``[watch] expiry_sweep_seconds``), idempotent across replicas.
* **Audit and limits.** The opening of a stream is one audit entry (WATCH_CONSENT_EVENTS); each
  event reports a change that was itself recorded (the grant, revocation or statement's entry,
  the disclosure's entry). A stream takes a watch slot (``gateway.watch.slots``, shared with
  WatchRepairStatus): one caller cannot take every stream of a replica. A client that does not
  take a response within ``max_write_seconds`` is dropped (RESOURCE_EXHAUSTED WATCHER_TOO_SLOW);
  it reconnects with its last cursor and loses nothing. The caller's certificate (and a
  subject's enrolled key) is checked again every ``recheck_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

import grpc
from sqlalchemy import select

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import events
from credgate.consent.events import EventFilter
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from credgate.core.storage.models import ConsentGrantRow
from credgate.gateway.audit_trail import WATCH_CONSENT_EVENTS, AuditTrail
from credgate.gateway.protection.page_tokens import PageScope, PageTokenError, PageTokens
from credgate.gateway.subject_certificate import SubjectCertificates
from credgate.gateway.watch.settings import WatchSettings
from credgate.gateway.watch.slots import WatchSlots

log = logging.getLogger(__name__)

WATCH_CONSENT_EVENTS_RPC = "credit_repair.v1.ConsentService/WatchConsentEvents"
GRANTEE_ROLES = frozenset(
    {
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
        vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION,
        vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY,
        vocab.INSTITUTION_ROLE_STATUTORY_ORGAN,
    }
)
"""Roles that hold grants and may watch them (the roles that collect consent)."""
BATCH = 100
"""Most events in one response; a stream further behind reads again at once."""
CURSOR_VIOLATION = (
    "cursor",
    "is not a cursor this stream issued to this caller for this consent_id",
)
"""The one BadRequest violation for any refused cursor: forged, altered and foreign alike."""
WATCHER_TOO_SLOW = "WATCHER_TOO_SLOW"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


Key = tuple[str, str]
"""Whose events a stream waits for: ``("grantee", institution id)`` or ``("subject", token)``."""
READ_BATCH = 1000
"""Most event rows the hub reads per query; it reads again at once while there are more."""


def key_of(who: EventFilter) -> Key:
    if who.grantee_institution_id is not None:
        return ("grantee", who.grantee_institution_id)
    return ("subject", who.subject_token or "")


class ConsentEventHub:
    """One replica's reader of the consent event log: wakes the streams an event concerns,
    and sweeps expiries.

    It reads each committed event once, in id order (ids are commit-ordered, so reading
    "after the last id read" misses nothing), and wakes only the streams of the event's grantee
    and subject; each stream then reads its own events by id. So a replica costs one query per
    poll however many streams it serves, and an event costs a query only for the streams it
    concerns.
    """

    def __init__(
        self,
        database: Database,
        settings: WatchSettings,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._db = database
        self._settings = settings
        self._clock = clock
        self._waiters: dict[Key, set[asyncio.Event]] = {}
        self._position: int | None = None
        """The last event id read; None until the first read."""
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    def subscribe(self, who: EventFilter) -> asyncio.Event:
        """An event set whenever an event of ``who``'s may have been committed (or the hub
        stops). Subscribe before the first read, so nothing committed after it is missed."""
        waiter = asyncio.Event()
        self._waiters.setdefault(key_of(who), set()).add(waiter)
        return waiter

    def unsubscribe(self, who: EventFilter, waiter: asyncio.Event) -> None:
        key = key_of(who)
        waiting = self._waiters.get(key)
        if waiting is not None:
            waiting.discard(waiter)
            if not waiting:
                del self._waiters[key]

    def start(self) -> None:
        if self._task is None:
            self.stopping = False
            self._task = asyncio.create_task(self._run(), name="consent-event-hub")

    async def stop(self) -> None:
        """Stop reading and sweeping; open streams end (UNAVAILABLE GATEWAY_STOPPING)."""
        self.stopping = True
        self._wake_all()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sweep(self) -> int:
        """Write the EXPIRED events now due (also what the background loop runs); the next
        read wakes whoever they concern."""
        return await events.sweep_expired(self._db, self._clock())

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for waiter in waiting:
                waiter.set()

    async def read(self) -> None:
        """Read the events committed since the last read and wake the streams they concern."""
        if self._position is None:
            self._position = await events.newest_event_id(self._db)
            self._wake_all()  # streams that subscribed before this read look once more
            return
        while True:
            rows = await events.owners_after(self._db, self._position, READ_BATCH)
            for _, grantee, subject_token in rows:
                for key in (("grantee", grantee), ("subject", subject_token)):
                    for waiter in self._waiters.get(key, ()):
                        waiter.set()
            if rows:
                self._position = rows[-1][0]
            if len(rows) < READ_BATCH:
                return

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sweep_at = loop.time()
        while True:
            try:
                if loop.time() >= sweep_at:
                    sweep_at = loop.time() + self._settings.expiry_sweep_seconds
                    await self.sweep()
                await self.read()
            except Exception as exc:  # the database may be briefly away; try again later
                log.warning("reading the consent event log failed: %s", type(exc).__name__)
            await asyncio.sleep(self._settings.poll_seconds)


class ConsentEventStreams:
    """Serves WatchConsentEvents on one replica over its ``ConsentEventHub``."""

    def __init__(
        self,
        hub: ConsentEventHub,
        database: Database,
        subjects: SubjectCertificates,
        settings: WatchSettings,
        slots: WatchSlots,
        *,
        page_tokens: PageTokens,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
    ) -> None:
        self._hub = hub
        self._db = database
        self._subjects = subjects
        self._settings = settings
        self._slots = slots
        self._page_tokens = page_tokens
        self._identify = identify

    async def serve(
        self,
        caller: Institution,
        request: consent_pb2.WatchConsentEventsRequest,
        context: grpc.aio.ServicerContext,
        audit: AuditTrail,
    ) -> None:
        """Run one stream until the caller leaves or a check ends it (by raising its status)."""
        who, token = await self._who(caller, request.consent_id or None, audit)
        # A subject's cursor is bound to the subject, not to the certificate: it survives a key
        # re-enrolment (a new certificate), as the subject's grants do.
        bound_to = f"subject:{token}" if token else caller.institution_id
        scope = PageScope(WATCH_CONSENT_EVENTS_RPC, bound_to, (request.consent_id,))
        after = 0
        if request.cursor:
            try:
                after = self._page_tokens.open_index(request.cursor, scope)
            except PageTokenError:
                raise GatewayError.invalid_request([CURSOR_VIOLATION]) from None
        if request.consent_id and not await self._owns(who, request.consent_id):
            raise GatewayError.of(
                grpc.StatusCode.NOT_FOUND,
                "no consent grant with this id is visible to the caller",
                "CONSENT_NOT_FOUND",
            )
        await audit.record(
            caller,
            WATCH_CONSENT_EVENTS,
            subject_token=token,
            consent_id=request.consent_id,
        )
        slot = self._slots.take(caller.institution_id)
        waiter = self._hub.subscribe(who)
        try:
            await self._follow(caller, who, token, after, scope, waiter, context)
        finally:
            self._hub.unsubscribe(who, waiter)
            slot.release()

    async def _who(
        self, caller: Institution, consent_id: str | None, audit: AuditTrail
    ) -> tuple[EventFilter, str]:
        """Whose events the caller may watch, and the subject token for the audit entry."""
        if caller.role in GRANTEE_ROLES:
            return EventFilter(grantee_institution_id=caller.institution_id,
                               consent_id=consent_id), ""  # fmt: skip
        if caller.role != vocab.INSTITUTION_ROLE_SUBJECT:
            raise await audit.refuse(
                caller,
                WATCH_CONSENT_EVENTS,
                _denied(caller, "ROLE_NOT_PERMITTED", "the caller's role holds no grants"),
            )
        key = await self._subjects.current_key(caller)
        if key is None:
            raise await audit.refuse(
                caller,
                WATCH_CONSENT_EVENTS,
                _denied(
                    caller,
                    "SUBJECT_MISMATCH",
                    "the caller's certificate does not name a current enrolled subject key",
                ),
            )
        return EventFilter(subject_token=key.subject_token, consent_id=consent_id), (
            key.subject_token
        )

    async def _owns(self, who: EventFilter, consent_id: str) -> bool:
        grant = ConsentGrantRow
        query = select(grant.consent_id).where(grant.consent_id == consent_id)
        if who.grantee_institution_id is not None:
            query = query.where(grant.grantee_institution_id == who.grantee_institution_id)
        else:
            query = query.where(grant.subject_token == who.subject_token)
        async with self._db.session() as session:
            return await session.scalar(query) is not None

    async def _follow(
        self,
        caller: Institution,
        who: EventFilter,
        token: str,
        after: int,
        scope: PageScope,
        waiter: asyncio.Event,
        context: grpc.aio.ServicerContext,
    ) -> None:
        loop = asyncio.get_running_loop()
        recheck_at = loop.time() + self._settings.recheck_seconds
        live = False
        """Whether the caller has heard that the backlog is sent (the stream is live)."""
        while True:
            if self._hub.stopping:
                raise GatewayError.of(
                    grpc.StatusCode.UNAVAILABLE,
                    "the gateway replica is stopping; reconnect with the last cursor",
                    "GATEWAY_STOPPING",
                )
            if loop.time() >= recheck_at:
                await self._recheck(caller, context, token)
                recheck_at = loop.time() + self._settings.recheck_seconds
            waiter.clear()  # before reading: a wake-up during the read is not lost
            found = await events.events_after(self._db, who, after, BATCH)
            if found:
                after = found[-1].event_id
                response = consent_pb2.WatchConsentEventsResponse(
                    events=[e.to_proto() for e in found],
                    cursor=self._page_tokens.issue(scope, (after,)),
                )
                await self._send(context, response)
                live = True
                if len(found) == BATCH:
                    continue
            if not live:
                # Caught up with nothing to send: say so at once, with the cursor of this
                # position, so the caller knows the stream is live and can resume from here.
                await self._send(
                    context,
                    consent_pb2.WatchConsentEventsResponse(
                        cursor=self._page_tokens.issue(scope, (after,))
                    ),
                )
                live = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), max(recheck_at - loop.time(), 0.0))

    async def _recheck(
        self, caller: Institution, context: grpc.aio.ServicerContext, token: str
    ) -> None:
        """The caller's certificate, checked again (an expired or revoked one ends the stream
        UNAUTHENTICATED); a subject's key must still be their current one."""
        self._identify(context)
        if token and not await self._subjects.is_subject(caller, token):
            raise _denied(
                caller,
                "SUBJECT_MISMATCH",
                "the caller's certificate no longer names a current enrolled subject key",
            )

    async def _send(
        self, context: grpc.aio.ServicerContext, response: consent_pb2.WatchConsentEventsResponse
    ) -> None:
        write = asyncio.ensure_future(context.write(response))
        try:
            done, _ = await asyncio.wait({write}, timeout=self._settings.max_write_seconds)
        except BaseException:  # the call was cancelled (the client left): drop the write too
            _abandon(write)
            raise
        if write in done:
            write.result()
            return
        _abandon(write)
        raise GatewayError.of(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "the watcher does not read its stream; it was dropped so that it cannot slow the "
            "gateway down. Reconnect with the last cursor to continue",
            WATCHER_TOO_SLOW,
        )


def _abandon(write: asyncio.Future[None]) -> None:
    """Cancel a write the client will never take; its late failure is expected, not logged."""
    write.cancel()
    write.add_done_callback(lambda done: done.cancelled() or done.exception())


def _denied(caller: Institution, reason: str, message: str) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.PERMISSION_DENIED, message, reason, metadata={"role": caller.role_name}
    )
