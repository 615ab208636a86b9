"""A restored or rewritten log is noticed (issue #18 item 6): the gateway remembers the largest
tree it signed outside the database (``audit.signed_size``) and signs nothing — no checkpoint,
no appended tree head — over a history that does not extend it, until the operator runs
``credgate audit acknowledge-rollback``, which is itself recorded in the log.

Restores are real: a SQLite file copied back, and (both backends) the newest audit rows deleted
and the head row put back as it was, which is what restoring an older dump does to the audit
tables. The last test runs the real ``credgate serve`` against a restored workspace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import delete, func, select, text, update

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as pb
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as pb_grpc
from credgate.audit import AuditLog, AuditUnavailable
from credgate.audit.checkpoints import PeriodicCheckpointer, make_checkpoint
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.note import NoteSigner
from credgate.audit.signed_size import (
    AuditRollbackError,
    AuditStateError,
    SignedSizeGuard,
    not_serving_on_trip,
    read_state,
    remember,
    state_path,
)
from credgate.audit.storage import read_record
from credgate.audit.store_models import HEAD_ROW_ID, AuditCheckpointRow, AuditEntryRow, AuditHeadRow
from credgate.audit.trail import AuditTrail
from credgate.audit.tree import CompactRange
from credgate.audit.verify import verify_log
from credgate.core.storage.database import Database
from credgate.gateway.caller_certificate import CallerResolver
from credgate.gateway.cli import main
from credgate.gateway.pki import CertKeyPaths
from credgate.gateway.protection.page_tokens import PageTokens
from credgate.gateway.regulator_service import RegulatorServicer, add_regulator_service
from credgate.gateway.server import GatewayServer
from credgate.gateway.storage.migrate import upgrade_to_head
from tests.fixtures.pki import DevPki, mtls_channel
from tests.test_audit_log import ORIGIN, make_entry
from tests.test_audit_service import audit_certs, expect_error

__all__ = ["audit_certs"]  # a fixture, shared with test_audit_service

EXIT_USAGE = 2


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "audit-log.key"


@pytest.fixture
def signer(key_path: Path) -> NoteSigner:
    return load_or_create_signer(key_path, ORIGIN)


async def _append(audit_log: AuditLog, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await audit_log.append(make_entry(i))


async def _grow(database: Database, signer: NoteSigner, key_path: Path, count: int) -> int:
    """Start as the gateway does, append ``count`` entries, sign a checkpoint: its size."""
    guard = await SignedSizeGuard.open(database, state_path(key_path), signer.name)
    audit_log = AuditLog(database, signer, guard=guard)
    try:
        await _append(audit_log, count, start=await _size(database))
        return (await audit_log.checkpoint()).checkpoint.tree_size
    finally:
        await audit_log.aclose()


async def _size(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0)


async def _checkpoints(database: Database) -> int:
    async with database.session() as session:
        count = await session.scalar(select(func.count()).select_from(AuditCheckpointRow))
        return int(count or 0)


async def _head_row(database: Database) -> dict[str, object]:
    async with database.session() as session:
        row = await session.get_one(AuditHeadRow, HEAD_ROW_ID)
        return {
            "tree_size": row.tree_size,
            "compact_range": row.compact_range,
            "root_hash": row.root_hash,
        }


async def _restore_audit_tables(database: Database, head: dict[str, object]) -> None:
    """What restoring an older dump does to the audit tables: rows after it gone, head back."""
    size = int(head["tree_size"])  # type: ignore[call-overload]
    async with database.write() as session:
        await session.execute(delete(AuditEntryRow).where(AuditEntryRow.entry_index >= size))
        await session.execute(delete(AuditCheckpointRow).where(AuditCheckpointRow.tree_size > size))
        # Interior nodes (audit.tiles) covering entries past the backup were not in it either.
        await session.execute(
            text("DELETE FROM audit_tree_nodes WHERE ((node_index + 1) << level) > :size"),
            {"size": size},
        )
        await session.execute(
            update(AuditHeadRow).where(AuditHeadRow.head_id == HEAD_ROW_ID).values(**head)
        )


async def _cli(*argv: str) -> int:
    """``credgate`` in this process (it runs its own event loop, so on a thread)."""
    return await asyncio.to_thread(main, list(argv))


# -- restores are refused ----------------------------------------------------------------------


async def test_a_restored_sqlite_file_is_refused_until_acknowledged(
    tmp_path: Path, key_path: Path, signer: NoteSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    db_file, backup = tmp_path / "credgate.db", tmp_path / "backup.db"
    url = f"sqlite:///{db_file}"
    upgrade_to_head(url)
    database = Database.from_url(url)
    assert await _grow(database, signer, key_path, 5) == 5
    await database.dispose()
    with sqlite3.connect(db_file) as source, sqlite3.connect(backup) as copy:
        source.backup(copy)  # the nightly backup
    database = Database.from_url(url)
    assert await _grow(database, signer, key_path, 3) == 8
    await database.dispose()
    for leftover in (tmp_path / "credgate.db-wal", tmp_path / "credgate.db-shm"):
        leftover.unlink(missing_ok=True)
    os.replace(backup, db_file)  # the restore

    database = Database.from_url(url)
    try:
        with pytest.raises(AuditRollbackError) as refused:
            await SignedSizeGuard.open(database, state_path(key_path), signer.name)
        assert (refused.value.remembered_size, refused.value.found_size) == (8, 5)
        assert "acknowledge-rollback" in str(refused.value)
        # Every signing command refuses too, with exit 2, and signs nothing.
        before = await _checkpoints(database)
        common = ["--database-url", url, "--key", str(key_path)]
        assert await _cli("audit", "checkpoint", *common) == EXIT_USAGE
        assert "rolled back" in capsys.readouterr().err
        assert await _cli("audit", "export", *common, "--output", str(tmp_path / "x.jsonl")) == 2
        assert await _checkpoints(database) == before

        # A dry run says what was lost and changes nothing.
        recorded = state_path(key_path).read_bytes()
        assert await _cli("audit", "acknowledge-rollback", *common, "--dry-run") == 0
        out = capsys.readouterr().out
        assert "lost for good: 3 signed entries (indices 5..7)" in out
        assert state_path(key_path).read_bytes() == recorded
        assert await _size(database) == 5

        assert await _cli("audit", "acknowledge-rollback", *common, "--json") == 0
        result = json.loads(capsys.readouterr().out)
        assert result["remembered_size"] == 8
        assert result["found_size"] == 5
        assert result["entries_lost"] == 3
        assert result["entry_index"] == 5
        assert result["checkpoint_size"] == 6
        record = await read_record(database, 5)
        assert record is not None
        assert record.entry.action == audit_pb2.AUDIT_ACTION_ACKNOWLEDGE_AUDIT_ROLLBACK
        assert record.entry.outcome == audit_pb2.AUDIT_OUTCOME_ALLOWED
        assert record.entry.request_id == "rollback-8-to-5"
        assert record.entry.institution_id == "credgate-operator"
        state = read_state(state_path(key_path), signer.name)
        assert state is not None
        assert state.tree.size == 6
        [ack] = state.acknowledgements
        assert (ack["remembered_size"], ack["found_size"], ack["entries_lost"]) == (8, 5, 3)

        # Acknowledged: the gateway starts and signs again, and the log itself is intact.
        assert await _grow(database, signer, key_path, 2) == 8
        assert (await verify_log(database, [signer.verifier])).report.ok
        assert await _cli("audit", "acknowledge-rollback", *common) == 0
        assert "nothing to acknowledge" in capsys.readouterr().out
    finally:
        await database.dispose()


@pytest.fixture
async def grown(
    database: Database, signer: NoteSigner, key_path: Path
) -> dict[str, object]:
    """A log of 4 entries (the "backup" head, returned), then grown to 9 and checkpointed."""
    await _grow(database, signer, key_path, 4)
    backup = await _head_row(database)
    assert await _grow(database, signer, key_path, 5) == 9
    return backup


async def _diverge_smaller(
    database: Database, signer: NoteSigner, backup: dict[str, object]
) -> int:
    await _restore_audit_tables(database, backup)
    return 4


async def _diverge_same_size(
    database: Database, signer: NoteSigner, backup: dict[str, object]
) -> int:
    """A different history of the same size: the restored copy grew other entries."""
    await _restore_audit_tables(database, backup)
    audit_log = AuditLog(database, signer)  # a gateway without the check, as before this change
    await _append(audit_log, 5, start=100)
    await audit_log.aclose()
    return 9


async def _diverge_larger(
    database: Database, signer: NoteSigner, backup: dict[str, object]
) -> int:
    """Larger than what was signed, but not an extension of it."""
    await _restore_audit_tables(database, backup)
    audit_log = AuditLog(database, signer)
    await _append(audit_log, 8, start=200)
    await audit_log.aclose()
    return 12


@pytest.mark.parametrize(
    "diverge",
    [_diverge_smaller, _diverge_same_size, _diverge_larger],
    ids=["smaller", "same-size-other-root", "larger-not-extension"],
)
async def test_a_restored_or_rewritten_history_is_refused_at_start(
    database: Database,
    signer: NoteSigner,
    key_path: Path,
    grown: dict[str, object],
    diverge: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    found = await diverge(database, signer, grown)  # type: ignore[operator]
    before = await _checkpoints(database)
    with (
        caplog.at_level(logging.CRITICAL, logger="credgate.audit.signed_size"),
        pytest.raises(AuditRollbackError) as refused,
    ):
        await SignedSizeGuard.open(database, state_path(key_path), signer.name)
    assert (refused.value.remembered_size, refused.value.found_size) == (9, found)
    assert any(
        r.levelno == logging.CRITICAL and "remembered tree size 9, found" in r.getMessage()
        for r in caplog.records
    )
    # A checkpoint asked for directly (regulator, CLI) is refused as well.
    guard = SignedSizeGuard(state_path(key_path), signer.name)
    with pytest.raises(AuditRollbackError):
        await make_checkpoint(database, signer, guard=guard)
    assert await _checkpoints(database) == before
    state = read_state(state_path(key_path), signer.name)
    assert state is not None
    assert state.tree.size == 9  # the record is never lowered


async def test_a_rollback_under_a_running_gateway_stops_appends_and_checkpoints(
    database: Database, signer: NoteSigner, key_path: Path, grown: dict[str, object]
) -> None:
    guard = await SignedSizeGuard.open(database, state_path(key_path), signer.name)
    trips: list[AuditRollbackError] = []
    guard.add_trip_listener(trips.append)
    audit_log = AuditLog(database, signer, guard=guard)
    try:
        await _restore_audit_tables(database, grown)
        with pytest.raises(AuditUnavailable):
            await audit_log.append(make_entry(50))  # would sign tree head 5 a second time
        assert await _size(database) == 4
        assert guard.tripped is not None
        assert len(trips) == 1
        assert (trips[0].remembered_size, trips[0].found_size) == (9, 4)
        with pytest.raises(AuditRollbackError):
            await audit_log.checkpoint()
        with pytest.raises(AuditUnavailable):  # stays refused: only the operator clears it
            await audit_log.append(make_entry(51))
    finally:
        await audit_log.aclose()


async def test_the_periodic_checkpointer_refuses_a_diverged_log(
    database: Database, signer: NoteSigner, key_path: Path, grown: dict[str, object]
) -> None:
    guard = await SignedSizeGuard.open(database, state_path(key_path), signer.name)
    await _diverge_larger(database, signer, grown)  # appends cannot see this one; checkpoints do
    before = await _checkpoints(database)
    checkpointer = PeriodicCheckpointer(database, signer, interval_seconds=0.01, guard=guard)
    checkpointer.start()
    try:
        for _ in range(500):
            if guard.tripped is not None:
                break
            await _sleep()
    finally:
        await checkpointer.stop()
    assert guard.tripped is not None
    assert await _checkpoints(database) == before


async def _sleep() -> None:
    await asyncio.sleep(0.01)


# -- normal operation --------------------------------------------------------------------------


async def test_restarts_and_growth_keep_signing_and_the_record_follows(
    database: Database, signer: NoteSigner, key_path: Path
) -> None:
    sizes = [await _grow(database, signer, key_path, n) for n in (0, 3, 1, 6, 0)]
    assert sizes == [0, 3, 4, 10, 10]
    state = read_state(state_path(key_path), signer.name)
    assert state is not None
    assert state.tree.size == 10
    assert not state.acknowledgements
    mode = state_path(key_path).stat().st_mode & 0o777
    assert mode == 0o600


async def test_a_process_that_saw_less_learns_the_larger_size(
    database: Database, signer: NoteSigner, key_path: Path
) -> None:
    """Two workers (or replicas sharing a data directory): the record keeps the maximum."""
    behind = await SignedSizeGuard.open(database, state_path(key_path), signer.name)
    assert await _grow(database, signer, key_path, 6) == 6  # another worker signs 6
    assert behind.known_size == 0
    audit_log = AuditLog(database, signer, guard=behind)
    try:
        await _append(audit_log, 2, start=6)
        assert (await audit_log.checkpoint()).checkpoint.tree_size == 8
    finally:
        await audit_log.aclose()
    assert behind.known_size == 8
    # A late writer with a smaller tree cannot lower the record.
    assert remember(state_path(key_path), signer.name, CompactRange()).size == 8
    state = read_state(state_path(key_path), signer.name)
    assert state is not None
    assert state.tree.size == 8


# -- the record file ---------------------------------------------------------------------------


async def test_a_missing_record_is_a_first_start_with_a_warning(
    database: Database, signer: NoteSigner, key_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _grow(database, signer, key_path, 3)
    state_path(key_path).unlink()
    with caplog.at_level(logging.WARNING, logger="credgate.audit.signed_size"):
        await SignedSizeGuard.open(database, state_path(key_path), signer.name)
    assert any("no record of the audit tree" in r.getMessage() for r in caplog.records)
    state = read_state(state_path(key_path), signer.name)
    assert state is not None
    assert state.tree.size == 3


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: p.write_text('{"format": 1, "tree_size": 3, "ro'), "malformed"),
        (lambda p: p.write_bytes(b""), "malformed"),
        (lambda p: p.chmod(0o644), "accessible to group or others"),
        (lambda p: p.write_text(p.read_text().replace(ORIGIN, "other.example/log")), "another"),
        (lambda p: p.write_text(p.read_text().replace('"tree_size": 3', '"tree_size": 2')), "mal"),
    ],
    ids=["torn", "empty", "world-readable", "other-origin", "size-not-matching-hashes"],
)
async def test_an_untrustworthy_record_refuses_start(
    database: Database, signer: NoteSigner, key_path: Path, damage: object, expected: str
) -> None:
    await _grow(database, signer, key_path, 3)
    damage(state_path(key_path))  # type: ignore[operator]
    with pytest.raises(AuditStateError, match=expected) as refused:
        await SignedSizeGuard.open(database, state_path(key_path), signer.name)
    assert isinstance(refused.value, ValueError)  # exits 2 (configuration_errors)
    assert "acknowledge-rollback" in str(refused.value) or "chmod" in str(refused.value)


async def test_acknowledging_replaces_an_unreadable_record(
    tmp_path: Path, key_path: Path, signer: NoteSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    upgrade_to_head(url)
    database = Database.from_url(url)
    try:
        await _grow(database, signer, key_path, 2)
        state_path(key_path).write_text("garbage")
        common = ["--database-url", url, "--key", str(key_path)]
        assert await _cli("audit", "acknowledge-rollback", *common) == 0
        out = capsys.readouterr().out
        assert "malformed" in out
        assert "remembered tree size: unknown" in out
        assert await _grow(database, signer, key_path, 1) == 4  # 2 + the acknowledgement + 1
    finally:
        await database.dispose()


# -- the real process --------------------------------------------------------------------------


def _credgate(*argv: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("credgate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "credgate.gateway.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    return subprocess.run(
        [*command, *argv], capture_output=True, text=True, timeout=120, check=False, env=env
    )


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_credgate_serve_refuses_a_restored_workspace_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: int
) -> None:
    workspace = tmp_path / "ws"
    assert main(["init", "--dir", str(workspace)]) == 0
    config = str(workspace / "gateway.toml")
    assert main(["db", "upgrade", "--config", config]) == 0
    capsys.readouterr()
    db_file = workspace / "credgate.db"
    key_path = workspace / "audit-log.key"
    signer = load_or_create_signer(key_path)
    backup = tmp_path / "backup.db"
    with sqlite3.connect(db_file) as source, sqlite3.connect(backup) as copy:
        source.backup(copy)
    database = Database.from_url(f"sqlite:///{db_file}")
    try:
        assert await _grow(database, signer, key_path, 3) == 3
    finally:
        await database.dispose()
    for leftover in (workspace / "credgate.db-wal", workspace / "credgate.db-shm"):
        leftover.unlink(missing_ok=True)
    os.replace(backup, db_file)

    result = await asyncio.to_thread(
        _credgate, "serve", "--config", config, "--workers", str(workers)
    )
    assert result.returncode == EXIT_USAGE, (result.returncode, result.stderr[-2000:])
    assert "rolled back" in result.stderr
    assert "acknowledge-rollback" in result.stderr
    assert "Traceback" not in result.stderr
    assert "gateway listening on" not in result.stderr + result.stdout


# -- what callers see --------------------------------------------------------------------------


async def test_regulators_get_a_clear_refusal_and_health_turns_not_serving(
    dev_pki: DevPki,
    audit_certs: dict[str, CertKeyPaths],
    database: Database,
    signer: NoteSigner,
    key_path: Path,
    grown: dict[str, object],
) -> None:
    guard = await SignedSizeGuard.open(database, state_path(key_path), signer.name)
    audit_log = AuditLog(database, signer, guard=guard)
    server = GatewayServer(listen="127.0.0.1:0", tls=dev_pki.server_tls)
    page_tokens = PageTokens(secrets.token_bytes(32))
    add_regulator_service(
        server,
        RegulatorServicer(AuditTrail(audit_log), CallerResolver(), page_tokens=page_tokens),
    )
    not_serving_on_trip(guard, server)
    port = await server.start()
    channel = mtls_channel(dev_pki, port, audit_certs["regulator-demo"])
    try:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        serving = health_pb2.HealthCheckResponse.SERVING
        assert (await health.Check(request, timeout=5)).status == serving
        await _diverge_larger(database, signer, grown)
        stub = pb_grpc.RegulatorServiceStub(channel)
        await expect_error(
            stub.GetLatestCheckpoint(pb.GetLatestCheckpointRequest(), timeout=5),
            grpc.StatusCode.FAILED_PRECONDITION,
            "AUDIT_LOG_ROLLED_BACK",
        )
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for _ in range(500):
            if (await health.Check(request, timeout=5)).status == not_serving:
                break
            await _sleep()
        assert (await health.Check(request, timeout=5)).status == not_serving
        # Nothing more is recorded (nor answered) until the operator acknowledges.
        await expect_error(
            stub.ListAuditEntries(pb.ListAuditEntriesRequest(), timeout=5),
            grpc.StatusCode.UNAVAILABLE,
            "AUDIT_UNAVAILABLE",
        )
    finally:
        await channel.close()
        await server.stop(0)
        await audit_log.aclose()
