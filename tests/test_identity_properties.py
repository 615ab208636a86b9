"""A person is one subject: every way of writing an identity number the gateway accepts maps to
the one subject token of its canonical form, and every other way is refused (issue #12).

GB 11643 numbers are 17 ASCII digits and a check character ``[0-9X]``. People type them with
full-width digits (``４``, what Chinese input methods produce), a lower-case ``x``, or spaces
around; those may be folded to the canonical form — or refused — but never answered as another
subject (a different token: a signed NO_RECORD for someone with records, audited where neither
the person nor a regulator's per-subject filter looks). Digits of any other script (Arabic-Indic,
Devanagari, ...) are never an identity number and are refused with INVALID_ARGUMENT.

The same digits inside other fields must not slip past the request check either: a field that
refuses an identity number written in ASCII digits refuses it in any script, and control
characters are refused in every string field — at the request check, so nothing reaches a
source or the audit guard (AUDIT_UNAVAILABLE).

Unit properties pin the contract of ``core.identity_number`` (``normalize`` is the fold,
``validate(normalize(v))`` the check) and of ``SubjectTokenizer.token``; end-to-end properties
call the gateway over mutual TLS.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import descriptor
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from credgate.adapters.mocks.population import Population
from credgate.adapters.mocks.providers import PLATFORM
from credgate.api.credit_repair.v1 import audit_pb2, report_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as regulator_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core import identity_number
from credgate.core.errors import REQUEST_ID_METADATA_KEY
from credgate.core.tokens import SubjectTokenizer, is_subject_token
from tests.fixtures.pki import DevPki
from tests.hostile_support import (
    C0_C1_CONTROLS,
    CASE_REFERENCE,
    DIGIT_ZEROS,
    FD,
    FieldPath,
    HostileTarget,
    Outcome,
    all_methods,
    assert_defined_outcome,
    call_rpc,
    digits_in,
    explain,
    field_paths,
    hostile_target,
    names_path,
    outcome_of_error,
    path_name,
    plausible_request,
    plausible_update,
    push_update,
    refusal,
    resolved,
    set_at,
    value_at,
)
from tests.sync_support import index_state

ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
"""The end-to-end tests share the module's gateway, so they run on the module's loop."""
UNIT = settings(max_examples=200, deadline=None, database=None)
E2E = settings(
    max_examples=6,
    deadline=None,
    database=None,
    # Function-scoped fixtures (pytest-asyncio's, the root-logger restorer) are per test, not
    # per example; the examples share the module's gateway on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
FOLDABLE_SCRIPT = "fullwidth"
OTHER_SCRIPTS = sorted(set(DIGIT_ZEROS) - {FOLDABLE_SCRIPT})
FULLWIDTH_X = "Ｘ"
SURROUNDING_SPACE = [" ", "\t", "\u3000", "\u00a0", "\n"]
TODAY = dt.date.today()
STRICT_CONTROLS = [c for c in C0_C1_CONTROLS if c not in "\t\n\r"]
"""Controls every string field must refuse. Tab and line breaks are left out of this strict
property only: free-text fields (an objection's grounds, a ruling's reason) may allow them."""
_REGION_PREFIXES = [a + b for a in "12345689" for b in "0123456789" if a + b not in {"10", "20"}]

# --- Generating identity numbers -------------------------------------------------------------


@st.composite
def canonical_numbers(draw: st.DrawFn) -> str:
    """A valid GB 11643 number in canonical form (ASCII digits, upper-case X)."""
    region = draw(st.sampled_from(_REGION_PREFIXES))
    region += draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    birth = draw(st.dates(identity_number.EARLIEST_BIRTH, TODAY))
    sequence = draw(st.from_regex(r"[0-9]{3}", fullmatch=True))
    first17 = f"{region}{birth:%Y%m%d}{sequence}"
    return first17 + identity_number.check_character(first17)


@st.composite
def foldable_forms(draw: st.DrawFn, canonical: str) -> str:
    """``canonical`` as people type it: some digits full-width, ``x`` or ``Ｘ``, spaces around."""
    positions = draw(st.sets(st.integers(0, 17)))
    chars = []
    for index, char in enumerate(canonical):
        if index in positions and char == "X":
            chars.append(draw(st.sampled_from(["x", FULLWIDTH_X, "ｘ"])))
        elif index in positions:
            chars.append(digits_in(FOLDABLE_SCRIPT, char))
        else:
            chars.append(char)
    before = draw(st.lists(st.sampled_from(SURROUNDING_SPACE), max_size=2).map("".join))
    after = draw(st.lists(st.sampled_from(SURROUNDING_SPACE), max_size=2).map("".join))
    typed = before + "".join(chars) + after
    if typed == canonical:
        typed = digits_in(FOLDABLE_SCRIPT, canonical)
    return typed


@st.composite
def foreign_digit_forms(draw: st.DrawFn, canonical: str) -> str:
    """``canonical`` with at least one digit written in a script that is not ASCII or
    full-width."""
    script = draw(st.sampled_from(OTHER_SCRIPTS))
    digit_positions = [i for i, c in enumerate(canonical) if c.isdigit()]
    positions = draw(st.sets(st.sampled_from(digit_positions), min_size=1))
    return "".join(digits_in(script, c) if i in positions else c for i, c in enumerate(canonical))


def accepted(value: str) -> bool:
    """Whether the edge's identity-number check lets ``value`` through."""
    return identity_number.validate(identity_number.normalize(value), today=TODAY) is None


