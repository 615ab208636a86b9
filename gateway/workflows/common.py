"""What both workflows need underneath: ids, sealed details, steps, locks, wake-ups.

Kept apart from the workflows themselves so each of those reads as its procedure. Two rules run
through everything here:

* **Nothing personal in clear.** The identity number and the filer's own words go into a
  ``FieldCipher`` ciphertext bound to its row; steps carry only notes from the gateway's own
  templates; request digests are computed over the subject token, never the number.
* **One transaction per change.** A workflow change, the index rows it corrects and the
  change-feed rows that announce them (``gateway.fact_index.corrections``) commit together or
  not at all, so a crash leaves nothing half-written and a watcher never hears of a change
  that did not happen.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import zlib
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.workflows.models import WorkflowStepRow, step_context

GATEWAY_ACTOR = "credgate"
"""``actor_id`` of the steps the gateway takes itself."""
_SUBJECT_LOCK_BASE = 0x637277 << 32  # "crw": workflow locks, apart from consent's and sync's


def new_id(prefix: str) -> str:
    """A fresh workflow id: ``prefix`` + 26 lower-case base32 characters (128 random bits)."""
    raw = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return f"{prefix}_{raw}"


def workflow_id_key(root_key: bytes) -> bytes:
    """The key that makes request-bound ids (``request_bound_id``), derived from the keyring's
    subject-token key with its own label, so every replica mints the same id for a retry."""
    return hmac.new(root_key, b"credgate/workflow-ids/v1", hashlib.sha256).digest()


def request_bound_id(key: bytes, prefix: str, filed_by: str, request_id: str) -> str:
    """The id of what ``filed_by`` files with ``request_id``: ``prefix`` + 26 base32 characters.

    Keyed (HMAC under ``workflow_id_key``), so nobody without the server's key can compute or
    guess the id of another institution's objection or application — 128 bits, like
    ``new_id``. Deterministic, unlike ``new_id``, because the id is also the reference a source
    receives *before* the row commits: a retry after a failed commit must file the same
    reference again (sources are idempotent per reference), not open a second case there. The
    gateway's own idempotency is the stored ``(filed_by, request_id)``, unique in each table.
    """
    message = json.dumps([prefix, filed_by, request_id]).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:16]
    return f"{prefix}_" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def request_digest(*parts: object) -> str:
    """Digest of a request's content for idempotency checks; callers pass the subject token,
    never the identity number, so the digest cannot be reversed by trying numbers."""
    material = json.dumps([str(p) for p in parts], ensure_ascii=False).encode()
    return hashlib.sha256(material).hexdigest()


class Sealer:
    """Encrypts a workflow's personal details (JSON) bound to the row that holds them."""

    def __init__(self, cipher: FieldCipher) -> None:
        self.cipher = cipher

    def seal(self, values: dict[str, str], context: bytes) -> tuple[bytes, str]:
        blob = self.cipher.encrypt(json.dumps(values, sort_keys=True).encode(), context=context)
        return blob, FieldCipher.key_id_of(blob)

    def open(self, blob: bytes, context: bytes) -> dict[str, str]:
        values = json.loads(self.cipher.decrypt(blob, context=context))
        assert isinstance(values, dict)
        return {str(k): str(v) for k, v in values.items()}


async def next_step_index(session: AsyncSession, workflow_id: str) -> int:
    found = await session.scalar(
        select(func.max(WorkflowStepRow.step_index)).where(
            WorkflowStepRow.workflow_id == workflow_id
        )
    )
    return 0 if found is None else int(found) + 1


async def add_steps(
    session: AsyncSession,
    workflow_id: str,
    at: dt.datetime,
    steps: Iterable[tuple[str, wf.ResponsibleParty.ValueType, str, str]],
    *,
    detail: str | None = None,
    sealer: Sealer | None = None,
) -> None:
    """Append ``(action, actor, actor_id, note)`` steps; ``detail`` (a third party's own words)
    is sealed onto the first of them."""
    index = await next_step_index(session, workflow_id)
    for n, (action, actor, actor_id, note) in enumerate(steps):
        row = WorkflowStepRow(
            workflow_id=workflow_id,
            step_index=index + n,
            at=at,
            action=action,
            actor=int(actor),
            actor_id=actor_id,
            note=note[:500],
        )
        if n == 0 and detail is not None and sealer is not None:
            blob = sealer.cipher.encrypt(detail.encode(), context=step_context(workflow_id, index))
            row.detail_ciphertext, row.key_id = blob, FieldCipher.key_id_of(blob)
        session.add(row)
    await session.flush()


async def load_steps(session: AsyncSession, workflow_id: str) -> list[WorkflowStepRow]:
    rows = await session.scalars(
        select(WorkflowStepRow)
        .where(WorkflowStepRow.workflow_id == workflow_id)
        .order_by(WorkflowStepRow.step_index)
    )
    return list(rows)


async def lock_subject(session: AsyncSession, backend: str, token: str) -> None:
    """Serialize workflow writes about one subject (duplicate checks stay true until commit).

    SQLite's write transactions are already serial (``BEGIN IMMEDIATE``); PostgreSQL gets a
    transaction-scoped advisory lock per subject.
    """
    if backend == "postgresql":
        key = _SUBJECT_LOCK_BASE | zlib.crc32(token.encode())
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


class Changes:
    """Wakes this replica's watchers of a workflow when it changes here.

    Only a hint: watchers also re-read on a timer, which is what carries changes made by other
    replicas (the database is the only shared state).
    """

    def __init__(self) -> None:
        self._events: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def changed(self, workflow_id: str) -> None:
        for event in self._events.get(workflow_id, ()):
            event.set()

    async def wait(self, workflow_id: str, timeout: float) -> None:
        """Return when ``workflow_id`` changes here, or after ``timeout`` seconds."""
        event = asyncio.Event()
        self._events[workflow_id].add(event)
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass
        finally:
            self._events[workflow_id].discard(event)
            if not self._events[workflow_id]:
                del self._events[workflow_id]
