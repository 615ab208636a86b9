"""Helpers for the hostile-input properties: the RPCs and fields from the service descriptors,
hostile values for each kind of field, a full gateway to aim them at, and the outcome rule.

Nothing here names an RPC or a field by hand except where a list says why: the RPCs come from
``DESCRIPTOR.services_by_name`` of every ``credit_repair.v1`` module and the fields from each
request message, recursively, so a new RPC or field is attacked the day it is added. The few
hand-written tables are the callers to use per service (a test fails for a service without
one), plausible starting values by field name (so a hostile value meets the checks behind the
obvious ones), and the one ``bytes`` field whose content is itself a signed message.

The outcome rule (``assert_defined_outcome``) is what issue #12 promises for every call: a
defined status, never UNKNOWN or INTERNAL; every error a ``google.rpc.Status`` with ErrorInfo;
INVALID_ARGUMENT with a BadRequest naming a real field; nothing of the hostile value echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
import pkgutil
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor, message_factory, text_format, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import strategies as st

import credgate.api.credit_repair.v1
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import REFERENCE_TIME, Population, State
from credgate.adapters.mocks.providers import PLATFORM, SCRIPTS, source_facts
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.errors import REQUEST_ID_METADATA_KEY
from credgate.core.sync.signing import sign_update
from credgate.gateway.app import build_gateway
from credgate.gateway.config import config_from_mapping
from credgate.gateway.input_boundary import UNDECODABLE_FIELD
from credgate.gateway.pki import institution_paths
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.wire_errors import status_from_error
from tests.fixtures.mocks import RunningGateway, gateway_document
from tests.fixtures.pki import DevPki, mtls_channel
from tests.fixtures.subjects import Subject, enrol_subject, issue_subject_certificate
from tests.sync_support import ensure_provider_certs

FD = descriptor.FieldDescriptor
OBSERVATION_SCENARIO = "observation"
CASE_REFERENCE = "(2026)粤03执监1号"
TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
SUBJECT_CALLER = "subject"
"""Stands for the certificate of the observation subject, issued when the gateway starts."""

# --- The RPCs, from the descriptors ---------------------------------------------------------


def service_modules() -> list[Any]:
    """Every generated ``credit_repair.v1`` ``*_pb2`` module (services are found in them)."""
    return [
        importlib.import_module(f"credgate.api.credit_repair.v1.{info.name}")
        for info in pkgutil.iter_modules(credgate.api.credit_repair.v1.__path__)
        if info.name.endswith("_pb2")
    ]


def all_methods() -> list[descriptor.MethodDescriptor]:
    """Every RPC of every credgate service, in a stable order."""
    methods = [
        method
        for module in service_modules()
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    return sorted(methods, key=lambda m: m.full_name)


def method_path(method: descriptor.MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def message_class(desc: descriptor.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(desc)


# Which caller to send each service's RPCs as: the roles the service is meant for, so that a
# hostile value meets the request checks rather than only the role check. Keyed by service
# name; a service missing here fails ``callers_for`` (name its callers when you add it).
SERVICE_CALLERS: dict[str, tuple[str, ...]] = {
    "credit_repair.v1.ConsentService": ("office-demo", "bank-demo"),
    "credit_repair.v1.ObjectionService": (
        SUBJECT_CALLER,
        "bank-demo",
        "provider-disclosure",
        "regulator-demo",
    ),
    "credit_repair.v1.ProviderSyncService": ("provider-disclosure",),
    "credit_repair.v1.ReconciliationService": ("regulator-demo", "provider-disclosure"),
    "credit_repair.v1.RegulatorService": ("regulator-demo",),
    "credit_repair.v1.RepairApplicationService": (
        SUBJECT_CALLER,
        "bank-demo",
        "court-demo",
        "agency-demo",
    ),
    "credit_repair.v1.RepairStatusService": ("court-demo",),
    "credit_repair.v1.SelfInquiryService": (SUBJECT_CALLER,),
    "credit_repair.v1.SigningKeyService": ("bank-demo",),
}


def callers_for(method: descriptor.MethodDescriptor) -> tuple[str, ...]:
    service = method.containing_service.full_name
    assert service in SERVICE_CALLERS, f"name the callers of {service} in SERVICE_CALLERS"
    return SERVICE_CALLERS[service]


# --- The fields, from the descriptors -------------------------------------------------------

FieldPath = tuple[FD, ...]


def field_paths(desc: descriptor.Descriptor, seen: tuple[str, ...] = ()) -> list[FieldPath]:
    """Every leaf field reachable from ``desc`` (into sub-messages and repeated fields);
    a Timestamp counts as a leaf (its hostile values are whole invalid timestamps)."""
    paths: list[FieldPath] = []
    for fd in desc.fields:
        sub = fd.message_type
        if sub is None or sub.full_name == TIMESTAMP:
            paths.append((fd,))
        elif sub.full_name not in seen:
            paths += [(fd, *rest) for rest in field_paths(sub, (*seen, desc.full_name))]
    return paths


def path_name(path: FieldPath) -> str:
    """``requests.identity_number`` — how the path is named in test ids."""
    return ".".join(fd.name for fd in path)


def request_field_path(path: FieldPath) -> str:
    """The path as a BadRequest would name it: ``requests[0].identity_number``."""
    return ".".join(f"{fd.name}[0]" if fd.is_repeated else fd.name for fd in path)


_VIOLATION_PART = re.compile(r"([a-z_][a-z0-9_]*)(?:\[(\d+)\])?")


def names_a_field(desc: descriptor.Descriptor, violation_field: str) -> bool:
    """Whether ``violation_field`` (``requests[3].identity_number``) is a field of ``desc``."""
    current: descriptor.Descriptor | None = desc
    for part in violation_field.split("."):
        matched = _VIOLATION_PART.fullmatch(part)
        if current is None or matched is None or matched.group(1) not in current.fields_by_name:
            return False
        current = current.fields_by_name[matched.group(1)].message_type
    return True


# Plausible values by field name, so a request gets past the obvious checks and a hostile value
# in one field meets the checks behind them. Any other field keeps its default, enums their
# first defined non-zero value.
PLAUSIBLE_BY_NAME: dict[str, object] = {
    "purpose": vocab.PURPOSE_JUDICIAL_INVESTIGATION,
    "case_reference": CASE_REFERENCE,
    "page_size": 10,
    "client_agent": "tests",
}


def plausible_request(
    desc: descriptor.Descriptor, identity_number: str, seen: tuple[str, ...] = ()
) -> Message:
    """A request for ``desc`` with plausible values: the identity number given, names from
    ``PLAUSIBLE_BY_NAME``, first non-zero enum values, one element in repeated messages."""
    request = message_class(desc)()
    _fill(request, identity_number, seen)
    return request


def _fill(message: Message, identity_number: str, seen: tuple[str, ...]) -> None:
    desc = message.DESCRIPTOR
    for fd in desc.fields:
        if fd.message_type is not None:
            if fd.message_type.full_name.startswith("google.") or fd.message_type.full_name in (
                *seen,
                desc.full_name,
            ):
                continue
            child = getattr(message, fd.name).add() if fd.is_repeated else getattr(message, fd.name)
            _fill(child, identity_number, (*seen, desc.full_name))
            if not fd.is_repeated and not child.ListFields():
                message.ClearField(fd.name)
            continue
        if fd.is_repeated:
            continue
        value: object | None = None
        if fd.name == "identity_number":
            value = identity_number
        elif fd.name in PLAUSIBLE_BY_NAME:
            value = PLAUSIBLE_BY_NAME[fd.name]
        elif fd.enum_type is not None:
            value = next((v.number for v in fd.enum_type.values if v.number != 0), None)
        if value is not None:
            setattr(message, fd.name, value)


def set_at(request: Message, path: FieldPath, value: object) -> None:
    """Put ``value`` at ``path`` (the first element of each repeated field on the way)."""
    current = request
    for fd in path[:-1]:
        if fd.is_repeated:
            container = getattr(current, fd.name)
            current = container[0] if len(container) else container.add()
        else:
            current = getattr(current, fd.name)
    last = path[-1]
    if last.message_type is not None:  # a Timestamp
        assert isinstance(value, Message)
        target = getattr(current, last.name)
        if last.is_repeated:
            target.add().CopyFrom(value)
        else:
            target.CopyFrom(value)
    elif last.is_repeated:
        container = getattr(current, last.name)
        if len(container):
            container[0] = value
        else:
            container.append(value)
    else:
        setattr(current, last.name, value)


# --- Hostile values --------------------------------------------------------------------------

DIGIT_ZEROS = {
    "fullwidth": 0xFF10,
    "arabic_indic": 0x0660,
    "extended_arabic_indic": 0x06F0,
    "devanagari": 0x0966,
    "bengali": 0x09E6,
    "thai": 0x0E50,
    "mathematical_bold": 0x1D7CE,
}
"""Digit zero of scripts whose digits Python's ``\\d``, ``int()`` and ``str.isdigit`` accept."""
C0_C1_CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))]
BIDI_AND_FORMAT = [
    "\u200e", "\u200f", "\u061c",  # LRM, RLM, ALM
    *(chr(c) for c in range(0x202A, 0x202F)),  # LRE RLE PDF LRO RLO
    *(chr(c) for c in range(0x2066, 0x206A)),  # LRI RLI FSI PDI
    "\u200b", "\u2060", "\ufeff",  # zero-width space, word joiner, BOM
]  # fmt: skip
WHITESPACE_ONLY = [" ", "  ", "\t", "\n", "\u3000", "\u00a0", " \u3000 ", "\u2028", "\r\n "]
HUGE_TEXT_BYTES = 1024 * 1024
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1
TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS = -62135596800, 253402300799
"""0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range google.protobuf.Timestamp allows."""


