"""Tampering with the stored log by raw SQL, as an operator with database access could, is
detected and located by ``verify_log`` — on SQLite and PostgreSQL.

Every test starts from the same log (40 entries, checkpoints at 20 and 40), edits the tables
directly, and checks the finding's kind and the entry index it names.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit import AuditLog
from credgate.audit.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint, sign_tree_head
from credgate.audit.hashing import leaf_hash
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.note import NoteSigner
from credgate.audit.proof import ProofError, verify_inclusion
from credgate.audit.storage import inclusion_proof
from credgate.audit.tamper_findings import TamperKind, VerificationResult
from credgate.audit.tree import CompactRange, merkle_root
from credgate.audit.verify import verify_log
from credgate.core.storage.database import Database
from tests.test_audit_log import ORIGIN, make_entry, token

SIZE = 40
K = 17
SHIFT = 1_000_000


@dataclass
class Log:
    database: Database
    signer: NoteSigner
    checkpoints: list[SignedCheckpoint]

    async def verify(
        self, external: list[tuple[str, str]] | None = None, *, thorough: bool = False
    ) -> VerificationResult:
        result = await verify_log(
            self.database,
            [self.signer.verifier],
            external_checkpoints=external or [],
            thorough=thorough,
        )
        return result.report

    async def sql(self, statement: str, **params: Any) -> None:
        async with self.database.write() as session:
            await session.execute(text(statement), params)

    async def row(self, index: int) -> dict[str, Any]:
        async with self.database.session() as session:
            found = await session.execute(
                text("SELECT * FROM audit_entries WHERE entry_index = :i"), {"i": index}
            )
            return dict(found.mappings().one())

    async def entry(self, index: int) -> audit_pb2.AuditEntry:
        return audit_pb2.AuditEntry.FromString(bytes((await self.row(index))["entry_bytes"]))


@pytest.fixture
def signer(tmp_path: Path) -> NoteSigner:
    return load_or_create_signer(tmp_path / "audit-log.key", ORIGIN)


@pytest.fixture
async def log(database: Database, signer: NoteSigner) -> AsyncIterator[Log]:
    audit_log = AuditLog(database, signer)
    checkpoints = []
    for i in range(SIZE):
        await audit_log.append(make_entry(i))
        if i + 1 in (20, SIZE):
            checkpoints.append(await audit_log.checkpoint())
    yield Log(database, signer, checkpoints)
    await audit_log.aclose()


def altered(entry: audit_pb2.AuditEntry) -> bytes:
    """The entry with its purpose changed, canonically serialized (what a forger would write)."""
    forged = audit_pb2.AuditEntry()
    forged.CopyFrom(entry)
    forged.purpose = vocab.PURPOSE_TAX_INVESTIGATION
    return forged.SerializeToString(deterministic=True)


async def test_an_intact_log_verifies(log: Log) -> None:
    report = await log.verify()
    assert report.ok, report.findings
    assert report.entries == report.authenticated_size == SIZE
    assert report.checkpoints_valid == report.checkpoints_checked == 2


async def test_modified_content_is_located(log: Log) -> None:
    await log.sql(
        "UPDATE audit_entries SET entry_bytes = :b WHERE entry_index = :i",
        b=altered(await log.entry(K)),
        i=K,
    )
    report = await log.verify()
    assert not report.ok
    assert report.first_tampered_index == K
    assert TamperKind.MODIFIED in report.kinds_at(K)
    assert report.authenticated_size == K
    assert any(f.kind is TamperKind.CHECKPOINT_MISMATCH for f in report.findings)


async def test_modified_content_with_its_leaf_hash_is_located(log: Log) -> None:
    forged = altered(await log.entry(K))
    await log.sql(
        "UPDATE audit_entries SET entry_bytes = :b, leaf_hash = :h, purpose = :p "
        "WHERE entry_index = :i",
        b=forged,
        h=leaf_hash(forged),
        p=vocab.PURPOSE_TAX_INVESTIGATION,
        i=K,
    )
    report = await log.verify()
    assert report.first_tampered_index == K
    assert report.kinds_at(K) == {TamperKind.MODIFIED}
    assert report.authenticated_size == K


async def test_an_edited_query_column_is_caught(log: Log) -> None:
    """Hiding an access from a subject's history by editing the subject column."""
    await log.sql(
        "UPDATE audit_entries SET subject_token = :t WHERE entry_index = :i", t=token(999), i=K
    )
    report = await log.verify()
    assert report.kinds_at(K) == {TamperKind.MODIFIED}
    assert "query columns" in report.findings[0].detail
    assert report.authenticated_size == SIZE  # the signed entries themselves are intact


