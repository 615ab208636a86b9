"""Storage: migrations, the encrypted fact index and key rotation, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select, text, update
from sqlalchemy.engine import make_url

# The audit, reconciliation and sync tables are part of the compared metadata.
import credgate.audit.store_models
import credgate.consent.event_models
import credgate.gateway.fact_index.models
import credgate.gateway.reconciliation.models
import credgate.gateway.sync.models  # noqa: F401
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask
from credgate.core.storage.database import (
    Database,
    DatabaseURLError,
    async_url,
    backend_of,
    create_sync_engine,
    sync_url,
)
from credgate.core.storage.issued_reports import report_digest
from credgate.core.storage.models import Base, IssuedReportRow, SourceFactsRow, SubjectRow
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.fact_index import (
    FactIndex,
    FactIndexError,
    UnreadableRecordError,
)
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.storage.migrate import current_revision, head_revision, upgrade_to_head
from credgate.gateway.workflows import models as workflow_models  # noqa: F401  (compared)
from tests.fixtures.storage import make_identity_number

IDENTITY = make_identity_number("11010519491231002")
OTHER_IDENTITY = make_identity_number("44030519820615123")
NAME = "张伟明"
AS_OF = dt.datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=dt.UTC)
FETCHED = dt.datetime(2024, 3, 2, 1, 2, 3, 654321, tzinfo=dt.UTC)


def make_facts(
    source_id: str = "bank-qianhai",
    *,
    state: vocabulary_pb2.RepairState.ValueType = vocabulary_pb2.REPAIR_STATE_OBSERVATION,
    identity_number: str = IDENTITY,
    name: str = NAME,
    as_of: dt.datetime = AS_OF,
) -> report_pb2.SourceFacts:
    """SourceFacts carrying personal data (name, masked number) and a timestamped provenance."""
    facts = report_pb2.SourceFacts(
        source_id=source_id,
        source_kind=vocabulary_pb2.SOURCE_KIND_BANK,
        display_name="Qianhai Bank",
        asserted_state=state,
        identity=report_pb2.SubjectIdentity(
            masked_identity_number=mask(identity_number), name=name
        ),
    )
    facts.provenance.source_id = source_id
    facts.provenance.source_as_of.FromDatetime(as_of)
    facts.provenance.fetched_at.FromDatetime(FETCHED)
    record = facts.records.add(
        category=vocabulary_pb2.DATA_CATEGORY_COMMERCIAL_CREDIT,
        kind=vocabulary_pb2.RECORD_KIND_DEFAULT,
        summary="default on a consumer loan",
        open=True,
    )
    record.amount.currency_code = "CNY"
    record.amount.minor_units = 1_234_500
    return facts


# -- URLs and engines --------------------------------------------------------------------------


def test_urls_map_to_drivers() -> None:
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert sync_url("sqlite:///x.db").drivername == "sqlite"
    assert async_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert async_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert sync_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert backend_of("sqlite+aiosqlite:///x.db") == "sqlite"


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db", "sqlite://", "sqlite:///:memory:"]
)
def test_unsupported_urls_are_rejected(url: str) -> None:
    with pytest.raises(DatabaseURLError):
        backend_of(url)


async def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        async with database.session() as session:
            assert await session.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await session.scalar(text("PRAGMA foreign_keys")) == 1
            assert await session.scalar(text("PRAGMA busy_timeout")) == 5000
    finally:
        await database.dispose()


# -- migrations --------------------------------------------------------------------------------


def test_migrations_upgrade_an_empty_database_to_head(database_url: str) -> None:
    assert current_revision(database_url) is None

    upgrade_to_head(database_url)
    upgrade_to_head(database_url)  # idempotent: a second replica starting finds nothing to do

    assert current_revision(database_url) == head_revision()
    engine = create_sync_engine(database_url, writer=False)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            assert {"subjects", "source_facts", "issued_reports"} <= tables
            # The hand-written migration and the models agree.
            migration_context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(migration_context, Base.metadata) == []
    finally:
        engine.dispose()


def test_replicas_migrating_at_once_all_succeed(database_url: str) -> None:
    """Several gateways starting together: one migrates, the others wait and find head."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(upgrade_to_head, database_url) for _ in range(4)]:
            future.result()
    assert current_revision(database_url) == head_revision()


# -- fact index --------------------------------------------------------------------------------


async def test_store_and_last_known_round_trip(
    fact_index: FactIndex, subject_tokenizer: SubjectTokenizer
) -> None:
    token = subject_tokenizer.token(IDENTITY)
    facts = make_facts()
    other = make_facts("court-sz", state=vocabulary_pb2.REPAIR_STATE_RESTORED)

    await fact_index.store(token, facts)
    await fact_index.store(token, other)

    assert await fact_index.last_known(token, "bank-qianhai") == facts
    assert await fact_index.last_known(token, "unknown-source") is None
    assert await fact_index.last_known(subject_tokenizer.token(OTHER_IDENTITY), "court-sz") is None
    assert await fact_index.last_known_all(token) == {"bank-qianhai": facts, "court-sz": other}
    assert await fact_index.last_known_all(subject_tokenizer.token(OTHER_IDENTITY)) == {}


