"""The consent register: subjects' enrolled keys and the grants they signed, in the database.

Everything is read from the database on every call — no cache. That is what makes a revocation
take effect for the very next request on every replica: replicas share the database and
nothing else. ``find_valid_grant`` is the one question the policy decision point asks; it
answers with the grant or the precise reason there is none, and it re-verifies the subject's
signature and the stored copies of the terms each time, so a row edited behind the gateway's
back authorizes nothing.

Callers pass subject tokens, never identity numbers; a value that is not token-shaped is
refused before it could reach a key column.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.consent import events
from credgate.consent.events import EventBatch, GrantParties
from credgate.consent.frequency import effective_max_uses, period_start
from credgate.consent.grants import (
    Category,
    ConsentTerms,
    Grant,
    Purpose,
    StateValue,
    subject_key_id,
    terms_digest,
    verify_signature,
    window_of,
)
from credgate.core.storage.database import Database
from credgate.core.storage.decided_write import decided_write
from credgate.core.storage.models import ConsentGrantRow, SubjectKeyRow
from credgate.core.tokens import is_subject_token

log = logging.getLogger(__name__)

_R = TypeVar("_R")
RecordWrite = Callable[[AsyncSession, _R], Awaitable[object]]
"""Appends the ALLOWED audit entry for a write in the write's own transaction, given what the
write produced (the key or grant it names), so the change and its entry commit together
(``core.storage.decided_write``). None: no entry (callers other than the ConsentService)."""


def _recorder(
    record: RecordWrite[_R] | None, outcome: list[_R]
) -> Callable[[AsyncSession], Awaitable[None]] | None:
    """``record`` bound to the outcome the write leaves in ``outcome`` (none: no entry)."""
    if record is None:
        return None

    async def entry(session: AsyncSession) -> None:
        if outcome:
            await record(session, outcome[-1])

    return entry


CONSENT_VALID = "CONSENT_VALID"
CONSENT_MISSING = "CONSENT_MISSING"
CONSENT_REVOKED = "CONSENT_REVOKED"
CONSENT_EXPIRED = "CONSENT_EXPIRED"
CONSENT_NOT_YET_VALID = "CONSENT_NOT_YET_VALID"
CONSENT_EXHAUSTED = "CONSENT_EXHAUSTED"
CONSENT_PAUSED = "CONSENT_PAUSED"
CONSENT_FREQUENCY_EXCEEDED = "CONSENT_FREQUENCY_EXCEEDED"
PURPOSE_NOT_PERMITTED = "PURPOSE_NOT_PERMITTED"

STATEMENT_NOT_PERMITTED = "CONSENT_STATEMENT_NOT_PERMITTED"
STATEMENT_STALE = "CONSENT_STATEMENT_STALE"
STATE_FINAL = "CONSENT_STATE_FINAL"
_REVERSIBLE = frozenset({consent_pb2.CONSENT_STATE_ACTIVE, consent_pb2.CONSENT_STATE_PAUSED})
"""The states a subject may pause or resume; the others are final."""

_CLOSEST_FIRST = (
    PURPOSE_NOT_PERMITTED,
    CONSENT_FREQUENCY_EXCEEDED,
    CONSENT_PAUSED,
    CONSENT_EXHAUSTED,
    CONSENT_NOT_YET_VALID,
    CONSENT_EXPIRED,
    CONSENT_REVOKED,
)
"""When no grant of the subject's allows a query, the reason reported is that of the grant
closest to allowing it: the one that tells the institution what to ask the subject for (a
paused grant only needs the subject to resume it)."""

_EXPLANATIONS = {
    CONSENT_VALID: "a valid consent grant of the subject covers this query",
    CONSENT_MISSING: "no consent grant of the subject for this institution was found",
    CONSENT_REVOKED: "the consent grant was revoked",
    CONSENT_EXPIRED: "the consent grant's validity window has ended",
    CONSENT_NOT_YET_VALID: "the consent grant's validity window has not begun",
    CONSENT_EXHAUSTED: "the consent grant's maximum number of uses has been reached",
    CONSENT_PAUSED: "the subject has paused the consent grant",
    CONSENT_FREQUENCY_EXCEEDED: (
        "the consent grant's uses for this period have been spent; the next period allows more"
    ),
    PURPOSE_NOT_PERMITTED: "the consent grant does not cover this purpose",
}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _require_token(token: str) -> None:
    if not is_subject_token(token):
        # Never echo the value: it may be an identity number passed by mistake.
        raise ValueError("expected a subject token (st_...), got something else")


def _lock_key(subject_token: str) -> int:
    """A signed 64-bit advisory-lock key for one subject's enrolments."""
    digest = hashlib.sha256(b"credgate/subject-keys/" + subject_token.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def new_consent_id() -> str:
    """A fresh, unguessable grant id: ``cg_`` + 26 lower-case base32 characters (128 random
    bits).

    Random rather than sequential, so an id reveals neither how many grants exist nor when.
    Base32, not hex: the id is copied into the audit log, which refuses anything shaped like
    an identity number, and 32 hex digits hold a run of exactly 18 decimal ones about once in
    two thousand ids; base32's only digits are 2-7.
    """
    return "cg_" + base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


class SubjectKeyConflictError(Exception):
    """The public key is already enrolled for a different subject."""


class StateChangeRefused(Exception):
    """A subject's statement the register will not apply; ``reason`` is the ErrorInfo reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GrantIntegrityError(Exception):
    """A stored grant disagrees with its signed terms or its signature: it was altered."""


@dataclass(frozen=True)
class EnrolledKey:
    """A subject's enrolled signing key."""

    key_id: str
    subject_token: str
    public_key: bytes
    enrolled_by: str
    enrolled_at: dt.datetime
    retired_at: dt.datetime | None

    @property
    def current(self) -> bool:
        """Whether this is the subject's current key (new grants must be signed with it)."""
        return self.retired_at is None


@dataclass(frozen=True)
class GrantLookup:
    """The answer to "may this institution rely on the subject's consent for this purpose?".

    ``reason`` is ``CONSENT_VALID`` or an UPPER_SNAKE denial reason fit for an ``ErrorInfo``
    and the audit entry; ``categories`` is what the grant allows (empty unless allowed).
    """

    reason: str
    grant: Grant | None = None

    @property
    def allowed(self) -> bool:
        """True only for a grant that is active, in its window, for the purpose, not used up."""
        return self.reason == CONSENT_VALID

    @property
    def explanation(self) -> str:
        """A sentence for the error message; it names no person."""
        return _EXPLANATIONS[self.reason]

    @property
    def categories(self) -> frozenset[Category]:
        """The data categories the grant allows, or nothing when not allowed."""
        return self.grant.categories if self.allowed and self.grant else frozenset()

    @property
    def consent_id(self) -> str:
        """The grant the answer is about ("" when none was found), for the audit entry."""
        return self.grant.consent_id if self.grant else ""


@dataclass(frozen=True)
class ListCursor:
    """A position in the (created_at, consent_id) order of a grant listing."""

    created_at: dt.datetime
    consent_id: str


def evaluate(grant: Grant, purpose: Purpose, now: dt.datetime) -> str:
    """Why ``grant`` does or does not allow a query for ``purpose`` at ``now``.

    Revocation is checked first (an explicit act), then the window, then the purpose, the use
    count, the subject's pause (a used-up grant reports EXHAUSTED, as its state does) and
    finally the frequency limit of ``now``'s period (which passes when the next period begins).
    """
    if grant.revoked_at is not None:
        return CONSENT_REVOKED
    if now >= grant.not_after:
        return CONSENT_EXPIRED
    if now < grant.not_before:
        return CONSENT_NOT_YET_VALID
    if purpose not in grant.purposes:
        return PURPOSE_NOT_PERMITTED
    if grant.exhausted:
        return CONSENT_EXHAUSTED
    if grant.paused_at is not None:
        return CONSENT_PAUSED
    if grant.frequency_exceeded(now):
        return CONSENT_FREQUENCY_EXCEEDED
    return CONSENT_VALID


def grant_of(row: ConsentGrantRow) -> Grant:
    return Grant.from_terms(
        consent_id=row.consent_id,
        subject_token=row.subject_token,
        signed_terms=row.signed_terms,
        signature=row.signature,
        created_at=row.created_at,
        use_count=row.use_count,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        paused_at=row.paused_at,
        revoked_by_key_id=row.revoked_by_key_id,
        statement_issued_at=row.statement_issued_at,
        period_start=row.period_start,
        period_uses=row.period_uses,
    )


def _parties(row: ConsentGrantRow) -> GrantParties:
    return GrantParties(row.consent_id, row.subject_token, row.grantee_institution_id)


def _transitions(row: ConsentGrantRow, was_revoked: bool, was_paused: bool) -> list[events.Kind]:
    """The events a subject's statement caused: REVOKED when it revoked the grant now, else
    PAUSED or RESUMED when it changed the pause (a repeated statement causes none)."""
    if row.revoked_at is not None:
        return [] if was_revoked else [events.REVOKED]
    if row.paused_at is not None and not was_paused:
        return [events.PAUSED]
    if row.paused_at is None and was_paused:
        return [events.RESUMED]
    return []


def _key_of(row: SubjectKeyRow) -> EnrolledKey:
    return EnrolledKey(
        key_id=row.key_id,
        subject_token=row.subject_token,
        public_key=row.public_key,
        enrolled_by=row.enrolled_by,
        enrolled_at=row.enrolled_at,
        retired_at=row.retired_at,
    )


def _checked_grant(row: ConsentGrantRow, public_key: bytes) -> Grant:
    """The grant, after proving the row still is what the subject signed."""
    grant = grant_of(row)
    copies_agree = (
        grant.subject_key_id == row.subject_key_id
        and grant.grantee_institution_id == row.grantee_institution_id
        and grant.collecting_institution_id == row.collecting_institution_id
        and (grant.not_before, grant.not_after) == (row.not_before, row.not_after)
        and grant.max_uses == row.max_uses
        and grant.ongoing_updates == row.ongoing_updates
        and terms_digest(row.signed_terms) == row.terms_digest
    )
    if not copies_agree or not verify_signature(public_key, row.signed_terms, row.signature):
        raise GrantIntegrityError(f"consent grant {row.consent_id} fails its integrity check")
    return grant


def _visible_to(institution_id: str) -> ColumnElement[bool]:
    return or_(
        ConsentGrantRow.grantee_institution_id == institution_id,
        ConsentGrantRow.collecting_institution_id == institution_id,
    )


def _in_state(state: StateValue, now: dt.datetime) -> ColumnElement[bool] | None:
    """SQL for a state filter: exactly ``Grant.state`` (EXPIRED from the clock, EXHAUSTED from
    the use count, first of REVOKED, EXPIRED, EXHAUSTED, PAUSED)."""
    not_revoked = ConsentGrantRow.revoked_at.is_(None)
    live = and_(not_revoked, ConsentGrantRow.not_after > now)
    exhausted = and_(
        ConsentGrantRow.max_uses > 0, ConsentGrantRow.use_count >= ConsentGrantRow.max_uses
    )
    uses_left = or_(
        ConsentGrantRow.max_uses == 0, ConsentGrantRow.use_count < ConsentGrantRow.max_uses
    )
    if state == consent_pb2.CONSENT_STATE_ACTIVE:
        return and_(live, uses_left, ConsentGrantRow.paused_at.is_(None))
    if state == consent_pb2.CONSENT_STATE_EXHAUSTED:
        return and_(live, exhausted)
    if state == consent_pb2.CONSENT_STATE_PAUSED:
        return and_(live, uses_left, ConsentGrantRow.paused_at.is_not(None))
    if state == consent_pb2.CONSENT_STATE_EXPIRED:
        return and_(not_revoked, ConsentGrantRow.not_after <= now)
    if state == consent_pb2.CONSENT_STATE_REVOKED:
        return ConsentGrantRow.revoked_at.is_not(None)
    return None


class ConsentRegister:
    """Stores and answers questions about enrolled keys and consent grants."""

    def __init__(self, database: Database, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._db = database
        self._clock = clock

    # -- enrolled keys --------------------------------------------------------------------------

    async def enroll_key(
        self,
        subject_token: str,
        public_key: bytes,
        enrolled_by: str,
        *,
        record: RecordWrite[EnrolledKey] | None = None,
    ) -> EnrolledKey:
        """Make ``public_key`` the subject's current key, retiring any other; idempotent.

        Raises ``SubjectKeyConflictError`` when the key belongs to another subject: one key
        must identify one person, or a signature would not say who agreed.
        """
        _require_token(subject_token)
        key_id = subject_key_id(public_key)
        now = self._clock()
        try:
            return await self._enroll(subject_token, key_id, public_key, enrolled_by, now, record)
        except IntegrityError:
            # Only the key id can collide: another subject enrolled this very key meanwhile.
            raise SubjectKeyConflictError(f"key {key_id} is enrolled for another subject") from None

    async def _enroll(
        self,
        subject_token: str,
        key_id: str,
        public_key: bytes,
        enrolled_by: str,
        now: dt.datetime,
        record: RecordWrite[EnrolledKey] | None,
    ) -> EnrolledKey:
        outcome: list[EnrolledKey] = []
        async with decided_write(self._db, _recorder(record, outcome)) as session:
            if self._db.backend == "postgresql":
                # One enrolment per subject at a time, so two new keys cannot both end up
                # current (SQLite's BEGIN IMMEDIATE already serializes every writer).
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(subject_token)}
                )
            existing = await session.get(SubjectKeyRow, key_id)
            if existing is not None and existing.subject_token != subject_token:
                raise SubjectKeyConflictError(f"key {key_id} is enrolled for another subject")
            await session.execute(
                update(SubjectKeyRow)
                .where(
                    SubjectKeyRow.subject_token == subject_token,
                    SubjectKeyRow.key_id != key_id,
                    SubjectKeyRow.retired_at.is_(None),
                )
                .values(retired_at=now)
                .execution_options(synchronize_session=False)
            )
            if existing is None:
                existing = SubjectKeyRow(
                    key_id=key_id,
                    subject_token=subject_token,
                    public_key=public_key,
                    enrolled_by=enrolled_by,
                    enrolled_at=now,
                    retired_at=None,
                )
                session.add(existing)
            else:
                existing.retired_at = None  # re-enrolling an old key makes it current again
            await session.flush()
            outcome.append(_key_of(existing))
        return outcome[-1]

    async def subject_key(self, key_id: str) -> EnrolledKey | None:
        """The enrolled key with this id, current or retired, or ``None``."""
        async with self._db.session() as session:
            row = await session.get(SubjectKeyRow, key_id)
            return None if row is None else _key_of(row)

    # -- grants ---------------------------------------------------------------------------------

    async def record_grant(
        self,
        subject_token: str,
        terms: ConsentTerms,
        signed_terms: bytes,
        signature: bytes,
        *,
        record: RecordWrite[Grant] | None = None,
    ) -> tuple[Grant, bool]:
        """Store a grant whose signature the caller has verified; ``(grant, newly_recorded)``.

        Recording the same signed terms twice returns the first grant unchanged — a retry is
        harmless and a replay can never revive a revoked grant.
        """
        _require_token(subject_token)
        digest = terms_digest(signed_terms)
        not_before, not_after = window_of(terms)
        row = ConsentGrantRow(
            consent_id=new_consent_id(),
            subject_token=subject_token,
            subject_key_id=terms.subject_key_id,
            grantee_institution_id=terms.grantee_institution_id,
            collecting_institution_id=terms.collecting_institution_id,
            not_before=not_before,
            not_after=not_after,
            ongoing_updates=terms.ongoing_updates,
            max_uses=effective_max_uses(terms),
            use_count=0,
            period_start=None,
            period_uses=0,
            signed_terms=signed_terms,
            terms_digest=digest,
            signature=signature,
            created_at=self._clock(),
            revoked_at=None,
            revoked_by=None,
        )
        outcome: list[Grant] = []
        batch = EventBatch()
        try:
            async with decided_write(self._db, batch.after(_recorder(record, outcome))) as session:
                existing = await self._by_digest(session, digest)
                if existing is None:
                    session.add(row)
                    await session.flush()
                    batch.add(_parties(row), events.GRANTED, row.created_at)
                outcome.append(existing or grant_of(row))
            return outcome[-1], existing is None
        except IntegrityError:
            # A concurrent request recorded the same terms first (PostgreSQL; SQLite's
            # BEGIN IMMEDIATE serializes the two), and this transaction, entry and all, rolled
            # back. Theirs is the grant: answered like a retry, with its own entry.
            outcome.clear()
            batch.rows.clear()
            async with decided_write(self._db, _recorder(record, outcome)) as session:
                existing = await self._by_digest(session, digest)
                if existing is None:
                    raise
                outcome.append(existing)
            return existing, False

    @staticmethod
    async def _by_digest(session: AsyncSession, digest: str) -> Grant | None:
        row = await session.scalar(
            select(ConsentGrantRow).where(ConsentGrantRow.terms_digest == digest)
        )
        return None if row is None else grant_of(row)

    async def get_grant(self, consent_id: str, visible_to: str) -> Grant | None:
        """The grant if it names ``visible_to``; ``None`` alike when absent or not theirs."""
        async with self._db.session() as session:
            row = await session.scalar(
                select(ConsentGrantRow).where(
                    ConsentGrantRow.consent_id == consent_id, _visible_to(visible_to)
                )
            )
            return None if row is None else (await counted_grants(session, [row]))[0]

    async def get_subject_grant(self, consent_id: str, subject_token: str) -> Grant | None:
        """The grant if ``subject_token``'s subject signed it; ``None`` alike when absent or
        another subject's (the subject's side of ``get_grant``: receipts)."""
        async with self._db.session() as session:
            row = await session.scalar(
                select(ConsentGrantRow).where(
                    ConsentGrantRow.consent_id == consent_id,
                    ConsentGrantRow.subject_token == subject_token,
                )
            )
            return None if row is None else (await counted_grants(session, [row]))[0]

    async def list_grants(
        self,
        visible_to: str,
        *,
        limit: int,
        after: ListCursor | None = None,
        state: StateValue = consent_pb2.CONSENT_STATE_UNSPECIFIED,
        subject_token: str | None = None,
        now: dt.datetime | None = None,
    ) -> tuple[list[Grant], bool]:
        """Up to ``limit`` grants naming ``visible_to`` after ``after``; and whether more exist.

        Ordered by (created_at, consent_id), which never changes for a recorded grant, so
        paging is stable while grants are added or revoked.
        """
        if limit < 1:
            raise ValueError("limit must be positive")
        query = select(ConsentGrantRow).where(_visible_to(visible_to))
        if subject_token is not None:
            _require_token(subject_token)
            query = query.where(ConsentGrantRow.subject_token == subject_token)
        return await grant_page(
            self._db, query, state=state, now=now or self._clock(), after=after, limit=limit
        )

    async def revoke(
        self,
        consent_id: str,
        by_institution: str,
        *,
        record: RecordWrite[Grant] | None = None,
    ) -> Grant | None:
        """Revoke at once; ``None`` when the grant does not exist or does not name the caller.

        Revoking a revoked grant changes nothing (the first revocation's time and author stay).
        """
        outcome: list[Grant] = []
        batch = EventBatch()
        now = self._clock()
        async with decided_write(self._db, batch.after(_recorder(record, outcome))) as session:
            changed = await session.execute(
                update(ConsentGrantRow)
                .where(
                    ConsentGrantRow.consent_id == consent_id,
                    _visible_to(by_institution),
                    ConsentGrantRow.revoked_at.is_(None),
                )
                .values(revoked_at=now, revoked_by=by_institution)
                .execution_options(synchronize_session=False)
            )
            row = await session.scalar(
                select(ConsentGrantRow).where(
                    ConsentGrantRow.consent_id == consent_id, _visible_to(by_institution)
                )
            )
            if row is not None:  # a grant not visible to the caller: no change, no entry
                outcome.append(grant_of(row))
                if getattr(changed, "rowcount", 0):
                    batch.add(_parties(row), events.REVOKED, now)
        return outcome[-1] if outcome else None

    async def change_state(
        self,
        consent_id: str,
        key: EnrolledKey,
        new_state: StateValue,
        issued_at: dt.datetime,
        *,
        record: RecordWrite[Grant] | None = None,
    ) -> Grant:
        """Apply the subject's verified statement (signed with ``key``) to their grant.

        Raises ``StateChangeRefused`` — rolling back, leaving no ALLOWED entry — when the grant
        is not this subject's (or does not exist: the same refusal), when the statement is not
        later than the last one applied (a replay, or an older statement overtaking a newer
        one), or when a final grant (revoked, expired, used up) is asked to pause or resume.
        Asking for the state the grant is already in changes nothing but the statement time.
        """
        _require_token(key.subject_token)
        now = self._clock()
        outcome: list[Grant] = []
        batch = EventBatch()
        async with decided_write(self._db, batch.after(_recorder(record, outcome))) as session:
            row = await session.scalar(
                select(ConsentGrantRow)
                .where(
                    ConsentGrantRow.consent_id == consent_id,
                    ConsentGrantRow.subject_token == key.subject_token,
                )
                .with_for_update()
            )
            if row is None:
                raise StateChangeRefused(STATEMENT_NOT_PERMITTED)
            if row.statement_issued_at is not None and issued_at <= row.statement_issued_at:
                raise StateChangeRefused(STATEMENT_STALE)
            current = grant_of(row).state(now)
            was = (row.revoked_at is not None, row.paused_at is not None)
            if new_state == consent_pb2.CONSENT_STATE_REVOKED:
                if row.revoked_at is None:
                    row.revoked_at, row.revoked_by_key_id, row.paused_at = now, key.key_id, None
            elif current not in _REVERSIBLE:
                raise StateChangeRefused(STATE_FINAL)
            elif new_state == consent_pb2.CONSENT_STATE_PAUSED:
                row.paused_at = row.paused_at or now
            else:
                row.paused_at = None
            row.statement_issued_at = issued_at
            await session.flush()
            for kind in _transitions(row, *was):
                batch.add(_parties(row), kind, now)
            outcome.append(grant_of(row))
        return outcome[-1]

    async def record_use(self, consent_id: str, purpose: int = 0) -> bool:
        """Count one query against the grant, atomically; False if revoked, paused, used up or
        at its frequency limit for the current period meanwhile.

        ``find_valid_grant`` only reads; a query that relies on a grant limited in uses (over
        its life or per period) calls this before answering. The row is locked (``FOR UPDATE``
        on PostgreSQL; SQLite write transactions begin IMMEDIATE) while both limits are checked
        and the counts raised, so concurrent queries on any number of replicas spend exactly
        the uses allowed. The period is that of the register's clock at the time of the use.

        The use is reported in the same transaction (``consent.events``): USED for
        ``purpose``, then EXHAUSTED when it was the grant's last.
        """
        now = self._clock()
        batch = EventBatch()
        async with self._db.write() as session:
            row = await session.scalar(
                select(ConsentGrantRow)
                .where(
                    ConsentGrantRow.consent_id == consent_id,
                    ConsentGrantRow.revoked_at.is_(None),
                    ConsentGrantRow.paused_at.is_(None),
                )
                .with_for_update()
            )
            if row is None or (row.max_uses and row.use_count >= row.max_uses):
                return False
            grant = grant_of(row)
            if grant.frequency_max_uses:
                start = period_start(now, grant.frequency_period)
                if row.period_start is None or start > row.period_start:
                    row.period_start, row.period_uses = start, 0
                # A use whose clock reads an earlier period than the one counted (a replica's
                # clock a little behind) counts in the later one: never starts an old one anew.
                if row.period_uses >= grant.frequency_max_uses:
                    return False
                row.period_uses += 1
            row.use_count += 1
            batch.add(_parties(row), events.USED, now, purpose)
            if row.max_uses and row.use_count >= row.max_uses:
                batch.add(_parties(row), events.EXHAUSTED, now)
            await batch.write(session)
            return True

    async def report_use(self, grant: Grant, purpose: int) -> None:
        """Write the USED event of a disclosure under ``grant`` whose use was not counted and
        whose audit entry committed with a write of its own (a workflow filing), right after
        that commit (``consent.events``; every other USED event shares its change's
        transaction)."""
        batch = EventBatch()
        parties = GrantParties(grant.consent_id, grant.subject_token, grant.grantee_institution_id)
        batch.add(parties, events.USED, self._clock(), purpose)
        async with decided_write(self._db, None) as session:  # the call's entry is committed
            await batch.write(session)

    async def find_valid_grant(
        self,
        subject_token: str,
        institution_id: str,
        purpose: Purpose,
        consent_id: str | None,
        now: dt.datetime,
    ) -> GrantLookup:
        """The subject's grant that lets ``institution_id`` query for ``purpose`` at ``now``.

        With a ``consent_id`` only that grant is considered, and only if it is the subject's
        and names the institution as grantee — otherwise ``CONSENT_MISSING``, the same as for
        an id that does not exist. Without one, every grant of the subject's to the institution
        is considered and the first that allows the query wins.
        """
        _require_token(subject_token)
        query = (
            select(ConsentGrantRow, SubjectKeyRow.public_key)
            .join(SubjectKeyRow, SubjectKeyRow.key_id == ConsentGrantRow.subject_key_id)
            .where(
                ConsentGrantRow.subject_token == subject_token,
                SubjectKeyRow.subject_token == subject_token,
                ConsentGrantRow.grantee_institution_id == institution_id,
            )
            .order_by(ConsentGrantRow.created_at, ConsentGrantRow.consent_id)
        )
        if consent_id is not None:
            query = query.where(ConsentGrantRow.consent_id == consent_id)
        async with self._db.session() as session:
            rows = (await session.execute(query)).all()
        return self._best(rows, purpose, now)

    @staticmethod
    def _best(
        rows: Sequence[tuple[ConsentGrantRow, bytes]], purpose: Purpose, now: dt.datetime
    ) -> GrantLookup:
        found: dict[str, Grant] = {}
        for row, public_key in rows:
            try:
                grant = _checked_grant(row, public_key)
            except GrantIntegrityError:
                log.error("consent grant %s failed its integrity check; ignored", row.consent_id)
                continue
            reason = evaluate(grant, purpose, now)
            if reason == CONSENT_VALID:
                return GrantLookup(CONSENT_VALID, grant)
            found.setdefault(reason, grant)
        for reason in _CLOSEST_FIRST:
            if reason in found:
                return GrantLookup(reason, found[reason])
        return GrantLookup(CONSENT_MISSING)


