"""How each kind of content the gate releases is cut to the admitted categories — facts and
explanation texts alike.

Minimization removes; it never invents. A text resting on a fact of a withheld category is
replaced by ``withheld_explanation``, which names the categories involved and nothing else, and
the source ids that would say where the fact lives go with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as rec_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import policy
from credgate.gateway.engine.minimize import minimize_in_place
from credgate.gateway.workflows.eligibility import CONDITION_CATEGORIES

Category = policy.Category
ALL_CATEGORIES = policy.ALL_CATEGORIES
_T = TypeVar("_T")


def category_names(categories: Iterable[Category]) -> str:
    """``commercial credit`` for DATA_CATEGORY_COMMERCIAL_CREDIT, comma-separated, sorted."""
    return ", ".join(
        vocab.DataCategory.Name(c).removeprefix("DATA_CATEGORY_").lower().replace("_", " ")
        for c in sorted(categories)
    )


def withheld_explanation(categories: Iterable[Category]) -> str:
    """The neutral text that stands in for an explanation resting on withheld facts.

    It names the categories involved (which the caller's purpose already tells it it cannot
    see) and nothing of the facts: not whether there are any, not their source, not a date.
    """
    return (
        "this depends on data your purpose and consent do not cover "
        f"({category_names(categories)}); it is not shown"
    )


def _eligibility(
    eligibility: app_pb2.Eligibility, allowed: frozenset[Category]
) -> tuple[app_pb2.Eligibility, frozenset[Category]]:
    """Each condition's explanation and sources stay only if every category it rests on is
    allowed. The verdict (``met``, ``eligible``) stays: it is what the call is for."""
    out = app_pb2.Eligibility()
    out.CopyFrom(eligibility)
    withheld: set[Category] = set()
    for condition in out.conditions:
        missing = CONDITION_CATEGORIES.get(condition.condition, ALL_CATEGORIES) - allowed
        if missing:
            withheld |= missing
            condition.explanation = withheld_explanation(missing)
            condition.ClearField("source_ids")
    return out, frozenset(withheld)


def _report(
    report: report_pb2.RepairStatusReport, allowed: frozenset[Category]
) -> tuple[report_pb2.RepairStatusReport, frozenset[Category]]:
    """The facts cut to ``allowed`` (again: the engine was asked for those only, so this is
    the guard that a future path cannot skip)."""
    before = {r.category for s in report.sources for r in s.records}
    minimize_in_place(report.sources, allowed)
    return report, frozenset(before - allowed)


def _application(
    application: app_pb2.RepairApplication, allowed: frozenset[Category]
) -> tuple[app_pb2.RepairApplication, frozenset[Category]]:
    eligibility, withheld = _eligibility(application.eligibility, allowed)
    application.eligibility.CopyFrom(eligibility)
    return application, withheld


def _objection(
    objection: obj_pb2.Objection, allowed: frozenset[Category]
) -> tuple[obj_pb2.Objection, frozenset[Category]]:
    """An objection about a fact of a withheld category shows the procedure, not the fact:
    the record id and the filer's words about it go."""
    if objection.category in allowed:
        return objection, frozenset()
    objection.fact.source_record_id = ""
    objection.requested_correction = ""
    return objection, frozenset({objection.category})


def _contradiction(
    item: rec_pb2.OpenContradiction, allowed: frozenset[Category]
) -> tuple[rec_pb2.OpenContradiction, frozenset[Category]]:
    """A listed contradiction quotes two sources' values of any category (the listing does
    not say which), so unless every category is allowed the values and the explanation go."""
    if allowed >= ALL_CATEGORIES:
        return item, frozenset()
    missing = ALL_CATEGORIES - allowed
    c = item.contradiction
    c.prevailing_value = ""
    c.dissenting_value = ""
    c.explanation = withheld_explanation(missing)
    return item, frozenset(missing)


_MINIMIZERS: dict[type[Any], Callable[[Any, frozenset[Category]], tuple[Any, frozenset[Category]]]]
_MINIMIZERS = {
    report_pb2.RepairStatusReport: _report,
    app_pb2.Eligibility: _eligibility,
    app_pb2.RepairApplication: _application,
    obj_pb2.Objection: _objection,
    rec_pb2.OpenContradiction: _contradiction,
}
"""Every kind of content the gate releases, and how it is cut to the admitted categories.
Content of no kind listed here (a consent grant, an access record, a bare id) carries no
source facts and passes whole."""


def minimize_content(content: _T, allowed: frozenset[Category]) -> tuple[_T, frozenset[Category]]:
    """``content`` (one item, a list of items, or a tuple of them) cut to ``allowed``, and the
    categories that had to be withheld from it."""
    if isinstance(content, list | tuple):
        withheld: set[Category] = set()
        items = []
        for item in content:
            kept, gone = minimize_content(item, allowed)
            items.append(kept)
            withheld |= gone
        return type(content)(items), frozenset(withheld)
    rule = _MINIMIZERS.get(type(content))
    if rule is None:
        return content, frozenset()
    return rule(content, allowed)


def first_report(content: object) -> report_pb2.RepairStatusReport | None:
    if isinstance(content, report_pb2.RepairStatusReport):
        return content
    if isinstance(content, list | tuple):
        for item in content:
            found = first_report(item)
            if found is not None:
                return found
    return None
