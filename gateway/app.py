"""Composition: build a running gateway from its configuration, in one readable place.

Order matters: the schema is migrated before anything touches the database, keys are loaded
before any subject token is computed or report signed, and adapters exist before the engine
that fans out to them. Shutdown runs in reverse: drain calls, stop the periodic audit
checkpoints, let in-flight audit appends commit and sign one last checkpoint over them, close
adapters, release the database. The report-signing key lives in its own file in the data
directory (``gateway.report_signing_keys``), as does the audit log's key (``audit-log.key``,
``audit.log_signing_key``); both are created on the first start. The keyring and the
signing-key file are followed, not read once: a rotation copied to a running replica is taken
up without a restart (``gateway.protection.live_keyring``,
``gateway.report_signing_keys.ReportSigner``). One ``AuditTrail`` over one ``AuditLog`` is
handed to every service that decides about a subject, so all of them record the same way and
fail closed together (docs/audit.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from credgate.adapters.catalog import build_adapters, load_configured
from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credgate.api.credit_repair.v1 import provider_sync_service_pb2_grpc as sync_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2_grpc as self_inquiry_grpc
from credgate.api.credit_repair.v1 import signing_key_service_pb2_grpc as signing_key_grpc
from credgate.audit import AuditLog, load_or_create_signer
from credgate.audit.checkpoints import PeriodicCheckpointer
from credgate.audit.log_signing_key import KEY_FILE_NAME
from credgate.audit.signed_size import SignedSizeGuard, not_serving_on_trip, state_path
from credgate.consent.register import ConsentRegister
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.audit_trail import AuditTrail
from credgate.gateway.caller_certificate import CallerResolver
from credgate.gateway.config import GatewayConfig
from credgate.gateway.consent_service import ConsentServicer
from credgate.gateway.disclosure import DisclosureGate
from credgate.gateway.engine.query import BreakerSettings, QueryEngine
from credgate.gateway.engine.subject_view import SubjectView, ViewSettings, tables_read
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.fact_index.live_writes import HELD_READ
from credgate.gateway.input_boundary import InputBoundary, audited_refusals, check_services
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.live_keyring import LiveKeyring
from credgate.gateway.protection.page_tokens import PageTokens
from credgate.gateway.regulator_service import RegulatorServicer, add_regulator_service
from credgate.gateway.repair_certificates import RepairCertificates
from credgate.gateway.repair_status_service import RepairStatusServicer
from credgate.gateway.report_signing_keys import FILE_NAME, PublishedReportKeys, ReportSigner
from credgate.gateway.revocation import RevocationList
from credgate.gateway.self_inquiry_service import CertificateIssuing, SelfInquiryServicer
from credgate.gateway.server import GatewayServer, StopBudget
from credgate.gateway.signing_key_service import SigningKeyServicer
from credgate.gateway.storage.data_life_sweep import DataLifeSweep
from credgate.gateway.storage.migrate import upgrade_to_head
from credgate.gateway.subject_certificate import SubjectCertificates
from credgate.gateway.sync.service import ProviderSyncServicer, build_sync_servicer
from credgate.gateway.telemetry import Registration, observe_audit_backlog, setup_telemetry
from credgate.gateway.watch.runtime import ChangeFollowers, build_followers, push_sources
from credgate.gateway.witness.submit import witness_submitter
from credgate.gateway.workdays import WorkdayCalendar
from credgate.gateway.workflows.common import workflow_id_key
from credgate.gateway.workflows.objection_store import MAYBE_DISPUTED
from credgate.gateway.workflows.wiring import Workflows

log = logging.getLogger(__name__)

REPAIR_STATUS_SERVICE = "credit_repair.v1.RepairStatusService"
CONSENT_SERVICE = "credit_repair.v1.ConsentService"
SIGNING_KEY_SERVICE = "credit_repair.v1.SigningKeyService"
SELF_INQUIRY_SERVICE = "credit_repair.v1.SelfInquiryService"
PROVIDER_SYNC_SERVICE = "credit_repair.v1.ProviderSyncService"


@dataclass
class Gateway:
    """A configured gateway; ``start`` binds it, ``stop`` drains and releases everything."""

    server: GatewayServer
    engine: QueryEngine
    database: Database
    audit_log: AuditLog
    checkpointer: PeriodicCheckpointer
    audit_backlog: Registration
    followers: ChangeFollowers | None = None
    """Change-feed reader, watch streams and reconciler (``gateway.watch.runtime``)."""
    workflows: Workflows | None = None
    """Objections and repair applications (``gateway.workflows``)."""
    keys: LiveKeyring | None = None
    """The keyring as the file says now (``gateway.protection.live_keyring``)."""
    signer: ReportSigner | None = None
    """Signs reports with the signing-key file's current key (``gateway.report_signing_keys``)."""
    data_life: DataLifeSweep | None = None
    """Clears the kept state of reports whose data life ended (``gateway.storage``)."""
    certificates: RepairCertificates | None = None
    """Issues repair-status certificates and computes their status list."""
    sync: ProviderSyncServicer | None = None
    """Provider sync, whose validation worker processes stop with the gateway."""

    async def start(self) -> int:
        port = await self.server.start()
        self.checkpointer.start()
        if self.data_life is not None:
            self.data_life.start()
        if self.followers is not None:
            self.followers.start()
        if self.workflows is not None:
            self.workflows.start()
        return port

    async def serve(self) -> None:
        """Serve until SIGTERM/SIGINT, then drain (``credgate serve``); ``release`` afterwards."""
        self.checkpointer.start()
        if self.data_life is not None:
            self.data_life.start()
        if self.followers is not None:
            self.followers.start()
        if self.workflows is not None:
            self.workflows.start()
        await self.server.serve()

    async def stop(self, grace: float | None = None) -> None:
        try:
            await self.server.stop(grace)
        finally:
            await self.release()

    async def release(self, budget: StopBudget | None = None) -> None:
        """Once the server has stopped: no more periodic checkpoints, every audit append still
        in flight committed and covered by one last checkpoint, adapters closed, the database
        released — in that order, so no entry is cut off by the database going away. The steps
        share one time budget (``gateway.server.StopBudget``, fresh unless given): one that
        hangs on a stalled database is abandoned with a log line, never the stop."""
        budget = budget or StopBudget()
        self.audit_backlog.close()
        if self.sync is not None:
            # Its worker processes would outlive the gateway: a gateway that is itself a
            # multiprocessing child (``credgate serve --workers``, the bench) waits at exit
            # for every child, and an idle pool worker waits for work forever.
            self.sync.close()
        if self.followers is not None:
            await budget.step("stopping the change followers", self.followers.stop())
        await budget.step("stopping audit checkpoints", self.checkpointer.stop())
        if self.data_life is not None:
            await budget.step("stopping the data-life sweep", self.data_life.stop())
        if self.workflows is not None:
            await budget.step("closing the workflows", self.workflows.aclose())
        await budget.step("committing audit appends in flight", self.audit_log.aclose())
        await budget.step("signing the last audit checkpoint", self.checkpointer.sign_last())
        await budget.step("closing the query engine", self.engine.aclose())
        await budget.step("releasing the database", self.database.dispose())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def subject_view(
    config: GatewayConfig, database: Database, fact_index: FactIndex, workflows: Workflows
) -> SubjectView | None:
    """The INDEX answers' per-subject view, watching the tables it reads (None: disabled)."""
    settings = ViewSettings(
        config.gateway.index_view_entries, config.gateway.index_view_max_age_seconds
    )
    if not settings.enabled:
        return None
    return SubjectView(
        settings,
        database,
        tables_read((HELD_READ, MAYBE_DISPUTED)),
        settled=fact_index.settled,
        queued=fact_index.queued,
        load_facts=fact_index.last_known_all,
        load_disputes=workflows.open_disputes,
    )


