"""Composition of the repair workflows, in two steps because the query engine sits between.

The engine needs the objection store (to flag reports DISPUTED) and the application workflow
needs the engine (to judge eligibility from a merged report), so ``Workflows`` is made before
the engine and its services after it::

    workflows = Workflows(database, FieldCipher(keyring),
                          id_key=workflow_id_key(keyring.subject_token_key),
                          calendar=WorkdayCalendar(published=config.workdays.calendars))
    await workflows.recount()       # running deadlines onto the calendar loaded now
    engine = QueryEngine(adapters, fact_index, ..., disputes=workflows.disputes)
    workflows.register(server, engine=engine, fact_index=fact_index, sources=config.sources,
                       providers={p.institution_id: p.source_id for p in config.providers},
                       tokenizer=tokenizer, consents=consents, identify=identify,
                       audit=audit_trail, page_tokens=page_tokens)
    workflows.start()               # with the server: drains the outbox now and periodically
    ...
    await workflows.aclose()        # at shutdown, with the engine

The workflows speak to the sources through adapters of their own (built from the same source
configuration): corrections and rulings are rare, slow calls that must not share the query
path's circuit breakers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping, Sequence

import grpc

from credgate.adapters.base import SourceAdapter, SourceConfig
from credgate.adapters.catalog import build_adapters
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as app_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent.register import ConsentRegister
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.audit_trail import AuditTrail
from credgate.gateway.disclosure import DisclosureGate
from credgate.gateway.engine.query import QueryEngine
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.page_tokens import PageTokens
from credgate.gateway.server import GatewayServer
from credgate.gateway.watch.slots import WatchSlots
from credgate.gateway.workdays import WorkdayCalendar
from credgate.gateway.workflows.announcement_delivery import AnnouncementPublisher
from credgate.gateway.workflows.application_service import RepairApplicationServicer
from credgate.gateway.workflows.applications import ApplicationWorkflow
from credgate.gateway.workflows.callers import Callers
from credgate.gateway.workflows.common import Changes, Sealer
from credgate.gateway.workflows.objection_service import ObjectionServicer
from credgate.gateway.workflows.objection_store import ObjectionStore
from credgate.gateway.workflows.objections import ObjectionWorkflow
from credgate.gateway.workflows.outbox import DEFAULT_POLL_SECONDS, LEASE_SECONDS, Outbox
from credgate.gateway.workflows.recount import recount_deadlines

OBJECTION_SERVICE = "credit_repair.v1.ObjectionService"
REPAIR_APPLICATION_SERVICE = "credit_repair.v1.RepairApplicationService"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Workflows:
    """The objection and repair-application services, and the DISPUTED lookup."""

    def __init__(
        self,
        database: Database,
        cipher: FieldCipher,
        *,
        id_key: bytes,
        clock: Callable[[], dt.datetime] = _utcnow,
        calendar: WorkdayCalendar | None = None,
        outbox_poll_seconds: float = DEFAULT_POLL_SECONDS,
        outbox_claim_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.database = database
        self.outbox = Outbox(
            database, poll_seconds=outbox_poll_seconds, lease_seconds=outbox_claim_seconds
        )
        """Filings committed and not yet delivered to their sources (``workflows.outbox``);
        its clock is the wall clock, not ``clock``: backoff is real time."""
        self.id_key = id_key
        """Keys the ids of objections and applications (``common.request_bound_id``)."""
        self.sealer = Sealer(cipher)
        self.store = ObjectionStore(database, self.sealer)
        self.changes = Changes()
        self.calendar = calendar or WorkdayCalendar()
        self.clock = clock
        self.adapters: dict[str, SourceAdapter] = {}
        self.objections: ObjectionServicer | None = None
        self.applications: RepairApplicationServicer | None = None

    async def disputes(self, subject_token: str) -> frozenset[vocab.DataCategory.ValueType]:
        """For ``QueryEngine(disputes=...)``: categories of the subject's disputed facts."""
        return await self.store.disputed_categories(subject_token, self.clock())

    async def open_disputes(
        self, subject_token: str
    ) -> Callable[[], frozenset[vocab.DataCategory.ValueType]]:
        """For ``SubjectView``: the subject's objections read once, and the function that
        judges from them, at each later call, what ``disputes`` would say then."""
        held = await self.store.open_objections(subject_token)
        return lambda: held.categories(self.clock())

    def build(
        self,
        *,
        engine: QueryEngine,
        fact_index: FactIndex,
        sources: Sequence[SourceConfig],
        providers: Mapping[str, str],
        tokenizer: SubjectTokenizer,
        consents: ConsentRegister,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        audit: AuditTrail,
        page_tokens: PageTokens,
        source_timeout: float = 3.0,
        watch_poll_seconds: float = 1.0,
        watch_slots: WatchSlots | None = None,
    ) -> tuple[ObjectionServicer, RepairApplicationServicer]:
        """Make both servicers (``providers``: data provider institution id → source id;
        ``watch_slots``: the replica's, so that a caller's watch share covers every stream)."""
        self.adapters = {a.config.source_id: a for a in build_adapters(sources)}
        callers = Callers(tokenizer, consents, audit, clock=self.clock)
        gate = DisclosureGate(consents, audit, clock=self.clock)
        objections = ObjectionWorkflow(
            self.store,
            fact_index,
            self.adapters,
            self.calendar,
            self.changes,
            clock=self.clock,
            id_key=self.id_key,
            outbox=self.outbox,
            providers=providers,
            source_timeout=source_timeout,
        )
        applications = ApplicationWorkflow(
            self.database,
            self.sealer,
            engine,
            self.adapters,
            self.calendar,
            self.changes,
            clock=self.clock,
            id_key=self.id_key,
            outbox=self.outbox,
            source_timeout=source_timeout,
        )
        AnnouncementPublisher(  # registers itself on the outbox
            applications,
            self.adapters,
            self.outbox,
            self.changes,
            clock=self.clock,
            source_timeout=source_timeout,
        )
        self.objections = ObjectionServicer(
            objections,
            callers,
            identify,
            self.changes,
            clock=self.clock,
            page_tokens=page_tokens,
            gate=gate,
            watch_poll_seconds=watch_poll_seconds,
            watch_slots=watch_slots,
        )
        self.applications = RepairApplicationServicer(
            applications,
            callers,
            identify,
            self.changes,
            clock=self.clock,
            page_tokens=page_tokens,
            gate=gate,
            watch_poll_seconds=watch_poll_seconds,
            watch_slots=watch_slots,
        )
        return self.objections, self.applications

    def register(self, server: GatewayServer, **build_args: object) -> None:
        """``build`` (same keyword arguments) and add both services to ``server``."""
        objections, applications = self.build(**build_args)  # type: ignore[arg-type]
        server.add_servicer(
            obj_grpc.add_ObjectionServiceServicer_to_server, objections, OBJECTION_SERVICE
        )
        server.add_servicer(
            app_grpc.add_RepairApplicationServiceServicer_to_server,
            applications,
            REPAIR_APPLICATION_SERVICE,
        )

    async def recount(self) -> list[str]:
        """Recount the running deadlines on this calendar (``workflows.recount``): at start,
        so a year's notice loaded since they were counted moves their days. The ids moved."""
        return await recount_deadlines(
            self.database, self.calendar, self.clock, self.changes, self.outbox
        )

    def start(self) -> None:
        """Start draining the outbox: once now (what a crashed replica left), then every
        ``outbox_poll_seconds``. Every replica does; claims keep them from doubling up."""
        self.outbox.start()

    async def aclose(self) -> None:
        """Stop draining and close the workflows' adapters (at shutdown)."""
        await self.outbox.stop()
        await asyncio.gather(*(a.aclose() for a in self.adapters.values()), return_exceptions=True)
