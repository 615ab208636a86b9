"""Audit-log throughput: group-committed appends, then ``audit verify`` over what was written.

The appends go through ``audit.log.AuditLog.append`` exactly as the gateway makes them: each
caller awaits its own entry's commit, and concurrent callers in one process share a commit (a
group commit). ``concurrency`` appenders run closed-loop for ``duration`` seconds (bounded by
``max_entries``); each append's latency is the time until its entry was durable. The log is then
verified from the start with ``audit.verify.verify_log`` (the code behind ``credgate audit
verify``), which reports entries per second.

Everything runs in the bench process on a fresh SQLite file (migrated to head), or with
``url`` on the database given (the suite passes a fresh PostgreSQL schema), with a fresh
signing key, so it measures the log and the database, not gRPC.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import LoadResult, WorkerResult, summarize
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab

ORIGIN = "credgate.bench/audit"
_BASE_TIME = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class AuditMeasurement:
    appends: LoadResult
    """Appends per second (closed loop, ``concurrency`` in flight) and their latency."""
    entries: int
    """Entries in the log when it was verified."""
    verify_seconds: float
    verify_entries_per_second: float
    verify_ok: bool
    verify_cpu_seconds: float = 0.0
    """The bench process's CPU time in the verify (the reads run in it on SQLite; on
    PostgreSQL the server's share is not counted)."""


def _token(i: int) -> str:
    digest = hashlib.sha256(f"bench-subject-{i}".encode()).digest()[:20]
    return "st_" + base64.b32encode(digest).decode().lower()


def _entry(i: int) -> audit_pb2.AuditEntry:
    from credgate.audit.entry import new_entry

    return new_entry(
        institution_id="bank-demo",
        role=vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
        purpose=vocab.PURPOSE_CREDIT_APPLICATION_REVIEW,
        outcome=audit_pb2.AUDIT_OUTCOME_ALLOWED,
        reason="ALLOWED",
        subject_token=_token(i % 10_000),
        consent_id=f"cg_{i % 10_000:06d}",
        categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR, vocab.DATA_CATEGORY_COMMERCIAL_CREDIT],
        source_ids=["court-sz", "registry"],
        request_id=f"bench-{i}",
        trace_id="",
        decision_time=_BASE_TIME + dt.timedelta(milliseconds=i),
    )


async def measure_audit(
    directory: Path,
    *,
    concurrency: int,
    duration: float,
    warmup: float,
    max_entries: int,
    url: str | None = None,
) -> AuditMeasurement:
    """Append closed-loop for ``warmup`` + ``duration`` seconds, then verify the whole log
    (on ``url``, an empty database, or else a new SQLite file in ``directory``)."""
    from credgate.audit.log import AuditLog
    from credgate.audit.log_signing_key import load_or_create_signer
    from credgate.audit.verify import verify_log
    from credgate.core.storage.database import Database
    from credgate.gateway.storage.migrate import upgrade_to_head

    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    if url is None:
        url = f"sqlite:///{directory / 'audit.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    signer = load_or_create_signer(directory / "audit-log.key", ORIGIN)
    database = Database.from_url(url)
    log = AuditLog(database, signer)
    counter = 0
    result = WorkerResult()
    started = time.perf_counter()
    window_start = started + warmup
    window_end = window_start + duration

    async def appender() -> None:
        nonlocal counter
        while result.calls < max_entries:
            now = time.perf_counter()
            if now >= window_end:
                return
            i = counter
            counter += 1
            entry = _entry(i)
            await log.append(entry)
            done = time.perf_counter()
            result.calls += 1
            if window_start <= now and done <= window_end:
                result.latencies.append(done - now)

    try:
        await asyncio.gather(*(appender() for _ in range(concurrency)))
        result.window = min(time.perf_counter(), window_end) - window_start
        if result.window <= 0:
            result.window = time.perf_counter() - started
            result.latencies = result.latencies or []
        appends = summarize("audit-append", concurrency, 1, [result])
        timed = await verify_log(database, [signer.verifier], origin=ORIGIN)
    finally:
        await log.aclose()
        await database.dispose()
    return AuditMeasurement(
        appends=appends,
        entries=timed.report.entries,
        verify_seconds=timed.seconds,
        verify_entries_per_second=timed.entries_per_second,
        verify_ok=timed.report.ok,
        verify_cpu_seconds=timed.cpu_seconds,
    )
