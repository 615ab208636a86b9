"""Checking an export with nothing but the file and the log's public key.

``credgate audit export`` writes JSON Lines: first ``{"checkpoint": "<signed note>"}``, then one
``{"index": n, "entry_bytes": "<base64>", "entry": {...}}`` per entry (``entry`` is the decoded
form, for reading; only ``entry_bytes`` counts). A complete (unfiltered) export holds entries
0 .. size-1 of the checkpoint, so recomputing the Merkle root from the bytes and comparing it
with the signed root proves the file is exactly what the log had signed — no database, no
gateway, no trust in whoever handed the file over. A filtered export cannot be checked this
way; check single entries with inclusion proofs instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from credit_repair.v1 import audit_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from audit.checkpoint import SignedCheckpoint, open_checkpoint
from audit.hashing import leaf_hash
from audit.note import NoteError, NoteVerifier
from audit.tree import CompactRange


def export_lines(
    signed: SignedCheckpoint, records: Iterable[audit_pb2.AuditRecord]
) -> Iterator[str]:
    """The export file's lines (without newlines), checkpoint first."""
    yield json.dumps({"checkpoint": signed.note}, ensure_ascii=False)
    for record in records:
        yield json.dumps(
            {
                "index": record.entry.index,
                "entry_bytes": base64.b64encode(record.entry_bytes).decode(),
                "entry": json_format.MessageToDict(record.entry, preserving_proto_field_name=True),
            },
            ensure_ascii=False,
        )


@dataclass
class ExportCheck:
    """The outcome of checking an export file."""

    checkpoint: SignedCheckpoint | None = None
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the file is exactly the signed log."""
        return self.checkpoint is not None and not self.problems


def check_export(lines: Iterable[str], verifiers: Sequence[NoteVerifier]) -> ExportCheck:
    """Verify a complete export against its checkpoint and the trusted keys."""
    result = ExportCheck()
    iterator = iter(lines)
    try:
        header: dict[str, Any] = json.loads(next(iterator))
        result.checkpoint = open_checkpoint(str(header["checkpoint"]), verifiers)
    except (StopIteration, KeyError, ValueError, TypeError) as exc:
        message = str(exc) if isinstance(exc, NoteError) else "no readable checkpoint line"
        result.problems.append(f"checkpoint: {message}")
        return result
    compact = CompactRange()
    for number, line in enumerate(iterator, start=2):
        try:
            item = json.loads(line)
            data = base64.b64decode(item["entry_bytes"], validate=True)
            entry = audit_pb2.AuditEntry.FromString(data)
        except (KeyError, ValueError, TypeError, DecodeError) as exc:
            result.problems.append(f"line {number}: unreadable entry ({type(exc).__name__})")
            return result
        if entry.index != compact.size or item.get("index") != entry.index:
            result.problems.append(
                f"line {number}: expected entry {compact.size}, found {entry.index} "
                "(a filtered export, or entries missing, added or moved)"
            )
            return result
        compact.append(leaf_hash(data))
    result.entries = compact.size
    checkpoint = result.checkpoint.checkpoint
    if compact.size != checkpoint.tree_size:
        result.problems.append(
            f"the export holds {compact.size} entries; the checkpoint signs {checkpoint.tree_size}"
        )
    elif compact.root() != checkpoint.root_hash:
        result.problems.append("the entries do not hash to the checkpoint's signed root")
    return result
