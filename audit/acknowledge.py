"""The operator's acknowledgement of a rolled-back log (``credgate audit acknowledge-rollback``).

After a restore the gateway refuses to sign (``audit.signed_size``). Acknowledging is the one
way back, and it leaves traces everywhere a reader might look:

* the record beside the log key gets the database's head as its new base, plus a line in its
  ``acknowledgements`` (when; remembered and found sizes and roots; entries lost);
* the log itself gets an entry at the first index after the restored head, through the one
  path every entry takes (``AuditTrail.record``) — institution ``credgate-operator``, action
  ``AUDIT_ACTION_ACKNOWLEDGE_AUDIT_ROLLBACK``, outcome ALLOWED (no data released), request id
  ``rollback-<remembered size>-to-<found size>`` — and a checkpoint covering it, so a regulator
  or witness holding a checkpoint from before the restore sees *where* the history forks and
  that the operator said so, rather than a silent second history;
* a WARNING log line, and the command's own report of what was lost.

The entries between the restored head and the remembered size are lost for good: their
decisions happened (answers were released) but their records are gone; only copies held
elsewhere (exports, a regulator's checkpoints and proofs) still show them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from pathlib import Path

from credgate.api.credit_repair.v1 import audit_pb2, vocabulary_pb2
from credgate.audit.checkpoints import make_checkpoint
from credgate.audit.log import AuditLog
from credgate.audit.note import NoteSigner
from credgate.audit.signed_size import (
    AuditRollbackError,
    AuditStateError,
    SignedSizeGuard,
    acknowledge,
    compare,
    read_head_tree,
    read_state,
)
from credgate.audit.trail import AuditTrail
from credgate.audit.tree import CompactRange
from credgate.core.errors import set_request_id
from credgate.core.institution import Institution
from credgate.core.storage.database import Database

log = logging.getLogger(__name__)

OPERATOR = Institution("credgate-operator", vocabulary_pb2.INSTITUTION_ROLE_UNSPECIFIED)
"""Who the entry names: the operator at the console, not an institution with a certificate."""


@dataclass(frozen=True)
class Acknowledgement:
    """What was found and (unless a dry run or nothing to do) recorded."""

    problem: str
    """Why signing was refused; empty when the log extends the record (nothing to do)."""
    remembered_size: int | None
    """The size this node had signed; None if the record was missing or unreadable."""
    found_size: int
    entries_lost: int
    """Remembered minus found, when the database holds fewer entries than were signed."""
    recorded: bool = False
    entry_index: int | None = None
    checkpoint_size: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "problem": self.problem,
            "remembered_size": self.remembered_size,
            "found_size": self.found_size,
            "entries_lost": self.entries_lost,
            "recorded": self.recorded,
            "entry_index": self.entry_index,
            "checkpoint_size": self.checkpoint_size,
        }


async def _diagnose(
    database: Database, path: Path, origin: str
) -> tuple[str, CompactRange | None, CompactRange]:
    """(problem, remembered tree, head tree) without tripping or logging anything."""
    try:
        state = await asyncio.to_thread(read_state, path, origin)
    except AuditStateError as exc:
        state, unreadable = None, str(exc)
    else:
        unreadable = ""
    async with database.session() as session:
        head = await read_head_tree(session)
        found: AuditRollbackError | None = None
        if state is not None:
            found = await compare(session, state.tree, head)
    remembered = state.tree if state is not None else None
    return (unreadable or (str(found) if found else "")), remembered, head


async def acknowledge_rollback(
    database: Database, signer: NoteSigner, path: Path, *, dry_run: bool = False
) -> Acknowledgement:
    """Find what the record and the database disagree on and, unless ``dry_run`` or there is
    nothing to acknowledge, record the database's head as the new base, append the audit
    entry that says so and sign a checkpoint over it."""
    problem, remembered, head = await _diagnose(database, path, signer.name)
    lost = max(remembered.size - head.size, 0) if remembered is not None else 0
    result = Acknowledgement(
        problem, None if remembered is None else remembered.size, head.size, lost
    )
    if not problem or dry_run:
        return result
    note = f"rollback-{'unknown' if remembered is None else remembered.size}-to-{head.size}"
    await asyncio.to_thread(acknowledge, path, signer.name, head, remembered, note)
    log.warning(
        "audit rollback acknowledged by the operator: remembered tree size %s, found %d, "
        "%d signed entries lost; new base %d (root %s)",
        "unknown" if remembered is None else remembered.size,
        head.size,
        lost,
        head.size,
        base64.b64encode(head.root()).decode(),
    )
    guard = SignedSizeGuard(path, signer.name)
    audit_log = AuditLog(database, signer, guard=guard)
    try:
        set_request_id(note)  # the entry's request id: which rollback it acknowledges
        receipt = await AuditTrail(audit_log).record(
            OPERATOR, audit_pb2.AUDIT_ACTION_ACKNOWLEDGE_AUDIT_ROLLBACK
        )
        signed = await make_checkpoint(database, signer, guard=guard)
    finally:
        await audit_log.aclose()
    return Acknowledgement(
        problem,
        result.remembered_size,
        head.size,
        lost,
        recorded=True,
        entry_index=receipt.index,
        checkpoint_size=signed.checkpoint.tree_size,
    )
