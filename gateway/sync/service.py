"""ProviderSyncService: who may stream updates, and the wiring of one stream per call.

Authorization happens once per call, before anything is read: the certificate must carry the
DATA_PROVIDER role *and* its institution id must be registered in ``[[providers]]``, which
binds it to one source and one signing key. Everything after that (per-update validation,
ordering, acknowledgement) is ``SyncStream``'s job; a refused update never ends the call.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Callable, Iterable

import grpc

from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2_grpc as sync_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.live_keyring import KeySource
from credgate.gateway.sync.settings import ProviderConfig, SyncSettings
from credgate.gateway.sync.store import SyncStore
from credgate.gateway.sync.stream import SyncProbe, SyncStream
from credgate.gateway.sync.validate import IdempotencyDigester, UpdateValidator
from credgate.gateway.sync.workers import ValidationPool, validation_pool

SERVICE_NAME = "credit_repair.v1.ProviderSyncService"


class ProviderSyncServicer(sync_grpc.ProviderSyncServiceServicer):
    """Serves ``SyncUpdates`` for the configured providers."""

    def __init__(
        self,
        providers: Iterable[ProviderConfig],
        validator: UpdateValidator,
        store: SyncStore,
        settings: SyncSettings,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        *,
        probe_factory: Callable[[], SyncProbe] = SyncProbe,
        pool: ValidationPool | None = None,
    ) -> None:
        self._pool = pool
        if pool is not None:
            # The workers stop with the servicer (a gateway built and dropped, as in tests)
            # or at exit; the executor would also stop them once collected.
            weakref.finalize(self, pool.close)
        self._providers = {p.institution_id: p for p in providers}
        self._validator = validator
        self._store = store
        self._settings = settings
        self._identify = identify
        self._probe_factory = probe_factory

    def close(self) -> None:
        """Stop the validation workers (the gateway's release, once no stream is served)."""
        if self._pool is not None:
            self._pool.close()

    def _provider_for(self, context: grpc.aio.ServicerContext) -> ProviderConfig:
        institution = self._identify(context)
        if institution.role != vocabulary_pb2.INSTITUTION_ROLE_DATA_PROVIDER:
            raise GatewayError.of(
                grpc.StatusCode.PERMISSION_DENIED,
                "only data providers may stream updates",
                "ROLE_NOT_PERMITTED",
            )
        provider = self._providers.get(institution.institution_id)
        if provider is None:
            raise GatewayError.of(
                grpc.StatusCode.PERMISSION_DENIED,
                "this data provider is not registered with the gateway",
                "PROVIDER_NOT_REGISTERED",
            )
        return provider

    async def SyncUpdates(
        self,
        request_iterator: AsyncIterator[sync_pb2.SyncUpdatesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[sync_pb2.SyncUpdatesResponse]:
        """Authorize the caller, then run its stream until it half-closes.

        Headers go out as soon as the caller is authorized, so a client can wait for them
        before writing: a refused caller then gets its real status instead of racing writes
        against the end of the call (grpc.aio reports a write that loses that race as a bare
        INTERNAL, grpc/grpc#36066).
        """
        provider = self._provider_for(context)
        await context.send_initial_metadata(())
        stream = SyncStream(
            provider,
            self._validator,
            self._store,
            self._settings,
            self._probe_factory(),
            self._pool,
        )
        async for response in stream.run(request_iterator):
            yield response


def build_sync_servicer(
    providers: Iterable[ProviderConfig],
    settings: SyncSettings,
    database: Database,
    keys: KeySource,
    identify: Callable[[grpc.aio.ServicerContext], Institution],
) -> ProviderSyncServicer:
    """The servicer with its validator and store, as the composition module wires it.

    ``keys`` is the running gateway's ``LiveKeyring``: updates are sealed under the primary
    data key the keyring file names now (its subject-token key never changes)."""
    cipher = FieldCipher(keys)
    token_key = keys.current().subject_token_key
    validator = UpdateValidator(
        SubjectTokenizer(token_key),
        cipher,
        IdempotencyDigester(token_key),
        settings,
    )
    providers = tuple(providers)
    pool = validation_pool(settings, keys) if providers else None
    if pool is not None:
        pool.start()
    return ProviderSyncServicer(
        providers, validator, SyncStore(database, cipher), settings, identify, pool=pool
    )
