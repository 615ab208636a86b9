"""Page tokens are the server's: forged, altered, truncated or foreign tokens are refused.

Two halves. The codec (``gateway.protection.page_tokens``) alone: every one-byte edit, every
truncation and every scope change is refused, and a second replica with the same keyring opens
what the first issued. Then every list RPC the service descriptors declare (any request with a
``page_token`` field), served by a real gateway over mTLS: hostile tokens — garbage, forged
under another key, minted by the server for another RPC or another caller, edited — are all
INVALID_ARGUMENT with a BadRequest naming ``page_token`` (never INTERNAL), and honest paging
returns every item exactly once.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import pkgutil
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

import credgate.api.credit_repair.v1
from credgate.adapters.mocks.fleet import MockFleet
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.institution import Institution
from credgate.gateway.app import build_gateway
from credgate.gateway.config import config_from_mapping
from credgate.gateway.pki import add_institution, institution_paths
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.protection.page_tokens import PageScope, PageTokenError, PageTokens
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import RunningGateway, gateway_document
from tests.fixtures.pki import DevPki, mtls_channel
from tests.fixtures.subjects import Subject, enrol_subject, issue_subject_certificate, record_grant
from tests.test_consent_register import IDENTITY, OTHER_IDENTITY

SCOPE = PageScope("credit_repair.v1.X/ListThings", "bank-demo", ("open", True, 3))
WHEN = dt.datetime(2026, 5, 1, 8, 30, 15, 123456, tzinfo=dt.UTC)

# -- the codec ----------------------------------------------------------------------------------


def _tokens() -> PageTokens:
    return PageTokens.from_root_key(secrets.token_bytes(32))


def test_position_round_trips_for_every_shape() -> None:
    tokens = _tokens()
    assert tokens.open_index(tokens.issue(SCOPE, (41,)), SCOPE) == 41
    assert tokens.open_index(tokens.issue(SCOPE, (-1,)), SCOPE) == -1
    assert tokens.open_cursor(tokens.issue(SCOPE, (WHEN, "cg_1")), SCOPE) == (WHEN, "cg_1")
    assert tokens.open_key(tokens.issue(SCOPE, ("key-2",)), SCOPE) == "key-2"


def test_a_replica_with_the_same_keyring_opens_the_token_and_another_keyring_does_not() -> None:
    root = secrets.token_bytes(32)
    token = PageTokens.from_root_key(root).issue(SCOPE, (7,))
    assert PageTokens.from_root_key(root).open_index(token, SCOPE) == 7
    with pytest.raises(PageTokenError):
        PageTokens.from_root_key(secrets.token_bytes(32)).open_index(token, SCOPE)


@pytest.mark.parametrize(
    "other",
    [
        PageScope("credit_repair.v1.X/ListOtherThings", "bank-demo", ("open", True, 3)),
        PageScope("credit_repair.v1.X/ListThings", "lessor-demo", ("open", True, 3)),
        PageScope("credit_repair.v1.X/ListThings", "bank-demo", ("open", False, 3)),
        PageScope("credit_repair.v1.X/ListThings", "bank-demo", ("open", True, "3")),
        PageScope("credit_repair.v1.X/ListThings", "bank-demo", ("open", True)),
        PageScope("credit_repair.v1.X/ListThings", "bank-demo\x00", ("open", True, 3)),
    ],
    ids=["other-rpc", "other-caller", "other-filter", "typed-filter", "fewer-filters", "nul"],
)
def test_a_token_opens_only_in_the_scope_it_was_issued_for(other: PageScope) -> None:
    tokens = _tokens()
    token = tokens.issue(SCOPE, (WHEN, "obj_a"))
    with pytest.raises(PageTokenError):
        tokens.open(token, other)


def test_every_one_byte_edit_and_every_truncation_is_refused() -> None:
    tokens = _tokens()
    token = tokens.issue(SCOPE, (WHEN, "app_0123456789"))
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    edited = [
        raw[:i] + bytes([raw[i] ^ bit]) + raw[i + 1 :] for i in range(len(raw)) for bit in (1, 128)
    ]
    shortened = [raw[:n] for n in range(len(raw))]
    for variant in edited + shortened + [raw + b"\x00"]:
        spelled = base64.urlsafe_b64encode(variant).decode().rstrip("=")
        with pytest.raises(PageTokenError):
            tokens.open(spelled, SCOPE)


@pytest.mark.parametrize(
    "garbage",
    ["", "!!!!", "A", "====", "é" * 8, "\x00" * 8, "A" * 5000, "AAAA\nAAAA"],
    ids=["empty", "punctuation", "short", "padding", "non-ascii", "nul", "huge", "newline"],
)
def test_garbage_is_refused_not_crashed_on(garbage: str) -> None:
    with pytest.raises(PageTokenError):
        _tokens().open(garbage, SCOPE)


def test_a_token_spelled_another_way_is_refused() -> None:
    """Padding or the standard alphabet would decode to the same bytes: one spelling only."""
    tokens = _tokens()
    token = tokens.issue(SCOPE, (1234567,))
    for variant in (token + "=", token + "==", token.replace("-", "+").replace("_", "/") + " "):
        with pytest.raises(PageTokenError):
            tokens.open(variant, SCOPE)


def test_a_position_of_the_wrong_shape_is_refused() -> None:
    """A genuine token for a cursor listing is no index (and vice versa), even in scope."""
    tokens = _tokens()
    with pytest.raises(PageTokenError):
        tokens.open_index(tokens.issue(SCOPE, (WHEN, "x")), SCOPE)
    with pytest.raises(PageTokenError):
        tokens.open_cursor(tokens.issue(SCOPE, (3,)), SCOPE)
    with pytest.raises(PageTokenError):
        tokens.open_key(tokens.issue(SCOPE, (3,)), SCOPE)


# -- every list RPC, on a real gateway -----------------------------------------------------------


def _services() -> Iterator[MethodDescriptor]:
    for info in pkgutil.iter_modules(credgate.api.credit_repair.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"credgate.api.credit_repair.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                yield from service.methods


LIST_RPCS = {
    f"{m.containing_service.full_name}/{m.name}": m
    for m in _services()
    if "page_token" in m.input_type.fields_by_name
}

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
SECOND_REGULATOR = "regulator-second"
OLD_FORMAT = b'{"i":"cg_0","s":"x","t":"2020-01-01T00:00:00+00:00","v":1}'
"""What ConsentService used to accept: unsigned JSON anyone could write."""
SUBJECT = "<subject>"
OTHER_SUBJECT = "<other subject>"


@dataclass(frozen=True)
class Listing:
    """Who may call a list RPC, and a second caller of the same kind (for replays)."""

    caller: str
    other_caller: str
    items: str
    """The response's repeated field."""
    seeded: bool = False
    """The setup gives it more than one page of items at ``page_size``."""
    page_size: int = 1
    """2 for a listing that each call appends to (the audit log): pages must outrun it."""