# --- Unit properties ---------------------------------------------------------------------------

TOKENIZER = SubjectTokenizer(b"k" * 32)


@UNIT
@given(canonical_numbers())
def test_canonical_number_is_accepted_and_has_one_well_formed_token(canonical: str) -> None:
    assert accepted(canonical)
    token = TOKENIZER.token(canonical)
    assert is_subject_token(token)
    assert SubjectTokenizer(b"k" * 32).token(canonical) == token


@UNIT
@given(st.lists(canonical_numbers(), min_size=2, max_size=5, unique=True))
def test_different_canonical_numbers_have_different_tokens(numbers: list[str]) -> None:
    assert len({TOKENIZER.token(n) for n in numbers}) == len(numbers)


@UNIT
@given(st.data())
def test_a_foldable_form_is_refused_or_gets_the_canonical_token(data: st.DataObject) -> None:
    canonical = data.draw(canonical_numbers(), label="canonical")
    typed = data.draw(foldable_forms(canonical), label="typed")
    if accepted(typed):
        assert TOKENIZER.token(typed) == TOKENIZER.token(canonical)


@UNIT
@given(st.data())
def test_digits_of_other_scripts_are_never_an_identity_number(data: st.DataObject) -> None:
    canonical = data.draw(canonical_numbers(), label="canonical")
    typed = data.draw(foreign_digit_forms(canonical), label="typed")
    assert not accepted(typed)
    assert not accepted(f" {typed} ")


@UNIT
@given(canonical_numbers(), st.sampled_from(C0_C1_CONTROLS), st.integers(0, 18))
@example("440304198511030421", "\x1f", 0)  # str.strip() takes \x1c-\x1f and \x85 for spaces
@example("440304198511030421", "\x00", 18)
@example("110000200001010000", "\t", 0)  # a tab before the number is a typed space, trimmed
@example("110000200001010000", "\t", 9)  # inside it, refused
def test_a_control_character_anywhere_is_refused(canonical: str, control: str, at: int) -> None:
    typed = canonical[:at] + control + canonical[at:]
    if control == "\t" and at in (0, len(canonical)):
        # The one control people type around a number: trimmed like a space, never kept.
        assert identity_number.normalize(typed) == canonical
    else:
        assert not accepted(typed)


def test_the_foldable_forms_include_the_ones_people_type() -> None:
    """Guard for the generators above: they do produce full-width and lower-case forms."""
    canonical = "11010519491231002X"
    assert accepted(canonical)
    assert digits_in(FOLDABLE_SCRIPT, "0") == "０"
    assert identity_number.normalize(f" {canonical.lower()} ") == canonical


# --- End to end ---------------------------------------------------------------------------------

JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(
    dev_pki: DevPki, population: Population, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HostileTarget]:
    async with hostile_target(dev_pki, population, tmp_path_factory.mktemp("identity")) as t:
        yield t


