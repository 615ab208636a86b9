"""Every audit entry is written through one path: ``audit.trail.AuditTrail.record``.

Three paths used to write entries, each with its own failure handling (the regulator's answered
PERMISSION_DENIED when its entry failed). This reads the product's source and fails when any
module other than ``audit/trail.py`` builds an entry (``new_entry``) or appends to the log
(``<...log|audit|trail>.append(...)``), so a new service cannot grow a fourth path. The
behaviour of the one path on every RPC is attacked in ``tests/test_audit_fail_closed.py``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("adapters", "audit", "consent", "core", "gateway")
THE_PATH = Path("audit/trail.py")
_LOG_LIKE = re.compile(r"(^|[._])(audit_log|log|_log|audit|_audit|trail|_trail)$")


def writers(source: str) -> list[str]:
    """Calls in ``source`` that build an entry or append to something shaped like the log."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name == "new_entry":
            found.append(f"line {node.lineno}: new_entry(...)")
        if isinstance(func, ast.Attribute) and func.attr == "append":
            receiver = ast.unparse(func.value)
            if _LOG_LIKE.search(receiver):
                found.append(f"line {node.lineno}: {receiver}.append(...)")
    return found


def test_only_the_trail_builds_or_appends_entries() -> None:
    offenders = {
        str(path.relative_to(ROOT)): found
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT) != THE_PATH and (found := writers(path.read_text("utf-8")))
    }
    assert offenders == {}


def test_the_trail_is_where_the_writing_is() -> None:
    """The scan finds the one path itself (so a renamed call cannot make it blind)."""
    found = writers((ROOT / THE_PATH).read_text("utf-8"))
    assert any("new_entry" in f for f in found)
    assert any("self.log.append" in f for f in found)


def test_the_scan_finds_the_writers_it_replaced() -> None:
    """The shapes of the old second and third paths are caught."""
    old_regulator = "async def f(self):\n    await self._log.append(new_entry(reason='X'))\n"
    old_workflows = "async def f(self):\n    receipt = await self._audit.append(entry)\n"
    assert len(writers(old_regulator)) == 2
    assert len(writers(old_workflows)) == 1
    assert writers("items = []\nitems.append(1)\n") == []
