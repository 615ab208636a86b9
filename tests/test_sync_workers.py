"""Batch validation in worker processes gives the event loop's verdicts, refusals and keys.

Real worker processes (spawned), a real keyring file, real signatures; the stream-level
guarantees (all-or-nothing batches, acks after commit, exactly-once after kill -9, tamper
located) run through the pool in tests/test_sync_batches.py, whose gateway uses the default
pool.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest

from credgate.adapters.mocks.population import build_population
from credgate.adapters.mocks.providers import PLATFORM, update_history
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.core.sync.signing import canonical_bytes, sign_batch_bytes
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.app import build_gateway
from credgate.gateway.config import config_from_mapping
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.sync.models import original_context
from credgate.gateway.sync.settings import SyncSettings, parse_providers
from credgate.gateway.sync.validate import (
    Accepted,
    BatchRefused,
    IdempotencyDigester,
    Prepared,
    Rejection,
    UpdateValidator,
)
from credgate.gateway.sync.workers import ValidationPool, validation_pool
from tests.fixtures.pki import DevPki
from tests.sync_support import ensure_provider_certs, sync_document

PROVIDER = parse_providers([PLATFORM.provider_entry()])[0]


def _batch(count: int) -> sync_pb2.SignedUpdateBatch:
    history = update_history(PLATFORM, build_population(20210301, 40), snapshot=True)[:count]
    return sign_batch_bytes(
        PLATFORM.signing_key, PROVIDER.source_id, history[0].sequence,
        [canonical_bytes(u) for u in history],
    )


async def _validated(
    pool: ValidationPool, primary_key_id: str, batch: sync_pb2.SignedUpdateBatch
) -> list[Prepared]:
    pending = pool.submit(PROVIDER, primary_key_id, batch)
    assert pending is not None, "the worker did not start"
    return await pool.result(pending)


def _in_process(keyring: Keyring) -> UpdateValidator:
    key = keyring.subject_token_key
    return UpdateValidator(
        SubjectTokenizer(key), FieldCipher(keyring), IdempotencyDigester(key), SyncSettings()
    )


async def test_a_worker_decides_what_the_event_loop_decides(tmp_path: Path) -> None:
    keyring = Keyring.generate(tmp_path / "keyring")
    batch = _batch(12)
    # One update breaks its rules inside a well-signed batch: rejected on its own.
    broken = sync_pb2.ProviderUpdate.FromString(batch.update_bytes[3])
    broken.facts.display_name = "bad\u202ename"
    update_bytes = list(batch.update_bytes)
    update_bytes[3] = canonical_bytes(broken)
    batch = sign_batch_bytes(PLATFORM.signing_key, PROVIDER.source_id, batch.first_sequence,
                             update_bytes)
    pool = ValidationPool(1, keyring, SyncSettings())
    try:
        remote = await _validated(pool, keyring.primary_key_id, batch)
    finally:
        pool.close()
    local = _in_process(keyring).prepare_batch(PROVIDER, batch)
    cipher = FieldCipher(keyring)
    assert [p.sequence for p in remote] == [p.sequence for p in local]
    for mine, theirs in zip(remote, local, strict=True):
        if isinstance(theirs.result, Rejection):
            assert mine.result == theirs.result
            continue
        assert isinstance(mine.result, Accepted)
        assert isinstance(theirs.result, Accepted)
        assert mine.result.subject_token == theirs.result.subject_token
        assert mine.result.idempotency_digest == theirs.result.idempotency_digest
        assert mine.result.update_digest == theirs.result.update_digest
        assert mine.result.source_as_of == theirs.result.source_as_of
        assert mine.result.facts_key_id == keyring.primary_key_id
        context = original_context(PROVIDER.source_id, mine.sequence)
        assert cipher.decrypt(mine.result.original_ciphertext, context=context) == cipher.decrypt(
            theirs.result.original_ciphertext, context=context
        )
    assert isinstance(remote[3].result, Rejection)
    assert remote[3].result.reason == "UPDATE_INVALID"


async def test_a_tampered_batch_is_refused_and_located_through_the_worker(
    tmp_path: Path,
) -> None:
    keyring = Keyring.generate(tmp_path / "keyring")
    batch = _batch(8)
    batch.update_bytes[5] = batch.update_bytes[5] + b"\x00"
    pool = ValidationPool(1, keyring, SyncSettings())
    try:
        with pytest.raises(BatchRefused) as refused:
            await _validated(pool, keyring.primary_key_id, batch)
        # the pool still serves the next batch after a refusal
        good = await _validated(pool, keyring.primary_key_id, _batch(2))
    finally:
        pool.close()
    assert refused.value.reason == "BATCH_UPDATE_TAMPERED"
    assert "update 5 of the batch" in str(refused.value)
    assert len(good) == 2


async def test_a_worker_encrypts_under_the_primary_key_the_gateway_names(tmp_path: Path) -> None:
    """After a rotation the worker re-reads the keyring file rather than use its old copy."""
    path = tmp_path / "keyring"
    keyring = Keyring.generate(path)
    pool = ValidationPool(1, keyring, SyncSettings())
    try:
        old = keyring.primary_key_id
        first = await _validated(pool, old, _batch(1))
        new = keyring.add_key()
        second = await _validated(pool, new, _batch(1))
        with pytest.raises(Exception, match="primary key"):
            await _validated(pool, "no-such-key", _batch(1))
    finally:
        pool.close()
    assert new != old
    assert isinstance(first[0].result, Accepted)
    assert isinstance(second[0].result, Accepted)
    assert first[0].result.facts_key_id == old
    assert second[0].result.facts_key_id == new


def test_the_pool_size_is_configured(tmp_path: Path) -> None:
    keyring = Keyring.generate(tmp_path / "keyring")
    assert validation_pool(SyncSettings(validation_workers=0), keyring) is None
    assert validation_pool(SyncSettings(validation_workers=2), keyring) is not None
    with pytest.raises(ValueError, match="validation_workers"):
        SyncSettings(validation_workers=-1)


async def test_a_worker_needs_no_keyring_file_to_start(tmp_path: Path) -> None:
    """A worker starts from the keys the gateway held, not from a file that may be gone
    (the demo's workspace was removed while its workers were still starting)."""
    keyring = Keyring.generate(tmp_path / "keyring")
    pool = ValidationPool(1, keyring, SyncSettings())
    (tmp_path / "keyring").unlink()
    try:
        prepared = await _validated(pool, keyring.primary_key_id, _batch(2))
    finally:
        pool.close()
    assert all(isinstance(p.result, Accepted) for p in prepared)


def test_a_stopped_pool_leaves_no_worker_behind_even_one_still_starting(
    tmp_path: Path,
) -> None:
    keyring = Keyring.generate(tmp_path / "keyring")
    pool = ValidationPool(2, keyring, SyncSettings())
    pool.start()
    assert pool._pool is not None
    workers = list(pool._pool._processes)
    assert len(workers) == 2
    pool.close()  # at once: the workers are still importing the gateway (a second or more)
    # Terminated, they are gone at their next time slice; left alone, they would finish
    # starting first (and, before the keys crossed as bytes, read a file perhaps gone).
    assert _all_gone(workers, within=1.0)


async def test_a_stopped_gateway_leaves_no_validation_worker(
    dev_pki: DevPki, tmp_path: Path
) -> None:
    """The gateway's stop ends its workers: a gateway that is itself a multiprocessing child
    (``credgate serve --workers``, the bench) otherwise waited at exit for an idle worker
    that waits for work forever (the bench's gateways hung 15 s, until terminated)."""
    ensure_provider_certs(dev_pki)
    document = sync_document(
        dev_pki, tmp_path, f"sqlite:///{tmp_path / 'credgate.db'}",
        sync={"validation_workers": 1},
    )  # fmt: skip
    gateway = await build_gateway(config_from_mapping(document, base_dir=tmp_path, environ={}))
    await gateway.start()
    workers = [child.pid for child in multiprocessing.active_children() if child.pid]
    assert workers, "the gateway started no validation worker"
    await gateway.stop(0)
    assert _all_gone(workers, within=1.0)


_POOL_HOLDER = """
import sys
import time
from pathlib import Path
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.sync.settings import SyncSettings
from credgate.gateway.sync.workers import ValidationPool
pool = ValidationPool(1, Keyring.load(Path(sys.argv[1])), SyncSettings())
pool.start()
while not pool._pool or not pool._pool._processes:
    time.sleep(0.05)
print(*pool._pool._processes, flush=True)
time.sleep(600)
"""


def test_workers_exit_when_the_gateway_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed gateway runs no shutdown: its workers must notice and end themselves."""
    Keyring.generate(tmp_path / "keyring")
    holder = subprocess.Popen(
        [sys.executable, "-c", _POOL_HOLDER, str(tmp_path / "keyring")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        workers = [int(pid) for pid in holder.stdout.readline().split()]
        assert workers
        assert all(_alive(pid) for pid in workers)
    finally:
        holder.kill()
        holder.wait()
    assert _all_gone(workers, within=30)


def _all_gone(pids: list[int], *, within: float) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting for its reaper)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
