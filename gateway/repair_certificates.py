"""Issuing repair-status certificates and computing their status list (issue #17).

``gateway.repair_certificate_format`` is the signed format; this module is the gateway's
side: it reads the subject's state from a self-inquiry report, keeps one row per certificate
(``RepairCertificateRow``: token, asserted state, expiry — never the identity number) and
signs. The status list is computed when asked for. A certificate whose subject's state now
differs from what it asserts is revoked for good. Which subjects a computation re-evaluates
(through the query engine, with the gateway's configured consistency) is what keeps a refresh
cheap with many certificates out:

* **changed**: subjects the fact index's change feed names since the previous computation (a
  sync push, a live answer, a correction — on any replica), at once;
* **due by the calendar**: subjects whose certificate asserts a date that has now passed (an
  observation period's end), since the state can move with the clock alone;
* **swept**: a rolling slice of every other live certificate's subject, re-checked with the
  sources in turn (at most ``sweep_subjects`` per ``sweep_interval`` seconds), for changes at
  a source that nothing has brought into the index yet.

Re-evaluation needs the identity number, which the fact index keeps encrypted
(``FactIndex.remember_subject``); a subject that cannot be re-evaluated (number or record
unreadable) gets its certificate revoked: a lender is never told "still valid" when the
gateway cannot tell.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Row, func, select, update

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.storage.database import Database
from credgate.core.storage.models import RepairCertificateRow
from credgate.gateway.engine.query import QueryEngine
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.repair_certificate_format import sign_certificate, sign_status_list
from credgate.gateway.sync.models import ChangeFeedRow

log = logging.getLogger(__name__)

_CertificateRow = Row[int, str, int, str, dt.datetime, dt.datetime, dt.datetime | None]
"""status_index, subject_token, asserted_state, asserted_dates, issued_at, expires_at,
revoked_at: the columns a computation reads."""

DEFAULT_LIST_ID = "default"
DEFAULT_VALIDITY_DAYS = 30
REEVALUATION_SECONDS = 5.0
"""Budget for one subject's re-evaluation while a status list is computed."""
SWEEP_SUBJECTS = 64
"""Subjects the rolling sweep re-checks per sweep (see the module docstring)."""
SWEEP_INTERVAL_SECONDS = 60.0
"""The least time between two sweeps: a burst of refreshes does not become a burst of
queries to the sources."""
CONCURRENT_REEVALUATIONS = 8
"""Re-evaluations in flight at once while a list is computed."""
_DATED_STATES = {
    vocab.REPAIR_STATE_RESTORED: ("restored_on",),
    vocab.REPAIR_STATE_OBSERVATION: ("observation_start", "observation_end"),
    vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED: ("observation_start", "observation_end"),
}
"""The dates each state carries in a certificate; other states carry none."""


def _claim(state: int, dates: Mapping[str, str]) -> tuple[int, str]:
    """What a certificate asserts, comparably: its state and its dates as canonical JSON."""
    return state, json.dumps(dict(sorted(dates.items())), separators=(",", ":"))


def state_name(state: int) -> str:
    """``RESTORED`` for ``REPAIR_STATE_RESTORED``: the certificate's ``state`` field."""
    return vocab.RepairState.Name(state).removeprefix("REPAIR_STATE_")  # type: ignore[arg-type]


def state_dates(report: report_pb2.RepairStatusReport) -> dict[str, str]:
    """The dates the report's state carries, from the cases of the source the state follows
    (ISO 8601 days); only the fields ``_DATED_STATES`` names for that state."""
    wanted = _DATED_STATES.get(report.state, ())
    dates: dict[str, str] = {}
    for source in report.sources:
        if source.source_id != report.state_source_id:
            continue
        for case in source.cases:
            for name in wanted:
                day = getattr(case, name)
                if name not in dates and day.year:
                    dates[name] = dt.date(day.year, day.month, day.day).isoformat()
    return dates


