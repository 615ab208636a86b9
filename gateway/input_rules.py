"""The input rules declared in the schema (``credit_repair/v1/input_rules.proto``), enforced.

Every field of every request is untrusted. The rules live beside each field in the .proto
files, where integrators read them; this module turns them, once per message type, into a
plan of checks and runs it over a message. It is the one place a field's content is judged:
the gateway's input boundary (``gateway.input_boundary``) runs it over every request before
the handler sees it, and the sync and consent services over the messages they parse out of
signed bytes (provider updates, consent terms).

Checking accepts what folds to a canonical form (a full-width identity number, as Chinese
input methods type it) but never rewrites the request: a signed report is bound to the digest
of the request as sent. Every use of an identity number goes through
``identity_number.normalize``, and the subject tokenizer and the query engine refuse anything
but the canonical ASCII form, so one person is always one subject.

Descriptions say what is wrong, never what the value was: a rejected value may be an identity
number, and refusals are logged and audited.

Why not protovalidate (measured, docs/input-rules.md): its Rust core is faster per message,
but it brings a second protobuf runtime and a vendored ``validate.proto``, and the shapes that
matter here (an identity number's check character, full-width folding, a number hidden in any
script's digits, a PRC case number) are domain checks CEL expresses badly or not at all.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from credgate.api.credit_repair.v1 import input_rules_pb2
from credgate.core import identity_number

Violation = tuple[str, str]
Shape: TypeAlias = input_rules_pb2.FieldShape.ValueType

DEFAULT_MAX_ITEMS = 1000
DEFAULT_MAX_SIZE: dict[int, int] = {
    input_rules_pb2.FIELD_SHAPE_IDENTITY_NUMBER: 64,  # before folding; the shape then wants 18
    input_rules_pb2.FIELD_SHAPE_CASE_NUMBER: 64,
    input_rules_pb2.FIELD_SHAPE_IDENTIFIER: 128,
    input_rules_pb2.FIELD_SHAPE_LINE: 256,
    input_rules_pb2.FIELD_SHAPE_TEXT: 4000,
    input_rules_pb2.FIELD_SHAPE_PAGE_TOKEN: 2048,
    input_rules_pb2.FIELD_SHAPE_BYTES: 65536,
}

_FORMAT_CHARACTERS = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
"""Unicode category Cf (format characters: bidi marks and overrides, zero-width characters,
invisible operators) as of Unicode 15.1. tests/test_input_rules.py checks this list against
the running Python's ``unicodedata``, so a newer Unicode cannot add one unnoticed."""
_NEVER_ALLOWED = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"  # C0 and C1 controls and DEL (tab, LF, CR below)
    + _FORMAT_CHARACTERS
    + "\ud800-\udfff"  # surrogates (unreachable through UTF-8, kept for Python callers)
    + "\ue000-\uf8ff\U000f0000-\U0010ffff"  # private use
    + "\ufdd0-\ufdef\ufffe\uffff"  # noncharacters of the BMP
)
_FORBIDDEN_IN_TEXT = re.compile(f"[{_NEVER_ALLOWED}]")
_FORBIDDEN_IN_LINE = re.compile(f"[{_NEVER_ALLOWED}\t\n\r\u2028\u2029\x85]")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*", re.ASCII)
_PAGE_TOKEN = re.compile(r"[A-Za-z0-9+/=._~-]+", re.ASCII)
_CASE_NUMBER = re.compile(
    r"[(（](?:19|20)[0-9]{2}[)）]"  # year
    r"[\u4e00-\u9fff]{1,4}[0-9]{0,4}"  # court: province abbreviation (最高法, 粤, 京...) and code
    r"[\u4e00-\u9fff]{1,6}"  # case type: 执, 破申, 民初, 执监 ...
    r"[0-9]{1,7}号(?:之[0-9]{1,3})?",  # number, optional sub-number
    re.ASCII,
)
_IDENTITY_NUMBER_INSIDE = re.compile(r"(?<!\d)\d{17}[\dXxＸｘ](?![\dXxＸｘ])")
r"""Anything shaped like an identity number, in any script's digits (``\d`` is Unicode here
on purpose: a number typed in Arabic-Indic or full-width digits is still a person's)."""
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")

