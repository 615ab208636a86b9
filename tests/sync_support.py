"""Helpers for the provider-sync tests: certificates, configs, servers, and index snapshots.

The sync tests run real servers with real mutual TLS: in process (``sync_server``, which lets a
test wrap the store or read the stream probes) or as a separate OS process (the crash tests).
``index_state`` reads back what a gateway left in its database, decrypted, so a test can
compare it with the provider's history.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import func, select

from credgate.adapters.mocks.providers import PLATFORM, REGISTRY, ProviderScript
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2_grpc as sync_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.core.institution import Institution, InstitutionRole
from credgate.core.storage.database import Database
from credgate.core.storage.models import SourceFactsRow
from credgate.core.sync.provider_client import ProviderClient
from credgate.core.sync.signing import sign_update
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.caller_certificate import CallerResolver
from credgate.gateway.config import GatewayConfig, config_from_mapping
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.pki import add_institution, institution_paths
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.server import GatewayServer
from credgate.gateway.storage.migrate import upgrade_to_head
from credgate.gateway.sync.models import ChangeFeedRow, SyncCursorRow, SyncUpdateRow
from credgate.gateway.sync.service import SERVICE_NAME, ProviderSyncServicer
from credgate.gateway.sync.store import SyncStore
from credgate.gateway.sync.stream import SyncProbe
from credgate.gateway.sync.validate import IdempotencyDigester, UpdateValidator
from credgate.gateway.sync.workers import validation_pool
from tests.fixtures.pki import DevPki, mtls_channel

ROGUE_PROVIDER = "provider-rogue"
"""A data provider with a valid certificate that the gateway has not registered."""


def ensure_provider_certs(pki: DevPki) -> None:
    """Issue the registry's and the rogue provider's certificates into the session PKI once."""
    for institution_id in (REGISTRY.institution_id, ROGUE_PROVIDER):
        if not institution_paths(pki.paths.directory, institution_id).cert.exists():
            add_institution(
                pki.paths.directory,
                Institution(institution_id, InstitutionRole.INSTITUTION_ROLE_DATA_PROVIDER),
            )


def provider_channel(pki: DevPki, port: int, institution_id: str) -> grpc.aio.Channel:
    """An mTLS channel presenting ``institution_id``'s certificate."""
    return mtls_channel(pki, port, institution_paths(pki.paths.directory, institution_id))


def sync_document(
    pki: DevPki,
    directory: Path,
    storage_url: str,
    *,
    scripts: Sequence[ProviderScript] = (PLATFORM, REGISTRY),
    sync: dict[str, Any] | None = None,
    listen: str = "127.0.0.1:0",
) -> dict[str, Any]:
    """A gateway configuration (as parsed TOML) with the scripted providers registered."""
    keyring = directory / "keyring.json"
    if not keyring.exists():
        Keyring.generate(keyring)
    tls = pki.server_tls
    return {
        "gateway": {"listen": listen, "shutdown_grace_seconds": 0.0},
        "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)},
        "storage": {"data_dir": str(directory), "url": storage_url},
        "keys": {"keyring": str(keyring)},
        "sync": sync or {},
        "providers": [script.provider_entry() for script in scripts],
    }


@dataclass
class SyncServer:
    """A running in-process gateway serving only ProviderSyncService."""

    port: int
    config: GatewayConfig
    database: Database
    keyring: Keyring
    servicer: ProviderSyncServicer
    probes: list[SyncProbe] = field(default_factory=list)