async def build_gateway(
    config: GatewayConfig, *, workflow_clock: Callable[[], dt.datetime] | None = None
) -> Gateway:
    """The whole gateway, not yet serving. ``workflow_clock`` is the repair workflows' wall
    clock (deadlines, eligibility's "today"): the real one unless a walk-through moves it
    (``gateway.demo_repair``); queries, audit and consent keep the real clock."""
    load_configured(config.sources)  # a broken adapter plugin stops us before any side effect
    await asyncio.to_thread(upgrade_to_head, config.storage.url)
    # Followed, not read once: a rotation's keyring copy is taken up without a restart
    # (``gateway.protection.live_keyring``). The subject-token key never changes.
    keys = LiveKeyring(config.keys.keyring, check_seconds=config.keys.reload_seconds)
    keyring = keys.current()
    signing_keys_path = config.storage.data_dir / FILE_NAME
    signer = await asyncio.to_thread(
        ReportSigner, signing_keys_path, check_seconds=config.keys.reload_seconds
    )
    signing_keys = signer.keys
    database = Database.from_url(
        config.storage.url, proof_mmap_bytes=config.storage.sqlite_proof_mmap_bytes
    )
    cipher = FieldCipher(keys)
    fact_index = FactIndex(database, cipher)
    workflows = Workflows(
        database,
        cipher,
        id_key=workflow_id_key(keyring.subject_token_key),
        # The holiday calendar with the years operators loaded (``[workdays]``).
        calendar=WorkdayCalendar(published=config.workdays.calendars),
        outbox_poll_seconds=config.outbox.poll_seconds,
        outbox_claim_seconds=config.outbox.claim_seconds,
        clock=workflow_clock or _utcnow,
    )
    # Deadlines counted on an estimated year move to the notice loaded since (at start).
    await workflows.recount()
    view = subject_view(config, database, fact_index, workflows)
    engine = QueryEngine(
        build_adapters(config.sources),
        fact_index,
        view=view,
        breaker_settings=BreakerSettings(
            failure_threshold=config.breaker.failure_threshold,
            reset_seconds=config.breaker.reset_seconds,
        ),
        consistency=config.consistency,
        push_sources=push_sources(config),
        disputes=workflows.disputes,
    )
    # The one resolver every servicer uses: it also refuses revoked certificates (CRL).
    identify = CallerResolver(
        config.dev_identity if config.gateway.insecure_dev else None,
        RevocationList.from_config(config.tls),
    )
    tokenizer = SubjectTokenizer(keyring.subject_token_key)
    # One page-token key for every listing, from the keyring every replica shares.
    page_tokens = PageTokens.from_root_key(keyring.subject_token_key)
    consents = ConsentRegister(database)
    followers = build_followers(
        config, database, keyring, fact_index, consents, identify, page_tokens, view=view
    )
    audit_signer = await asyncio.to_thread(
        load_or_create_signer, config.storage.data_dir / KEY_FILE_NAME
    )
    try:  # refuses a rolled-back log (exit 2) before anything is signed (audit.signed_size)
        audit_guard = await SignedSizeGuard.open(
            database, state_path(config.storage.data_dir / KEY_FILE_NAME), audit_signer.name
        )
    except BaseException:
        await database.dispose()
        raise
    audit_log = AuditLog(
        database,
        audit_signer,
        write_timeout_seconds=config.audit.write_timeout_seconds,
        guard=audit_guard,
    )
    audit = AuditTrail(audit_log)
    followers.reconciliation.gate = DisclosureGate(consents, audit)
    followers.reconciliation.audit = audit
    servicer = RepairStatusServicer(
        engine,
        tokenizer,
        consents,
        identify,
        signer.sign,
        audit=audit,
        batch_max=config.gateway.batch_max,
        default_deadline_seconds=config.gateway.default_deadline_seconds,
        watch=followers.streams,
    )
    server = GatewayServer.from_config(
        config, interceptors=[InputBoundary(audited_refusals(audit, identify))]
    )
    server.add_servicer(
        service_grpc.add_RepairStatusServiceServicer_to_server, servicer, REPAIR_STATUS_SERVICE
    )
    server.add_servicer(
        consent_grpc.add_ConsentServiceServicer_to_server,
        ConsentServicer(
            consents,
            tokenizer,
            identify,
            audit=audit,
            page_tokens=page_tokens,
            enrolment_offices=config.consent.enrolment_offices,
            sign_receipt=lambda grant, at: signer.sign_receipt(grant, issued_at=at),
            events=followers.consent_events,
        ),
        CONSENT_SERVICE,
    )
    certificates = RepairCertificates(database, engine, fact_index, signer.current_private_key)
    server.add_servicer(
        signing_key_grpc.add_SigningKeyServiceServicer_to_server,
        SigningKeyServicer(
            PublishedReportKeys(signing_keys_path, signing_keys),
            identify,
            page_tokens,
            certificates=certificates,
        ),
        SIGNING_KEY_SERVICE,
    )
    server.add_servicer(
        self_inquiry_grpc.add_SelfInquiryServiceServicer_to_server,
        SelfInquiryServicer(
            SubjectCertificates(consents),
            database,
            identify,
            audit=audit,
            page_tokens=page_tokens,
            certificates=CertificateIssuing(
                engine,
                tokenizer,
                certificates,
                deadline_seconds=config.gateway.default_deadline_seconds,
            ),
        ),
        SELF_INQUIRY_SERVICE,
    )
    add_regulator_service(server, RegulatorServicer(audit, identify, page_tokens=page_tokens))
    sync = build_sync_servicer(config.providers, config.sync, database, keys, identify)
    server.add_servicer(
        sync_grpc.add_ProviderSyncServiceServicer_to_server, sync, PROVIDER_SYNC_SERVICE
    )
    followers.register(server)
    workflows.register(
        server,
        engine=engine,
        fact_index=fact_index,
        sources=config.sources,
        providers={p.institution_id: p.source_id for p in config.providers},
        tokenizer=tokenizer,
        consents=consents,
        identify=identify,
        audit=audit,
        page_tokens=page_tokens,
        watch_slots=followers.streams.slots,  # one share per caller across every watch
    )
    check_services(server.service_names)  # a request field without input rules stops here
    not_serving_on_trip(audit_guard, server)
    log.info(
        "gateway configured with %d sources; reports signed with key %s; audit log %s",
        len(config.sources),
        signing_keys.current_key_id,
        audit_log.origin,
    )
    return Gateway(
        server,
        engine,
        database,
        audit_log=audit_log,
        checkpointer=PeriodicCheckpointer(
            database,
            audit_signer,
            interval_seconds=config.audit.checkpoint_interval_seconds,
            guard=audit_guard,
            on_checkpoint=witness_submitter(database, config).submit,
        ),
        audit_backlog=observe_audit_backlog(lambda: audit.in_flight),
        followers=followers,
        workflows=workflows,
        keys=keys,
        signer=signer,
        data_life=DataLifeSweep(database),
        certificates=certificates,
        sync=sync,
    )


async def serve(config: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain gracefully; telemetry is flushed last."""
    telemetry = setup_telemetry(config.telemetry)
    budget: StopBudget | None = None
    try:
        gateway = await build_gateway(config)
        try:
            await gateway.serve()
        finally:
            budget = StopBudget()  # the release and the telemetry flush share it
            await gateway.release(budget)
    finally:
        flush = asyncio.to_thread(telemetry.shutdown)
        await (budget or StopBudget()).step("flushing telemetry", flush)
