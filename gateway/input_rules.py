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


def check_message(
    message: Message,
    prefix: str = "",
    *,
    fold: bool = True,
    checked: frozenset[str] = frozenset(),
) -> list[Violation]:
    """Every rule violation in ``message``, field paths prefixed (``requests[3].``).

    The message is never changed: a signed report is bound to the digest of the request as
    the caller sent it. With ``fold``, a value that folds to a valid canonical form (a
    full-width identity number) is accepted, and every use of it goes through
    ``identity_number.normalize`` (the subject tokenizer and the query engine refuse anything
    else). Without it (signed content, whose bytes must keep one meaning), a value that is not
    already canonical is itself a violation.

    ``checked`` names top-level fields whose *value* the caller has already checked at least
    as strictly as their rules (the sync validator's own identity-number check of a signed
    update): their value checks are left out, their presence rules are not.

    Runs the checker compiled for the message's type (``compiled_checker``): the same rules,
    verdicts and descriptions as the generic walk (``walk_message``, kept as the reference
    the property tests compare against), in a fraction of its Python calls.
    """
    violations: list[Violation] = []
    foldable: list[str] = []
    key = (message.DESCRIPTOR.full_name, checked)
    checker = _COMPILED.get(key)
    if checker is None:
        checker = compiled_checker(message.DESCRIPTOR, checked)  # type: ignore[arg-type]
    checker(message, prefix, violations, foldable)
    if not fold and foldable:
        violations.extend((path, "must be in canonical ASCII form") for path in foldable)
    return violations


