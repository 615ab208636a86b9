"""Field-by-field checks of repair-status requests: every field is untrusted input.

Each problem becomes a ``google.rpc.BadRequest`` field violation naming the field, so a caller
can fix its request without guessing; descriptions never repeat the identity number.
"""

from __future__ import annotations

import re

from credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credit_repair.v1 import vocabulary_pb2 as vocab

from gateway import identity_number

MAX_REFERENCE_LENGTH = 128
_KNOWN_PURPOSES = frozenset(vocab.Purpose.values()) - {vocab.PURPOSE_UNSPECIFIED}
_KNOWN_CATEGORIES = frozenset(vocab.DataCategory.values()) - {vocab.DATA_CATEGORY_UNSPECIFIED}
_IDENTITY_NUMBER_SHAPE = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9Xx])")
"""Anything shaped like an identity number: reference fields are copied into the audit log,
which can never be edited, so they must not carry one (``audit.entry`` refuses it too)."""

Violation = tuple[str, str]


def _reference_violation(value: str) -> str | None:
    if len(value) > MAX_REFERENCE_LENGTH:
        return f"must be at most {MAX_REFERENCE_LENGTH} characters"
    if not value.isprintable():
        return "must not contain control characters"
    if _IDENTITY_NUMBER_SHAPE.search(value):
        return "must not contain an identity number"
    return None


def validate_request(
    request: service_pb2.GetRepairStatusRequest, prefix: str = ""
) -> list[Violation]:
    """All violations in ``request``; field paths are prefixed (``requests[3].``) in batches."""
    violations: list[Violation] = []
    problem = identity_number.validate(identity_number.normalize(request.identity_number))
    if problem is not None:
        violations.append((f"{prefix}identity_number", f"{problem.reason}: {problem.description}"))
    if request.purpose == vocab.PURPOSE_UNSPECIFIED:
        violations.append((f"{prefix}purpose", "is required"))
    elif request.purpose not in _KNOWN_PURPOSES:
        violations.append((f"{prefix}purpose", "is not a known purpose"))
    for index, category in enumerate(request.categories):
        if category not in _KNOWN_CATEGORIES:
            violations.append((f"{prefix}categories[{index}]", "is not a known data category"))
    for name in ("consent_id", "case_reference"):
        described = _reference_violation(getattr(request, name))
        if described:
            violations.append((f"{prefix}{name}", described))
    if request.consistency not in service_pb2.ConsistencyMode.values():
        violations.append((f"{prefix}consistency", "is not a known consistency mode"))
    return violations
