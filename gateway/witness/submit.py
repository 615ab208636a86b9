"""The gateway's side of witnessing: every new checkpoint goes to each configured witness.

For each witness the submitter remembers the size the witness last cosigned (in memory, and
in ``audit_witness_status`` so a restart or another replica starts from it), sends
``add-checkpoint`` with the consistency proof from that size, and on ``409 Conflict`` learns
the witness's size and tries once more with the right proof. A 200's cosignature is verified
with the configured key and stored in ``audit_cosignatures``; anything else is recorded as the
witness's status and logged, for the console and the operator:

* ``refused`` — 4xx: most tellingly 422, the witness holds a tree this checkpoint does not
  extend (a fork, or history rewritten);
* ``ahead`` — the witness cosigned a larger tree than this checkpoint: the log lost entries
  (truncated, or restored from an older copy). CRITICAL: this is the rollback the witness
  exists to expose;
* ``unreachable`` / ``error`` — it could not be asked; the next checkpoint tries again.

Nothing here blocks the gateway: a failed submission is logged and retried with the next
checkpoint. Errors never propagate into the checkpointer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from sqlalchemy import insert, select

from credgate.audit.checkpoint import SignedCheckpoint
from credgate.audit.cosignature import CosignerVerifier
from credgate.audit.storage import consistency_proof
from credgate.audit.store_models import AuditCosignatureRow, AuditWitnessStatusRow
from credgate.core.storage.database import Database
from credgate.core.telemetry.instruments import record_witness_submission
from credgate.gateway.config import GatewayConfig
from credgate.gateway.witness.client import (
    DEFAULT_TIMEOUT_SECONDS,
    WitnessEndpoint,
    WitnessUnavailable,
    add_checkpoint,
)

log = logging.getLogger(__name__)

_ATTEMPTS = 3
"""One try, a retry after learning the size from a 409, and one more for a race with another
replica that moved the witness meanwhile."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Submission:
    """What became of one checkpoint at one witness."""

    witness: str
    outcome: str
    tree_size: int
    cosigned_size: int | None
    detail: str