LISTINGS = {
    "credit_repair.v1.ConsentService/ListConsents": Listing(
        "bank-demo", "lessor-demo", "grants", seeded=True
    ),
    "credit_repair.v1.SelfInquiryService/ListOwnConsents": Listing(
        SUBJECT, OTHER_SUBJECT, "grants", seeded=True
    ),
    "credit_repair.v1.SelfInquiryService/ListOwnAccesses": Listing(
        SUBJECT, OTHER_SUBJECT, "accesses", seeded=True
    ),
    "credit_repair.v1.RegulatorService/ListAuditEntries": Listing(
        "regulator-demo", SECOND_REGULATOR, "records", seeded=True, page_size=2
    ),
    "credit_repair.v1.SigningKeyService/ListSigningKeys": Listing(
        "bank-demo", "lessor-demo", "signing_keys"
    ),
    "credit_repair.v1.ObjectionService/ListObjections": Listing(
        "agency-demo", SUBJECT, "objections"
    ),
    "credit_repair.v1.ObjectionService/ListOverdueObjections": Listing(
        "regulator-demo", SECOND_REGULATOR, "objections"
    ),
    "credit_repair.v1.RepairApplicationService/ListRepairApplications": Listing(
        "court-demo", "agency-demo", "applications"
    ),
    "credit_repair.v1.RepairApplicationService/ListAnnouncedRepairApplications": Listing(
        "bank-demo", "lessor-demo", "announcements"
    ),
    "credit_repair.v1.ReconciliationService/ListOpenContradictions": Listing(
        "regulator-demo", SECOND_REGULATOR, "contradictions"
    ),
    "credit_repair.v1.ReconciliationService/ListRestorationTimes": Listing(
        "regulator-demo", SECOND_REGULATOR, "restorations"
    ),
}


def test_every_list_rpc_in_the_descriptors_is_attacked_here() -> None:
    """A new list RPC fails this test until it has a row above (and so is attacked below)."""
    assert set(LIST_RPCS) == set(LISTINGS)
    for method in LIST_RPCS.values():
        field = method.input_type.fields_by_name["page_token"]
        assert field.type == FieldDescriptor.TYPE_STRING
        assert "next_page_token" in method.output_type.fields_by_name