class Shown(str):
    """A hostile string whose repr stays short (a 1 MiB value in a failure report is noise)."""

    __slots__ = ()

    def __repr__(self) -> str:
        if len(self) <= 80:
            return str.__repr__(self)
        return f"<{len(self)} characters starting {str.__repr__(self[:8])}>"


class ShownBytes(bytes):
    """Hostile bytes whose repr stays short."""

    __slots__ = ()

    def __repr__(self) -> str:
        if len(self) <= 80:
            return bytes.__repr__(self)
        return f"<{len(self)} bytes starting {bytes.__repr__(self[:8])}>"


HUGE_TEXTS = (Shown("7" * HUGE_TEXT_BYTES), Shown("粤" * (HUGE_TEXT_BYTES // 3)))
HUGE_BYTES = ShownBytes(b"\x5a" * HUGE_TEXT_BYTES)


def digits_in(script: str, text: str) -> str:
    """``text`` with every ASCII digit written in ``script`` (a key of DIGIT_ZEROS)."""
    zero = DIGIT_ZEROS[script]
    return "".join(chr(zero + int(c)) if "0" <= c <= "9" else c for c in text)


def ascii_digits(text: str) -> str:
    """``text`` with every Unicode decimal digit written as its ASCII digit."""
    return "".join(str(unicodedata.decimal(c)) if unicodedata.decimal(c, None) is not None
                   else c for c in text)  # fmt: skip


def _insert(base: str, inserted: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.integers(0, len(base)), inserted).map(
        lambda drawn: base[: drawn[0]] + drawn[1] + base[drawn[0] :]
    )


def _unicode_digit_text(base: str, identity_number: str) -> st.SearchStrategy[str]:
    scripts = st.sampled_from(sorted(DIGIT_ZEROS))
    # Some digits of the base rewritten, or an identity number in another script put in.
    if any(c.isascii() and c.isdigit() for c in base):
        positions = [i for i, c in enumerate(base) if c.isascii() and c.isdigit()]
        rewritten = st.tuples(scripts, st.sets(st.sampled_from(positions), min_size=1)).map(
            lambda drawn: "".join(
                digits_in(drawn[0], c) if i in drawn[1] else c for i, c in enumerate(base)
            )
        )
    else:
        rewritten = st.nothing()
    inserted = _insert(base, st.tuples(scripts, st.just(identity_number)).map(
        lambda drawn: digits_in(*drawn)))  # fmt: skip
    return st.one_of(rewritten, inserted)


STRING_CLASSES = ("unicode_digits", "control", "bidi", "whitespace_only", "huge", "any_text")
BYTES_CLASSES = ("random_bytes", "huge")
VALUE_CLASSES: dict[str, tuple[str, ...]] = {
    "string": STRING_CLASSES,
    "bytes": BYTES_CLASSES,
    "enum": ("unknown_enum",),
    "integer": ("extreme_integer",),
    "float": ("non_finite",),
    "bool": ("bool",),
    "timestamp": ("invalid_timestamp",),
}


def field_kind(fd: FD) -> str:
    if fd.message_type is not None:
        return "timestamp"
    if fd.type == FD.TYPE_STRING:
        return "string"
    if fd.type == FD.TYPE_BYTES:
        return "bytes"
    if fd.enum_type is not None:
        return "enum"
    if fd.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return "float"
    if fd.type == FD.TYPE_BOOL:
        return "bool"
    return "integer"


_UNSIGNED = {FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64}
_SIXTY_FOUR = {FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64, FD.TYPE_UINT64, FD.TYPE_FIXED64}


def _integers(fd: FD) -> list[int]:
    if fd.type in _UNSIGNED:
        top = UINT64_MAX if fd.type in _SIXTY_FOUR else UINT32_MAX
        return [0, 1, top, top - 1, 2**31, 2**53 + 1]
    if fd.type in _SIXTY_FOUR:
        return [INT64[0], INT64[1], -1, 0, INT64[0] + 1, INT32[0], INT32[1], 2**53 + 1]
    return [INT32[0], INT32[1], -1, 0, INT32[0] + 1, INT32[1] - 1]


def _bad_timestamps() -> list[timestamp_pb2.Timestamp]:
    stamps = [
        (TIMESTAMP_MIN_SECONDS - 1, 0),
        (TIMESTAMP_MAX_SECONDS + 1, 0),
        (0, 10**9),
        (0, 2**31 - 1),
        (1_700_000_000, -1),
        (INT64[1], 0),
        (INT64[0], 0),
        (-1, -(2**31)),
    ]
    return [timestamp_pb2.Timestamp(seconds=s, nanos=n) for s, n in stamps]


def hostile_values(
    fd: FD, value_class: str, base: object, identity_number: str
) -> st.SearchStrategy[Any]:
    """Hostile values of one class for field ``fd`` whose plausible value is ``base``."""
    text = base if isinstance(base, str) else ""
    if value_class == "unicode_digits":
        return _unicode_digit_text(text, identity_number)
    if value_class == "control":
        return _insert(text, st.sampled_from(C0_C1_CONTROLS))
    if value_class == "bidi":
        return _insert(text, st.lists(st.sampled_from(BIDI_AND_FORMAT), min_size=1, max_size=3)
                       .map("".join))  # fmt: skip
    if value_class == "whitespace_only":
        return st.sampled_from(WHITESPACE_ONLY)
    if value_class == "huge":
        if fd.type == FD.TYPE_BYTES:
            return st.just(HUGE_BYTES)
        return st.sampled_from(HUGE_TEXTS)
    if value_class == "any_text":
        return st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
    if value_class == "random_bytes":
        return st.binary(min_size=1, max_size=64)
    if value_class == "unknown_enum":
        assert fd.enum_type is not None
        highest = max(v.number for v in fd.enum_type.values)
        return st.sampled_from([highest + 1, 9999, -1, INT32[0], INT32[1]])
    if value_class == "extreme_integer":
        return st.sampled_from(_integers(fd))
    if value_class == "non_finite":
        return st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308])
    if value_class == "bool":
        return st.booleans()
    if value_class == "invalid_timestamp":
        return st.sampled_from(_bad_timestamps())
    raise AssertionError(f"unknown value class {value_class}")


def value_at(request: Message, path: FieldPath) -> object:
    """The plausible value ``path`` holds in ``request`` ("" or 0 when unset)."""
    current: Any = request
    for fd in path:
        current = getattr(current, fd.name)
        if fd.is_repeated:
            if not len(current):
                return None
            current = current[0]
    return current


# --- The outcome rule -----------------------------------------------------------------------

DEFINED_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
"""The statuses a gateway may answer a hostile request with. Absent on purpose: UNKNOWN and
INTERNAL (a crash), DEADLINE_EXCEEDED and CANCELLED (nobody answered), DATA_LOSS,
UNIMPLEMENTED."""
HEALTHY_STORE_REASONS = frozenset({"AUDIT_UNAVAILABLE"})
"""Reasons that blame a store; in these tests every store is healthy, so such an answer means
the hostile value got as far as the store instead of being refused at the request check."""


@dataclass(frozen=True)
class Outcome:
    """How a call ended: its code, the rich status if any, and the request id."""

    code: grpc.StatusCode
    status: status_pb2.Status | None = None
    request_id: str | None = None
    responses: list[bytes] = field(default_factory=list)


def outcome_of_error(error: grpc.aio.AioRpcError) -> Outcome:
    request_id = None
    for key, value in tuple(error.trailing_metadata() or ()):
        if key == REQUEST_ID_METADATA_KEY:
            request_id = value.decode() if isinstance(value, bytes) else str(value)
    return Outcome(error.code(), status_from_error(error), request_id)


def _details(status: status_pb2.Status) -> tuple[
    error_details_pb2.ErrorInfo | None, error_details_pb2.BadRequest | None, str
]:  # fmt: skip
    """ErrorInfo, BadRequest, and every text the caller is shown: the message and each
    string inside each detail (decoded — the wire bytes of a detail hold tags and lengths that
    look like control characters)."""
    info = bad = None
    shown = [status.message]
    for detail in status.details:
        cls = getattr(error_details_pb2, detail.TypeName().rsplit(".", 1)[-1], None)
        if cls is None or not detail.Is(cls.DESCRIPTOR):
            shown.append(detail.value.decode("utf-8", "replace"))  # unknown: judge the bytes
            continue
        unpacked = cls()
        detail.Unpack(unpacked)
        if isinstance(unpacked, error_details_pb2.BadRequest):
            # A field path made of schema names only (``fact.source_id``) is the schema's
            # word, not the caller's: a short hostile value that happens to spell part of it
            # ("cor" in ``requested_correction``) is no echo. A path with anything else in it
            # (a map key, an index) is judged like any other text.
            for violation in unpacked.field_violations:
                texts = list(iter_strings(violation))
                if _SCHEMA_PATH.fullmatch(violation.field):
                    texts.remove(violation.field)
                shown += texts
        else:
            shown += iter_strings(unpacked)
        if isinstance(unpacked, error_details_pb2.ErrorInfo):
            info = unpacked
            shown += [f"{k}={v}" for k, v in unpacked.metadata.items()]
        elif isinstance(unpacked, error_details_pb2.BadRequest):
            bad = unpacked
    return info, bad, "\n".join(shown)


_DIGIT_RUN = re.compile(r"\d{6,}")
_SCHEMA_PATH = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")


def echoes(value: object, shown: str) -> bool:
    """Whether ``shown`` (a status message and its details) repeats ``value`` or a tell-tale
    part of it: the value itself, a long slice of it, any control or bidi character of it, or
    a run of its digits (in any script, or folded to ASCII)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or not value.strip():
        return False
    if len(value.strip()) >= 3 and value in shown:
        return True
    if len(value) > 32 and any(value[i : i + 32] in shown for i in (0, len(value) // 2)):
        return True
    marks = set(value) & (set(C0_C1_CONTROLS) | set(BIDI_AND_FORMAT)) - {"\n"}
    if any(mark in shown for mark in marks):
        return True
    return any(run in shown or ascii_digits(run) in shown for run in _DIGIT_RUN.findall(value))


def assert_defined_outcome(
    outcome: Outcome,
    request: descriptor.Descriptor,
    hostile: Sequence[object] = (),
    *,
    undecodable: bool = False,
) -> None:
    """The rule every answer to a hostile request must follow (see the module docstring).

    ``undecodable``: nothing was parsed, so no field can be named; the BadRequest must name
    the whole message as the gateway documents it (``request``, docs/input-rules.md)."""
    code = outcome.code
    assert code == grpc.StatusCode.OK or code in DEFINED_ERRORS, f"status {code.name}"
    if code == grpc.StatusCode.OK:
        return
    status = outcome.status
    assert status is not None, f"{code.name} without a google.rpc.Status"
    info, bad, shown = _details(status)
    assert info is not None, f"{code.name} without ErrorInfo"
    assert info.domain == "credgate", info
    assert re.fullmatch(r"[A-Z][A-Z0-9_]+", info.reason), info
    assert info.reason not in HEALTHY_STORE_REASONS, f"{code.name}/{info.reason}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert bad is not None, f"INVALID_ARGUMENT/{info.reason} without a BadRequest"
        assert bad.field_violations, f"INVALID_ARGUMENT/{info.reason}: BadRequest names nothing"
        named = [v.field for v in bad.field_violations]
        if undecodable:
            assert named == [UNDECODABLE_FIELD], f"BadRequest names {named}"
        else:
            scopes = [request, *_item_types(request)]
            assert any(names_a_field(scope, f) for scope in scopes for f in named), (
                f"BadRequest names {named}"
            )
    for value in hostile:
        assert not echoes(value, shown), f"{code.name}/{info.reason} echoes the hostile value"


def _item_types(desc: descriptor.Descriptor) -> list[descriptor.Descriptor]:
    """Message types of the repeated fields of ``desc``: a batch reports each item's errors
    with field names relative to the item."""
    return [f.message_type for f in desc.fields if f.is_repeated and f.message_type is not None]


def _code(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


def _statuses(message: Message) -> Iterator[status_pb2.Status]:
    for fd, value in message.ListFields():
        for item in value if fd.is_repeated else [value]:
            if isinstance(item, status_pb2.Status):
                yield item
            elif isinstance(item, Message):
                yield from _statuses(item)


def item_outcomes(method: descriptor.MethodDescriptor, outcome: Outcome) -> list[Outcome]:
    """Errors an OK answer carries inside (``google.rpc.Status`` fields of the response, such
    as a batch's failed items): each is held to the same rule as a call's status."""
    if outcome.code != grpc.StatusCode.OK or not outcome.responses:
        return []
    response = message_class(method.output_type).FromString(outcome.responses[0])
    return [Outcome(_code(status.code), status) for status in _statuses(response)]


def refusal(method: descriptor.MethodDescriptor, outcome: Outcome) -> Outcome:
    """The call's error, or the first error inside an OK answer (a batch item), or the OK."""
    if outcome.code != grpc.StatusCode.OK:
        return outcome
    return next(iter(item_outcomes(method, outcome)), outcome)


def violations(outcome: Outcome) -> list[str]:
    """The fields a refusal names (empty when it carries no BadRequest)."""
    if outcome.status is None:
        return []
    _, bad, _ = _details(outcome.status)
    return [v.field for v in bad.field_violations] if bad else []


def names_path(outcome: Outcome, path: FieldPath) -> bool:
    """Whether the refusal names ``path`` (relative to the batch item for an item's error)."""
    named = violations(outcome)
    relative = request_field_path(path[1:]) if path[0].is_repeated and len(path) > 1 else None
    return request_field_path(path) in named or (relative is not None and relative in named)


def explain(outcome: Outcome) -> str:
    """One line for a failure message: code, reason, violations."""
    if outcome.status is None:
        return str(outcome.code.name)
    info, bad, _ = _details(outcome.status)
    fields = [v.field for v in bad.field_violations] if bad else []
    reason = str(info.reason) if info else "-"
    return f"{outcome.code.name}/{reason} {fields}"


# --- Calling an RPC -------------------------------------------------------------------------

WATCH_FIRST_ANSWER_SECONDS = 10.0
"""A server-streaming call must answer (a first message, or its status) within this long."""
CALL_TIMEOUT_SECONDS = 20.0


def _serializer(raw: bool) -> Callable[[Any], bytes] | None:
    return None if raw else (lambda message: message.SerializeToString())


async def call_rpc(
    channel: grpc.aio.Channel,
    method: descriptor.MethodDescriptor,
    requests: Sequence[Message | bytes],
) -> Outcome:
    """Call ``method`` with ``requests`` (one for unary requests; the stream for client
    streaming); ``bytes`` go on the wire as they are. Responses stay undecoded.

    A server stream that answers with a first message counts as OK and is cancelled then: the
    watch RPCs never end by themselves.
    """
    raw = any(isinstance(r, bytes) for r in requests)
    path, serialize = method_path(method), _serializer(raw)
    try:
        if method.client_streaming:
            stream = channel.stream_stream(path, request_serializer=serialize,
                                           response_deserializer=None)  # fmt: skip
            call: Any = stream(timeout=CALL_TIMEOUT_SECONDS)
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                for request in requests:
                    await call.write(request)
                await call.done_writing()
            responses = [r async for r in call]
            return Outcome(await call.code(), responses=responses)
        if method.server_streaming:
            unary_stream = channel.unary_stream(path, request_serializer=serialize,
                                                response_deserializer=None)  # fmt: skip
            call = unary_stream(requests[0], timeout=CALL_TIMEOUT_SECONDS)
            try:
                first = await asyncio.wait_for(call.read(), WATCH_FIRST_ANSWER_SECONDS)
            finally:
                if not call.done():
                    call.cancel()
            if first is grpc.aio.EOF:
                return Outcome(await call.code())
            return Outcome(grpc.StatusCode.OK, responses=[first])
        unary = channel.unary_unary(path, request_serializer=serialize,
                                    response_deserializer=None)  # fmt: skip
        response = await unary(requests[0], timeout=CALL_TIMEOUT_SECONDS)
        return Outcome(grpc.StatusCode.OK, responses=[response])
    except grpc.aio.AioRpcError as error:
        return outcome_of_error(error)


# --- A full gateway ---------------------------------------------------------------------------


class SourceRequestCounter:
    """Counts the requests the mock sources receive: every mock asks its fault injector for a
    delay once per request, so the counter wraps that one method on each instance."""

    def __init__(self, fleet: MockFleet) -> None:
        self.count = 0
        for mock in fleet.mocks.values():
            self._wrap(mock.faults)

    def _wrap(self, faults: FaultInjector) -> None:
        original = faults.delay

        async def counted() -> None:
            self.count += 1
            await original()

        faults.delay = counted  # type: ignore[method-assign]


class HostileTarget:
    """A full gateway (every service, the scripted providers registered) and a channel per
    caller; the observation subject is enrolled and has a certificate.

    A plain class, not a dataclass: Hypothesis prints a dataclass field by field (the whole
    population) in every failure report."""

    def __init__(
        self,
        running: RunningGateway,
        fleet: MockFleet,
        population: Population,
        subject: Subject,
        keyring: Keyring,
    ) -> None:
        self.running = running
        self.keyring = keyring
        self.fleet = fleet
        self.population = population
        self.subject = subject
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.source_counter = SourceRequestCounter(fleet)
        self._permitted: dict[str, tuple[str, ...]] = {}

    def __repr__(self) -> str:  # Hypothesis prints the test's arguments; keep them short
        return f"HostileTarget(port={self.running.port})"

    @property
    def observation(self) -> str:
        return self.population.scenarios[OBSERVATION_SCENARIO].person.identity_number

    def channel(self, caller: str) -> grpc.aio.Channel:
        """The (cached) mTLS channel of ``caller`` (an institution id or ``SUBJECT_CALLER``)."""
        if caller not in self.channels:
            institution = self.subject.institution_id if caller == SUBJECT_CALLER else caller
            paths = institution_paths(self.running.pki.paths.directory, institution)
            if not paths.cert.exists():
                issue_subject_certificate(self.running, self.subject)
            self.channels[caller] = mtls_channel(self.running.pki, self.running.port, paths)
        return self.channels[caller]

    async def serving(self) -> bool:
        """The gateway's overall health answer is SERVING."""
        stub = health_pb2_grpc.HealthStub(self.channel("bank-demo"))
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def source_requests(self) -> int:
        """Requests the mock sources have received so far (``count_source_requests``)."""
        return self.source_counter.count

    async def permitted_callers(self, method: descriptor.MethodDescriptor) -> tuple[str, ...]:
        """The callers of ``callers_for(method)`` that the gateway does not turn away by role
        for a plausible request, so a refusal of a hostile one is about the value (all of them
        when every caller is turned away: the test then fails on the refusal it gets)."""
        if method.full_name not in self._permitted:
            request = plausible_request(method.input_type, self.observation)
            allowed = []
            for caller in callers_for(method):
                outcome = await call_rpc(self.channel(caller), method, [request])
                if outcome.code not in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAUTHENTICATED,
                ):
                    allowed.append(caller)
            self._permitted[method.full_name] = tuple(allowed) or callers_for(method)
        return self._permitted[method.full_name]

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.close()


@asynccontextmanager
async def hostile_target(
    pki: DevPki, population: Population, directory: Path
) -> AsyncIterator[HostileTarget]:
    """The mock fleet and ``build_gateway`` (what ``credgate serve`` runs) with the scripted
    providers registered, on loopback with mutual TLS."""
    fleet = MockFleet(population)
    await fleet.start()
    try:
        ensure_provider_certs(pki)
        document = gateway_document(fleet, pki, directory)
        document["providers"] = [script.provider_entry() for script in SCRIPTS]
        config = config_from_mapping(document, base_dir=directory, environ={})
        built = await build_gateway(config)
        port = await built.start()
        try:
            running = RunningGateway(built, port, pki)
            observation = population.scenarios[OBSERVATION_SCENARIO].person.identity_number
            subject = await enrol_subject(running, observation)
            keyring = Keyring.load(config.keys.keyring)
            target = HostileTarget(running, fleet, population, subject, keyring)
            try:
                yield target
            finally:
                await target.aclose()
        finally:
            await built.stop(0)
    finally:
        await fleet.stop()


# --- The provider sync stream ----------------------------------------------------------------


def plausible_update(population: Population) -> sync_pb2.ProviderUpdate:
    """A correct update from the platform about the observation subject (sequence unset)."""
    subject = population.scenarios[OBSERVATION_SCENARIO]
    as_of = REFERENCE_TIME
    return sync_pb2.ProviderUpdate(
        source_id=PLATFORM.source_id,
        identity_number=subject.person.identity_number,
        idempotency_key=str(uuid.uuid4()),
        facts=source_facts(PLATFORM, subject, State.OBSERVATION, as_of),
        create_time=timestamp_pb2.Timestamp(seconds=int(as_of.timestamp())),
    )


@dataclass(frozen=True)
class SyncOutcome:
    """How one update on the sync stream was answered."""

    outcome: Outcome
    responses: list[sync_pb2.SyncUpdatesResponse]


async def push_update(
    channel: grpc.aio.Channel, update: sync_pb2.ProviderUpdate, *, keep_sequence: bool = False
) -> SyncOutcome:
    """Ask where to resume, then send ``update`` signed by the platform as the next sequence
    (unless ``keep_sequence``: a hostile sequence stays), then half-close and read to the end.
    """
    method = sync_pb2.DESCRIPTOR.services_by_name["ProviderSyncService"].methods_by_name[
        "SyncUpdates"
    ]
    stream = channel.stream_stream(
        method_path(method),
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=sync_pb2.SyncUpdatesResponse.FromString,
    )
    call: Any = stream(timeout=CALL_TIMEOUT_SECONDS)
    responses: list[sync_pb2.SyncUpdatesResponse] = []
    try:
        await call.write(sync_pb2.SyncUpdatesRequest(hello=sync_pb2.SyncHello(client_agent="t")))
        resume = await call.read()
        if isinstance(resume, sync_pb2.SyncUpdatesResponse):
            responses.append(resume)
            if not keep_sequence:
                update.sequence = resume.resume.last_sequence + 1
            signed = sign_update(PLATFORM.signing_key, update)
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await call.write(sync_pb2.SyncUpdatesRequest(update=signed))
                await call.done_writing()
            while isinstance(response := await call.read(), sync_pb2.SyncUpdatesResponse):
                responses.append(response)
        return SyncOutcome(Outcome(await call.code()), responses)
    except grpc.aio.AioRpcError as error:
        return SyncOutcome(outcome_of_error(error), responses)


def resolved(responses: Sequence[sync_pb2.SyncUpdatesResponse], sequence: int) -> bool:
    """Whether the responses resolve ``sequence`` (ack, rejection, duplicate or gap)."""
    for response in responses:
        kind = response.WhichOneof("message")
        if kind == "ack" and response.ack.last_sequence >= sequence:
            return True
        if kind in ("rejected", "duplicate") and getattr(response, kind).sequence == sequence:
            return True
        if kind == "gap" and response.gap.received_sequence == sequence:
            return True
    return False


def rejection_texts(responses: Sequence[sync_pb2.SyncUpdatesResponse]) -> str:
    """Everything the stream told the provider in words (rejection reasons and messages)."""
    return "\n".join(
        text_format.MessageToString(r, as_utf8=True)
        for r in responses
        if r.WhichOneof("message") == "rejected"
    )


def iter_strings(message: Message) -> Iterator[str]:
    """Every string value set anywhere in ``message`` (to check nothing of it is echoed)."""
    for fd, value in message.ListFields():
        values = value if fd.is_repeated else [value]
        for item in values:
            if isinstance(item, Message):
                yield from iter_strings(item)
            elif isinstance(item, str):
                yield item