@asynccontextmanager
async def sync_server(
    pki: DevPki,
    directory: Path,
    storage_url: str,
    *,
    sync: dict[str, Any] | None = None,
    store_factory: Callable[[Database, FieldCipher], SyncStore] = SyncStore,
) -> AsyncIterator[SyncServer]:
    """Migrate, then serve ProviderSyncService behind the real server shell with mutual TLS."""
    ensure_provider_certs(pki)
    document = sync_document(pki, directory, storage_url, sync=sync)
    config = config_from_mapping(document, base_dir=directory, environ={})
    upgrade_to_head(storage_url)
    keyring = Keyring.load(config.keys.keyring)
    database = Database.from_url(storage_url)
    cipher = FieldCipher(keyring)
    validator = UpdateValidator(
        SubjectTokenizer(keyring.subject_token_key),
        cipher,
        IdempotencyDigester(keyring.subject_token_key),
        config.sync,
    )
    store = store_factory(database, cipher)
    probes: list[SyncProbe] = []

    def new_probe() -> SyncProbe:
        probes.append(SyncProbe())
        return probes[-1]

    pool = validation_pool(config.sync, keyring)  # the gateway's default: worker processes
    servicer = ProviderSyncServicer(
        config.providers,
        validator,
        store,
        config.sync,
        CallerResolver(),
        probe_factory=new_probe,
        pool=pool,
    )
    server = GatewayServer(listen="127.0.0.1:0", tls=pki.server_tls, shutdown_grace_seconds=0)
    server.add_servicer(sync_grpc.add_ProviderSyncServiceServicer_to_server, servicer, SERVICE_NAME)
    port = await server.start()
    try:
        yield SyncServer(port, config, database, keyring, servicer, probes)
    finally:
        await server.stop(0)
        await database.dispose()
        if pool is not None:
            pool.close()


async def exchange(
    channel: grpc.aio.Channel, requests: Sequence[sync_pb2.SyncUpdatesRequest]
) -> list[sync_pb2.SyncUpdatesResponse]:
    """Send ``requests``, half-close, and return every response until the gateway ends.

    Waits for the gateway's headers and writes explicitly rather than handing grpc.aio a
    request iterator: a write racing the end of a call turns its status into a bare INTERNAL
    (grpc/grpc#36066).
    """
    call = sync_grpc.ProviderSyncServiceStub(channel).SyncUpdates()
    await call.initial_metadata()  # the gateway sends headers once the caller is authorized
    try:
        for request in requests if not call.done() else ():
            await call.write(request)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        pass  # the call already ended; reading below raises its status
    responses = []
    while isinstance(response := await call.read(), sync_pb2.SyncUpdatesResponse):
        responses.append(response)
    return responses


def update_request(signed: sync_pb2.SignedProviderUpdate) -> sync_pb2.SyncUpdatesRequest:
    """Wrap one signed update as a stream message."""
    return sync_pb2.SyncUpdatesRequest(update=signed)


HELLO = sync_pb2.SyncUpdatesRequest(hello=sync_pb2.SyncHello(client_agent="tests"))


def notices(responses: Sequence[sync_pb2.SyncUpdatesResponse], kind: str) -> list[Any]:
    """The payloads of the responses of one kind (``ack``, ``rejected``, ``gap``...)."""
    return [getattr(r, kind) for r in responses if r.WhichOneof("message") == kind]


def expected_index(
    updates: Sequence[sync_pb2.ProviderUpdate], tokenizer: SubjectTokenizer
) -> dict[str, tuple[int, report_pb2.SourceFacts]]:
    """Per subject token: the sequence and facts the index must hold after ``updates``.

    The rule of the index: the newest ``source_as_of`` wins, ties go to the later sequence.
    """
    best: dict[str, sync_pb2.ProviderUpdate] = {}
    for update in updates:
        token = tokenizer.token(update.identity_number)
        held = best.get(token)
        key = (update.facts.provenance.source_as_of.ToDatetime(), update.sequence)
        if held is None or key >= (
            held.facts.provenance.source_as_of.ToDatetime(),
            held.sequence,
        ):
            best[token] = update
    return {token: (u.sequence, u.facts) for token, u in best.items()}


def comparable(facts: report_pb2.SourceFacts) -> report_pb2.SourceFacts:
    """``facts`` without what the gateway sets on receipt (fetch time, signature status, the
    kind's name)."""
    copy = report_pb2.SourceFacts()
    copy.CopyFrom(facts)
    copy.ClearField("source_kind_name")
    for provenance in (copy.provenance, *(c.provenance for c in copy.cases),
                       *(r.provenance for r in copy.records)):  # fmt: skip
        provenance.ClearField("fetched_at")
        provenance.ClearField("signature")
        provenance.ClearField("source_kind_name")
    return copy


@dataclass(frozen=True)
class IndexState:
    """What a gateway left in its database for one source, decrypted."""

    cursor: int
    facts: dict[str, tuple[int, report_pb2.SourceFacts]]
    """Per subject token: the sequence that wrote the row, and the facts."""
    journal: dict[str, int]
    """Journal rows per outcome."""
    journal_sequences: list[int]
    feed: list[tuple[int, str, int]]
    """Change-feed rows (change id, subject token, sequence), in id order."""