async def _status(
    target: HostileTarget, typed: str
) -> tuple[Outcome, report_pb2.RepairStatusReport | None]:
    """GetRepairStatus as the court for ``typed``: the outcome, and the report if answered."""
    stub = service_grpc.RepairStatusServiceStub(target.channel("court-demo"))
    request = service_pb2.GetRepairStatusRequest(
        identity_number=typed,
        purpose=JUDICIAL,
        case_reference=CASE_REFERENCE,
        nonce=secrets.token_bytes(16),
    )
    call = stub.GetRepairStatus(request, timeout=20)
    try:
        response = await call
    except grpc.aio.AioRpcError as error:
        return outcome_of_error(error), None
    trailing = dict(await call.trailing_metadata() or ())
    request_id = trailing.get(REQUEST_ID_METADATA_KEY)
    report = report_pb2.RepairStatusReport.FromString(response.signed_report.report)
    return Outcome(grpc.StatusCode.OK, request_id=str(request_id)), report


async def _audited_token(target: HostileTarget, request_id: str) -> str:
    """The subject token of the court's audit entry for ``request_id`` (read as regulator)."""
    stub = regulator_grpc.RegulatorServiceStub(target.channel("regulator-demo"))
    token = ""
    while True:
        page = await stub.ListAuditEntries(
            regulator_pb2.ListAuditEntriesRequest(
                filter=regulator_pb2.AuditEntryFilter(institution_id="court-demo"),
                page_size=1000,
                page_token=token,
            ),
            timeout=20,
        )
        for record in page.records:
            entry: audit_pb2.AuditEntry = record.entry
            if entry.request_id == request_id:
                return str(entry.subject_token)
        if not page.next_page_token:
            raise AssertionError("no audit entry for the request")
        token = page.next_page_token


@ON_MODULE_LOOP
async def test_canonical_query_answers_observation_under_one_token(target: HostileTarget) -> None:
    """The reference the folding properties compare with (and proof that they can fail: the
    canonical answer is OBSERVATION, not NO_RECORD)."""
    outcome, report = await _status(target, target.observation)
    assert outcome.code == grpc.StatusCode.OK
    assert report is not None
    assert report.state == vocab.REPAIR_STATE_OBSERVATION
    assert outcome.request_id
    assert await _audited_token(target, outcome.request_id) == report.subject_token


@ON_MODULE_LOOP
@E2E
@given(data=st.data())
async def test_fullwidth_identity_number_is_refused_or_answered_as_the_same_subject(
    target: HostileTarget, data: st.DataObject
) -> None:
    _, canonical = await _status(target, target.observation)
    assert canonical is not None
    typed = data.draw(foldable_forms(target.observation), label="typed")

    outcome, report = await _status(target, typed)

    note(f"answer: {explain(outcome)}")
    if outcome.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert_defined_outcome(outcome, service_pb2.GetRepairStatusRequest.DESCRIPTOR, [typed])
        return
    assert outcome.code == grpc.StatusCode.OK, explain(outcome)
    assert report is not None
    assert outcome.request_id
    assert report.state == canonical.state, "another subject's answer (NO_RECORD?)"
    assert report.subject_token == canonical.subject_token
    assert await _audited_token(target, outcome.request_id) == canonical.subject_token


IDENTITY_CASES = [
    (method, path)
    for method in all_methods()
    if not method.client_streaming
    for path in field_paths(method.input_type)
    if path[-1].name == "identity_number"
]


def _ids(cases: list[tuple[descriptor.MethodDescriptor, FieldPath]]) -> list[str]:
    return [f"{m.containing_service.name}.{m.name}:{path_name(p)}" for m, p in cases]


@ON_MODULE_LOOP
@pytest.mark.parametrize(("method", "path"), IDENTITY_CASES, ids=_ids(IDENTITY_CASES))
@E2E
@given(data=st.data())
async def test_identity_number_in_other_digits_is_invalid_argument_on_every_rpc(
    target: HostileTarget, method: descriptor.MethodDescriptor, path: FieldPath, data: Any
) -> None:
    """Every RPC with an identity number (from the descriptors, nested ones included) refuses
    one written in a foreign script, naming the field, before any source is asked."""
    typed = data.draw(foreign_digit_forms(target.observation), label="typed")
    caller = data.draw(st.sampled_from(await target.permitted_callers(method)), label="caller")
    request = plausible_request(method.input_type, target.observation)
    set_at(request, path, typed)
    asked = target.source_requests()

    outcome = refusal(method, await call_rpc(target.channel(caller), method, [request]))

    note(f"answer: {explain(outcome)}")
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, explain(outcome)
    assert_defined_outcome(outcome, method.input_type, [typed])
    assert names_path(outcome, path), explain(outcome)
    assert target.source_requests() == asked, "a source was asked"


