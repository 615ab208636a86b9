"""The compiled input-rules checkers against the generic walk, over hostile messages.

``gateway.input_rules.check_message`` runs a checker compiled once per message type; the
generic walk (``walk_message``) is the reference statement of the rules. For every message
type the gateway accepts — every request of every service, enumerated from the service
descriptors, plus the messages signed inside requests (the provider update, consent terms) —
Hypothesis builds messages full of what attackers send (control, format and private-use
characters, identity numbers in any digits and hidden inside text, full-width forms, blank
strings, sizes and list lengths on either side of their bounds, unknown enum values, times,
durations and dates out of range, NaN) and the two must give the same violations, with the
same descriptions, in the same order, folded or not, under any prefix.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import credgate.api.credit_repair.v1
from credgate.api.credit_repair.v1 import consent_service_pb2, input_rules_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.gateway.input_rules import (
    DEFAULT_MAX_SIZE,
    check_message,
    compiled_checker,
    walk_message,
)

OBSERVATION = "440304198511030421"
FULL_WIDTH = OBSERVATION.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
ARABIC_INDIC = OBSERVATION.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))


def _accepted_types() -> list[Descriptor]:
    """Every request message of every credgate service, and the messages signed inside."""
    found: dict[str, Descriptor] = {
        d.full_name: d
        for d in (sync_pb2.ProviderUpdate.DESCRIPTOR, consent_service_pb2.ConsentTerms.DESCRIPTOR)
    }
    for info in pkgutil.iter_modules(credgate.api.credit_repair.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"credgate.api.credit_repair.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    found[method.input_type.full_name] = method.input_type
    return sorted(found.values(), key=lambda d: d.full_name)


ACCEPTED = _accepted_types()

_FRAGMENTS = [
    "", " ", "  ", "\u3000", "\t", "\n", "\r", "\x00", "\x1f", "\x7f", "\x85", "\u200b", "\u202e",
    "\u2028", "\ufeff", "\ue000", "\ufffe", "\U000f0000", "\u00ad", "a", "Z", "0", "9", "x", "X",
    "ｘ", "Ｘ", ".", "_", ":", "-", "+", "/", "=", "~", "号", "之", "粤", "执", "破申", "(", ")",
    "（", "）", "最高法", "深圳", "é", "١", "٣", "１", "2026", "03", OBSERVATION, FULL_WIDTH,
    ARABIC_INDIC, OBSERVATION[:17] + "5", OBSERVATION[:17] + "x", OBSERVATION[:17] + "ｘ",
    "44030419851103042X",
    "(2026)粤03执1号", "（2026）粤03破申8号之5", "(2026)最高法民终１号", "cns_0123456789abcdef",
]
_STRINGS = st.one_of(
    st.lists(st.sampled_from(_FRAGMENTS), max_size=6).map("".join),
    st.text(max_size=24),
    st.sampled_from([OBSERVATION, FULL_WIDTH, " " + OBSERVATION + "\u3000", "a" * 17,
                     OBSERVATION[:17] + "5"]),
    st.builds(lambda n, c: c * n, st.sampled_from(sorted({*DEFAULT_MAX_SIZE.values(), 18, 63})),
              st.sampled_from(["a", "7", "号"])).flatmap(
        lambda s: st.sampled_from([s, s + s[-1], s[:-1]])
    ),
)
_INT_EDGES = [0, 1, -1, 2, 7, 16, 17, 99, 100, 101, 1000, 1001, 2**31 - 1, -(2**31)]


def _int_strategy(field: FieldDescriptor) -> st.SearchStrategy[int]:
    rules: Any = field.GetOptions().Extensions[input_rules_pb2.rules]
    edges = list(_INT_EDGES)
    for bound in ("min_value", "max_value"):
        if rules.HasField(bound):
            value = getattr(rules, bound)
            edges += [value - 1, value, value + 1]
    kind = field.type
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        low, high = 0, 2**32 - 1
    elif kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        low, high = 0, 2**64 - 1
    elif kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
                  FieldDescriptor.TYPE_SFIXED64):
        low, high = -(2**63), 2**63 - 1
    else:
        low, high = -(2**31), 2**31 - 1
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high)
    )


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _STRINGS
    if kind == FieldDescriptor.TYPE_BYTES:
        rules: Any = field.GetOptions().Extensions[input_rules_pb2.rules]
        sizes = [0, 1, 15, 16, 17, 63, 64, 65, rules.min_size, rules.max_size]
        return st.one_of(
            st.binary(max_size=80),
            st.sampled_from(sizes).flatmap(
                lambda n: st.sampled_from([b"b" * n, b"b" * max(n - 1, 0), b"b" * (n + 1)])
            ),
        )
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.one_of(
            st.sampled_from(sorted(field.enum_type.values_by_number)), st.integers(-3, 60)
        )
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=64
                         if kind == FieldDescriptor.TYPE_DOUBLE else 32)
    return _int_strategy(field)


_SECONDS = st.one_of(
    st.sampled_from([0, 1, -1, -62_135_596_800, -62_135_596_801, 253_402_300_799,
                     253_402_300_800, 315_576_000_000, 315_576_000_001, -315_576_000_001]),
    st.integers(-(2**40), 2**40),
)
_NANOS = st.sampled_from([0, 1, -1, 999_999_999, 1_000_000_000, -999_999_999, -1_000_000_000])
_DATE_PARTS = st.tuples(
    st.sampled_from([0, 1, 1900, 2000, 2023, 2024, 9999, 10000, -1]),
    st.sampled_from([0, 1, 2, 4, 12, 13, -1]),
    st.sampled_from([0, 1, 28, 29, 30, 31, 32, -1]),
)


def _fill(draw: st.DrawFn, message: Message, depth: int) -> None:
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        nested = field.message_type
        if field.is_repeated:
            count = draw(st.one_of(st.integers(0, 3), st.sampled_from([16, 17, 1000, 1001])))
            container = getattr(message, field.name)
            if nested is None:
                if count > 3:
                    container.extend([draw(_scalar(field))] * count)
                else:
                    container.extend(draw(_scalar(field)) for _ in range(count))
            elif depth > 0:
                for _ in range(count if count <= 3 else draw(st.sampled_from([1, 2]))):
                    _value_message(draw, container.add(), depth - 1)
                if count > 3:  # long lists of one repeated item
                    template = container[0]
                    for _ in range(count - len(container)):
                        container.add().CopyFrom(template)
        elif nested is not None:
            if depth > 0:
                _value_message(draw, getattr(message, field.name), depth - 1)
                if nested.fields and not draw(st.booleans()):
                    message.ClearField(field.name)
                    getattr(message, field.name).SetInParent()  # present and empty
        else:
            setattr(message, field.name, draw(_scalar(field)))


def _value_message(draw: st.DrawFn, message: Message, depth: int) -> None:
    name = message.DESCRIPTOR.full_name
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        message.seconds = draw(_SECONDS)  # type: ignore[attr-defined]
        message.nanos = draw(_NANOS)  # type: ignore[attr-defined]
    elif name == "google.type.Date":
        message.year, message.month, message.day = draw(_DATE_PARTS)  # type: ignore[attr-defined]
    else:
        _fill(draw, message, depth)


@st.composite
def _messages(draw: st.DrawFn, descriptor: Descriptor) -> Message:
    message = GetMessageClass(descriptor)()
    _fill(draw, message, depth=3)
    return message


@pytest.mark.parametrize("descriptor", ACCEPTED, ids=lambda d: d.name)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(data=st.data())
def test_the_compiled_checker_gives_the_walks_verdicts(
    descriptor: Descriptor, data: st.DataObject
) -> None:
    message = data.draw(_messages(descriptor))
    prefix = data.draw(st.sampled_from(["", "requests[3].", "statement."]))
    for fold in (True, False):
        assert check_message(message, prefix, fold=fold) == walk_message(
            message, prefix, fold=fold
        )


def test_there_are_message_types_and_hostile_inputs_do_break_rules() -> None:
    """The property above compares like with like: the enumeration finds the services'
    requests, and the generator's values break rules (else equality proves nothing)."""
    names = {d.full_name for d in ACCEPTED}
    assert "credit_repair.v1.GetRepairStatusRequest" in names
    assert "credit_repair.v1.ProviderUpdate" in names
    assert len(ACCEPTED) > 30
    update = sync_pb2.ProviderUpdate.DESCRIPTOR
    request = service_pb2.GetRepairStatusRequest.DESCRIPTOR
    for descriptor, expected in (
        (request, "is required"), (request, "must be at least"),
        (update, "must not contain control, format or private-use characters"),
        (update, "must not be blank"), (update, "must not contain an identity number"),
        (update, "must be in canonical ASCII form"), (update, "must be a calendar date"),
        (update, "must be a time between 0001-01-01 and 9999-12-31"),
        (update, "must be at most"), (request, "must be a PRC case number"),
        (update, "must be ASCII letters"), (update, "CHECK_CHARACTER"), (update, "is not a known"),
    ):
        # find raises NoSuchExample if the generator never produces the violation
        find(
            _messages(descriptor),
            lambda m, e=expected: any(e in d for _, d in walk_message(m, fold=False)),  # type: ignore[misc]
            settings=settings(max_examples=2000, database=None, deadline=None,
                              suppress_health_check=list(HealthCheck)),
        )


@pytest.mark.parametrize("descriptor", ACCEPTED, ids=lambda d: d.name)
def test_every_accepted_type_compiles(descriptor: Descriptor) -> None:
    assert compiled_checker(descriptor) is compiled_checker(descriptor)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_field_the_caller_checked_is_left_out_and_nothing_else(data: st.DataObject) -> None:
    """The sync validator checks a signed update's identity number itself (stricter: canonical
    ASCII, a real birth date, the check character) and says so with ``checked``."""
    update = data.draw(_messages(sync_pb2.ProviderUpdate.DESCRIPTOR))
    checked = frozenset({"identity_number"})
    expected = [
        v for v in walk_message(update, fold=False)
        if v[0] != "identity_number" or v[1] == "is required"
    ]
    assert check_message(update, fold=False, checked=checked) == expected
