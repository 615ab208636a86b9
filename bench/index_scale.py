"""The fact index at scale: seed it with N subjects fast, then time ``last_known_all``.

Seeding goes around ``FactIndex.store`` on purpose. One upsert per row through the async
session costs about a millisecond, so a million subjects would take hours; instead rows are
written with ``executemany`` in large transactions, in subject-token order (sequential B-tree
inserts). The rows are still exactly what the gateway writes: the schema comes from the
migrations, each value is a real ``SourceFacts`` answer of that source's adapter (collected
from the running mock sources) encrypted with ``FieldCipher`` under the row's own associated
data, timestamps go through the column type's own bind processing, and every subject also gets
its encrypted ``subjects`` row. So the gateway (and ``FactIndex``) read them as their own.

The seeded subjects are the mock population first, so the gateway can be queried about
subjects that are in the index, then synthetic identity numbers that cannot collide with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import LoadResult, WorkerResult, summarize
from credgate.adapters.base import SourceConfig
from credgate.api.credit_repair.v1 import report_pb2
from credgate.gateway.progress import Progress

CHUNK_SUBJECTS = 10_000
"""Subjects per transaction while seeding: large enough to amortize commits, small enough to
keep the WAL (and the memory holding one chunk's rows) modest."""
SYNTHETIC_REGIONS = ("440303", "440304", "440305", "440306", "440307", "440308", "440309")
SYNTHETIC_FIRST_BIRTH = dt.date(2002, 1, 1)
"""The mock population is born before 2001, so synthetic numbers never collide with it."""
SYNTHETIC_BIRTH_DAYS = 2500
SEQUENCES_PER_DAY = 999


@dataclass(frozen=True)
class FactTemplate:
    """One real adapter answer, ready to be re-encrypted for any seeded subject."""

    source_id: str
    source_kind: int
    plaintext: bytes
    """``SourceFacts`` serialized deterministically, as ``FactIndex.store`` does."""
    source_as_of: dt.datetime | None


@dataclass(frozen=True)
class SeedResult:
    subjects: int
    rows: int
    seconds: float
    database_bytes: int
    token_sample: tuple[str, ...]
    """Tokens drawn uniformly from everything seeded, for the lookups."""

    @property
    def subjects_per_second(self) -> float:
        return self.subjects / self.seconds if self.seconds > 0 else 0.0


def synthetic_identity_numbers(count: int) -> Iterator[str]:
    """``count`` distinct, valid GB 11643 numbers, deterministic, disjoint from the population."""
    from credgate.adapters.mocks.population import make_identity_number

    per_region = SYNTHETIC_BIRTH_DAYS * SEQUENCES_PER_DAY
    if count > per_region * len(SYNTHETIC_REGIONS):
        raise ValueError(f"at most {per_region * len(SYNTHETIC_REGIONS):,} synthetic subjects")
    for i in range(count):
        region = SYNTHETIC_REGIONS[i // per_region]
        day, sequence = divmod(i % per_region, SEQUENCES_PER_DAY)
        birth = SYNTHETIC_FIRST_BIRTH + dt.timedelta(days=day)
        yield make_identity_number(region, birth, sequence + 1)


async def collect_templates(
    sources: Sequence[SourceConfig], identity_numbers: Sequence[str], per_source: int
) -> dict[str, list[FactTemplate]]:
    """Ask every source's adapter about up to ``per_source`` subjects; keep what they say."""
    from credgate.adapters.catalog import build_adapter

    adapters = [build_adapter(config) for config in sources]
    templates: dict[str, list[FactTemplate]] = {config.source_id: [] for config in sources}
    try:
        for number in identity_numbers[:per_source]:
            answers = await asyncio.gather(
                *(adapter.fetch(number, timeout=5.0) for adapter in adapters),
                return_exceptions=True,
            )
            for answer in answers:
                if isinstance(answer, report_pb2.SourceFacts):
                    templates[answer.source_id].append(_template(answer))
    finally:
        await asyncio.gather(*(adapter.aclose() for adapter in adapters))
    missing = [source_id for source_id, found in templates.items() if not found]
    if missing:
        raise RuntimeError(f"no facts could be collected from {', '.join(missing)}")
    return templates


def _template(facts: report_pb2.SourceFacts) -> FactTemplate:
    provenance = facts.provenance
    return FactTemplate(
        source_id=facts.source_id,
        source_kind=int(facts.source_kind),
        plaintext=facts.SerializeToString(deterministic=True),
        source_as_of=(
            provenance.source_as_of.ToDatetime(tzinfo=dt.UTC)
            if provenance.HasField("source_as_of")
            else None
        ),
    )


def _database_bytes(url: str) -> int:
    from sqlalchemy.engine import make_url

    path = Path(make_url(url).database or "")
    return sum(
        candidate.stat().st_size
        for candidate in (path, path.with_name(path.name + "-wal"))
        if candidate.exists()
    )


def seed_index(
    url: str,
    keyring_path: Path,
    population_numbers: Sequence[str],
    size: int,
    templates: dict[str, list[FactTemplate]],
    *,
    facts_per_subject: int,
    sample_size: int,
    progress: Progress | None = None,
) -> SeedResult:
    """Create the schema at ``url`` and store ``size`` subjects with ``facts_per_subject``
    sources' facts each (the first sources in fleet order)."""
    from sqlalchemy import Column

    from credgate.core.storage.database import create_sync_engine
    from credgate.core.storage.models import SourceFactsRow, SubjectRow
    from credgate.core.tokens import SubjectTokenizer
    from credgate.gateway.fact_index import facts_context, identity_context
    from credgate.gateway.protection.cipher import FieldCipher
    from credgate.gateway.protection.keyring import Keyring
    from credgate.gateway.storage.migrate import upgrade_to_head

    started = time.monotonic()
    upgrade_to_head(url)
    keyring = Keyring.load(keyring_path)
    cipher = FieldCipher(keyring)
    tokenizer = SubjectTokenizer(keyring.subject_token_key)
    key_id = cipher.primary_key_id
    sources = list(templates)[:facts_per_subject]

    known = list(population_numbers[:size])
    numbers = [*known, *synthetic_identity_numbers(size - len(known))]
    pairs = sorted((tokenizer.token(number), number) for number in numbers)
    del numbers

    engine = create_sync_engine(url)
    stamp_column: Column[dt.datetime] = SourceFactsRow.__table__.c.fetched_at  # type: ignore[assignment]
    to_sql = stamp_column.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
    assert to_sql is not None

    def stamp(value: dt.datetime | None) -> object:
        return None if value is None else to_sql(value)

    now = stamp(dt.datetime.now(dt.UTC))
    facts_table = SourceFactsRow.__tablename__
    subjects_table = SubjectRow.__tablename__
    insert_facts = (
        f"INSERT INTO {facts_table} (subject_token, source_id, source_kind, facts_ciphertext, "  # noqa: S608 - table names from our models
        "key_id, source_as_of, fetched_at, sequence) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"
    )
    insert_subjects = (
        f"INSERT INTO {subjects_table} (subject_token, identity_ciphertext, key_id, created_at) "  # noqa: S608
        "VALUES (?, ?, ?, ?)"
    )
    as_of = {
        source_id: [stamp(t.source_as_of) for t in templates[source_id]] for source_id in sources
    }
    rows = 0
    try:
        for start in range(0, len(pairs), CHUNK_SUBJECTS):
            chunk = pairs[start : start + CHUNK_SUBJECTS]
            subject_rows = []
            fact_rows = []
            for offset, (token, number) in enumerate(chunk):
                ordinal = start + offset
                subject_rows.append(
                    (
                        token,
                        cipher.encrypt(number.encode("utf-8"), context=identity_context(token)),
                        key_id,
                        now,
                    )
                )
                for source_id in sources:
                    choices = templates[source_id]
                    pick = ordinal % len(choices)
                    template = choices[pick]
                    fact_rows.append(
                        (
                            token,
                            source_id,
                            template.source_kind,
                            cipher.encrypt(
                                template.plaintext, context=facts_context(token, source_id)
                            ),
                            key_id,
                            as_of[source_id][pick],
                            now,
                        )
                    )
            with engine.begin() as connection:
                connection.exec_driver_sql(insert_subjects, subject_rows)
                connection.exec_driver_sql(insert_facts, fact_rows)
            rows += len(fact_rows)
            if progress is not None:
                progress.update(start + len(chunk))
    finally:
        engine.dispose()
        if progress is not None:
            progress.close()
    rng = random.Random(size)  # noqa: S311 - a reproducible sample, not a secret
    sample = tuple(token for token, _ in rng.sample(pairs, min(sample_size, len(pairs))))
    return SeedResult(
        subjects=len(pairs),
        rows=rows,
        seconds=time.monotonic() - started,
        database_bytes=_database_bytes(url),
        token_sample=sample,
    )


@dataclass(frozen=True)
class LookupResult:
    load: LoadResult
    facts_per_lookup: float


async def measure_lookups(
    url: str, keyring_path: Path, tokens: Sequence[str], *, warmup: int
) -> LookupResult:
    """Time ``FactIndex.last_known_all`` one call at a time (pure latency, no queueing) for
    each of ``tokens``, after ``warmup`` untimed calls."""
    from credgate.core.storage.database import Database
    from credgate.gateway.fact_index import FactIndex
    from credgate.gateway.protection.cipher import FieldCipher
    from credgate.gateway.protection.keyring import Keyring

    database = Database.from_url(url)
    index = FactIndex(database, FieldCipher(Keyring.load(keyring_path)))
    found = 0
    latencies: list[float] = []
    try:
        for token in tokens[:warmup]:
            await index.last_known_all(token)
        started = time.perf_counter()
        for token in tokens:
            began = time.perf_counter()
            facts = await index.last_known_all(token)
            latencies.append(time.perf_counter() - began)
            found += len(facts)
        elapsed = time.perf_counter() - started
    finally:
        await database.dispose()
    result = summarize(
        "index-lookup",
        1,
        1,
        [WorkerResult(latencies=latencies, window=elapsed, calls=len(latencies))],
    )
    return LookupResult(result, found / len(tokens) if tokens else 0.0)