TEXT_CASES = [
    (method, path)
    for method in all_methods()
    if not method.client_streaming
    for path in field_paths(method.input_type)
    if path[-1].type == FD.TYPE_STRING and path[-1].name != "identity_number"
]


@ON_MODULE_LOOP
@pytest.mark.parametrize(("method", "path"), TEXT_CASES, ids=_ids(TEXT_CASES))
@settings(E2E, max_examples=2)
@given(data=st.data())
async def test_other_fields_refuse_hidden_identity_numbers_and_controls_at_the_request_check(
    target: HostileTarget, method: descriptor.MethodDescriptor, path: FieldPath, data: Any
) -> None:
    """Metamorphic: if a field refuses an identity number written in ASCII digits, it refuses
    it written in any other script just the same (INVALID_ARGUMENT naming the field, no source
    asked, never AUDIT_UNAVAILABLE). And a control character is refused in every string field.
    """
    caller = data.draw(st.sampled_from(await target.permitted_callers(method)), label="caller")
    script = data.draw(st.sampled_from(sorted(DIGIT_ZEROS)), label="script")
    control = data.draw(st.sampled_from(STRICT_CONTROLS), label="control")
    channel = target.channel(caller)

    async def attempt(value: str) -> Outcome:
        request = plausible_request(method.input_type, target.observation)
        base = value_at(request, path)
        set_at(request, path, (base if isinstance(base, str) else "") + value)
        asked = target.source_requests()
        outcome = refusal(method, await call_rpc(channel, method, [request]))
        note(f"{value!r}: {explain(outcome)}")
        assert_defined_outcome(outcome, method.input_type, [value])
        if outcome.code == grpc.StatusCode.INVALID_ARGUMENT and names_path(outcome, path):
            assert target.source_requests() == asked, "refused only after asking a source"
        return outcome

    ascii_outcome = await attempt(f"ref {target.observation} ")
    if names_path(ascii_outcome, path):
        hidden = await attempt(f"ref {digits_in(script, target.observation)} ")
        assert hidden.code == grpc.StatusCode.INVALID_ARGUMENT, explain(hidden)
        assert names_path(hidden, path), explain(hidden)
    controlled = await attempt(f"a{control}b")
    assert controlled.code == grpc.StatusCode.INVALID_ARGUMENT, explain(controlled)
    assert names_path(controlled, path), explain(controlled)


@ON_MODULE_LOOP
async def test_source_request_counter_sees_a_live_query(target: HostileTarget) -> None:
    """The "no source asked" checks above can fail: a valid live query does ask sources."""
    asked = target.source_requests()
    outcome, _ = await _status(target, target.observation)
    assert outcome.code == grpc.StatusCode.OK
    assert target.source_requests() > asked


@ON_MODULE_LOOP
@E2E
@given(data=st.data())
async def test_provider_update_number_is_rejected_or_indexed_under_the_canonical_token(
    target: HostileTarget, data: Any
) -> None:
    """A signed provider update about the observation subject with the number in another
    script: foreign digits are rejected (IDENTITY_NUMBER_INVALID) as that one update; a
    full-width form is rejected too or indexed under the canonical token — and the stream
    ends normally either way."""
    foreign = data.draw(st.booleans(), label="foreign script")
    forms = foreign_digit_forms if foreign else foldable_forms
    typed = data.draw(forms(target.observation), label="typed")
    update = plausible_update(target.population)
    update.identity_number = typed

    pushed = await push_update(target.channel("provider-disclosure"), update)

    note(f"answer: {explain(pushed.outcome)}; responses: {pushed.responses}")
    assert pushed.outcome.code == grpc.StatusCode.OK, explain(pushed.outcome)
    assert resolved(pushed.responses, update.sequence)
    rejected = [
        r.rejected.reason
        for r in pushed.responses
        if r.WhichOneof("message") == "rejected" and r.rejected.sequence == update.sequence
    ]
    if foreign:
        assert rejected == ["IDENTITY_NUMBER_INVALID"]
    elif not rejected:
        state = await index_state(
            target.running.gateway.database, target.keyring, PLATFORM.source_id
        )
        canonical_token = SubjectTokenizer(target.keyring.subject_token_key).token(
            target.observation
        )
        assert state.facts[canonical_token][0] == update.sequence, "indexed as another subject"