async def index_state(database: Database, keyring: Keyring, source_id: str) -> IndexState:
    """Read back cursor, index rows, journal and change feed of ``source_id``."""
    index = FactIndex(database, FieldCipher(keyring))
    async with database.session() as session:
        cursor = await session.scalar(
            select(SyncCursorRow.last_sequence).where(SyncCursorRow.source_id == source_id)
        )
        rows = (
            await session.execute(
                select(SourceFactsRow.subject_token, SourceFactsRow.sequence).where(
                    SourceFactsRow.source_id == source_id
                )
            )
        ).all()
        outcomes = (
            await session.execute(
                select(SyncUpdateRow.outcome, func.count())
                .where(SyncUpdateRow.source_id == source_id)
                .group_by(SyncUpdateRow.outcome)
            )
        ).all()
        sequences = list(
            (
                await session.scalars(
                    select(SyncUpdateRow.sequence)
                    .where(SyncUpdateRow.source_id == source_id)
                    .order_by(SyncUpdateRow.sequence)
                )
            ).all()
        )
        feed = (
            await session.execute(
                select(ChangeFeedRow.change_id, ChangeFeedRow.subject_token, ChangeFeedRow.sequence)
                .where(ChangeFeedRow.source_id == source_id)
                .order_by(ChangeFeedRow.change_id)
            )
        ).all()
    facts = {}
    for token, sequence in rows:
        stored = await index.last_known(token, source_id)
        assert stored is not None
        facts[token] = (int(sequence or 0), stored)  # 0: stored by the live query path
    return IndexState(
        cursor=int(cursor or 0),
        facts=facts,
        journal={outcome: int(count) for outcome, count in outcomes},
        journal_sequences=[int(s) for s in sequences],
        feed=[(int(i), str(t), int(q)) for i, t, q in feed],
    )


def assert_index_matches(
    state: IndexState, updates: Sequence[sync_pb2.ProviderUpdate], tokenizer: SubjectTokenizer
) -> None:
    """The index holds exactly the provider's latest facts per subject, and nothing else."""
    expected = expected_index(updates, tokenizer)
    assert set(state.facts) == set(expected)
    for token, (sequence, facts) in expected.items():
        held_sequence, held = state.facts[token]
        assert held_sequence == sequence, token
        assert comparable(held) == comparable(facts), token
    # The change feed: ids grow with the sequences they announce, and each subject's latest
    # change names the sequence the index holds.
    assert [q for _, _, q in state.feed] == sorted(q for _, _, q in state.feed)
    latest = {token: sequence for _, token, sequence in state.feed}
    assert latest == {token: sequence for token, (sequence, _) in state.facts.items()}


def signed_by_platform(
    updates: Sequence[sync_pb2.ProviderUpdate],
) -> list[sync_pb2.SignedProviderUpdate]:
    """``updates`` signed with the platform script's key."""
    return [sign_update(PLATFORM.signing_key, u) for u in updates]


def platform_client(
    server: SyncServer,
    pki: DevPki,
    updates: Sequence[sync_pb2.ProviderUpdate],
    *,
    batch_size: int = 0,
) -> ProviderClient:
    """The reference client pushing ``updates`` as the platform provider: one update per
    message, or ``SignedUpdateBatch`` messages of ``batch_size`` when it is set."""
    return ProviderClient(
        lambda: provider_channel(pki, server.port, PLATFORM.institution_id),
        signed_by_platform(updates),
        batch_key=PLATFORM.signing_key if batch_size else None,
        batch_size=batch_size or 1,
    )


def tokenizer_of(server: SyncServer) -> SubjectTokenizer:
    """The subject tokenizer of the server's keyring."""
    return SubjectTokenizer(server.keyring.subject_token_key)


def copy_update(update: sync_pb2.ProviderUpdate, **changes: object) -> sync_pb2.ProviderUpdate:
    """A copy of ``update`` with some fields replaced (``facts`` by a SourceFacts message)."""
    copy = sync_pb2.ProviderUpdate()
    copy.CopyFrom(update)
    for name, value in changes.items():
        if isinstance(value, report_pb2.SourceFacts):
            copy.facts.CopyFrom(value)
        else:
            setattr(copy, name, value)
    return copy
