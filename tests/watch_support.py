"""Helpers for the consistency, watch and reconciliation tests: gateways with providers, pushes.

A gateway here is the real composition (``build_gateway``) behind mutual TLS, with the scripted
providers (platform and registry) registered, optionally in front of the mock source fleet, on
the test's database. ``Pusher`` plays one provider: it keeps the history it has sent and pushes
more with the reference client, which resumes where the gateway's cursor stands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.mapping import to_timestamp
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import State, Subject
from credgate.adapters.mocks.providers import ProviderScript, source_facts
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.core.sync.provider_client import ProviderClient
from credgate.core.sync.signing import sign_update
from credgate.gateway.app import Gateway, build_gateway
from credgate.gateway.config import config_from_mapping
from tests.fixtures.mocks import ENROLMENT_OFFICE, RunningGateway, gateway_document
from tests.fixtures.pki import DevPki
from tests.sync_support import ensure_provider_certs, provider_channel, sync_document

JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
CASE = "(2026)粤03执77号"
REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
INDEX = service_pb2.CONSISTENCY_MODE_INDEX
LIVE = service_pb2.CONSISTENCY_MODE_LIVE
AUTO = service_pb2.CONSISTENCY_MODE_AUTO
AS_OF = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)


def feed_document(
    pki: DevPki,
    directory: Path,
    storage_url: str,
    *,
    fleet: MockFleet | None = None,
    sync: dict[str, Any] | None = None,
    watch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A gateway config (parsed TOML): providers registered, enrolment office, [watch]."""
    ensure_provider_certs(pki)
    document = sync_document(pki, directory, storage_url, sync=sync)
    if fleet is not None:
        document["sources"] = gateway_document(fleet, pki, directory, storage_url)["sources"]
    document["consent"] = {"enrolment_offices": [ENROLMENT_OFFICE]}
    document["watch"] = {"poll_seconds": 0.05, "recheck_seconds": 0.5, **(watch or {})}
    return document


@asynccontextmanager
async def running_gateway(
    pki: DevPki, directory: Path, document: dict[str, Any]
) -> AsyncIterator[RunningGateway]:
    """``build_gateway`` on ``document``, started on a free port; stopped afterwards."""
    config = config_from_mapping(document, base_dir=directory, environ={})
    built = await build_gateway(config)
    port = await built.start()
    try:
        yield RunningGateway(built, port, pki)
    finally:
        await _stop(built)


STOP_TIMEOUT_SECONDS = 60.0


async def _stop(built: Gateway) -> None:
    """Stop, and if that hangs (seen once under load, not reproduced), print every task's stack
    before failing, so the next occurrence says where it waits."""
    try:
        async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
            await built.stop(0)
    except TimeoutError:
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        raise


def update_for(
    script: ProviderScript,
    subject: Subject,
    state: State,
    as_of: dt.datetime,
    sequence: int,
) -> sync_pb2.ProviderUpdate:
    """An update of ``script``'s source: ``subject`` shows ``state`` as of ``as_of``."""
    return sync_pb2.ProviderUpdate(
        source_id=script.source_id,
        sequence=sequence,
        identity_number=subject.person.identity_number,
        idempotency_key=str(uuid.uuid4()),
        facts=source_facts(script, subject, state, as_of),
        create_time=to_timestamp(as_of),
    )


class Pusher:
    """One provider pushing to one gateway, sequence numbers continuing across pushes."""

    def __init__(self, script: ProviderScript, pki: DevPki, port: int) -> None:
        self.script = script
        self._pki = pki
        self.port = port
        self.history: list[sync_pb2.ProviderUpdate] = []
        self._signed: list[sync_pb2.SignedProviderUpdate] = []

    @property
    def next_sequence(self) -> int:
        return len(self.history) + 1

    def update(self, subject: Subject, state: State, as_of: dt.datetime) -> sync_pb2.ProviderUpdate:
        """The next update (not yet pushed)."""
        return update_for(self.script, subject, state, as_of, self.next_sequence)

    async def push(self, updates: Iterable[sync_pb2.ProviderUpdate] = ()) -> None:
        """Append ``updates`` to the history and push until the gateway acknowledges all."""
        for update in updates:
            assert update.sequence == self.next_sequence
            self.history.append(update)
            self._signed.append(sign_update(self.script.signing_key, update))
        client = ProviderClient(
            lambda: provider_channel(self._pki, self.port, self.script.institution_id),
            self._signed,
        )
        report = await client.run(timeout=120)
        assert report.rejected == {}
        assert report.acked == len(self.history)


async def grant_ongoing(
    gateway: RunningGateway,
    identity_number: str,
    *,
    ongoing: bool = True,
    grantee: str = "bank-demo",
) -> consent_pb2.ConsentGrant:
    """The subject's key is enrolled, the subject signs REVIEW/REPAIR terms for ``grantee``."""
    key = Ed25519PrivateKey.generate()
    async with gateway.client(ENROLMENT_OFFICE) as office:
        await office.enroll_subject_key(identity_number, grants.raw_public_key(key))
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=grants.subject_key_id(grants.raw_public_key(key)),
        grantee_institution_id=grantee,
        collecting_institution_id=grantee,
        purposes=[REVIEW],
        categories=[REPAIR],
        ongoing_updates=ongoing,
        retention_days=30,
        nonce=secrets.token_bytes(16),
    )
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + dt.timedelta(days=30))
    signed, signature = grants.sign_terms(key, terms)
    async with gateway.client(grantee) as collector:
        return await collector.grant_consent(identity_number, signed, signature)