_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 to 9999-12-31 (UTC)
_DURATION_SECONDS = 315_576_000_000  # ±10,000 years, google.protobuf.Duration's range
_NANOS = 999_999_999

ValueCheck = Callable[[Any, str, list[Violation]], bool]
"""Adds the value's violations; returns True when the value is valid only once folded (a
full-width identity or case number): accepted in a request, refused in signed content."""


def _rules(field: FieldDescriptor) -> input_rules_pb2.FieldRules:
    options = field.GetOptions()
    if options.HasExtension(input_rules_pb2.rules):
        rules: input_rules_pb2.FieldRules = options.Extensions[input_rules_pb2.rules]
        return rules
    return input_rules_pb2.FieldRules()


def _text_check(shape: Shape, max_size: int) -> ValueCheck:
    text = shape == input_rules_pb2.FIELD_SHAPE_TEXT
    forbidden = _FORBIDDEN_IN_TEXT if text else _FORBIDDEN_IN_LINE

    def check(value: str, path: str, violations: list[Violation]) -> bool:
        if len(value) > max_size:
            violations.append((path, f"must be at most {max_size} characters"))
            return False
        if forbidden.search(value):
            violations.append((path, "must not contain control, format or private-use characters"))
            return False
        if value and value.isspace():
            violations.append((path, "must not be blank"))
            return False
        folded = _shape_check(shape, value, path, violations)
        if shape != input_rules_pb2.FIELD_SHAPE_IDENTITY_NUMBER and _IDENTITY_NUMBER_INSIDE.search(
            value
        ):
            violations.append((path, "must not contain an identity number"))
        return folded

    return check


def _shape_check(shape: Shape, value: str, path: str, violations: list[Violation]) -> bool:
    """Shape-specific checks of a character-clean string; whether it is valid only folded."""
    if not value:
        return False  # presence is each RPC's own rule ("is required"), checked behind this
    if shape == input_rules_pb2.FIELD_SHAPE_IDENTITY_NUMBER:
        number = identity_number.normalize(value)
        problem = identity_number.validate(number)
        if problem is not None:
            violations.append((path, f"{problem.reason}: {problem.description}"))
            return False
        return number != value
    if shape == input_rules_pb2.FIELD_SHAPE_CASE_NUMBER:
        folded = value.strip().translate(_FULL_WIDTH_DIGITS)
        if _CASE_NUMBER.fullmatch(folded) is None:
            violations.append(
                (
                    path,
                    "must be a PRC case number such as (2026)粤03执1号: year in parentheses, "
                    "court, case type, number and 号",
                )
            )
            return False
        return folded != value
    if shape == input_rules_pb2.FIELD_SHAPE_IDENTIFIER and _IDENTIFIER.fullmatch(value) is None:
        violations.append(
            (path, "must be ASCII letters and digits, then also '.', '_', ':' or '-'")
        )
    elif shape == input_rules_pb2.FIELD_SHAPE_PAGE_TOKEN and _PAGE_TOKEN.fullmatch(value) is None:
        violations.append((path, "is not a page token this service issued"))
    return False


def _bytes_check(min_size: int, max_size: int) -> ValueCheck:
    def check(value: bytes, path: str, violations: list[Violation]) -> bool:
        if len(value) > max_size:
            violations.append((path, f"must be at most {max_size} bytes"))
        elif value and len(value) < min_size:
            violations.append((path, f"must be at least {min_size} bytes"))
        return False

    return check


