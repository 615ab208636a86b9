"""Where entries went: diff the indexes found inside the entries against 0, 1, 2, ...

Every entry carries its own index in its signed bytes, so after rows are deleted, inserted or
moved the sequence of indexes read back (in stored order) is no longer 0, 1, 2, ... A standard
sequence diff (difflib) of the expected numbers against the found ones says what happened:
numbers missing from the found sequence were **deleted**; found numbers that are not expected
there were **inserted** (a forged entry, or a copy of another); a number that is both missing
where it belongs and found elsewhere was **reordered**. Renumbering the rows does not hide any
of this, because the numbers compared are inside the hashed bytes, not in the index column.

Only the window around the first and last out-of-place number is diffed, so an intact log
costs one pass over an integer array.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from credgate.audit.tamper_findings import TamperFinding, TamperKind

_WINDOW_MARGIN = 2
MAX_LISTED = 50
"""At most this many findings of one kind are listed (a mass deletion is one story)."""


def sequence_findings(embedded: Sequence[int], positions: Sequence[int]) -> list[TamperFinding]:
    """Findings for row ``r`` holding entry ``embedded[r]`` at stored index ``positions[r]``."""
    deviations = [r for r in range(len(embedded)) if embedded[r] != r]
    if not deviations:
        return []
    lo = max(0, deviations[0] - _WINDOW_MARGIN)
    hi = min(len(embedded), deviations[-1] + _WINDOW_MARGIN + 1)
    observed = list(embedded[lo:hi])
    expected = list(range(lo, max(max(observed) + 1, hi)))
    matcher = difflib.SequenceMatcher(None, expected, observed, autojunk=False)
    missing: set[int] = set()
    extra: list[tuple[int, int]] = []
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        if tag in ("delete", "replace"):
            missing.update(expected[a1:a2])
        if tag in ("insert", "replace"):
            extra.extend((lo + b, observed[b]) for b in range(b1, b2))
    moved = missing & {value for _, value in extra}
    findings: list[TamperFinding] = []
    for row, value in extra[:MAX_LISTED]:
        if value in moved:
            detail = f"holds entry {value}, which belongs elsewhere in the sequence"
            findings.append(TamperFinding(TamperKind.REORDERED, positions[row], detail))
        else:
            detail = f"not part of the signed sequence (claims to be entry {value})"
            findings.append(TamperFinding(TamperKind.INSERTED, positions[row], detail))
    for value in sorted(missing - moved)[:MAX_LISTED]:
        findings.append(TamperFinding(TamperKind.DELETED, value, "entry is missing from the log"))
    return findings
