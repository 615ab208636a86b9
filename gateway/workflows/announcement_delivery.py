"""Publishing an approved application's announcement in the disclosure platform's public record.

The review that approves an application for public announcement enqueues an
``announcement_publication`` message in its own transaction (``workflows.outbox``); this
delivers it: every source that publishes announcements (``adapters.base.SourceAnnouncements``
— the disclosure platform) is sent the announcement, cut to what an announcement may publish
(``workflows.announcement.notice``), and what it now says is fetched into the index with
change-feed rows, in the transaction that adds the ANNOUNCEMENT_PUBLISHED step. So the
platform's public record — what ``GetRepairStatus`` shows under ``PUBLIC_DISCLOSURE`` — carries
the pending announcement. A source that cannot be reached is retried with backoff (a repeated
reference is the same announcement); an application no longer open to objections by the time
of delivery is not published.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping

from credgate.adapters.base import (
    SourceAdapter,
    announcements_of,
)
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.core.storage.decided_write import decided_write
from credgate.gateway.fact_index.corrections import apply_correction, settle_before_correction
from credgate.gateway.workflows.announcement import notice, objections_open
from credgate.gateway.workflows.applications import ApplicationWorkflow
from credgate.gateway.workflows.common import GATEWAY_ACTOR, Changes, add_steps
from credgate.gateway.workflows.models import RepairApplicationRow
from credgate.gateway.workflows.outbox import ANNOUNCEMENT_PUBLICATION, Message, Outbox, RetryLater
from credgate.gateway.workflows.source_acts import SourceUnreachable, act_then_fetch

log = logging.getLogger(__name__)


class AnnouncementPublisher:
    """Delivers ``announcement_publication`` messages (registered on the outbox)."""

    def __init__(
        self,
        workflow: ApplicationWorkflow,
        adapters: Mapping[str, SourceAdapter],
        outbox: Outbox,
        changes: Changes,
        *,
        clock: Callable[[], dt.datetime],
        source_timeout: float = 3.0,
    ) -> None:
        self._workflow, self._adapters, self._outbox = workflow, adapters, outbox
        self._changes, self._clock, self._timeout = changes, clock, source_timeout
        outbox.handle(ANNOUNCEMENT_PUBLICATION, self.publish)

    async def publish(self, message: Message) -> None:
        application_id = message.workflow_id
        view = await self._workflow.get(application_id)
        database = self._workflow.database
        now = self._clock()
        if view is None or not objections_open(view, now):
            async with decided_write(database, None) as session:
                await self._outbox.done(session, message)
            return
        announced = notice(view, self._workflow.calendar, now)
        number = view.details["identity_number"]
        try:
            round_ = await act_then_fetch(
                self._adapters,
                announcements_of,
                lambda publishes: publishes.publish_announcement(
                    number, announced, timeout=self._timeout
                ),
                number,
                timeout=self._timeout,
                what="announcement",
            )
        except SourceUnreachable:
            raise RetryLater("SOURCE_UNAVAILABLE") from None
        updated = round_.updated
        token = view.row.subject_token
        if updated:
            await settle_before_correction(database, token)
        now = self._clock()
        async with decided_write(database, None) as session:
            fresh = await session.get(RepairApplicationRow, application_id)
            assert fresh is not None
            for facts in updated:  # each only if it wins (facts never go backwards)
                await apply_correction(
                    session, database.backend, self._workflow.sealer.cipher, token, facts, now
                )
            names = ", ".join(f.source_id for f in updated) or "no source (none publishes them)"
            await add_steps(
                session,
                application_id,
                now,
                [
                    (
                        "ANNOUNCEMENT_PUBLISHED",
                        wf.RESPONSIBLE_PARTY_GATEWAY,
                        GATEWAY_ACTOR,
                        f"announcement published in the public record of: {names}",
                    )
                ],
            )
            fresh.version += 1
            fresh.updated_at = now
            await self._outbox.done(session, message)
        self._changes.changed(application_id)
