"""AuditLog on SQLite and PostgreSQL: durable appends, one gap-free sequence under concurrency
(including two OS processes), fail-closed errors, checkpoints, proofs and a subject's history.

Helpers here (``make_entry``, ``token``) are shared by the other audit test modules.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import multiprocessing
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit import ALLOWED, DENIED, AuditEntryError, AuditLog, AuditUnavailable, new_entry
from credgate.audit.checkpoint import open_checkpoint
from credgate.audit.checkpoints import PeriodicCheckpointer, latest_checkpoint
from credgate.audit.hashing import leaf_hash
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.note import NoteSigner
from credgate.audit.proof import ProofError, verify_consistency, verify_inclusion
from credgate.audit.queries import subject_access_history
from credgate.audit.storage import read_head, read_record
from credgate.audit.store_models import AuditEntryRow
from credgate.audit.verify import verify_log
from credgate.core.errors import set_request_id
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from tests.fixtures.storage import make_identity_number

ORIGIN = "credgate.test/audit"
CREDIT = vocab.DATA_CATEGORY_COMMERCIAL_CREDIT
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
BASE_TIME = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
IDENTITY = make_identity_number("11010519491231002")


def token(i: int) -> str:
    """A well-formed subject token for synthetic subject ``i``."""
    digest = hashlib.sha256(f"subject-{i}".encode()).digest()[:20]
    return "st_" + base64.b32encode(digest).decode().lower()


def make_entry(
    i: int = 0,
    *,
    institution: str = "bank-demo",
    role: vocab.InstitutionRole.ValueType = vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
    purpose: vocab.Purpose.ValueType = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW,
    outcome: audit_pb2.AuditOutcome.ValueType = ALLOWED,
    reason: str | None = None,
    subject: int | None = None,
    when: dt.datetime | None = None,
    request_id: str | None = None,
) -> audit_pb2.AuditEntry:
    """A realistic entry; allowed ones carry categories, sources and a report digest."""
    allowed = outcome == ALLOWED
    return new_entry(
        institution_id=institution,
        role=role,
        purpose=purpose,
        outcome=outcome,
        reason=reason or ("ALLOWED" if allowed else "CONSENT_MISSING"),
        subject_token=token(i if subject is None else subject),
        consent_id=f"cg_{i:06d}" if allowed else "",
        categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR, vocab.DATA_CATEGORY_COMMERCIAL_CREDIT]
        if allowed
        else [],
        source_ids=["court-sz", "registry"] if allowed else [],
        request_id=request_id or f"req-{i}",
        trace_id="",
        decision_time=when or BASE_TIME + dt.timedelta(seconds=i),
    )


@pytest.fixture
def signer(tmp_path: Path) -> NoteSigner:
    return load_or_create_signer(tmp_path / "audit-log.key", ORIGIN)


@pytest.fixture
async def audit_log(database: Database, signer: NoteSigner) -> AsyncIterator[AuditLog]:
    log = AuditLog(database, signer)
    yield log
    await log.aclose()


# -- entries -----------------------------------------------------------------------------------


def test_new_entry_is_canonical_and_fills_request_id() -> None:
    set_request_id("req-from-interceptor")
    try:
        entry = new_entry(
            institution=Institution("bank-demo", vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION),
            purpose=vocab.PURPOSE_CREDIT_APPLICATION_REVIEW,
            outcome=ALLOWED,
            reason="ALLOWED",
            categories=[REPAIR, CREDIT, REPAIR],
            source_ids=["registry", "court-sz", "registry"],
        )
    finally:
        set_request_id(None)
    assert entry.request_id == "req-from-interceptor"
    assert list(entry.categories) == [CREDIT, REPAIR]
    assert list(entry.source_ids) == ["court-sz", "registry"]
    assert entry.role == vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject_token": IDENTITY},
        {"case_reference": f"(2026)粤03执1号 {IDENTITY}"},
        {"consent_id": IDENTITY.lower()},
        {"source_ids": [IDENTITY]},
        {"reason": "not upper snake"},
        {"institution_id": "Bank Demo"},
        {"outcome": audit_pb2.AUDIT_OUTCOME_UNSPECIFIED},
    ],
)
def test_new_entry_refuses_personal_or_malformed_values(overrides: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "institution_id": "bank-demo",
        "purpose": vocab.PURPOSE_CREDIT_APPLICATION_REVIEW,
        "outcome": DENIED,
        "reason": "CONSENT_MISSING",
        **overrides,
    }
    with pytest.raises(AuditEntryError) as caught:
        new_entry(**arguments)
    assert IDENTITY not in str(caught.value)
    assert IDENTITY.lower() not in str(caught.value)


# -- appending ---------------------------------------------------------------------------------


async def test_append_is_durable_and_returns_index_and_leaf_hash(
    audit_log: AuditLog, migrated_database_url: str
) -> None:
    receipts = [await audit_log.append(make_entry(i)) for i in range(5)]
    assert [r.index for r in receipts] == [0, 1, 2, 3, 4]
    assert [r.tree_size for r in receipts] == [1, 2, 3, 4, 5]

    # A separate pool (another replica) sees every entry once append has returned.
    other = Database.from_url(migrated_database_url)
    try:
        record = await read_record(other, 3)
        head = await read_head(other)
    finally:
        await other.dispose()
    assert record is not None
    assert record.entry.index == 3
    assert record.entry.request_id == "req-3"
    assert leaf_hash(record.entry_bytes) == receipts[3].leaf_hash
    assert head.tree_size == 5
    assert head.root_hash == receipts[-1].root_hash


async def test_concurrent_appends_form_one_gap_free_verified_sequence(
    audit_log: AuditLog, database: Database, signer: NoteSigner
) -> None:
    receipts = await asyncio.gather(*(audit_log.append(make_entry(i)) for i in range(300)))
    assert sorted(r.index for r in receipts) == list(range(300))
    async with database.session() as session:
        stored = (await session.execute(select(AuditEntryRow.entry_bytes))).scalars().all()
    request_ids = sorted(audit_pb2.AuditEntry.FromString(b).request_id for b in stored)
    assert request_ids == sorted(f"req-{i}" for i in range(300))
    result = await verify_log(database, [signer.verifier])
    assert result.report.ok, result.report.findings


async def test_a_committer_cancelled_mid_flush_leaves_its_batch_to_finish(
    audit_log: AuditLog, database: Database, signer: NoteSigner, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller cancelled while its group commit is being written lets the lock go; the next
    caller, whose entry rides in that commit, must wait for it — not write an empty batch
    (which inserted a row of NULLs and logged IntegrityError; found by the fault soak)."""

    def slow(_: object) -> None:
        time.sleep(0.3)  # a rider runs in the commit's transaction, on the writer thread

    first = asyncio.create_task(audit_log.append(make_entry(0), rider=slow))
    await asyncio.sleep(0.05)  # first holds the lock, its commit is being written
    holder = asyncio.create_task(audit_log.append(make_entry(1), rider=slow))
    rider = asyncio.create_task(audit_log.append(make_entry(2)))
    await first  # now holder takes entries 1 and 2 into one batch
    await asyncio.sleep(0.05)
    holder.cancel()
    receipt = await asyncio.wait_for(rider, timeout=5)
    assert receipt.index == 2
    assert "append of 0 entries" not in caplog.text
    await asyncio.sleep(0.4)  # the cancelled caller's commit settles in the background
    result = await verify_log(database, [signer.verifier])
    assert result.report.ok, result.report.findings
    async with database.session() as session:
        stored = (await session.execute(select(AuditEntryRow.entry_index))).scalars().all()
    assert sorted(stored) == [0, 1, 2]


