"""Every field of every RPC, attacked: hostile values get a defined status and the gateway
stays SERVING (issue #12, "one input boundary").

The RPCs and fields come from the service descriptors (``tests.hostile_support``), so a new
RPC or field is attacked without anyone listing it. Hostile values: digits of other scripts
(full-width, Arabic-Indic, Devanagari, ...), C0/C1 controls and NUL, bidi and zero-width
marks, whitespace only, 1 MiB strings, unknown enum numbers, extreme integers, invalid
Timestamps, random bytes; on the wire, undecodable messages and invalid UTF-8 (lone
surrogates), which protobuf's Python API refuses to build, so they are sent as raw bytes. The
provider sync stream is attacked inside the signed update too: a correctly signed update with
a hostile field must be refused as that one update, not end the stream.

One gateway (``build_gateway`` with mutual TLS, the mock sources and the scripted providers)
serves the whole module; each test case runs a few Hypothesis examples.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import descriptor
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.core.errors import GatewayError
from tests.fixtures.pki import DevPki
from tests.hostile_support import (
    FD,
    SERVICE_CALLERS,
    VALUE_CLASSES,
    FieldPath,
    HostileTarget,
    Outcome,
    all_methods,
    assert_defined_outcome,
    call_rpc,
    callers_for,
    echoes,
    explain,
    field_kind,
    field_paths,
    hostile_target,
    hostile_values,
    item_outcomes,
    message_class,
    path_name,
    plausible_request,
    plausible_update,
    push_update,
    rejection_texts,
    resolved,
    set_at,
    value_at,
)

ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
"""The tests share the module's gateway, so they run on the module's event loop."""

EXAMPLES = int(os.environ.get("CREDGATE_HOSTILE_EXAMPLES", "2"))
"""Examples per (RPC, field, value class); CI keeps 2 (about a minute on 2 cores), a soak or
a nightly run can raise it."""
HOSTILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # The function-scoped fixtures here are pytest-asyncio's and the root-logger restorer
    # (tests/fixtures/logging_state.py): per test, not per example, which is what we want —
    # examples share the module's gateway on purpose and reconfigure nothing.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
METHODS = all_methods()


def _case_id(method: descriptor.MethodDescriptor, path: FieldPath, value_class: str) -> str:
    return f"{method.containing_service.name}.{method.name}:{path_name(path)}:{value_class}"


FIELD_CASES = [
    (method, path, value_class)
    for method in METHODS
    for path in field_paths(method.input_type)
    for value_class in VALUE_CLASSES[field_kind(path[-1])]
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(
    dev_pki: DevPki, population: Population, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HostileTarget]:
    async with hostile_target(dev_pki, population, tmp_path_factory.mktemp("hostile")) as t:
        yield t


def test_every_service_and_field_is_attacked() -> None:
    """The cases come from the descriptors: every RPC with fields has cases for every leaf
    field, and every service has callers (a new one must name them)."""
    assert {m.containing_service.full_name for m in METHODS} == set(SERVICE_CALLERS)
    for method in METHODS:
        assert callers_for(method)
        attacked = {path_name(p) for m, p, _ in FIELD_CASES if m is method}
        assert attacked == {path_name(p) for p in field_paths(method.input_type)}
    assert any(path_name(p) == "requests.identity_number" for _, p, _ in FIELD_CASES)


def test_the_outcome_rule_catches_what_it_is_meant_to_catch() -> None:
    """The rule itself can fail: a crash, a bare error, a BadRequest naming no real field, and
    an echoed value are each refused."""
    request = sync_pb2.SyncUpdatesRequest.DESCRIPTOR
    good = GatewayError.invalid_request([("hello.client_agent", "must be printable")]).status
    assert_defined_outcome(Outcome(grpc.StatusCode.INVALID_ARGUMENT, good), request, ["a\x00b"])
    assert_defined_outcome(Outcome(grpc.StatusCode.OK), request, ["a\x00b"])
    echoed = GatewayError.invalid_request([("hello.client_agent", "bad: a\x00b")]).status
    nowhere = GatewayError.invalid_request([("hello.agent", "must be printable")]).status
    store = GatewayError.of(grpc.StatusCode.UNAVAILABLE, "audit", "AUDIT_UNAVAILABLE").status
    for outcome in (
        Outcome(grpc.StatusCode.INTERNAL, good),
        Outcome(grpc.StatusCode.UNKNOWN),
        Outcome(grpc.StatusCode.NOT_FOUND),
        Outcome(grpc.StatusCode.INVALID_ARGUMENT, echoed),
        Outcome(grpc.StatusCode.INVALID_ARGUMENT, nowhere),
        Outcome(grpc.StatusCode.UNAVAILABLE, store),
    ):
        with pytest.raises(AssertionError):
            assert_defined_outcome(outcome, request, ["a\x00b"])
    assert echoes("٤٤٠٣٠٤١٩٨٥١١٠٣٠٤٢١", "number 440304198511030421 refused")
    assert echoes("\u202eabc", "value \u202e")
    assert not echoes("   ", "must not be blank   ")


@ON_MODULE_LOOP
@pytest.mark.parametrize(
    ("method", "path", "value_class"),
    FIELD_CASES,
    ids=[_case_id(*case) for case in FIELD_CASES],
)
@HOSTILE
@given(data=st.data())
async def test_hostile_value_in_any_field_gets_a_defined_status_and_health_stays_serving(
    target: HostileTarget,
    method: descriptor.MethodDescriptor,
    path: FieldPath,
    value_class: str,
    data: st.DataObject,
) -> None:
    caller = data.draw(st.sampled_from(callers_for(method)), label="caller")
    request = plausible_request(method.input_type, target.observation)
    strategy = hostile_values(path[-1], value_class, value_at(request, path), target.observation)
    value = data.draw(strategy, label="value")
    set_at(request, path, value)

    outcome = await call_rpc(target.channel(caller), method, [request])

    note(f"answer: {explain(outcome)}")
    assert_defined_outcome(outcome, method.input_type, [value])
    for item in item_outcomes(method, outcome):
        note(f"item: {explain(item)}")
        assert_defined_outcome(item, method.input_type, [value])
    assert await target.serving()


# --- Bytes no message can be parsed from -------------------------------------------------------

UNDECODABLE = {
    "truncated_tag": b"\xff\xff\xff\xff",
    "truncated_varint": b"\x08",
    "truncated_length": b"\x0a\x05ab",
    "wire_type_7": b"\x0f",
    "field_number_0": b"\x00\x01",
    "length_past_end": b"\x0a\xff\xff\xff\xff\x0f",
}
INVALID_UTF8 = {
    "lone_high_surrogate": b"\xed\xa0\x80",
    "lone_low_surrogate": b"\xed\xbf\xbf",
    "overlong_slash": b"\xc0\xaf",
    "bare_continuation": b"\x80",
    "invalid_byte": b"\xff",
    "truncated_sequence": b"\xe4\xb8",
}


def _assert_refused_as_undecodable(outcome: Outcome, method: descriptor.MethodDescriptor) -> None:
    """Undecodable bytes: INVALID_ARGUMENT with ErrorInfo (no field can be named: nothing was
    parsed). A client stream may instead refuse the one message and carry on."""
    assert_defined_outcome(outcome, method.input_type, undecodable=True)
    if not method.client_streaming:
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, explain(outcome)


def _undecodable(method: descriptor.MethodDescriptor, payload: bytes) -> bool:
    try:
        message_class(method.input_type).FromString(payload)
    except DecodeError:
        return True
    return False


@ON_MODULE_LOOP
@pytest.mark.parametrize("method", METHODS, ids=[m.full_name for m in METHODS])
async def test_undecodable_request_bytes_are_invalid_argument(
    target: HostileTarget, method: descriptor.MethodDescriptor
) -> None:
    caller = callers_for(method)[0]
    undecodable = {n: p for n, p in UNDECODABLE.items() if _undecodable(method, p)}
    # A message without fields parses some of them (an unknown field numbered 0 is skipped):
    # those prove nothing for it, but every message must refuse at least one.
    assert undecodable, "no undecodable payload for this message"
    for name, payload in undecodable.items():
        outcome = await call_rpc(target.channel(caller), method, [payload])
        assert outcome.code != grpc.StatusCode.UNKNOWN, f"{name}: {explain(outcome)}"
        _assert_refused_as_undecodable(outcome, method)
    assert await target.serving()


STRING_CASES = [
    (method, path)
    for method in METHODS
    for path in field_paths(method.input_type)
    if path[-1].type == FD.TYPE_STRING
]


@ON_MODULE_LOOP
@pytest.mark.parametrize(
    ("method", "path"),
    STRING_CASES,
    ids=[f"{m.containing_service.name}.{m.name}:{path_name(p)}" for m, p in STRING_CASES],
)
@settings(HOSTILE, max_examples=3)
@given(data=st.data())
async def test_invalid_utf8_in_any_string_field_is_invalid_argument(
    target: HostileTarget, method: descriptor.MethodDescriptor, path: FieldPath, data: Any
) -> None:
    """A lone surrogate cannot be put in a protobuf string from Python, so the bytes are
    written by hand: a marker of the same length is serialized, then swapped for bytes that
    are not UTF-8 (lengths on the wire stay right)."""
    bad = INVALID_UTF8[data.draw(st.sampled_from(sorted(INVALID_UTF8)), label="bytes")]
    request = plausible_request(method.input_type, target.observation)
    marker = "~" * len(bad)
    base = value_at(request, path)
    prefix = data.draw(st.sampled_from(["", base if isinstance(base, str) else ""]))
    set_at(request, path, prefix + marker)
    wire = request.SerializeToString()
    assert wire.count(marker.encode()) == 1
    payload = wire.replace(marker.encode(), bad)
    assert _undecodable(method, payload)

    outcome = await call_rpc(target.channel(callers_for(method)[0]), method, [payload])

    note(f"answer: {explain(outcome)}")
    _assert_refused_as_undecodable(outcome, method)
    assert await target.serving()


# --- Inside the signed provider update ----------------------------------------------------------

UPDATE_CASES = [
    (path, value_class)
    for path in field_paths(sync_pb2.ProviderUpdate.DESCRIPTOR)
    for value_class in VALUE_CLASSES[field_kind(path[-1])]
]


@ON_MODULE_LOOP
@pytest.mark.parametrize(
    ("path", "value_class"), UPDATE_CASES, ids=[f"{path_name(p)}:{c}" for p, c in UPDATE_CASES]
)
@settings(HOSTILE, max_examples=2)
@given(data=st.data())
async def test_hostile_field_in_a_signed_update_rejects_that_update_not_the_stream(
    target: HostileTarget, path: FieldPath, value_class: str, data: Any
) -> None:
    """A correctly signed update with one hostile field: the stream stays up (OK after the
    provider half-closes), the update's sequence is resolved (rejected, or applied when the
    value is harmless), rejection messages echo nothing, and health stays SERVING."""
    update = plausible_update(target.population)
    strategy = hostile_values(path[-1], value_class, value_at(update, path), target.observation)
    value = data.draw(strategy, label="value")
    set_at(update, path, value)
    keep_sequence = path_name(path) == "sequence"

    pushed = await push_update(
        target.channel("provider-disclosure"), update, keep_sequence=keep_sequence
    )

    note(f"answer: {explain(pushed.outcome)}; responses: {pushed.responses}"[:2000])
    assert_defined_outcome(pushed.outcome, sync_pb2.SyncUpdatesRequest.DESCRIPTOR, [value])
    assert pushed.outcome.code == grpc.StatusCode.OK, explain(pushed.outcome)
    if keep_sequence:
        assert len(pushed.responses) >= 2, "the update got no answer"
    else:
        assert resolved(pushed.responses, update.sequence), "the update was never resolved"
    assert not echoes(value, rejection_texts(pushed.responses)), "a rejection echoes the value"
    assert await target.serving()