def _number_check(rules: input_rules_pb2.FieldRules) -> ValueCheck | None:
    low = rules.min_value if rules.HasField("min_value") else None
    high = rules.max_value if rules.HasField("max_value") else None
    if low is None and high is None:
        return None

    def check(value: int, path: str, violations: list[Violation]) -> bool:
        if low is not None and value < low:
            violations.append((path, f"must be at least {low}"))
        elif high is not None and value > high:
            violations.append((path, f"must be at most {high}"))
        return False

    return check


def _double_check(value: float, path: str, violations: list[Violation]) -> bool:
    if value != value or value in (float("inf"), float("-inf")):
        violations.append((path, "must be a finite number"))
    return False


def _enum_check(field: FieldDescriptor) -> ValueCheck:
    enum = field.enum_type
    assert enum is not None  # an enum field always has its type
    known = frozenset(enum.values_by_number)
    name = enum.name

    def check(value: int, path: str, violations: list[Violation]) -> bool:
        if value not in known:
            violations.append((path, f"is not a known {name} value"))
        return False

    return check


def _timestamp_check(value: Message, path: str, violations: list[Violation]) -> bool:
    seconds, nanos = value.seconds, value.nanos  # type: ignore[attr-defined]
    if not _TIMESTAMP_SECONDS[0] <= seconds <= _TIMESTAMP_SECONDS[1] or not 0 <= nanos <= _NANOS:
        violations.append((path, "must be a time between 0001-01-01 and 9999-12-31"))
    return False


def _duration_check(value: Message, path: str, violations: list[Violation]) -> bool:
    seconds, nanos = value.seconds, value.nanos  # type: ignore[attr-defined]
    if (
        abs(seconds) > _DURATION_SECONDS
        or abs(nanos) > _NANOS
        or (seconds > 0 > nanos)
        or (seconds < 0 < nanos)
    ):
        violations.append((path, "must be a duration within ±10,000 years"))
    return False


def _date_check(value: Message, path: str, violations: list[Violation]) -> bool:
    year, month, day = value.year, value.month, value.day  # type: ignore[attr-defined]
    if not (0 <= year <= 9999 and 0 <= month <= 12 and 0 <= day <= 31):
        violations.append((path, "must be a calendar date"))
    elif year and month and day:
        try:
            dt.date(year, month, day)
        except ValueError:
            violations.append((path, "must be a calendar date"))
    return False


_WELL_KNOWN: dict[str, ValueCheck] = {
    "google.protobuf.Timestamp": _timestamp_check,
    "google.protobuf.Duration": _duration_check,
    "google.type.Date": _date_check,
}


@dataclass(frozen=True)
class _FieldPlan:
    """How to check one field: its value check and, for repeated fields, the item bound."""

    name: str
    repeated: bool
    max_items: int
    check: ValueCheck | None
    message: Descriptor | None
    per_item: bool
    """Items are checked by the RPC as it answers each (batches), not with the request."""


class UndeclaredFieldError(TypeError):
    """A string or bytes field without a declared shape: a schema bug, found at start-up."""


@dataclass(frozen=True)
class _MessagePlan:
    """The checks of one message type: per field number, and the fields it must set."""

    fields: dict[int, _FieldPlan]
    required: tuple[str, ...]


_PLANS: dict[str, _MessagePlan] = {}


def _value_check(field: FieldDescriptor, rules: input_rules_pb2.FieldRules) -> ValueCheck | None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING or kind == FieldDescriptor.TYPE_BYTES:
        shape = rules.shape
        if shape == input_rules_pb2.FIELD_SHAPE_UNSPECIFIED:
            raise UndeclaredFieldError(f"{field.full_name} declares no (rules).shape")
        max_size = rules.max_size or DEFAULT_MAX_SIZE[shape]
        if kind == FieldDescriptor.TYPE_BYTES:
            return _bytes_check(rules.min_size, max_size)
        return _text_check(shape, max_size)
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum_check(field)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _double_check
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None  # a message field always has its type
        return _WELL_KNOWN.get(field.message_type.full_name)
    if kind == FieldDescriptor.TYPE_BOOL:
        return None
    return _number_check(rules)


