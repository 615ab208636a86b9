"""What ``verify`` reports: kinds of tampering, one finding each, and the overall report."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TamperKind(enum.StrEnum):
    """What kind of tampering (or damage) a finding reports (see ``audit/verifier.py``)."""

    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    INSERTED = "INSERTED"
    REORDERED = "REORDERED"
    REWRITTEN = "REWRITTEN"
    TRUNCATED = "TRUNCATED"
    CHECKPOINT_INVALID = "CHECKPOINT_INVALID"
    CHECKPOINT_MISMATCH = "CHECKPOINT_MISMATCH"
    HEAD_MISMATCH = "HEAD_MISMATCH"
    TREE_HEAD_ALTERED = "TREE_HEAD_ALTERED"
    NODE_ALTERED = "NODE_ALTERED"


@dataclass(frozen=True)
class TamperFinding:
    """One problem: its kind, the entry index it is at (None if not about one entry), why."""

    kind: TamperKind
    index: int | None
    detail: str

    def to_json(self) -> dict[str, object]:
        """A plain dict for ``--json`` output."""
        return {"kind": str(self.kind), "index": self.index, "detail": self.detail}


@dataclass
class VerificationResult:
    """The outcome. ``ok`` means nothing was found and every entry is authenticated."""

    entries: int = 0
    head_size: int | None = None
    authenticated_size: int = 0
    checkpoints_checked: int = 0
    checkpoints_valid: int = 0
    findings: list[TamperFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the log verified completely."""
        return not self.findings and self.authenticated_size == self.entries

    @property
    def first_tampered_index(self) -> int | None:
        """The lowest entry index any finding names."""
        indexes = [f.index for f in self.findings if f.index is not None]
        return min(indexes) if indexes else None

    def kinds_at(self, index: int) -> set[TamperKind]:
        """The kinds of finding reported for entry ``index``."""
        return {f.kind for f in self.findings if f.index == index}

    def to_json(self) -> dict[str, object]:
        """A plain dict for ``--json`` output."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head_size": self.head_size,
            "authenticated_size": self.authenticated_size,
            "checkpoints_checked": self.checkpoints_checked,
            "checkpoints_valid": self.checkpoints_valid,
            "findings": [f.to_json() for f in self.findings],
        }
