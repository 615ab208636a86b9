"""Checking an export with nothing but the file and the log's public key.

``credgate audit export`` writes JSON Lines: first ``{"checkpoint": "<signed note>"}``, then one
``{"index": n, "entry_bytes": "<base64>", "entry": {...}}`` per entry. A complete (unfiltered)
export holds entries 0 .. size-1 of the checkpoint, so recomputing the Merkle root from the
bytes and comparing it with the signed root proves the bytes are exactly what the log had
signed — no database, no gateway, no trust in whoever handed the file over. A filtered export
cannot be checked this way; check single entries with inclusion proofs instead.

**What people read is checked too.** ``entry`` (and ``index``) are the decoded form, there for
reading; a person or a spreadsheet reads them, not the base64. So each must be *exactly* what
the hashed bytes decode to (``json_format.MessageToDict`` of the parsed bytes, key for key),
otherwise the file fails and the entry is named: an edited reason, a removed denial, an added
field, a key given twice (JSON readers disagree on which one counts), or any key beside the
three on a line. Checking only the bytes let a file pass whose readable half said something
the log never signed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.audit.checkpoint import SignedCheckpoint, open_checkpoint
from credgate.audit.hashing import leaf_hash
from credgate.audit.note import NoteError, NoteVerifier
from credgate.audit.tree import CompactRange


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
                "entry": decoded_form(record.entry),
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


_ENTRY_KEYS = frozenset({"index", "entry_bytes", "entry"})
_HEADER_KEYS = frozenset({"checkpoint"})


class _DuplicateKey(ValueError):
    """A JSON object names one key twice: readers would disagree on which value counts."""


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey("a key appears twice")
        found[key] = value
    return found


def _load(line: str) -> Any:
    """``json.loads``, refusing duplicate keys at any depth."""
    return json.loads(line, object_pairs_hook=_strict_object)


def decoded_form(entry: audit_pb2.AuditEntry) -> dict[str, Any]:
    """The readable form of an entry, as the export writes it and as verification expects it."""
    return json_format.MessageToDict(entry, preserving_proto_field_name=True)


def _differences(shown: Any, hashed: dict[str, Any]) -> list[str]:
    """The top-level fields in which the readable ``shown`` differs from ``hashed`` (names only:
    the values stay out of the report)."""
    if not isinstance(shown, dict):
        return ["entry (not an object)"]
    keys = sorted(set(shown) | set(hashed))
    return [key for key in keys if shown.get(key, _MISSING) != hashed.get(key, _MISSING)]


_MISSING = object()


def check_export(lines: Iterable[str], verifiers: Sequence[NoteVerifier]) -> ExportCheck:
    """Verify a complete export against its checkpoint and the trusted keys: the hashed bytes
    against the signed root, and every readable ``entry`` against its hashed bytes."""
    result = ExportCheck()
    iterator = iter(lines)
    try:
        header: dict[str, Any] = _load(next(iterator))
        result.checkpoint = open_checkpoint(str(header["checkpoint"]), verifiers)
    except (StopIteration, KeyError, ValueError, TypeError) as exc:
        message = str(exc) if isinstance(exc, NoteError) else "no readable checkpoint line"
        result.problems.append(f"checkpoint: {message}")
        return result
    if set(header) != _HEADER_KEYS:
        result.problems.append("checkpoint: the line holds more than the signed note")
    compact = CompactRange()
    for number, line in enumerate(iterator, start=2):
        try:
            item = _load(line)
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
        if set(item) != _ENTRY_KEYS:
            result.problems.append(
                f"entry {entry.index} (line {number}): the line holds keys beside "
                "index, entry_bytes and entry"
            )
        if differing := _differences(item.get("entry"), decoded_form(entry)):
            result.problems.append(
                f"entry {entry.index} (line {number}): the readable entry differs from its "
                f"hashed bytes in {', '.join(differing)}"
            )
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
