"""Composition: build a running gateway from its configuration, in one readable place.

Order matters: the schema is migrated before anything touches the database, keys are loaded
before any subject token is computed, and adapters exist before the engine that fans out to
them. Shutdown runs in reverse: drain calls, close adapters, release the database.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc

from adapters.catalog import build_adapter
from consent.register import ConsentRegister
from consent.service import ConsentService
from gateway.config import GatewayConfig
from gateway.engine.query import BreakerSettings, QueryEngine
from gateway.institution import IdentityResolver
from gateway.protection.cipher import FieldCipher
from gateway.protection.keyring import Keyring
from gateway.protection.tokens import SubjectTokenizer
from gateway.repair_status_service import RepairStatusServicer
from gateway.server import GatewayServer
from gateway.storage.database import Database
from gateway.storage.fact_index import FactIndex
from gateway.storage.migrate import upgrade_to_head

log = logging.getLogger(__name__)

REPAIR_STATUS_SERVICE = "credit_repair.v1.RepairStatusService"
CONSENT_SERVICE = "credit_repair.v1.ConsentService"


@dataclass
class Gateway:
    """A configured gateway; ``start`` binds it, ``stop`` drains and releases everything."""

    server: GatewayServer
    engine: QueryEngine
    database: Database

    async def start(self) -> int:
        return await self.server.start()

    async def stop(self, grace: float | None = None) -> None:
        try:
            await self.server.stop(grace)
        finally:
            await self.engine.aclose()
            await self.database.dispose()


async def build_gateway(config: GatewayConfig) -> Gateway:
    await asyncio.to_thread(upgrade_to_head, config.storage.url)
    keyring = Keyring.load(config.keys.keyring)
    database = Database.from_url(config.storage.url)
    fact_index = FactIndex(database, FieldCipher(keyring))
    engine = QueryEngine(
        [build_adapter(source) for source in config.sources],
        fact_index,
        breaker_settings=BreakerSettings(
            failure_threshold=config.breaker.failure_threshold,
            reset_seconds=config.breaker.reset_seconds,
        ),
    )
    identify = IdentityResolver(config.dev_identity if config.gateway.insecure_dev else None)
    tokenizer = SubjectTokenizer(keyring.subject_token_key)
    consents = ConsentRegister(database)
    servicer = RepairStatusServicer(
        engine,
        tokenizer,
        fact_index,
        consents,
        identify,
        batch_max=config.gateway.batch_max,
        default_deadline_seconds=config.gateway.default_deadline_seconds,
    )
    server = GatewayServer.from_config(config)
    server.add_servicer(
        service_grpc.add_RepairStatusServiceServicer_to_server, servicer, REPAIR_STATUS_SERVICE
    )
    server.add_servicer(
        consent_grpc.add_ConsentServiceServicer_to_server,
        ConsentService(
            consents, tokenizer, identify, enrolment_offices=config.consent.enrolment_offices
        ),
        CONSENT_SERVICE,
    )
    log.info("gateway configured with %d sources", len(config.sources))
    return Gateway(server, engine, database)


async def serve(config: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain gracefully."""
    gateway = await build_gateway(config)
    try:
        await gateway.server.serve()
    finally:
        await gateway.engine.aclose()
        await gateway.database.dispose()
