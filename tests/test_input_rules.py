"""The input rules (credit_repair/v1/input_rules.proto) and the boundary that enforces them.

The rules are attacked here field by field at the unit level, and the boundary through a real
gateway: every request type's plan builds (so no field lacks declared rules), hostile values
are refused naming the field and never echoing the value, full-width numbers fold to one
canonical subject, undecodable bytes are INVALID_ARGUMENT, and every refusal of an identified
caller is in the audit log with the method and the field paths only.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import unicodedata

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2

import credgate.api.credit_repair.v1
from credgate.api.credit_repair.v1 import audit_pb2, consent_service_pb2, input_rules_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.queries import EntryFilter, list_entries
from credgate.core import identity_number
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.input_rules import (
    _FORMAT_CHARACTERS,
    check_message,
    declared_messages,
    plan_for,
)
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import mtls_channel

OBSERVATION = "440304198511030421"
FULL_WIDTH = OBSERVATION.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
CASE = "(2026)粤03执1号"
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
GET_METHOD = "/credit_repair.v1.RepairStatusService/GetRepairStatus"


def _request_types() -> list[Descriptor]:
    """Every request message of every credgate RPC, plus the messages signed inside requests."""
    found: list[Descriptor] = [
        sync_pb2.ProviderUpdate.DESCRIPTOR,
        consent_service_pb2.ConsentTerms.DESCRIPTOR,
    ]
    for info in pkgutil.iter_modules(credgate.api.credit_repair.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"credgate.api.credit_repair.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found.extend(method.input_type for method in service.methods)
    return found


REQUEST_TYPES = _request_types()


def _get(**fields: object) -> service_pb2.GetRepairStatusRequest:
    values: dict[str, object] = {
        "identity_number": OBSERVATION, "purpose": JUDICIAL, "case_reference": CASE
    }
    values.update(fields)
    return service_pb2.GetRepairStatusRequest(**values)  # type: ignore[arg-type]


def test_every_string_and_bytes_field_of_every_request_declares_its_shape() -> None:
    """A new field without declared rules fails here (and stops the gateway at start-up)."""
    undeclared = []
    for request_type in REQUEST_TYPES:
        plan_for(request_type)
        for message in declared_messages(request_type):
            for field in message.fields:
                if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                    rules = field.GetOptions().Extensions[input_rules_pb2.rules]
                    if rules.shape == input_rules_pb2.FIELD_SHAPE_UNSPECIFIED:
                        undeclared.append(field.full_name)
    assert undeclared == []
    assert len(REQUEST_TYPES) > 30


def test_the_format_character_list_is_every_cf_character_of_this_unicode() -> None:
    compiled = re.compile(f"[{_FORMAT_CHARACTERS}]")
    missing = [
        hex(code)
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) == "Cf" and not compiled.fullmatch(chr(code))
    ]
    assert missing == []


@pytest.mark.parametrize(
    "typed",
    [
        FULL_WIDTH,
        f"  {OBSERVATION}\u3000",
        OBSERVATION[:10] + "１１０３０４２１",  # half of it full-width
    ],
)
def test_full_width_identity_numbers_fold_to_the_canonical_one(typed: str) -> None:
    request = _get(identity_number=typed)
    assert check_message(request) == []
    assert request.identity_number == typed  # never rewritten: the report binds what was sent
    assert identity_number.normalize(typed) == OBSERVATION
    assert check_message(_get(identity_number=typed), fold=False) == [
        ("identity_number", "must be in canonical ASCII form")
    ]


def test_a_lower_case_or_full_width_x_folds_to_upper_case() -> None:
    number = "44030519780512031X"
    for typed in ("44030519780512031x", "44030519780512031Ｘ", "44030519780512031ｘ"):
        assert check_message(_get(identity_number=typed)) == []
        assert identity_number.normalize(typed) == number


def test_no_subject_token_and_no_source_query_from_a_look_alike_number() -> None:
    tokenizer = SubjectTokenizer(b"k" * 32)
    assert tokenizer.token(FULL_WIDTH) == tokenizer.token(OBSERVATION)
    with pytest.raises(ValueError, match="canonical") as caught:
        tokenizer.token(OBSERVATION[:-1] + "٩")
    assert OBSERVATION[:-1] not in str(caught.value)


@pytest.mark.parametrize(
    "foreign_digits",
    ["٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"],
)
def test_other_unicode_digits_are_refused_not_folded(foreign_digits: str) -> None:
    typed = OBSERVATION[:-2] + OBSERVATION[-2:].translate(
        str.maketrans("0123456789", foreign_digits)
    )
    request = _get(identity_number=typed)
    violations = dict(check_message(request))
    assert violations["identity_number"].startswith("CHARACTERS")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("consent_id", "cns_\x00abc", "control"),
        ("consent_id", "cns\u202eabc", "control"),
        ("consent_id", "ｃｎｓ１２３", "ASCII"),
        ("consent_id", "c" * 129, "at most 128"),
        ("consent_id", "   ", "blank"),
        ("consent_id", "x" + OBSERVATION, "identity number"),
        ("case_reference", "          ", "blank"),
        ("case_reference", "case 1", "case number"),
        ("case_reference", "(2026)粤03执1号\u200b", "control"),
        ("case_reference", f"(2026)粤03执{OBSERVATION}号", "identity number"),
        ("nonce", b"short", "at least 16"),
        ("nonce", b"n" * 65, "at most 64"),
    ],
)
def test_hostile_values_are_refused_naming_the_field_without_echoing_it(
    field: str, value: object, expected: str
) -> None:
    violations = check_message(_get(**{field: value}))
    assert {name for name, _ in violations} == {field}
    assert any(expected in description for _, description in violations)
    if isinstance(value, str) and value.strip():
        assert all(value not in description for _, description in violations)


@pytest.mark.parametrize(
    "case", [CASE, "（2026）粤03执1号", "(2028)粤03破申8号之5", "(2024)京0105破12号",
             "(2026)最高法民终１号"]
)
def test_case_numbers_in_both_parenthesis_widths_are_accepted(case: str) -> None:
    assert check_message(_get(case_reference=case)) == []


def test_unknown_enum_values_timestamps_and_numbers_are_refused() -> None:
    request = _get(categories=[vocab.DATA_CATEGORY_IDENTITY, 99], consistency=7)
    request.purpose = 1234  # type: ignore[assignment]
    paths = {name for name, _ in check_message(request)}
    assert paths == {"categories[1]", "consistency", "purpose"}

    listing = regulator_pb2.ListAuditEntriesRequest(page_size=-1)
    listing.filter.start_time.seconds = 10**12
    listing.filter.end_time.nanos = 10**9
    paths = {name for name, _ in check_message(listing)}
    assert paths == {"page_size", "filter.start_time", "filter.end_time"}


def test_required_fields_and_bounded_lists() -> None:
    assert {n for n, _ in check_message(service_pb2.GetRepairStatusRequest())} == {
        "identity_number",
        "purpose",
    }
    too_many = _get(categories=[vocab.DATA_CATEGORY_IDENTITY] * 17)
    assert [n for n, _ in check_message(too_many)] == ["categories"]


def test_batch_items_are_left_to_the_rpc_which_answers_each_on_its_own() -> None:
    batch = service_pb2.BatchGetRepairStatusRequest(
        requests=[_get(), _get(identity_number="bad")]
    )
    assert check_message(batch) == []
    assert [n for n, _ in check_message(batch.requests[1], "requests[1].")] == [
        "requests[1].identity_number"
    ]


def test_signed_content_is_checked_but_never_folded() -> None:
    update = sync_pb2.ProviderUpdate(identity_number=FULL_WIDTH)
    assert check_message(update, fold=False) == [
        ("identity_number", "must be in canonical ASCII form")
    ]
    assert update.identity_number == FULL_WIDTH


async def _audited_since(gateway: RunningGateway, after: int) -> list[audit_pb2.AuditEntry]:
    database = gateway.gateway.database
    records, _ = await list_entries(database, EntryFilter(), limit=1000, after=after)
    return [r.entry for r in records]


async def _last_index(gateway: RunningGateway) -> int:
    records, _ = await list_entries(gateway.gateway.database, EntryFilter(), limit=100_000)
    return max((r.entry.index for r in records), default=-1)


async def test_a_full_width_number_is_the_same_subject_end_to_end(
    gateway: RunningGateway,
) -> None:
    async with gateway.client("court-demo") as client:
        canonical = await client.get_repair_status(
            OBSERVATION, purpose=JUDICIAL, case_reference=CASE
        )
        after = await _last_index(gateway)
        folded = await client.get_repair_status(FULL_WIDTH, purpose=JUDICIAL, case_reference=CASE)
    assert folded.state == canonical.state == vocab.REPAIR_STATE_OBSERVATION
    entries = await _audited_since(gateway, after)
    reads = [e for e in entries if e.action == audit_pb2.AUDIT_ACTION_READ_REPAIR_STATUS]
    tokens = {e.subject_token for e in reads}
    assert len(tokens) == 1
    before = await _audited_since(gateway, -1)
    assert tokens <= {e.subject_token for e in before if e.index <= after}


async def test_malformed_requests_are_audited_with_fields_never_values(
    gateway: RunningGateway,
) -> None:
    after = await _last_index(gateway)
    hostile = _get(identity_number=OBSERVATION[:-1] + "٩", consent_id="cns\x00")
    async with mtls_channel(gateway.pki, gateway.port, "court-demo") as channel:
        stub = channel.unary_unary(
            GET_METHOD,
            request_serializer=service_pb2.GetRepairStatusRequest.SerializeToString,
            response_deserializer=service_pb2.GetRepairStatusResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub(hostile, timeout=10)
    code, info, bad_request = parse_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert info is not None
    assert info.reason == "INVALID_REQUEST"
    assert bad_request is not None
    assert {v.field for v in bad_request.field_violations} == {"identity_number", "consent_id"}
    assert OBSERVATION[:-1] not in str(caught.value.details())
    (entry,) = await _audited_since(gateway, after)
    assert entry.action == audit_pb2.AUDIT_ACTION_REFUSE_MALFORMED_REQUEST
    assert entry.outcome == audit_pb2.AUDIT_OUTCOME_DENIED
    assert entry.reason == "INVALID_REQUEST"
    assert entry.rpc_method == GET_METHOD
    assert list(entry.invalid_fields) == ["consent_id", "identity_number"]
    assert entry.institution_id == "court-demo"
    assert not entry.subject_token
    assert not entry.consent_id
    assert OBSERVATION[:-1].encode() not in entry.SerializeToString()


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # not protobuf
        b"\x0a\x02\xc3\x28",  # field 1 (identity_number) with invalid UTF-8
        b"\x0a\x10abc",  # a length running past the end
    ],
)
async def test_undecodable_request_bytes_are_invalid_argument_not_unknown(
    gateway: RunningGateway, payload: bytes
) -> None:
    async with mtls_channel(gateway.pki, gateway.port, "court-demo") as channel:
        raw = channel.unary_unary(GET_METHOD)  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(payload, timeout=10)
    code, info, bad_request = parse_error(caught.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert info is not None
    assert info.reason == "INVALID_REQUEST"
    assert bad_request is not None
    assert [v.field for v in bad_request.field_violations] == ["request"]
    status = caught.value.trailing_metadata()
    assert status is not None
    assert isinstance(bad_request, error_details_pb2.BadRequest)