def _append_worker(url: str, key_path: str, tag: str, count: int, start: Any) -> None:
    """One gateway replica: its own process, pool and event loop, appending ``count`` entries
    once every replica is ready (``start`` is a shared barrier)."""

    async def run() -> None:
        database = Database.from_url(url)
        log = AuditLog(database, load_or_create_signer(Path(key_path)))
        # Writer thread and connection up before the start, so neither replica is done before
        # the other has opened its database.
        await database.threaded.write(lambda connection: None)
        await asyncio.to_thread(start.wait, 60)
        try:
            for first in range(0, count, 10):
                await asyncio.gather(
                    *(
                        log.append(make_entry(i, institution=tag, request_id=f"{tag}-{i}"))
                        for i in range(first, min(count, first + 10))
                    )
                )
                # A gap between group commits, as between real requests: SQLite's busy handler
                # retries on a timer, and a writer that never pauses could starve the other.
                await asyncio.sleep(0.005)
        finally:
            await database.dispose()

    asyncio.run(run())


async def test_two_processes_appending_at_once_lose_and_duplicate_nothing(
    migrated_database_url: str, signer: NoteSigner, tmp_path: Path
) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [
        context.Process(
            target=_append_worker,
            args=(migrated_database_url, str(tmp_path / "audit-log.key"), tag, 300, start),
        )
        for tag in ("replica-a", "replica-b")
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        await asyncio.to_thread(worker.join, 120)
        assert worker.exitcode == 0

    database = Database.from_url(migrated_database_url)
    try:
        async with database.session() as session:
            rows = (
                await session.execute(
                    select(AuditEntryRow.entry_index, AuditEntryRow.entry_bytes).order_by(
                        AuditEntryRow.entry_index
                    )
                )
            ).all()
        result = await verify_log(database, [signer.verifier])
    finally:
        await database.dispose()
    assert [index for index, _ in rows] == list(range(600))
    request_ids = [audit_pb2.AuditEntry.FromString(data).request_id for _, data in rows]
    expected = {f"{tag}-{i}" for tag in ("replica-a", "replica-b") for i in range(300)}
    assert len(request_ids) == len(set(request_ids)) == 600
    assert set(request_ids) == expected
    # The two replicas really did interleave (the lock, not luck, kept the sequence whole).
    tags = [r.split("-")[1] for r in request_ids]
    assert sum(1 for a, b in itertools.pairwise(tags) if a != b) > 1
    assert result.report.ok, result.report.findings


async def test_append_fails_closed_when_the_database_is_unusable(
    audit_log: AuditLog, database: Database, signer: NoteSigner
) -> None:
    await audit_log.append(make_entry(0))
    async with database.write() as session:
        await session.execute(text("DROP TABLE audit_head"))
    with pytest.raises(AuditUnavailable) as caught:
        await audit_log.append(make_entry(1))
    error = caught.value.to_gateway_error()
    assert error.reason == "AUDIT_UNAVAILABLE"
    assert error.code.name == "UNAVAILABLE"

    unreachable = Database.from_url(
        "postgresql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    try:
        with pytest.raises(AuditUnavailable):
            await AuditLog(unreachable, signer).append(make_entry(2))
    finally:
        await unreachable.dispose()


async def test_append_times_out_rather_than_waiting_forever(
    database: Database, signer: NoteSigner, migrated_database_url: str
) -> None:
    """Another transaction holds the log's lock: the answer must not wait past the timeout."""
    log = AuditLog(database, signer, write_timeout_seconds=0.5)
    blocker = Database.from_url(migrated_database_url)
    try:
        async with blocker.write() as session:
            await session.execute(text("UPDATE audit_head SET tree_size = tree_size"))
            with pytest.raises(AuditUnavailable):
                await log.append(make_entry(0))
    finally:
        await blocker.dispose()
    assert (await log.append(make_entry(1))).index == 0


async def test_an_append_is_bounded_by_its_calls_deadline_and_late_entries_are_not_written(
    database: Database, signer: NoteSigner, migrated_database_url: str
) -> None:
    """A stalled database must cost the caller an AuditUnavailable by its call's deadline, not
    a late answer after the (longer) write timeout; an entry whose commit had not begun by its
    deadline is left out of the log (its answer was never released)."""
    log = AuditLog(database, signer, write_timeout_seconds=10)
    blocker = Database.from_url(migrated_database_url)
    try:
        async with blocker.write() as session:
            await session.execute(text("UPDATE audit_head SET tree_size = tree_size"))
            started = time.monotonic()
            late = asyncio.create_task(log.append(make_entry(0), deadline=started + 0.3))
            patient = asyncio.create_task(log.append(make_entry(1)))
            with pytest.raises(AuditUnavailable):
                await late
            assert time.monotonic() - started < 1.5
            await asyncio.sleep(0.2)
        receipt = await asyncio.wait_for(patient, timeout=10)  # the stall is over
    finally:
        await blocker.dispose()
    assert receipt.index == 0  # entry 0 was never numbered: its caller had given up
    result = await verify_log(database, [signer.verifier])
    assert result.report.ok, result.report.findings
    async with database.session() as session:
        stored = (await session.execute(select(AuditEntryRow.entry_bytes))).scalars().all()
    assert [audit_pb2.AuditEntry.FromString(b).request_id for b in stored] == ["req-1"]


# -- checkpoints and proofs --------------------------------------------------------------------


async def test_checkpoints_are_signed_stored_and_only_made_when_the_log_grew(
    audit_log: AuditLog, signer: NoteSigner
) -> None:
    empty = await audit_log.checkpoint()
    assert empty.checkpoint.tree_size == 0
    for i in range(10):
        await audit_log.append(make_entry(i))
    first = await audit_log.checkpoint()
    again = await audit_log.checkpoint()
    assert again.note == first.note
    assert first.checkpoint.tree_size == 10
    assert first.checkpoint.origin == ORIGIN
    assert first.checkpoint.timestamp is not None
    assert open_checkpoint(first.note, [signer.verifier]).checkpoint == first.checkpoint
    latest = await audit_log.latest_checkpoint()
    assert latest is not None
    assert latest.note == first.note


async def test_periodic_checkpointer_signs_as_the_log_grows(
    audit_log: AuditLog, database: Database, signer: NoteSigner
) -> None:
    checkpointer = PeriodicCheckpointer(database, signer, interval_seconds=0.05)
    checkpointer.start()
    try:
        await audit_log.append(make_entry(0))
        for _ in range(100):
            latest = await latest_checkpoint(database, signer)
            if latest is not None and latest.checkpoint.tree_size == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await checkpointer.stop()
    assert latest is not None
    assert latest.checkpoint.tree_size == 1


async def test_proofs_verify_against_checkpoints(audit_log: AuditLog) -> None:
    receipts = [await audit_log.append(make_entry(i)) for i in range(13)]
    old = (await audit_log.checkpoint()).checkpoint
    receipts += [await audit_log.append(make_entry(i)) for i in range(13, 37)]
    new = (await audit_log.checkpoint()).checkpoint
    for receipt in receipts:
        path = await audit_log.inclusion_proof(receipt.index, new.tree_size)
        verify_inclusion(receipt.index, new.tree_size, receipt.leaf_hash, path, new.root_hash)
    path = await audit_log.consistency_proof(old.tree_size, new.tree_size)
    verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, path)
    with pytest.raises(ProofError):
        verify_inclusion(
            3,
            new.tree_size,
            receipts[4].leaf_hash,
            await audit_log.inclusion_proof(3, new.tree_size),
            new.root_hash,
        )


# -- a subject's own history -------------------------------------------------------------------


async def test_subject_access_history_lists_who_asked_and_what_they_got(
    audit_log: AuditLog,
) -> None:
    await audit_log.append(make_entry(0, subject=7))
    await audit_log.append(make_entry(1, subject=8))
    await audit_log.append(
        make_entry(
            2,
            subject=7,
            institution="court-demo",
            role=vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN,
            purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
        )
    )
    await audit_log.append(make_entry(3, subject=7, institution="bank-other", outcome=DENIED))

    history, resume = await subject_access_history(audit_log.database, token(7), limit=2)
    assert resume is not None
    more, end = await subject_access_history(audit_log.database, token(7), after=resume)
    assert end is None
    records = [*history, *more]
    assert [(r.index, r.institution_id, r.outcome) for r in records] == [
        (0, "bank-demo", ALLOWED),
        (2, "court-demo", ALLOWED),
        (3, "bank-other", DENIED),
    ]
    assert records[1].purpose == vocab.PURPOSE_JUDICIAL_INVESTIGATION
    assert records[2].reason == "CONSENT_MISSING"
    assert list(records[0].categories) == [
        vocab.DATA_CATEGORY_COMMERCIAL_CREDIT,
        vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR,
    ]


async def test_an_empty_log_verifies_and_checkpoints(
    audit_log: AuditLog, signer: NoteSigner
) -> None:
    report = (await verify_log(audit_log.database, [signer.verifier], thorough=True)).report
    assert report.ok
    assert report.entries == 0
    assert (await audit_log.checkpoint()).checkpoint.tree_size == 0