def walk_message(message: Message, prefix: str = "", *, fold: bool = True) -> list[Violation]:
    """``check_message`` by the generic walk over the message's plan: the reference semantics.

    Kept for the property tests that hold the compiled checkers to it, and as the readable
    statement of what the rules mean; the gateway runs the compiled checkers.
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
            _generic_field(step, value, path, violations, foldable)
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


# --- Compiled checkers ----------------------------------------------------------------------
#
# The generic walk above pays, per field of every message checked, for ListFields, a plan
# look-up, a path string, and two or three Python calls per value; on the ingest path that
# was half of the CPU of validating a provider update. A compiled checker is the same plan
# turned once per message type into one straight-line Python function per message type:
# attribute reads instead of ListFields, the value checks inlined, paths built only when a
# violation is reported. Its verdicts, descriptions and their order are the walk's (fields
# in field-number order, as ListFields lists them; required fields first);
# tests/test_input_rules_compiled.py holds the two to the same output over hostile messages
# of every type the gateway accepts.

Checker = Callable[[Message, str, list[Violation], list[str]], None]

_COMPILED: dict[tuple[str, frozenset[str]], Checker] = {}
_TEXT_SHAPES_ASCII = {
    input_rules_pb2.FIELD_SHAPE_IDENTIFIER: (_IDENTIFIER, "must be ASCII letters and digits, "
                                             "then also '.', '_', ':' or '-'"),
    input_rules_pb2.FIELD_SHAPE_PAGE_TOKEN: (_PAGE_TOKEN, "is not a page token this service "
                                             "issued"),
}
_ID_INSIDE_MIN = 18
"""The shortest string ``_IDENTITY_NUMBER_INSIDE`` can match (17 digits and one more)."""


def _identity_shape(value: str, path: str, violations: list[Violation]) -> bool:
    return _shape_check(input_rules_pb2.FIELD_SHAPE_IDENTITY_NUMBER, value, path, violations)


def _case_shape(value: str, path: str, violations: list[Violation]) -> bool:
    return _shape_check(input_rules_pb2.FIELD_SHAPE_CASE_NUMBER, value, path, violations)


def _generic_field(
    step: _FieldPlan, value: Any, path: str, violations: list[Violation], foldable: list[str]
) -> None:
    """One repeated field: its item bound, then each item (the walk's handling, which the
    compiled checker calls for map fields; requests carry none today)."""
    if len(value) > step.max_items:
        violations.append((path, f"must have at most {step.max_items} items"))
        return
    if step.per_item:
        return
    for index, item in enumerate(value):
        _one(step, item, f"{path}[{index}]", violations, foldable)


class _Compiler:
    """Writes the source of one function per message type, then compiles them together."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.pending: list[Descriptor] = []
        self.source: list[str] = []
        self.namespace: dict[str, Any] = {
            "_FORBIDDEN_TEXT": _FORBIDDEN_IN_TEXT.search,
            "_FORBIDDEN_LINE": _FORBIDDEN_IN_LINE.search,
            "_ID_INSIDE": _IDENTITY_NUMBER_INSIDE.search,
            "_identity_shape": _identity_shape,
            "_case_shape": _case_shape,
            "_generic_field": _generic_field,
            "_date": dt.date,
            "_INF": float("inf"),
        }
        self._constants = 0

    def constant(self, value: Any) -> str:
        """A name in the compiled code's namespace bound to ``value``."""
        self._constants += 1
        name = f"_k{self._constants}"
        self.namespace[name] = value
        return name

    def function_for(self, descriptor: Descriptor) -> str:
        name = self.names.get(descriptor.full_name)
        if name is None:
            name = f"_check_{len(self.names)}"
            self.names[descriptor.full_name] = name
            self.pending.append(descriptor)
        return name

    def build(self, descriptor: Descriptor, checked: frozenset[str]) -> Checker:
        plan_for(descriptor)  # raises UndeclaredFieldError as the walk would
        top = self.function_for(descriptor)
        first = True
        while self.pending:
            current = self.pending.pop()
            self._message(current, checked if first else frozenset())
            first = False
        code = compile("\n".join(self.source), f"<input rules: {descriptor.full_name}>", "exec")
        exec(code, self.namespace)  # noqa: S102 - source generated above from the schema
        checker: Checker = self.namespace[top]
        return checker

    def _message(self, descriptor: Descriptor, checked: frozenset[str]) -> None:
        plan = plan_for(descriptor)
        out = [f"def {self.names[descriptor.full_name]}(m, prefix, V, F):"]
        for name in plan.required:
            field = descriptor.fields_by_name[name]
            if field.is_repeated:
                test = f"not len(m.{name})"
            elif field.message_type is not None:
                test = f"not m.HasField({name!r})"
            else:
                test = f"not m.{name}"
            out.append(f"    if {test}:")
            out.append(f"        V.append((prefix + {name!r}, 'is required'))")
        for field in sorted(descriptor.fields, key=lambda f: f.number):
            if field.name in checked:
                continue
            out.extend("    " + line for line in self._field(field, plan.fields[field.number]))
        out.append("    return None")
        self.source.append("\n".join(out) + "\n")

    def _field(self, field: FieldDescriptor, step: _FieldPlan) -> list[str]:
        name = field.name
        path = f"prefix + {name!r}"
        nested = field.message_type
        if field.is_repeated:
            if nested is not None and nested.GetOptions().map_entry:
                s = self.constant(step)
                return [
                    f"v = m.{name}",
                    "if v:",
                    f"    _generic_field({s}, v, {path}, V, F)",
                ]
            lines = [
                f"v = m.{name}",
                "if v:",
                f"    if len(v) > {step.max_items}:",
                f"        V.append(({path}, 'must have at most {step.max_items} items'))",
            ]
            if step.per_item:
                return lines
            item_path = f"f'{{prefix}}{name}[{{i}}]'"
            body = self._value(field, step, "w", item_path)
            if body == ["pass"]:
                return lines
            lines.append("    else:")
            lines.append("        for i, w in enumerate(v):")
            lines.extend("            " + line for line in body)
            return lines
        if self._value(field, step, "v", path) == ["pass"]:
            return []  # nothing to check in the value (a bool, an unbounded number)
        if nested is not None:
            return [f"if m.HasField({name!r}):"] + [
                "    " + line for line in self._value(field, step, f"m.{name}", path)
            ]
        if field.has_presence:
            return [f"if m.HasField({name!r}):", f"    v = m.{name}"] + [
                "    " + line for line in self._value(field, step, "v", path)
            ]
        # Implicit presence: ListFields lists the field only when its value is not the
        # default; for every check here a default value (0, "", b"") has no violation, except
        # a number range, which the walk never applies to an unlisted 0.
        body = self._value(field, step, "v", path)
        if body == ["pass"]:
            return []
        if field.type == FieldDescriptor.TYPE_STRING:
            return [f"v = m.{name}", *body]  # the string check starts with ``if v:``
        return [f"v = m.{name}", "if v:"] + ["    " + line for line in body]

    def _value(self, field: FieldDescriptor, step: _FieldPlan, value: str, path: str) -> list[str]:
        """Lines checking ``value`` (an expression) at ``path`` (an expression evaluated only
        when a violation is reported, except where a helper needs it)."""
        kind = field.type
        lines: list[str] = []
        if value != "v" and value != "w":
            lines.append(f"x = {value}")
            value = "x"
        if kind == FieldDescriptor.TYPE_STRING:
            # An empty string has no violation (presence is the "is required" rule).
            lines.append(f"if {value}:")
            lines.extend("    " + line for line in self._text(field, value, path))
        elif kind == FieldDescriptor.TYPE_BYTES:
            rules = _rules(field)
            high = rules.max_size or DEFAULT_MAX_SIZE[rules.shape]
            low = rules.min_size
            lines += [
                f"if len({value}) > {high}:",
                f"    V.append(({path}, 'must be at most {high} bytes'))",
                f"elif {value} and len({value}) < {low}:",
                f"    V.append(({path}, 'must be at least {low} bytes'))",
            ]
        elif kind == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None
            known = self.constant(frozenset(field.enum_type.values_by_number))
            message = f"is not a known {field.enum_type.name} value"
            lines += [f"if {value} not in {known}:", f"    V.append(({path}, {message!r}))"]
        elif kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            lines += [
                f"if {value} != {value} or {value} == _INF or {value} == -_INF:",
                f"    V.append(({path}, 'must be a finite number'))",
            ]
        elif kind == FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            lines.extend(self._message_value(field.message_type, value, path))
        elif kind != FieldDescriptor.TYPE_BOOL:
            rules = _rules(field)
            floor: int | None = rules.min_value if rules.HasField("min_value") else None
            ceiling: int | None = rules.max_value if rules.HasField("max_value") else None
            if floor is not None:
                lines += [
                    f"if {value} < {floor}:",
                    f"    V.append(({path}, 'must be at least {floor}'))",
                ]
            if ceiling is not None:
                high = ceiling
                keyword = "elif" if floor is not None else "if"
                lines += [
                    f"{keyword} {value} > {high}:",
                    f"    V.append(({path}, 'must be at most {high}'))",
                ]
        return lines or ["pass"]

    def _message_value(self, descriptor: Descriptor, value: str, path: str) -> list[str]:
        full_name = descriptor.full_name
        if full_name == "google.protobuf.Timestamp":
            low, high = _TIMESTAMP_SECONDS
            return [
                f"s = {value}.seconds",
                f"n = {value}.nanos",
                f"if not {low} <= s <= {high} or not 0 <= n <= {_NANOS}:",
                f"    V.append(({path}, 'must be a time between 0001-01-01 and 9999-12-31'))",
            ]
        if full_name == "google.protobuf.Duration":
            return [
                f"s = {value}.seconds",
                f"n = {value}.nanos",
                f"if abs(s) > {_DURATION_SECONDS} or abs(n) > {_NANOS} or (s > 0 > n) "
                "or (s < 0 < n):",
                f"    V.append(({path}, 'must be a duration within ±10,000 years'))",
            ]
        if full_name == "google.type.Date":
            return [
                f"y = {value}.year",
                f"mo = {value}.month",
                f"d = {value}.day",
                "if not (0 <= y <= 9999 and 0 <= mo <= 12 and 0 <= d <= 31):",
                f"    V.append(({path}, 'must be a calendar date'))",
                "elif y and mo and d > 28:",  # days 1-28 exist in every month of years 1-9999
                "    try:",
                "        _date(y, mo, d)",
                "    except ValueError:",
                f"        V.append(({path}, 'must be a calendar date'))",
            ]
        if full_name in _WELL_KNOWN:  # pragma: no cover - the table above covers _WELL_KNOWN
            raise AssertionError(full_name)
        function = self.function_for(descriptor)
        return [f"{function}({value}, {path} + '.', V, F)"]

    def _text(self, field: FieldDescriptor, value: str, path: str) -> list[str]:
        rules = _rules(field)
        shape = rules.shape
        high = rules.max_size or DEFAULT_MAX_SIZE[shape]
        forbidden = (
            "_FORBIDDEN_TEXT" if shape == input_rules_pb2.FIELD_SHAPE_TEXT else "_FORBIDDEN_LINE"
        )
        id_inside = [
            f"if len({value}) >= {_ID_INSIDE_MIN} and _ID_INSIDE({value}) is not None:",
            f"    V.append(({path}, 'must not contain an identity number'))",
        ]
        general = [
            f"if len({value}) > {high}:",
            f"    V.append(({path}, 'must be at most {high} characters'))",
            f"elif {forbidden}({value}) is not None:",
            f"    V.append(({path}, 'must not contain control, format or private-use "
            "characters'))",
            f"elif {value}.isspace():",
            f"    V.append(({path}, 'must not be blank'))",
            "else:",
        ]
        if shape == input_rules_pb2.FIELD_SHAPE_IDENTITY_NUMBER:
            return [
                *general,
                f"    p = {path}",
                f"    if _identity_shape({value}, p, V):",
                "        F.append(p)",
            ]
        if shape == input_rules_pb2.FIELD_SHAPE_CASE_NUMBER:
            return general + [
                f"    p = {path}",
                f"    if _case_shape({value}, p, V):",
                "        F.append(p)",
            ] + ["    " + line for line in id_inside]
        ascii_shape = _TEXT_SHAPES_ASCII.get(shape)
        if ascii_shape is None:
            return general + ["    " + line for line in id_inside]
        pattern, message = ascii_shape
        match = self.constant(pattern.fullmatch)
        # A value of the shape's characters is free of every forbidden character and not
        # blank; only the identity-number test remains for it. Anything else takes the
        # general sequence, in the walk's order.
        return [
            f"if len({value}) <= {high} and {match}({value}) is not None:",
            *["    " + line for line in id_inside],
            "else:",
            *["    " + line for line in general],
            f"        if {match}({value}) is None:",
            f"            V.append(({path}, {message!r}))",
            *["        " + line for line in id_inside],
        ]


def compiled_checker(descriptor: Descriptor, checked: frozenset[str] = frozenset()) -> Checker:
    """The compiled checker of ``descriptor`` (built once per type and ``checked``, cached):
    ``checker(message, prefix, violations, foldable)`` appends what ``walk_message`` finds.

    Raises ``UndeclaredFieldError`` like ``plan_for``."""
    key = (descriptor.full_name, checked)
    cached = _COMPILED.get(key)
    if cached is None:
        cached = _COMPILED[key] = _Compiler().build(descriptor, checked)
    return cached
