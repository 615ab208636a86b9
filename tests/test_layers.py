"""The layers import one way, and no two modules import each other, function-level imports included.

``lint-imports`` (``[tool.importlinter]`` in pyproject.toml, run by scripts/test) holds the
direction: gateway > adapters | consent | audit > core > api. What no contract type says is
"no loop between any two modules": a loop hidden behind a function-level import (as cli <->
workflows.cli, config -> institution -> revocation -> config and storage.database <-> threaded
were) lets a module be half-initialised when the other one runs. These tests read the same
import graph (grimp, which import-linter builds on) and fail on either.
"""

from __future__ import annotations

from collections.abc import Iterator

import grimp
import pytest

LAYERS = ("gateway", ("adapters", "consent", "audit"), "core", "api")
"""Top to bottom, as in ``[tool.importlinter]``; a tuple is independent siblings."""


def _rank(package: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if package == layer or (isinstance(layer, tuple) and package in layer):
            return rank
    raise AssertionError(f"credgate.{package} has no place in the layers")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("credgate", cache_dir=None)


def import_loops(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    loops: list[list[str]] = []
    work: list[tuple[str, Iterator[str]]] = []

    def enter(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        work.append((module, iter(sorted(graph.find_modules_directly_imported_by(module)))))

    for root in sorted(graph.modules):
        if root in index:
            continue
        enter(root)
        while work:
            module, children = work[-1]
            for child in children:
                if child not in index:
                    enter(child)
                    break
                if child in on_stack:
                    low[module] = min(low[module], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[module])
                if low[module] == index[module]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == module:
                            break
                    if len(members) > 1:
                        loops.append(sorted(members))
    return loops


def upward_imports(graph: grimp.ImportGraph) -> list[str]:
    """Imports from a lower layer into a higher one, or between independent siblings."""
    found = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            low, high = importer.split(".")[1:2], imported.split(".")[1:2]
            if not low or not high or low == high:
                continue
            if _rank(low[0]) >= _rank(high[0]):
                found.append(f"{importer} -> {imported}")
    return found


def test_no_module_imports_another_that_imports_it_back(graph: grimp.ImportGraph) -> None:
    assert import_loops(graph) == []


def test_no_import_runs_upward_or_sideways(graph: grimp.ImportGraph) -> None:
    assert upward_imports(graph) == []


def test_every_top_level_package_has_a_layer(graph: grimp.ImportGraph) -> None:
    tops = {module.split(".")[1] for module in graph.modules if module.count(".") >= 1}
    for top in tops:
        _rank(top)


def test_the_checks_see_function_level_loops_and_upward_imports() -> None:
    """The shapes this slice removed are found: a loop closed only inside a function, and a
    domain package importing the gateway."""
    fake = grimp.ImportGraph()
    for module in ("credgate", "credgate.core.a", "credgate.core.b", "credgate.gateway.server"):
        fake.add_module(module)
    fake.add_import(importer="credgate.core.a", imported="credgate.core.b", line_number=1,
                    line_contents="from credgate.core.b import x")
    fake.add_import(importer="credgate.core.b", imported="credgate.core.a", line_number=40,
                    line_contents="    from credgate.core.a import y")
    fake.add_import(importer="credgate.core.b", imported="credgate.gateway.server",
                    line_number=41, line_contents="    from credgate.gateway.server import z")
    assert import_loops(fake) == [["credgate.core.a", "credgate.core.b"]]
    assert upward_imports(fake) == ["credgate.core.b -> credgate.gateway.server"]


def test_grimp_counts_function_level_imports(graph: grimp.ImportGraph) -> None:
    """Both checks rely on grimp seeing imports inside functions; a known one proves it."""
    details = graph.get_import_details(
        importer="credgate.gateway.commands.reconcile",
        imported="credgate.gateway.reconciliation.listing",
    )
    assert details
    assert all(d["line_contents"].startswith("from ") for d in details)
