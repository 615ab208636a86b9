"""A subject's own consent grants, listed by subject token (self-inquiry, measures Art. 15).

``ConsentRegister.list_grants`` answers an *institution*: the grants naming it. A subject
asks the other way round — every grant they signed, whoever it names, in every state — so
that they can see what they agreed to and whether it is still active, paused, revoked,
expired or used up.
The order and the state filter are the register's own (``_in_state`` derives EXPIRED from
the clock exactly as ``Grant.state`` does), so both listings page the same way.

This belongs in ``ConsentRegister`` as ``list_subject_grants``; it lives here until
``consent/register.py`` is next opened, and reuses the register's private row helpers
rather than copying them, so the two cannot drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.consent.grants import ConsentTerms, Grant, StateValue
from credgate.consent.register import ListCursor, grant_page
from credgate.core.storage.database import Database
from credgate.core.storage.models import ConsentGrantRow
from credgate.core.tokens import is_subject_token


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def list_subject_grants(
    database: Database,
    subject_token: str,
    *,
    limit: int,
    after: ListCursor | None = None,
    state: StateValue = consent_pb2.CONSENT_STATE_UNSPECIFIED,
    now: dt.datetime | None = None,
) -> tuple[list[Grant], bool]:
    """Up to ``limit`` of the subject's grants after ``after``, oldest first; and whether more.

    Ordered by (created_at, consent_id), which never changes for a recorded grant, so paging
    is stable while grants are added or revoked.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    if not is_subject_token(subject_token):
        # Never echo the value: it may be an identity number passed by mistake.
        raise ValueError("expected a subject token (st_...), got something else")
    query = select(ConsentGrantRow).where(ConsentGrantRow.subject_token == subject_token)
    return await grant_page(
        database, query, state=state, now=now or _utcnow(), after=after, limit=limit
    )


async def subject_retention_days(
    database: Database, subject_token: str, consent_ids: Iterable[str]
) -> dict[str, int]:
    """``{consent_id: retention_days}`` of those of ``consent_ids`` the subject signed, read from
    the signed terms (the subject's access history shows each release's data life with it)."""
    wanted = sorted({c for c in consent_ids if c})
    if not wanted:
        return {}
    if not is_subject_token(subject_token):
        raise ValueError("expected a subject token (st_...), got something else")
    query = select(ConsentGrantRow.consent_id, ConsentGrantRow.signed_terms).where(
        ConsentGrantRow.subject_token == subject_token, ConsentGrantRow.consent_id.in_(wanted)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    return {
        consent_id: ConsentTerms.FromString(signed_terms).retention_days
        for consent_id, signed_terms in rows
    }
