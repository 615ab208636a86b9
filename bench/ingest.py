"""Provider-sync ingest: updates per second with durable acks, on SQLite and on PostgreSQL.

One registered provider (the mock disclosure platform, ``adapters.mocks.providers.PLATFORM``)
streams its whole update history for the synthetic population to a gateway started in its own
process (``bench.servers``), through the reference client ``core.sync.provider_client``. The
client counts an update as done only when the gateway acknowledges it, and the gateway
acknowledges only what it has committed, so the rate is of durable ingestion. The per-update
form's updates are signed before the clock starts (the provider's cost, not the gateway's);
the batched form signs each batch as the client forms it (one signature per batch, inside the
clock).

On PostgreSQL the run gets a schema of its own (``credgate_bench_<random>``, selected through
the connection's ``search_path``), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import ClientTls
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2

INGEST_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class IngestMeasurement:
    updates: int
    seconds: float
    disconnects: int
    client_cpu_seconds: float = 0.0
    """CPU of the pushing (bench) process during the push: on a small machine the provider
    shares the cores with the gateway, so this says how much of the machine the client took."""

    @property
    def updates_per_second(self) -> float:
        return self.updates / self.seconds if self.seconds > 0 else 0.0


def provider_history(seed: int, size: int) -> list[sync_pb2.SignedProviderUpdate]:
    """The platform provider's signed update history (a snapshot) for ``size`` subjects."""
    from credgate.adapters.mocks.population import build_population
    from credgate.adapters.mocks.providers import PLATFORM, update_history
    from credgate.core.sync.signing import sign_update

    history = update_history(PLATFORM, build_population(seed, size), snapshot=True)
    return [sign_update(PLATFORM.signing_key, update) for update in history]


def provider_tls(pki_directory: Path, ca: Path) -> ClientTls:
    """The platform provider's client certificate, issued into the bench PKI once."""
    from credgate.adapters.mocks.providers import PLATFORM
    from credgate.core.institution import Institution, InstitutionRole
    from credgate.gateway.pki import add_institution, institution_paths

    paths = institution_paths(pki_directory, PLATFORM.institution_id)
    if not paths.cert.exists():
        add_institution(
            pki_directory,
            Institution(PLATFORM.institution_id, InstitutionRole.INSTITUTION_ROLE_DATA_PROVIDER),
        )
    return ClientTls(ca=ca, cert=paths.cert, key=paths.key)


def provider_entries() -> list[dict[str, str]]:
    """The ``[[providers]]`` configuration that registers the platform provider."""
    from credgate.adapters.mocks.providers import PLATFORM

    return [PLATFORM.provider_entry()]


async def push(
    target: str,
    tls: ClientTls,
    signed: Sequence[sync_pb2.SignedProviderUpdate],
    *,
    batch_size: int = 256,
) -> IngestMeasurement:
    """Stream ``signed`` to the gateway at ``target`` until every update is acknowledged:
    in ``SignedUpdateBatch`` messages of ``batch_size`` (each signed as the client forms it,
    inside the clock: one signature per batch), or one update per message when it is 0."""
    from credgate.adapters.mocks.providers import PLATFORM
    from credgate.core.channel import client_channel
    from credgate.core.sync.provider_client import ProviderClient

    client = ProviderClient(
        lambda: client_channel(target, tls.ca, tls.cert, tls.key),
        signed,
        batch_key=PLATFORM.signing_key if batch_size else None,
        batch_size=max(batch_size, 1),
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    report = await client.run(timeout=INGEST_TIMEOUT_SECONDS)
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - cpu_started
    if report.acked != len(signed) or report.rejected:
        raise RuntimeError(
            f"ingest incomplete: {report.acked} of {len(signed)} acknowledged, "
            f"{len(report.rejected)} rejected"
        )
    return IngestMeasurement(len(signed), seconds, report.disconnects, client_cpu)


def measure_push(
    target: str,
    tls: ClientTls,
    signed: Sequence[sync_pb2.SignedProviderUpdate],
    *,
    batch_size: int = 256,
) -> IngestMeasurement:
    return asyncio.run(push(target, tls, signed, batch_size=batch_size))


def libpq_url(url: str) -> str:
    """``url`` as psycopg/libpq accept it (no SQLAlchemy driver suffix, password kept)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``options=-csearch_path=<schema>``, so every connection uses ``schema``."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    existing = parsed.query.get("options")
    options = f"-csearch_path={schema}"
    if isinstance(existing, str) and existing:
        options = f"{existing} {options}"
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh schema in the database at ``url``; yields ``url`` selecting it; drops it after."""
    import psycopg
    from psycopg import sql

    schema = f"credgate_bench_{secrets.token_hex(6)}"
    with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def ingest_metrics(measured: IngestMeasurement) -> dict[str, Any]:
    return {
        "updates": measured.updates,
        "seconds": measured.seconds,
        "updates_per_second": measured.updates_per_second,
        "disconnects": measured.disconnects,
        "client_cpu_ms_per_update": (
            measured.client_cpu_seconds * 1000.0 / measured.updates if measured.updates else 0.0
        ),
    }
