"""Batch validation in worker processes: ``prepare_batch`` off the event loop, on every core.

Validating a ``SignedUpdateBatch`` is Python holding the GIL (input rules, index copy, HMACs,
AES-GCM calls), so a thread would free the event loop without adding throughput; processes
add cores. Each worker holds its own ``UpdateValidator`` with the gateway's keys and gets a
batch's serialized bytes; it returns what the applier needs — per update its sequence, receipt
time, and either the rejection or the tokens, digests and ciphertexts — or the batch's refusal.
Nothing else crosses: each worker starts from the keyring the gateway held when the pool was
made (its bytes, not its file: a worker starting later must not depend on a file that may have
gone), and the primary key id the gateway would encrypt under *now* travels with each batch,
so a worker encrypts under exactly the key the event loop would have (it re-reads the keyring
file when its copy names another primary). ``[sync] validation_workers`` sets the pool size
(0: validate on the event loop, as before).

Workers are started with ``spawn`` (a forked child of a process running gRPC's threads is
unsafe) when the gateway starts, and a pool whose worker died is replaced; the stream that saw
it ends ``UNAVAILABLE`` (nothing of the batch was applied or acknowledged; the provider
resumes). A stopped pool terminates its workers, even those still starting: a stopped gateway
leaves no process of its own behind.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.rpc import status_pb2

from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.core.errors import GatewayError
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.protection.live_keyring import KeySource
from credgate.gateway.sync.settings import ProviderConfig, SyncSettings
from credgate.gateway.sync.validate import (
    BatchRefused,
    IdempotencyDigester,
    Prepared,
    UpdateValidator,
)

log = logging.getLogger(__name__)


def default_validation_workers() -> int:
    """One worker per core but one (the event loop's), at most four; 0 on one core."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class ProviderSpec:
    """A ``ProviderConfig`` as it crosses to a worker (the key as its 32 raw bytes)."""

    institution_id: str
    source_id: str
    source_kind: int
    public_key: bytes

    @classmethod
    def of(cls, provider: ProviderConfig) -> ProviderSpec:
        raw = provider.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(provider.institution_id, provider.source_id, provider.source_kind, raw)


@dataclass(frozen=True)
class _Refusal:
    """A ``BatchRefused`` as it crosses back: its serialized ``google.rpc.Status``."""

    status: bytes


class _FileKeys:
    """The worker's ``KeySource``: the keyring file, re-read when the gateway's primary key
    is one this copy does not name as primary, or a ciphertext names a key it lacks."""

    def __init__(self, path: Path, ring: Keyring) -> None:
        self._path = path
        self._ring = ring

    def use(self, primary_key_id: str) -> None:
        if self._ring.primary_key_id != primary_key_id:
            self._ring = Keyring.load(self._path)
        if self._ring.primary_key_id != primary_key_id:
            raise RuntimeError("the keyring file does not name the gateway's primary key")

    def current(self) -> Keyring:
        return self._ring

    def holding(self, key_id: str) -> Keyring:
        if not self._ring.holds(key_id):
            self._ring = Keyring.load(self._path)
        return self._ring


_state: tuple[_FileKeys, UpdateValidator] | None = None
_providers: dict[ProviderSpec, ProviderConfig] = {}


def _exit_with_parent() -> None:
    """End this worker when the gateway process ends, however it ends (a SIGKILLed gateway
    runs no shutdown, and a pool worker waiting for work would wait forever)."""
    parent = multiprocessing.parent_process()
    if parent is None:  # pragma: no cover - a spawned worker always has one
        return
    multiprocessing.connection.wait([parent.sentinel])
    os._exit(0)


def _start_worker(keyring_path: str, keyring_bytes: bytes, settings: SyncSettings) -> None:
    global _state
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    path = Path(keyring_path)
    keys = _FileKeys(path, Keyring.from_bytes(keyring_bytes, path))
    token_key = keys.current().subject_token_key
    validator = UpdateValidator(
        SubjectTokenizer(token_key), FieldCipher(keys), IdempotencyDigester(token_key), settings
    )
    _state = (keys, validator)


def _prepare_in_worker(
    spec: ProviderSpec, primary_key_id: str, batch_bytes: bytes
) -> list[Prepared] | _Refusal:
    assert _state is not None, "worker not initialized"
    keys, validator = _state
    keys.use(primary_key_id)
    provider = _providers.get(spec)
    if provider is None:
        kind = spec.source_kind
        provider = ProviderConfig(
            spec.institution_id,
            spec.source_id,
            kind,  # type: ignore[arg-type]
            Ed25519PublicKey.from_public_bytes(spec.public_key),
        )
        _providers[spec] = provider
    batch = sync_pb2.SignedUpdateBatch.FromString(batch_bytes)
    try:
        return validator.prepare_batch(provider, batch)
    except BatchRefused as refused:
        return _Refusal(refused.status.SerializeToString())


def validation_pool(settings: SyncSettings, keys: KeySource) -> ValidationPool | None:
    """The pool ``[sync] validation_workers`` asks for; None to validate on the event loop
    (0 workers, or keys held only in memory, which a worker could not read)."""
    workers = settings.validation_workers
    if workers is None:
        workers = default_validation_workers()
    keyring = keys.current()
    if workers <= 0 or keyring.path is None:
        return None
    return ValidationPool(workers, keyring, settings)


def _ready() -> None:
    """A worker's first task: nothing (the initializer has built its validator)."""


class ValidationPool:
    """``prepare_batch`` in ``workers`` processes; ``submit`` returns at once (pipelining)."""

    def __init__(self, workers: int, keyring: Keyring, settings: SyncSettings) -> None:
        if keyring.path is None:
            raise ValueError("worker processes need a keyring file to follow its rotations")
        self._workers = workers
        self._keyring = (str(keyring.path), keyring.to_bytes())
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._disabled = False

    def start(self) -> None:
        """Start the workers now (the gateway's start, when providers are registered), so
        the first batch does not wait for them (each imports the gateway: about a second
        of CPU) and their start is not charged to it."""
        try:
            pool = self._executor()
            for _ in range(self._workers):
                pool.submit(_ready)
        except Exception as exc:  # e.g. a process that may not have children
            log.warning(
                "sync validation workers could not start (%s); validating on the event loop",
                type(exc).__name__,
            )
            self._disabled = True
            self.close()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(*self._keyring, self._settings),
            )
        return self._pool

    def submit(
        self, provider: ProviderConfig, primary_key_id: str, batch: sync_pb2.SignedUpdateBatch
    ) -> asyncio.Future[list[Prepared] | _Refusal] | None:
        """Start validating ``batch``; the future holds its updates or its refusal. None when
        no worker can be started at all (then the caller validates on the event loop)."""
        if self._disabled:
            return None
        try:
            pool = self._executor()
            future: Future[list[Prepared] | _Refusal] = pool.submit(
                _prepare_in_worker,
                ProviderSpec.of(provider),
                primary_key_id,
                batch.SerializeToString(),
            )
        except BrokenProcessPool:
            if self._pool is not None:
                self._replace(self._pool)
            raise _unavailable() from None
        except Exception as exc:  # e.g. a process that may not have children
            log.warning(
                "sync validation workers could not start (%s); validating on the event loop",
                type(exc).__name__,
            )
            self._disabled = True
            self.close()
            return None
        return asyncio.wrap_future(future)

    async def result(
        self, future: asyncio.Future[list[Prepared] | _Refusal]
    ) -> list[Prepared]:
        """The batch's updates; raises its ``BatchRefused``, or UNAVAILABLE if a worker died."""
        try:
            outcome = await future
        except BrokenProcessPool:
            if self._pool is not None:
                self._replace(self._pool)
            raise _unavailable() from None
        if isinstance(outcome, _Refusal):
            raise BatchRefused(status_pb2.Status.FromString(outcome.status))
        return outcome

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            self._pool = None
            _stop(broken)

    def close(self) -> None:
        """Stop the workers (the gateway's shutdown)."""
        if self._pool is not None:
            _stop(self._pool)
            self._pool = None


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down without waiting, and terminate its processes: a worker still
    importing the gateway would otherwise finish starting after its gateway stopped.
    (``ProcessPoolExecutor.terminate_workers`` arrives in Python 3.14; until then its
    process table is the way to them.)"""
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()


def _unavailable() -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.UNAVAILABLE,
        "batch validation is unavailable; resume after the last acknowledged sequence",
        "SYNC_VALIDATION_UNAVAILABLE",
    )
