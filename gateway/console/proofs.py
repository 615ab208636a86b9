"""Checking what the gateway says about its audit log, in the console, with the pinned key.

The console does not take the gateway's word that an entry is in the log: it verifies the
latest checkpoint's signature with the log key pinned out of band (``--log-key``), then the
entry's inclusion proof against that checkpoint's root, with ``credgate.audit``'s own
verifiers (``audit.checkpoint.open_checkpoint``, ``audit.proof.verify_inclusion``). The entry
shown is the one parsed from the very bytes that were hashed. Each checkpoint must also extend
the last one this console verified (``CheckpointMemory``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb
from credgate.audit.checkpoint import SignedCheckpoint, open_checkpoint
from credgate.audit.hashing import leaf_hash
from credgate.audit.note import NoteError, NoteVerifier
from credgate.audit.proof import ProofError, verify_consistency, verify_inclusion

if TYPE_CHECKING:
    from credgate.gateway.console.connection import GatewayConnection

NO_LOG_KEY = "no log key pinned: start the console with --log-key audit-log.pub"


@dataclass(frozen=True)
class CheckpointCheck:
    """The latest checkpoint, and whether its signature verified with a pinned log key."""

    signed: SignedCheckpoint | None
    problem: str
    """Empty when verified."""

    @property
    def verified(self) -> bool:
        return self.signed is not None and not self.problem


@dataclass(frozen=True)
class InclusionCheck:
    """One entry, and whether its inclusion in a verified checkpoint was proven."""

    entry: audit_pb2.AuditEntry | None
    """Parsed from the proven bytes (None if they do not parse)."""
    checkpoint: CheckpointCheck
    problem: str
    """Empty when the inclusion was verified."""

    @property
    def verified(self) -> bool:
        return self.checkpoint.verified and not self.problem


def check_checkpoint(note: str, verifiers: Sequence[NoteVerifier]) -> CheckpointCheck:
    if not verifiers:
        return CheckpointCheck(None, NO_LOG_KEY)
    try:
        return CheckpointCheck(open_checkpoint(note, verifiers), "")
    except (NoteError, ValueError) as exc:
        return CheckpointCheck(None, f"the checkpoint does not verify with the log key: {exc}")


def check_inclusion(
    checkpoint: CheckpointCheck, record: audit_pb2.AuditRecord, proof: audit_pb2.InclusionProof
) -> InclusionCheck:
    """Whether ``record`` is at ``proof.leaf_index`` in the tree ``checkpoint`` signs."""
    try:
        entry: audit_pb2.AuditEntry | None = audit_pb2.AuditEntry.FromString(record.entry_bytes)
    except DecodeError:
        entry = None
    if entry is None:
        return InclusionCheck(None, checkpoint, "the entry's bytes do not parse")
    if not checkpoint.verified or checkpoint.signed is None:
        return InclusionCheck(entry, checkpoint, checkpoint.problem)
    tree = checkpoint.signed.checkpoint
    if entry.index != proof.leaf_index:
        return InclusionCheck(entry, checkpoint, "the entry's own index is not the proven one")
    if proof.tree_size != tree.tree_size:
        return InclusionCheck(
            entry, checkpoint, f"the proof is for size {proof.tree_size}, not {tree.tree_size}"
        )
    try:
        verify_inclusion(
            proof.leaf_index,
            proof.tree_size,
            leaf_hash(record.entry_bytes),
            list(proof.hashes),
            tree.root_hash,
        )
    except ProofError as exc:
        return InclusionCheck(entry, checkpoint, f"inclusion proof failed: {exc}")
    return InclusionCheck(entry, checkpoint, "")


async def latest_checkpoint(
    gateway: GatewayConnection,
) -> tuple[regulator_pb.GetLatestCheckpointResponse, CheckpointCheck]:
    """The gateway's latest checkpoint, its signature checked with the pinned log key and its
    consistency with the last one this console verified proven."""
    latest = await gateway.regulator.GetLatestCheckpoint(
        regulator_pb.GetLatestCheckpointRequest(), timeout=gateway.timeout
    )
    check = check_checkpoint(latest.checkpoint.note, gateway.log_verifiers)
    if not check.verified or check.signed is None:
        return latest, check
    memory = gateway.checkpoints
    async with memory.lock:
        problem = await _inconsistency(gateway, memory.trusted, check.signed)
        if problem:
            return latest, CheckpointCheck(check.signed, problem)
        if memory.trusted is None or (
            check.signed.checkpoint.tree_size > memory.trusted.checkpoint.tree_size
        ):
            memory.trusted = check.signed
    return latest, check


async def _inconsistency(
    gateway: GatewayConnection, old: SignedCheckpoint | None, new: SignedCheckpoint
) -> str:
    """Why ``new`` does not extend ``old`` ("" if it does, or there is nothing to compare)."""
    if old is None or old.checkpoint.tree_size == 0:
        return ""
    first, second = old.checkpoint.tree_size, new.checkpoint.tree_size
    seen = f"the checkpoint of size {first} this console verified earlier"
    if second < first:
        return f"the log shrank: size {second} after {seen}"
    if second == first:
        if new.checkpoint.root_hash != old.checkpoint.root_hash:
            return f"a different root for {seen}: the log was forked or rewritten"
        return ""
    answer = await gateway.regulator.GetConsistencyProof(
        regulator_pb.GetConsistencyProofRequest(first_tree_size=first, second_tree_size=second),
        timeout=gateway.timeout,
    )
    try:
        verify_consistency(
            first,
            second,
            old.checkpoint.root_hash,
            new.checkpoint.root_hash,
            list(answer.proof.hashes),
        )
    except ProofError as exc:
        return f"not consistent with {seen}: {exc}"
    return ""
