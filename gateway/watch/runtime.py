"""Everything on a replica that follows the change feed, built and run as one piece.

The composition module (``gateway.app``) builds it once, hands ``streams`` to the
RepairStatusService (WatchRepairStatus) and ``register``s the ReconciliationService, starts it
with the server and stops it before the database is released. Order on stop: the feed pruner
and the reconciler first (either may be mid-transaction), then the feed reader, which closes
any watch still open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as reconciliation_grpc
from credgate.consent.register import ConsentRegister
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.config import GatewayConfig
from credgate.gateway.engine.consistency import PushSource
from credgate.gateway.engine.subject_view import SubjectView, ViewFollower
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.protection.page_tokens import PageTokens
from credgate.gateway.reconciliation.evaluate import KEY_LABEL, derive_key, source_catalog
from credgate.gateway.reconciliation.reconciler import Reconciler
from credgate.gateway.reconciliation.service import SERVICE_NAME, ReconciliationServicer
from credgate.gateway.reconciliation.store import ContradictionStore
from credgate.gateway.server import GatewayServer, bounded_step
from credgate.gateway.subject_certificate import SubjectCertificates
from credgate.gateway.watch.consent_events import ConsentEventHub, ConsentEventStreams
from credgate.gateway.watch.feed import ChangeFeed
from credgate.gateway.watch.prune import FeedPruner
from credgate.gateway.watch.service import WatchStreams


@dataclass
class ChangeFollowers:
    """The feed reader, the watch streams on it, the reconciler and its service, the pruner."""

    feed: ChangeFeed
    streams: WatchStreams
    reconciler: Reconciler
    reconciliation: ReconciliationServicer
    pruner: FeedPruner
    consent_hub: ConsentEventHub
    consent_events: ConsentEventStreams
    """WatchConsentEvents streams (ConsentService), over the consent event log."""
    view_follower: ViewFollower | None = None
    """Drops from the INDEX answers' view what other replicas changed (``engine.subject_view``)."""

    def register(self, server: GatewayServer) -> None:
        """Add the ReconciliationService to ``server`` (before it starts)."""
        server.add_servicer(
            reconciliation_grpc.add_ReconciliationServiceServicer_to_server,
            self.reconciliation,
            SERVICE_NAME,
        )

    def start(self) -> None:
        """Start reading the feed (and listening, on PostgreSQL), reconciling and pruning."""
        self.feed.start()
        self.reconciler.start()
        self.pruner.start()
        self.consent_hub.start()
        if self.view_follower is not None:
            self.view_follower.start()

    async def stop(self) -> None:
        """Stop pruning, reconciling and reading; open watches end. Each step is bounded
        (``gateway.server.bounded_step``): a stop never waits on a stalled database."""
        if self.view_follower is not None:
            await bounded_step("stopping the view follower", self.view_follower.stop())
        await bounded_step("stopping the consent event hub", self.consent_hub.stop())
        await bounded_step("stopping the feed pruner", self.pruner.stop())
        await bounded_step("stopping the reconciler", self.reconciler.stop())
        await bounded_step("stopping the change-feed reader", self.feed.stop())


def push_sources(config: GatewayConfig) -> list[PushSource]:
    """The registered providers' sources, for the engine (it keeps those without an adapter)."""
    return [PushSource(p.source_id, p.source_kind, p.display_name) for p in config.providers]


def contradiction_store(
    config: GatewayConfig, database: Database, keyring: Keyring, fact_index: FactIndex
) -> ContradictionStore:
    """The contradiction store for this configuration (also used by ``credgate reconcile``)."""
    return ContradictionStore(
        database,
        fact_index,
        source_catalog(config),
        derive_key(keyring.subject_token_key, KEY_LABEL),
    )


def build_followers(
    config: GatewayConfig,
    database: Database,
    keyring: Keyring,
    fact_index: FactIndex,
    consents: ConsentRegister,
    identify: Callable[[grpc.aio.ServicerContext], Institution],
    page_tokens: PageTokens,
    *,
    view: SubjectView | None = None,
) -> ChangeFollowers:
    """Build (not start) the replica's change followers (with ``view``'s follower)."""
    feed = ChangeFeed(database, config.watch, before_offer=None if view is None else view.drop)
    follower = (
        None
        if view is None
        else ViewFollower(view, database, feed.waiter(), poll_seconds=feed.poll_seconds)
    )
    store = contradiction_store(config, database, keyring, fact_index)
    streams = WatchStreams(
        feed,
        consents,
        SubjectTokenizer(keyring.subject_token_key),
        config.watch,
        deadline_seconds=config.gateway.default_deadline_seconds,
        identify=identify,
    )
    reconciler = Reconciler(store, feed.waiter(), poll_seconds=feed.poll_seconds)
    reconciliation = ReconciliationServicer(
        store,
        identify,
        {p.institution_id: p.source_id for p in config.providers},
        page_tokens,
    )
    pruner = FeedPruner(
        database,
        retention_seconds=config.watch.feed_retention_seconds,
        interval_seconds=config.watch.prune_interval_seconds,
    )
    consent_hub = ConsentEventHub(database, config.watch)
    consent_events = ConsentEventStreams(
        consent_hub,
        database,
        SubjectCertificates(consents),
        config.watch,
        streams.slots,
        page_tokens=page_tokens,
        identify=identify,
    )
    return ChangeFollowers(
        feed, streams, reconciler, reconciliation, pruner, consent_hub, consent_events, follower
    )