@pytest.mark.parametrize(
    "shift", [dt.timedelta(microseconds=1), dt.timedelta(seconds=-1), dt.timedelta(days=1)]
)
async def test_an_edited_decision_time_column_is_caught(log: Log, shift: dt.timedelta) -> None:
    """Moving an access out of a time-range query: the column is compared with the entry's
    time to the microsecond (as an integer the database computes)."""
    when = (await log.entry(K)).decision_time.ToDatetime(dt.UTC) + shift
    sqlite = log.database.backend == "sqlite"
    await log.sql(
        "UPDATE audit_entries SET decision_time = :t WHERE entry_index = :i",
        t=when.replace(tzinfo=None).isoformat(" ", timespec="microseconds") if sqlite else when,
        i=K,
    )
    report = await log.verify()
    assert report.kinds_at(K) == {TamperKind.MODIFIED}
    assert "query columns" in report.findings[0].detail
    assert report.authenticated_size == SIZE


@pytest.mark.parametrize("stored", ["not a time", "", "2026-13-45 99:00:00"])
async def test_a_decision_time_that_is_no_time_is_caught_on_sqlite(log: Log, stored: str) -> None:
    """SQLite stores the time as text, which an edit can make anything: it is a finding, not a
    crash of the verifier."""
    if log.database.backend != "sqlite":
        pytest.skip("PostgreSQL's timestamptz column holds times only")
    await log.sql(
        "UPDATE audit_entries SET decision_time = :t WHERE entry_index = :i", t=stored, i=K
    )
    report = await log.verify()
    assert report.kinds_at(K) == {TamperKind.MODIFIED}
    assert report.authenticated_size == SIZE


async def test_a_deleted_entry_is_located(log: Log) -> None:
    await log.sql("DELETE FROM audit_entries WHERE entry_index = :i", i=K)
    report = await log.verify()
    assert report.first_tampered_index == K
    assert report.kinds_at(K) == {TamperKind.DELETED}
    assert report.authenticated_size == K


async def test_a_deleted_entry_is_located_even_after_renumbering(log: Log) -> None:
    await log.sql("DELETE FROM audit_entries WHERE entry_index = :i", i=K)
    await log.sql(
        "UPDATE audit_entries SET entry_index = entry_index + :s WHERE entry_index > :i",
        s=SHIFT,
        i=K,
    )
    await log.sql(
        "UPDATE audit_entries SET entry_index = entry_index - :s - 1 WHERE entry_index > :s",
        s=SHIFT,
    )
    report = await log.verify()
    deleted = [f for f in report.findings if f.kind is TamperKind.DELETED]
    assert [f.index for f in deleted] == [K]
    assert report.first_tampered_index == K


async def _forge_row(log: Log, index: int, claimed: int) -> None:
    entry = make_entry(500, institution="bank-forger")
    entry.index = claimed
    data = entry.SerializeToString(deterministic=True)
    await log.sql(
        "INSERT INTO audit_entries (entry_index, decision_time, institution_id, role, purpose,"
        " outcome, reason, subject_token, entry_bytes, leaf_hash, tree_root, tree_signature)"
        " VALUES (:i, :t, 'bank-forger', :r, :p, :o, 'ALLOWED', :s, :b, :h, :root, :sig)",
        i=index,
        t=entry.decision_time.ToDatetime().isoformat(" ")
        if log.database.backend == "sqlite"
        else entry.decision_time.ToDatetime(),
        r=entry.role,
        p=entry.purpose,
        o=entry.outcome,
        s=entry.subject_token,
        b=data,
        h=leaf_hash(data),
        root=leaf_hash(b"garbage"),
        sig=b"\x00" * 68,
    )


async def test_an_entry_inserted_in_the_middle_is_located(log: Log) -> None:
    await log.sql(
        "UPDATE audit_entries SET entry_index = entry_index + :s WHERE entry_index >= :i",
        s=SHIFT,
        i=K,
    )
    await log.sql(
        "UPDATE audit_entries SET entry_index = entry_index - :s + 1 WHERE entry_index >= :s",
        s=SHIFT,
    )
    await _forge_row(log, K, K)
    report = await log.verify()
    assert report.first_tampered_index == K
    assert report.kinds_at(K) == {TamperKind.INSERTED}
    assert [f.index for f in report.findings if f.kind is TamperKind.INSERTED] == [K]