async def test_store_upsert_replaces(
    fact_index: FactIndex, database: Database, subject_tokenizer: SubjectTokenizer
) -> None:
    token = subject_tokenizer.token(IDENTITY)
    later = AS_OF + dt.timedelta(days=30)
    await fact_index.store(token, make_facts())
    replacement = make_facts(state=vocabulary_pb2.REPAIR_STATE_RESTORED, as_of=later)

    await fact_index.store(token, replacement, sequence=42)

    assert await fact_index.last_known(token, "bank-qianhai") == replacement
    async with database.session() as session:
        rows = (await session.scalars(select(SourceFactsRow))).all()
    assert len(rows) == 1
    assert rows[0].source_as_of == later
    assert rows[0].sequence == 42


async def test_timestamps_round_trip_as_aware_utc(
    fact_index: FactIndex, database: Database, subject_tokenizer: SubjectTokenizer
) -> None:
    token = subject_tokenizer.token(IDENTITY)
    await fact_index.store(token, make_facts())

    async with database.session() as session:
        row = await session.scalar(select(SourceFactsRow))

    assert row is not None
    assert row.source_as_of == AS_OF
    assert row.fetched_at == FETCHED
    assert row.source_as_of is not None
    assert row.source_as_of.utcoffset() == dt.timedelta(0)
    assert row.source_kind == vocabulary_pb2.SOURCE_KIND_BANK


async def test_many_concurrent_writers_do_not_fail(
    fact_index: FactIndex, subject_tokenizer: SubjectTokenizer
) -> None:
    token = subject_tokenizer.token(IDENTITY)
    await asyncio.gather(*(fact_index.store(token, make_facts(f"bank-{i}")) for i in range(20)))
    assert len(await fact_index.last_known_all(token)) == 20


async def test_remember_and_recall_subject(
    fact_index: FactIndex, subject_tokenizer: SubjectTokenizer
) -> None:
    token = subject_tokenizer.token(IDENTITY)
    assert await fact_index.recall_identity(token) is None

    await fact_index.remember_subject(token, IDENTITY)
    await fact_index.remember_subject(token, IDENTITY)  # already known: no-op

    assert await fact_index.recall_identity(token) == IDENTITY


async def test_an_identity_number_is_refused_where_a_token_belongs(fact_index: FactIndex) -> None:
    with pytest.raises(ValueError, match="subject token") as caught:
        await fact_index.store(IDENTITY, make_facts())
    assert IDENTITY not in str(caught.value)
    with pytest.raises(ValueError, match="subject token"):
        await fact_index.remember_subject(IDENTITY, IDENTITY)


async def test_record_issued_report(
    fact_index: FactIndex, database: Database, subject_tokenizer: SubjectTokenizer
) -> None:
    report = report_pb2.RepairStatusReport(
        report_id="rep_0001",
        subject_token=subject_tokenizer.token(IDENTITY),
        state=vocabulary_pb2.REPAIR_STATE_OBSERVATION,
        purpose=vocabulary_pb2.PURPOSE_CREDIT_APPLICATION_REVIEW,
        sources=[make_facts()],
    )
    report.generated_at.FromDatetime(FETCHED)

    await fact_index.record_issued_report(report, "bank-qianhai")
    await fact_index.record_issued_report(report, "bank-qianhai")  # a retry is a no-op

    async with database.session() as session:
        rows = (await session.scalars(select(IssuedReportRow))).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.subject_token == report.subject_token
    assert row.institution_id == "bank-qianhai"
    assert row.purpose == vocabulary_pb2.PURPOSE_CREDIT_APPLICATION_REVIEW
    assert row.state == vocabulary_pb2.REPAIR_STATE_OBSERVATION
    assert row.generated_at == FETCHED
    expected = hashlib.sha256(report.SerializeToString(deterministic=True)).hexdigest()
    assert row.report_digest == expected == report_digest(report)

    altered = report_pb2.RepairStatusReport()
    altered.CopyFrom(report)
    altered.state = vocabulary_pb2.REPAIR_STATE_RESTORED
    with pytest.raises(FactIndexError, match="another digest"):
        await fact_index.record_issued_report(altered, "bank-qianhai")


async def test_no_plaintext_personal_data_at_rest(
    fact_index: FactIndex,
    database: Database,
    migrated_database_url: str,
    subject_tokenizer: SubjectTokenizer,
) -> None:
    token = subject_tokenizer.token(IDENTITY)
    await fact_index.remember_subject(token, IDENTITY)
    facts = make_facts()
    await fact_index.store(token, facts)
    report = report_pb2.RepairStatusReport(
        report_id="rep_scan", subject_token=token, sources=[facts]
    )
    await fact_index.record_issued_report(report, "bank-qianhai")
    await database.dispose()

    dump = raw_database_contents(migrated_database_url)

    assert token.encode() in dump, "the scan must see stored data for the check to mean anything"
    for secret in (IDENTITY, NAME):
        encoded = secret.encode("utf-8")
        assert encoded not in dump, "plaintext personal data found at rest"
        assert encoded.hex().encode() not in dump, "hex-encoded personal data found at rest"


