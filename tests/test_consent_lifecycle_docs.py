"""The consent lifecycle diagram is one drawing: docs/consent.md's, repeated verbatim in the
README and docs/policy.md (issue #13 asks for it in both), so the three cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATES = ("ACTIVE", "PAUSED", "REVOKED", "EXPIRED", "EXHAUSTED")


def _diagram(text: str) -> str:
    found = re.search(r"```\n( +GrantConsent \(signed terms\)\n.*?)\n```", text, re.S)
    assert found is not None, "no consent lifecycle diagram"
    return found.group(1)


def test_the_lifecycle_is_drawn_the_same_in_every_document() -> None:
    source = _diagram((ROOT / "docs/consent.md").read_text(encoding="utf-8"))
    assert all(state in source for state in STATES)
    for copy in ("README.md", "docs/policy.md"):
        assert _diagram((ROOT / copy).read_text(encoding="utf-8")) == source, copy