async def test_an_entry_appended_without_the_log_is_located(log: Log) -> None:
    await _forge_row(log, SIZE, SIZE)
    report = await log.verify()
    assert report.kinds_at(SIZE) == {TamperKind.INSERTED}
    assert report.authenticated_size == SIZE


async def test_reordered_entries_are_located(log: Log) -> None:
    first, second = await log.row(K), await log.row(K + 1)
    columns = ("entry_bytes", "leaf_hash", "decision_time", "subject_token", "institution_id")
    for target, source in ((K, second), (K + 1, first)):
        assignments = ", ".join(f"{c} = :{c}" for c in columns)
        await log.sql(
            f"UPDATE audit_entries SET {assignments} WHERE entry_index = :i",
            i=target,
            **{c: source[c] for c in columns},
        )
    report = await log.verify()
    assert report.first_tampered_index == K
    assert TamperKind.REORDERED in report.kinds_at(K)
    assert report.authenticated_size == K


async def test_truncation_is_detected(log: Log) -> None:
    await log.sql("DELETE FROM audit_entries WHERE entry_index >= 35")
    report = await log.verify()
    truncated = [f for f in report.findings if f.kind is TamperKind.TRUNCATED]
    assert truncated
    assert {f.index for f in truncated} == {35}


async def test_truncation_hidden_in_the_database_is_caught_by_a_kept_checkpoint(log: Log) -> None:
    """The operator also rolls the head back and deletes the newer checkpoint: the database
    alone now looks consistent, but the checkpoint a regulator kept does not fit it."""
    kept = log.checkpoints[-1]
    await log.sql("DELETE FROM audit_entries WHERE entry_index >= 35")
    await log.sql("DELETE FROM audit_checkpoints WHERE tree_size > 35")
    compact = CompactRange()
    async with log.database.session() as session:
        leaves = await session.execute(
            text("SELECT leaf_hash FROM audit_entries ORDER BY entry_index")
        )
        compact.extend(bytes(h) for h in leaves.scalars())
    await log.sql(
        "UPDATE audit_head SET tree_size = 35, compact_range = :c, root_hash = :r",
        c=compact.to_bytes(),
        r=compact.root(),
    )
    # An interior node left over past the new end gives it away on its own...
    careless = await log.verify()
    assert [(f.kind, f.index) for f in careless.findings] == [(TamperKind.NODE_ALTERED, None)]
    assert "covers entries not in the log" in careless.findings[0].detail
    # ...so a careful operator deletes those too.
    await log.sql("DELETE FROM audit_tree_nodes WHERE (node_index + 1) * 8 > 35 AND level = 3")
    assert (await log.verify()).ok
    report = await log.verify(external=[("kept by the regulator", kept.note)])
    assert [f.kind for f in report.findings] == [TamperKind.TRUNCATED]
    assert report.findings[0].index == 35


async def test_a_rewrite_with_recomputed_hashes_but_no_valid_signature_is_located(
    log: Log, tmp_path: Path
) -> None:
    """Edit one entry, then recompute every leaf, tree head, the head row and the checkpoints —
    signed with the forger's own key, since the log's key is not in the database."""
    forger = NoteSigner.generate(ORIGIN)
    forged = altered(await log.entry(K))
    await log.sql(
        "UPDATE audit_entries SET entry_bytes = :b, purpose = :p WHERE entry_index = :i",
        b=forged,
        p=vocab.PURPOSE_TAX_INVESTIGATION,
        i=K,
    )
    compact = CompactRange()
    async with log.database.session() as session:
        rows = (
            await session.execute(
                text("SELECT entry_index, entry_bytes FROM audit_entries ORDER BY entry_index")
            )
        ).all()
    for index, data in rows:
        leaf = leaf_hash(bytes(data))
        compact.append(leaf)
        if index >= K:
            root = compact.root()
            await log.sql(
                "UPDATE audit_entries SET leaf_hash = :h, tree_root = :r, tree_signature = :s "
                "WHERE entry_index = :i",
                h=leaf,
                r=root,
                s=sign_tree_head(forger, compact.size, root),
                i=index,
            )
        if compact.size in (20, SIZE):
            note = sign_checkpoint(Checkpoint(ORIGIN, compact.size, compact.root(), 1), forger)
            await log.sql(
                "UPDATE audit_checkpoints SET root_hash = :r, note = :n WHERE tree_size = :s",
                r=compact.root(),
                n=note.note,
                s=compact.size,
            )
    await log.sql(
        "UPDATE audit_head SET compact_range = :c, root_hash = :r",
        c=compact.to_bytes(),
        r=compact.root(),
    )
    report = await log.verify()
    assert report.first_tampered_index == K
    assert report.kinds_at(K) == {TamperKind.REWRITTEN}
    assert report.authenticated_size == K
    invalid = [f for f in report.findings if f.kind is TamperKind.CHECKPOINT_INVALID]
    assert len(invalid) == 2