async def grant_page(
    database: Database,
    query: Select[ConsentGrantRow],
    *,
    state: StateValue,
    now: dt.datetime,
    after: ListCursor | None,
    limit: int,
) -> tuple[list[Grant], bool]:
    """One page of ``query``'s grants in (created_at, consent_id) order — which never changes
    for a recorded grant, so paging is stable while grants are added or revoked — filtered by
    ``state`` at ``now``; and whether more exist. Every grant listing pages through here."""
    state_filter = _in_state(state, now)
    if state_filter is not None:
        query = query.where(state_filter)
    if after is not None:
        query = query.where(
            or_(
                ConsentGrantRow.created_at > after.created_at,
                and_(
                    ConsentGrantRow.created_at == after.created_at,
                    ConsentGrantRow.consent_id > after.consent_id,
                ),
            )
        )
    query = query.order_by(ConsentGrantRow.created_at, ConsentGrantRow.consent_id)
    async with database.session() as session:
        rows = (await session.scalars(query.limit(limit + 1))).all()
        return await counted_grants(session, rows[:limit]), len(rows) > limit


async def counted_grants(session: AsyncSession, rows: Sequence[ConsentGrantRow]) -> list[Grant]:
    """``grant_of`` each row, with ``use_count`` the queries that relied on the grant however
    they were counted: on the row for a grant limited in uses (``record_use``), as USED events
    for one without a limit (whose disclosures write no row of their own). The larger of the
    two stands, so a grant used before the event log existed keeps its row's count."""
    unlimited = [row.consent_id for row in rows if not row.max_uses]
    used = await events.used_counts(session, unlimited)
    grants = [grant_of(row) for row in rows]
    return [
        dataclasses.replace(g, use_count=max(g.use_count, used.get(g.consent_id, 0)))
        if g.consent_id in used
        else g
        for g in grants
    ]