class WitnessSubmitter:
    """Submits checkpoints to the configured witnesses and stores what they answer."""

    def __init__(
        self,
        database: Database,
        endpoints: Sequence[WitnessEndpoint],
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            raise ValueError("two witnesses share a key name")
        self._database = database
        self._endpoints = tuple(endpoints)
        self._timeout = timeout_seconds
        self._clock = clock
        self._known: dict[str, int] = {}
        self._cosigned: dict[str, int] = {}
        self._lock = asyncio.Lock()

    @property
    def endpoints(self) -> tuple[WitnessEndpoint, ...]:
        """The configured witnesses."""
        return self._endpoints

    async def submit(self, signed: SignedCheckpoint) -> list[Submission]:
        """Submit ``signed`` to every witness not yet holding it; one result per witness.

        Never raises for a witness's failure (each is logged and recorded)."""
        if not self._endpoints:
            return []
        async with (
            self._lock,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout)) as session,
        ):
            return list(
                await asyncio.gather(
                    *(self._submit_one(session, e, signed) for e in self._endpoints)
                )
            )

    async def _submit_one(
        self, session: aiohttp.ClientSession, endpoint: WitnessEndpoint, signed: SignedCheckpoint
    ) -> Submission:
        size = signed.checkpoint.tree_size
        if self._cosigned.get(endpoint.name) == size:
            return Submission(endpoint.name, "cosigned", size, size, "already cosigned")
        try:
            submission = await self._attempt(session, endpoint, signed)
        except WitnessUnavailable as exc:
            submission = Submission(
                endpoint.name, "unreachable", size, self._known.get(endpoint.name), str(exc)
            )
        except Exception as exc:  # a bug or the database: logged, the next checkpoint retries
            submission = Submission(
                endpoint.name,
                "error",
                size,
                self._known.get(endpoint.name),
                f"{type(exc).__name__}: {exc}",
            )
        self._report(endpoint, submission)
        try:
            await self._record_status(endpoint, submission)
        except Exception as exc:
            log.error("could not record witness %s status: %s", endpoint.name, exc)
        return submission

    async def _attempt(
        self, session: aiohttp.ClientSession, endpoint: WitnessEndpoint, signed: SignedCheckpoint
    ) -> Submission:
        size = signed.checkpoint.tree_size
        old = self._known.get(endpoint.name)
        if old is None:
            old = await self._stored_size(endpoint.name)
        for _ in range(_ATTEMPTS):
            if old > size:
                return Submission(
                    endpoint.name,
                    "ahead",
                    size,
                    old,
                    f"the witness cosigned size {old} but this log's checkpoint has size "
                    f"{size}: {old - size} entries the witness saw are gone (truncated or "
                    "rolled back)",
                )
            proof = [] if old in (0, size) else await consistency_proof(self._database, old, size)
            result = await add_checkpoint(session, endpoint, old, proof, signed)
            if result.status == 409 and result.known_size is not None:
                old = result.known_size
                self._known[endpoint.name] = old
                continue
            if result.status == 200 and result.cosigned_note is not None:
                await self._store(endpoint, signed, result.cosigned_note, result.cosigned_at)
                self._known[endpoint.name] = size
                self._cosigned[endpoint.name] = size
                return Submission(endpoint.name, "cosigned", size, size, "")
            why = "inconsistent with what it cosigned" if result.status == 422 else "refused"
            return Submission(
                endpoint.name,
                "refused",
                size,
                old,
                f"HTTP {result.status} ({why}) from old size {old}: {result.body}",
            )
        return Submission(
            endpoint.name, "error", size, old, "the witness kept moving (409) while we retried"
        )

    def _report(self, endpoint: WitnessEndpoint, submission: Submission) -> None:
        record_witness_submission(endpoint.name, submission.outcome)
        if submission.outcome == "cosigned":
            log.info(
                "witness %s cosigned the audit log at size %d", endpoint.name, submission.tree_size
            )
        elif submission.outcome == "ahead":
            log.critical("witness %s: %s", endpoint.name, submission.detail)
        elif submission.outcome == "refused":
            log.error(
                "witness %s refused the audit checkpoint of size %d: %s",
                endpoint.name,
                submission.tree_size,
                submission.detail,
            )
        else:
            log.warning(
                "witness %s not reached for the audit checkpoint of size %d: %s",
                endpoint.name,
                submission.tree_size,
                submission.detail,
            )

    async def _stored_size(self, name: str) -> int:
        async with self._database.session() as session:
            size = await session.scalar(
                select(AuditWitnessStatusRow.cosigned_size).where(
                    AuditWitnessStatusRow.witness_name == name
                )
            )
        return int(size or 0)

    async def _store(
        self, endpoint: WitnessEndpoint, signed: SignedCheckpoint, note: str, at: int | None
    ) -> None:
        now = self._clock()
        cosigned_at = dt.datetime.fromtimestamp(at, dt.UTC) if at is not None else now
        async with self._database.write() as session:
            await session.execute(
                insert(AuditCosignatureRow).values(
                    witness_name=endpoint.name,
                    witness_key_id=endpoint.verifier.key_id.hex(),
                    tree_size=signed.checkpoint.tree_size,
                    root_hash=signed.checkpoint.root_hash,
                    cosigned_at=cosigned_at,
                    received_at=now,
                    note=note,
                )
            )

    async def _record_status(self, endpoint: WitnessEndpoint, submission: Submission) -> None:
        now = self._clock()
        async with self._database.write() as session:
            row = await session.get(AuditWitnessStatusRow, endpoint.name, with_for_update=True)
            if row is None:
                row = AuditWitnessStatusRow(witness_name=endpoint.name, cosigned_at=None)
                session.add(row)
            row.url = endpoint.url
            row.submitted_size = submission.tree_size
            row.outcome = submission.outcome
            row.detail = submission.detail
            row.attempted_at = now
            if submission.cosigned_size is not None:
                row.cosigned_size = submission.cosigned_size
            if submission.outcome == "cosigned":
                row.cosigned_at = now


def endpoints_from_config(config: GatewayConfig) -> list[WitnessEndpoint]:
    """The ``[audit] witnesses`` entries as endpoints (their keys were checked at load)."""
    return [
        WitnessEndpoint(w.url, CosignerVerifier.from_vkey(w.key), w.ca)
        for w in config.audit.witnesses
    ]


def witness_submitter(database: Database, config: GatewayConfig) -> WitnessSubmitter:
    """The submitter for the configured witnesses (one that does nothing when there are none)."""
    return WitnessSubmitter(database, endpoints_from_config(config))