class RepairCertificates:
    """Issues certificates and serves the status list. ``signing_key`` returns the gateway's
    current report-signing key (``ReportSigner.current_private_key``)."""

    def __init__(
        self,
        database: Database,
        engine: QueryEngine,
        fact_index: FactIndex,
        signing_key: Callable[[], Ed25519PrivateKey],
        *,
        list_id: str = DEFAULT_LIST_ID,
        default_validity_days: int = DEFAULT_VALIDITY_DAYS,
        sweep_subjects: int = SWEEP_SUBJECTS,
        sweep_interval: float = SWEEP_INTERVAL_SECONDS,
    ) -> None:
        self._db = database
        self._engine = engine
        self._index = fact_index
        self._signing_key = signing_key
        self.list_id = list_id
        self.default_validity_days = default_validity_days
        self.sweep_subjects = sweep_subjects
        self.sweep_interval = sweep_interval
        self._computing = asyncio.Lock()
        self._last: tuple[float, str] | None = None
        """When the last list computation started (monotonic) and the list it produced."""
        self._feed_seen: int | None = None
        """The newest change-feed id the previous computation read (None: none yet)."""
        self._last_sweep: float | None = None
        self._swept_up_to = ""
        """The rolling sweep's position: the last subject token it re-checked."""

    async def issue(
        self,
        report: report_pb2.RepairStatusReport,
        identity_number: str,
        *,
        now: dt.datetime,
        validity_days: int,
    ) -> tuple[str, str]:
        """Record and sign a certificate of ``report``'s state; (certificate id, wire form).

        The row is written before the certificate is signed (its index is the row's key); if
        the disclosure is then not recorded, the certificate is never released and its row
        only ever fills a status bit nobody asks about.
        """
        await self._index.remember_subject(report.subject_token, identity_number)
        certificate_id = uuid.uuid4().hex
        dates = state_dates(report)
        state, asserted_dates = _claim(report.state, dates)
        issued_at = now.replace(microsecond=0)
        expires_at = issued_at + dt.timedelta(days=validity_days or self.default_validity_days)
        row = RepairCertificateRow(
            certificate_id=certificate_id,
            subject_token=report.subject_token,
            asserted_state=state,
            asserted_dates=asserted_dates,
            issued_at=issued_at,
            expires_at=expires_at,
        )
        async with self._db.write() as session:
            session.add(row)
            await session.flush()
            index = row.status_index
        signed = sign_certificate(
            self._signing_key(),
            certificate_id=certificate_id,
            state=state_name(report.state),
            dates=dates,
            issued_at=issued_at,
            expires_at=expires_at,
            status_list_id=self.list_id,
            status_index=index,
            identity_number=identity_number,
        )
        return certificate_id, signed

    async def status_list(self, *, now: dt.datetime) -> str:
        """The signed status list as of ``now``, after re-evaluating the live certificates.

        One computation at a time: callers that arrive while one runs wait for the next, and
        callers that waited while another started after them take its list (it is at least as
        fresh as their request), so a burst of requests costs one re-evaluation, not one each.
        """
        asked = time.monotonic()
        async with self._computing:
            if self._last is not None and self._last[0] >= asked:
                return self._last[1]
            started = time.monotonic()
            signed = await self._compute(now)
            self._last = (started, signed)
            return signed

    async def _compute(self, now: dt.datetime) -> str:
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    select(
                        RepairCertificateRow.status_index,
                        RepairCertificateRow.subject_token,
                        RepairCertificateRow.asserted_state,
                        RepairCertificateRow.asserted_dates,
                        RepairCertificateRow.issued_at,
                        RepairCertificateRow.expires_at,
                        RepairCertificateRow.revoked_at,
                    )
                )
            ).all()
        live = [r for r in rows if r.revoked_at is None and r.expires_at > now]
        due = await self._changed_subjects(live) | _due_by_calendar(live, now.date())
        due |= self._sweep({r.subject_token for r in live} - due)
        claims = await self._current_claims(due)
        newly = [
            r.status_index
            for r in live
            if r.subject_token in due
            and claims.get(r.subject_token) != (r.asserted_state, r.asserted_dates)
        ]
        if newly:
            async with self._db.write() as session:
                await session.execute(
                    update(RepairCertificateRow)
                    .where(RepairCertificateRow.status_index.in_(newly))
                    .values(revoked_at=now)
                )
        revoked = {r.status_index for r in rows if r.revoked_at is not None} | set(newly)
        size = max((r.status_index for r in rows), default=0) + 1
        return sign_status_list(
            self._signing_key(), list_id=self.list_id, issued_at=now, revoked=revoked, size=size
        )

    async def _changed_subjects(self, live: Sequence[_CertificateRow]) -> set[str]:
        """Live certificates' subjects the change feed names since the previous computation.

        The first computation of a process reads back to the oldest live certificate's
        issuance, so what changed while no computation ran (a restart) is not missed.
        """
        if not live:
            return set()
        await self._index.flush()  # this process's live answers' changes, written behind
        feed = select(ChangeFeedRow.subject_token).distinct()
        async with self._db.session() as session:
            newest = (await session.execute(select(func.max(ChangeFeedRow.change_id)))).scalar()
            if self._feed_seen is None:
                oldest = min(r.issued_at for r in live)
                feed = feed.where(ChangeFeedRow.changed_at >= oldest)
            else:
                feed = feed.where(ChangeFeedRow.change_id > self._feed_seen)
            if newest is not None:
                feed = feed.where(ChangeFeedRow.change_id <= newest)
            changed = set((await session.execute(feed)).scalars())
        self._feed_seen = newest or 0
        return changed & {r.subject_token for r in live}

    def _sweep(self, candidates: set[str]) -> set[str]:
        """The next slice of the rolling re-check, if one is due; wraps round the tokens."""
        clock = time.monotonic()
        if self._last_sweep is not None and clock - self._last_sweep < self.sweep_interval:
            return set()
        self._last_sweep = clock
        ordered = sorted(candidates)
        start = bisect.bisect_right(ordered, self._swept_up_to)
        chosen = (ordered[start:] + ordered[:start])[: self.sweep_subjects]
        if chosen:
            self._swept_up_to = chosen[-1]
        return set(chosen)

    async def _current_claims(self, tokens: set[str]) -> Mapping[str, tuple[int, str]]:
        """Each subject's state and dates now; subjects that cannot be evaluated are left
        out (so their certificates are revoked)."""
        gate = asyncio.Semaphore(CONCURRENT_REEVALUATIONS)

        async def claim(token: str) -> tuple[str, tuple[int, str] | None]:
            async with gate:
                return token, await self._claim_now(token)

        found = await asyncio.gather(*(claim(token) for token in sorted(tokens)))
        return {token: c for token, c in found if c is not None}

    async def _claim_now(self, token: str) -> tuple[int, str] | None:
        try:
            number = await self._index.recall_identity(token)
            if number is None:
                return None
            report = await self._engine.report(
                number,
                token,
                purpose=vocab.PURPOSE_SELF_INQUIRY,
                categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR],
                deadline=asyncio.get_running_loop().time() + REEVALUATION_SECONDS,
            )
        except Exception as error:
            log.warning(
                "certificate subject could not be re-evaluated (%s); its certificates are revoked",
                type(error).__name__,
            )
            return None
        return _claim(report.state, state_dates(report))


def _due_by_calendar(live: Sequence[_CertificateRow], today: dt.date) -> set[str]:
    """Subjects whose certificate asserts an observation period that has ended by ``today``:
    the state that end bounds may have moved with the clock alone (the other dates a
    certificate carries, such as ``restored_on``, lie in the past by nature)."""
    due: set[str] = set()
    for row in live:
        ends = json.loads(row.asserted_dates or "{}").get("observation_end")
        if ends is not None and dt.date.fromisoformat(ends) <= today:
            due.add(row.subject_token)
    return due