class World:
    """A gateway with subjects, grants and audit entries; calls any list RPC by name."""

    def __init__(
        self, running: RunningGateway, subject: Subject, other: Subject, keyring: Keyring
    ) -> None:
        self.running = running
        self.subjects = (subject, other)
        self.keyring = keyring
        self.ids = {SUBJECT: subject.institution_id, OTHER_SUBJECT: other.institution_id}
        self.server_tokens = PageTokens.from_root_key(keyring.subject_token_key)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def caller_id(self, caller: str) -> str:
        return self.ids.get(caller, caller)

    def channel(self, caller: str) -> grpc.aio.Channel:
        institution_id = self.caller_id(caller)
        if institution_id not in self._channels:
            paths = institution_paths(self.running.pki.paths.directory, institution_id)
            self._channels[institution_id] = mtls_channel(
                self.running.pki, self.running.port, paths
            )
        return self._channels[institution_id]

    async def call(
        self, rpc: str, caller: str, page_token: str = "", page_size: int = 0
    ) -> Message:
        method = LIST_RPCS[rpc]
        request = json_format.ParseDict(
            {"pageToken": page_token, "pageSize": page_size},
            message_factory.GetMessageClass(method.input_type)(),
        )
        response_class = message_factory.GetMessageClass(method.output_type)
        stub = self.channel(caller).unary_unary(
            f"/{rpc}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        response: Message = await stub(request, timeout=10)
        return response

    async def refused(self, rpc: str, caller: str, page_token: str) -> None:
        """The call is INVALID_ARGUMENT with one BadRequest violation, on ``page_token``."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.call(rpc, caller, page_token)
        parsed = parse_error(caught.value)
        assert parsed.code == grpc.StatusCode.INVALID_ARGUMENT, (rpc, page_token[:40], parsed)
        assert parsed.bad_request is not None, rpc
        assert [v.field for v in parsed.bad_request.field_violations] == ["page_token"], rpc

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@pytest.fixture
async def world(gateway: RunningGateway, tmp_path: Path) -> World:
    """Two subjects with three grants each (to bank-demo, lessor-demo), and a second regulator."""
    directory = gateway.pki.paths.directory
    if not institution_paths(directory, SECOND_REGULATOR).cert.exists():
        add_institution(
            directory,
            Institution(SECOND_REGULATOR, vocab.INSTITUTION_ROLE_REGULATOR, "Second Regulator"),
        )
    subjects = []
    for number in (IDENTITY, OTHER_IDENTITY):
        subject = await enrol_subject(gateway, number)
        issue_subject_certificate(gateway, subject)
        for grantee in ("bank-demo", "bank-demo", "lessor-demo", "lessor-demo"):
            await record_grant(
                gateway, subject, grantee=grantee, purposes=[REVIEW], categories=[REPAIR]
            )
        subjects.append(subject)
    # The gateway's own keyring (tests.fixtures.mocks.gateway_document), to mint tokens the
    # server itself would issue — for another RPC or another caller.
    keyring = Keyring.load(tmp_path / "keyring.json")
    return World(gateway, subjects[0], subjects[1], keyring)


def _hostile(world: World, rpc: str, caller_id: str) -> dict[str, str]:
    """Tokens nobody may use with ``rpc`` as ``caller_id``: each one a way to forge."""
    scope = PageScope(rpc, caller_id)
    forger = PageTokens(secrets.token_bytes(32))
    server = world.server_tokens
    return {
        "garbage": "not-a-token",
        "non-ascii": "页码令牌",
        "nul": "AAAA\x00AAAA",
        "huge": "A" * 4096,
        "old-unsigned-format": base64.urlsafe_b64encode(OLD_FORMAT).decode().rstrip("="),
        "forged-index": forger.issue(scope, (0,)),
        "forged-cursor": forger.issue(scope, (WHEN, "zzz")),
        "server-other-caller": server.issue(PageScope(rpc, "someone-else"), (0,)),
    } | {
        f"server-{other_rpc}-{shape}": server.issue(PageScope(other_rpc, caller_id), position)
        for other_rpc in LIST_RPCS
        if other_rpc != rpc
        for shape, position in (("index", (0,)), ("cursor", (WHEN, "x")), ("key", ("x",)))
    }


async def test_hostile_page_tokens_are_invalid_argument_on_every_list_rpc(world: World) -> None:
    try:
        for rpc, listing in LISTINGS.items():
            for name, token in _hostile(world, rpc, world.caller_id(listing.caller)).items():
                try:
                    await world.refused(rpc, listing.caller, token)
                except AssertionError as failed:
                    raise AssertionError(f"{rpc}: {name} token") from failed
    finally:
        await world.close()


async def _page_through(world: World, rpc: str, caller: str) -> tuple[list[bytes], list[str]]:
    """Every item of the listing in small pages, and the tokens that led there."""
    items: list[bytes] = []
    tokens: list[str] = []
    token = ""
    for _ in range(1000):
        page = await world.call(rpc, caller, token, page_size=LISTINGS[rpc].page_size)
        items.extend(m.SerializeToString() for m in getattr(page, LISTINGS[rpc].items))
        token = getattr(page, "next_page_token")  # noqa: B009 - generic response type
        if not token:
            return items, tokens
        tokens.append(token)
    raise AssertionError(f"{rpc} did not end")


def _edits(token: str) -> list[str]:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    flipped = [
        raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1 :] for i in (0, len(raw) // 2, len(raw) - 1)
    ]
    return [base64.urlsafe_b64encode(v).decode().rstrip("=") for v in flipped] + [
        token[:-1],
        token[: len(token) // 2],
        token + "A",
    ]


async def test_genuine_tokens_only_continue_their_own_listing_for_their_own_caller(
    world: World,
) -> None:
    try:
        for rpc, listing in LISTINGS.items():
            if not listing.seeded:
                continue
            everything = await world.call(rpc, listing.caller, page_size=1000)
            whole = [m.SerializeToString() for m in getattr(everything, listing.items)]
            paged, tokens = await _page_through(world, rpc, listing.caller)
            assert len(tokens) >= 2, rpc
            # Honest paging: each item once (audited listings may grow meanwhile, never repeat).
            assert len(paged) == len(set(paged)), rpc
            assert set(whole) <= set(paged), rpc
            genuine = tokens[0]
            await world.call(rpc, listing.caller, genuine)  # still good
            for edited in _edits(genuine):
                await world.refused(rpc, listing.caller, edited)
            await world.refused(rpc, listing.other_caller, genuine)
            for other_rpc, other in LISTINGS.items():
                if other_rpc != rpc:
                    await world.refused(other_rpc, other.caller, genuine)
    finally:
        await world.close()


async def test_a_consent_listing_token_is_bound_to_its_filters(world: World) -> None:
    """Changing a filter between pages is a new listing: the old position is refused."""
    from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
    from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc

    stub = consent_grpc.ConsentServiceStub(world.channel("bank-demo"))
    try:
        first = await stub.ListConsents(consent_pb2.ListConsentsRequest(page_size=1))
        assert first.next_page_token
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListConsents(
                consent_pb2.ListConsentsRequest(
                    page_size=1,
                    page_token=first.next_page_token,
                    state=consent_pb2.CONSENT_STATE_ACTIVE,
                )
            )
        parsed = parse_error(caught.value)
        assert parsed.code == grpc.StatusCode.INVALID_ARGUMENT
        assert parsed.bad_request is not None
        assert [v.field for v in parsed.bad_request.field_violations] == ["page_token"]
    finally:
        await world.close()


async def test_a_token_from_one_replica_continues_the_listing_on_another(
    world: World, mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path
) -> None:
    """Two replicas over one database and one keyring: page 1 on A, the rest on B."""
    config = config_from_mapping(
        gateway_document(mock_fleet, dev_pki, tmp_path), base_dir=tmp_path, environ={}
    )
    replica = await build_gateway(config)
    port = await replica.start()
    rpc = "credit_repair.v1.ConsentService/ListConsents"
    listing = LISTINGS[rpc]
    try:
        whole = await world.call(rpc, listing.caller, page_size=1000)
        first = await world.call(rpc, listing.caller, page_size=1)
        on_b = World(RunningGateway(replica, port, dev_pki), *world.subjects, world.keyring)
        try:
            seen = [m.SerializeToString() for m in getattr(first, listing.items)]
            token = getattr(first, "next_page_token")  # noqa: B009 - generic response type
            while token:
                page = await on_b.call(rpc, listing.caller, token, page_size=1)
                seen.extend(m.SerializeToString() for m in getattr(page, listing.items))
                token = getattr(page, "next_page_token")  # noqa: B009
        finally:
            await on_b.close()
        assert seen == [m.SerializeToString() for m in getattr(whole, listing.items)]
        assert len(seen) >= 2
    finally:
        await replica.stop(0)
        await world.close()


async def test_a_token_grants_nothing_permission_is_checked_again_on_every_page(
    world: World,
) -> None:
    """The subject re-enrols (a lost phone): the old certificate's genuine token is refused
    for who is calling, before the token is even looked at."""
    rpc = "credit_repair.v1.SelfInquiryService/ListOwnConsents"
    try:
        first = await world.call(rpc, SUBJECT, page_size=1)
        token = getattr(first, "next_page_token")  # noqa: B009 - generic response type
        assert token
        await enrol_subject(world.running, world.subjects[0].identity_number)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await world.call(rpc, SUBJECT, token, page_size=1)
        parsed = parse_error(caught.value)
        assert parsed.code == grpc.StatusCode.PERMISSION_DENIED
        assert parsed.error_info is not None
        assert parsed.error_info.reason == "SUBJECT_MISMATCH"
    finally:
        await world.close()