def raw_database_contents(url: str) -> bytes:
    """Everything stored, as bytes: the SQLite files themselves, or every PostgreSQL row as text.

    For SQLite this includes the WAL and shared-memory files, where recent writes live before
    a checkpoint. For PostgreSQL a row rendered as text shows bytea as hex, hence the hex check.
    """
    if backend_of(url) == "sqlite":
        database = make_url(url).database
        assert database is not None
        path = Path(database)
        return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))
    engine = create_sync_engine(url, writer=False)
    try:
        with engine.connect() as connection:
            quote = connection.dialect.identifier_preparer.quote
            chunks: list[bytes] = []
            for table in inspect(connection).get_table_names():
                rows = connection.execute(text(f"SELECT t::text FROM {quote(table)} AS t"))
                chunks.extend(str(value).encode("utf-8") for value in rows.scalars())
            return b"\n".join(chunks)
    finally:
        engine.dispose()


async def test_moved_or_tampered_ciphertext_is_unreadable_without_leaking(
    fact_index: FactIndex, database: Database, subject_tokenizer: SubjectTokenizer
) -> None:
    victim = subject_tokenizer.token(IDENTITY)
    attacker = subject_tokenizer.token(OTHER_IDENTITY)
    await fact_index.store(victim, make_facts())
    await fact_index.store(attacker, make_facts(identity_number=OTHER_IDENTITY, name="李四"))

    # Copy the victim's ciphertext into the attacker's row: context binding must refuse it.
    async with database.write() as session:
        blob = await session.scalar(
            select(SourceFactsRow.facts_ciphertext).where(SourceFactsRow.subject_token == victim)
        )
        await session.execute(
            update(SourceFactsRow)
            .where(SourceFactsRow.subject_token == attacker)
            .values(facts_ciphertext=blob)
        )
    with pytest.raises(UnreadableRecordError) as moved:
        await fact_index.last_known(attacker, "bank-qianhai")

    # Flip one bit of the victim's own ciphertext.
    assert blob is not None
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    async with database.write() as session:
        await session.execute(
            update(SourceFactsRow)
            .where(SourceFactsRow.subject_token == victim)
            .values(facts_ciphertext=tampered)
        )
    with pytest.raises(UnreadableRecordError) as flipped:
        await fact_index.last_known_all(victim)

    for error in (moved.value, flipped.value):
        for secret in (IDENTITY, OTHER_IDENTITY, NAME):
            assert secret not in str(error)


async def test_reencrypt_all_after_rotation(
    fact_index: FactIndex,
    database: Database,
    keyring: Keyring,
    subject_tokenizer: SubjectTokenizer,
) -> None:
    numbers = [make_identity_number(f"32010219900101{i:03d}") for i in range(5)]
    tokens = [subject_tokenizer.token(n) for n in numbers]
    stored: dict[str, dict[str, report_pb2.SourceFacts]] = {}
    for number, token in zip(numbers, tokens, strict=True):
        await fact_index.remember_subject(token, number)
        stored[token] = {s: make_facts(s, identity_number=number) for s in ("bank-a", "court-b")}
        for facts in stored[token].values():
            await fact_index.store(token, facts)
    old_key = keyring.primary_key_id

    new_key = keyring.add_key()
    # Written after the rotation: already under the new key, so not counted.
    late_token = subject_tokenizer.token(OTHER_IDENTITY)
    await fact_index.store(late_token, make_facts("bank-a"))

    assert await fact_index.reencrypt_all(batch_size=3) == 5 + 10
    assert await fact_index.reencrypt_all(batch_size=3) == 0

    async with database.session() as session:
        subject_rows = await session.execute(
            select(SubjectRow.key_id, SubjectRow.identity_ciphertext)
        )
        fact_rows = await session.execute(
            select(SourceFactsRow.key_id, SourceFactsRow.facts_ciphertext)
        )
        everything = [*subject_rows.all(), *fact_rows.all()]
        old_left = await session.scalar(
            select(func.count()).select_from(SourceFactsRow).where(SourceFactsRow.key_id == old_key)
        )
    assert old_left == 0
    assert len(everything) == 5 + 11
    for key_id, blob in everything:
        assert key_id == new_key == FieldCipher.key_id_of(blob)

    # Every record reads back, through a keyring freshly loaded from the rotated file.
    assert keyring.path is not None
    reloaded = FactIndex(database, FieldCipher(Keyring.load(keyring.path)))
    for number, token in zip(numbers, tokens, strict=True):
        assert await reloaded.recall_identity(token) == number
        assert await reloaded.last_known_all(token) == stored[token]


async def test_reencrypt_all_rejects_a_zero_batch(fact_index: FactIndex) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await fact_index.reencrypt_all(batch_size=0)
