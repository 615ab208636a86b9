"""Every write RPC takes its write transaction from one helper: ``core.storage.decided_write``.

The order — checks and change in one transaction, the ALLOWED entry appended in it, then the
commit — is what keeps a call's audit entry and its outcome in agreement
(``tests/test_write_races.py`` attacks it on every write RPC). It holds only while no write
path opens a transaction of its own, so this reads the modules that serve write RPCs and fails
on any ``<database>.write()`` outside the few places that are not a caller's decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRITE_PATHS = ("consent", "gateway/consent_service.py", "gateway/workflows")
NOT_A_DECISION = {
    ("consent/register.py", "record_use"): "counts a use for the disclosure gate's decision",
    ("gateway/workflows/outbox.py", "_claim"): "the outbox's own bookkeeping, after a commit",
    ("gateway/workflows/outbox.py", "_failed"): "the outbox's own bookkeeping, after a commit",
}


def own_transactions(source: str) -> list[tuple[str, int]]:
    """``(function, line)`` of every ``async with <x>.write()`` in ``source``."""
    found: list[tuple[str, int]] = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.AsyncWith):
                continue
            for item in node.items:
                call = item.context_expr
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "write"
                    and not call.args
                ):
                    found.append((function.name, node.lineno))
    return found


def test_write_paths_open_transactions_only_through_decided_write() -> None:
    offenders = []
    for package in WRITE_PATHS:
        where = ROOT / package
        for path in [where] if where.is_file() else sorted(where.rglob("*.py")):
            name = str(path.relative_to(ROOT))
            for function, line in own_transactions(path.read_text("utf-8")):
                if (name, function) not in NOT_A_DECISION:
                    offenders.append(f"{name}:{line} in {function}")
    assert offenders == []


def test_the_scan_finds_the_shape_it_forbids() -> None:
    old = (
        "async def review(self):\n    async with self.database.write() as session:\n        pass\n"
    )
    assert own_transactions(old) == [("review", 2)]
    new = "async def f(db):\n    async with decided_write(db, r) as session:\n        pass\n"
    assert own_transactions(new) == []