async def test_an_altered_head_row_or_tree_head_is_reported(log: Log) -> None:
    """Metadata edits that cannot hide an entry: the default run finds the head row and the
    sampled tree heads; the thorough run finds every altered tree head and signature."""
    await log.sql("UPDATE audit_head SET root_hash = :r", r=leaf_hash(b"x"))
    await log.sql(
        "UPDATE audit_entries SET tree_root = :r WHERE entry_index = :i",
        r=leaf_hash(b"y"),
        i=SIZE - 1,
    )
    await log.sql("UPDATE audit_entries SET tree_signature = :s WHERE entry_index = 25", s=b"x")
    report = await log.verify()
    kinds = {(f.kind, f.index) for f in report.findings}
    assert kinds == {
        (TamperKind.HEAD_MISMATCH, None),
        (TamperKind.TREE_HEAD_ALTERED, SIZE - 1),
    }
    assert report.authenticated_size == SIZE
    thorough = await log.verify(thorough=True)
    assert {(f.kind, f.index) for f in thorough.findings} == {
        *kinds,
        (TamperKind.TREE_HEAD_ALTERED, 25),
    }
    assert thorough.authenticated_size == SIZE  # the checkpoint at 40 vouches for every entry


async def test_an_altered_checkpoint_is_reported(log: Log) -> None:
    note = log.checkpoints[0].note
    root_line = note.split("\n")[2]
    fake = base64.b64encode(leaf_hash(b"z")).decode()
    await log.sql(
        "UPDATE audit_checkpoints SET note = :n WHERE tree_size = 20",
        n=note.replace(root_line, fake),
    )
    report = await log.verify()
    assert [f.kind for f in report.findings] == [TamperKind.CHECKPOINT_INVALID]


async def test_proofs_fail_on_altered_data(log: Log) -> None:
    checkpoint = log.checkpoints[-1].checkpoint
    genuine = await log.row(5)
    path = await inclusion_proof(log.database, 5, SIZE)
    verify_inclusion(5, SIZE, bytes(genuine["leaf_hash"]), path, checkpoint.root_hash)

    forged = altered(await log.entry(5))
    await log.sql(
        "UPDATE audit_entries SET entry_bytes = :b, leaf_hash = :h WHERE entry_index = 5",
        b=forged,
        h=leaf_hash(forged),
    )
    with pytest.raises(ProofError):
        verify_inclusion(
            5,
            SIZE,
            leaf_hash(forged),
            await inclusion_proof(log.database, 5, SIZE),
            checkpoint.root_hash,
        )
    # An entry the forgery did not touch stays provable: its proof is built from the stored
    # interior nodes (audit.tiles), which still hold the signed history, not from the edited
    # leaf. (Before interior nodes were stored, every proof rehashed every leaf and failed.)
    # Rewriting the node over the forged leaf as well makes that proof fail instead: either way
    # the signed root tells a client the truth, and verify names the forged entry.
    other = await log.row(30)
    verify_inclusion(
        30,
        SIZE,
        bytes(other["leaf_hash"]),
        await inclusion_proof(log.database, 30, SIZE),
        checkpoint.root_hash,
    )
    async with log.database.session() as session:
        leaves = (
            await session.execute(
                text(
                    "SELECT leaf_hash FROM audit_entries WHERE entry_index < 8 ORDER BY entry_index"
                )
            )
        ).scalars()
    await log.sql(
        "UPDATE audit_tree_nodes SET node_hash = :h WHERE level = 3 AND node_index = 0",
        h=merkle_root(bytes(leaf) for leaf in leaves),
    )
    with pytest.raises(ProofError):
        verify_inclusion(
            30,
            SIZE,
            bytes(other["leaf_hash"]),
            await inclusion_proof(log.database, 30, SIZE),
            checkpoint.root_hash,
        )
    assert (await log.verify()).kinds_at(5) == {TamperKind.MODIFIED}