def plan_for(descriptor: Descriptor) -> _MessagePlan:
    """The checks of every field of ``descriptor`` by field number (built once, cached).

    Raises ``UndeclaredFieldError`` for a string or bytes field without a declared shape, so
    a new field cannot reach a handler unchecked: the gateway builds every request type's plan
    when it starts.
    """
    cached = _PLANS.get(descriptor.full_name)
    if cached is not None:
        return cached
    fields: dict[int, _FieldPlan] = {}
    required = tuple(f.name for f in descriptor.fields if _rules(f).required)
    plan = _MessagePlan(fields, required)
    _PLANS[descriptor.full_name] = plan  # before recursing: messages may refer to themselves
    try:
        for field in descriptor.fields:
            rules = _rules(field)
            nested = field.message_type
            well_known = nested is not None and nested.full_name in _WELL_KNOWN
            fields[field.number] = _FieldPlan(
                name=field.name,
                repeated=field.is_repeated,
                max_items=rules.max_items or DEFAULT_MAX_ITEMS,
                check=_value_check(field, rules),
                message=nested if nested is not None and not well_known else None,
                per_item=rules.per_item,
            )
            if nested is not None and not well_known and not nested.GetOptions().map_entry:
                plan_for(nested)
    except UndeclaredFieldError:
        del _PLANS[descriptor.full_name]
        raise
    return plan


def check_message(message: Message, prefix: str = "", *, fold: bool = True) -> list[Violation]:
    """Every rule violation in ``message``, field paths prefixed (``requests[3].``).

    The message is never changed: a signed report is bound to the digest of the request as
    the caller sent it. With ``fold``, a value that folds to a valid canonical form (a
    full-width identity number) is accepted, and every use of it goes through
    ``identity_number.normalize`` (the subject tokenizer and the query engine refuse anything
    else). Without it (signed content, whose bytes must keep one meaning), a value that is not
    already canonical is itself a violation.
    """
    violations: list[Violation] = []
    foldable: list[str] = []
    _walk(message, prefix, violations, foldable)
    if not fold:
        violations.extend((path, "must be in canonical ASCII form") for path in foldable)
    return violations


def _walk(
    message: Message,
    prefix: str,
    violations: list[Violation],
    foldable: list[str],
) -> None:
    plan = plan_for(message.DESCRIPTOR)  # type: ignore[arg-type]  # upb and pure descriptors
    for name in plan.required:
        if not _is_set(message, name):
            violations.append((prefix + name, "is required"))
    for field, value in message.ListFields():
        step = plan.fields.get(field.number)
        if step is None:  # an extension; requests carry none
            continue
        path = prefix + step.name
        if step.repeated:
            if len(value) > step.max_items:
                violations.append((path, f"must have at most {step.max_items} items"))
                continue
            if step.per_item:
                continue
            for index, item in enumerate(value):
                _one(step, item, f"{path}[{index}]", violations, foldable)
        else:
            _one(step, value, path, violations, foldable)


def _is_set(message: Message, name: str) -> bool:
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        return len(getattr(message, name)) > 0
    if field.message_type is not None:
        return message.HasField(name)
    return bool(getattr(message, name))


def _one(
    step: _FieldPlan,
    value: Any,
    path: str,
    violations: list[Violation],
    foldable: list[str],
) -> None:
    if step.check is not None and step.check(value, path, violations):
        foldable.append(path)
    if step.message is not None:
        _walk(value, path + ".", violations, foldable)


def declared_messages(descriptor: Descriptor) -> Iterator[Descriptor]:
    """``descriptor`` and every message type reachable from its fields (for tests and start-up
    checks)."""
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if current.full_name in seen or current.full_name in _WELL_KNOWN:
            continue
        seen.add(current.full_name)
        yield current
        pending.extend(f.message_type for f in current.fields if f.message_type is not None)
