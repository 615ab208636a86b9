"""WatchRepairStatus: the current report, then one per change, across replicas, until revoked.

Real gateways with mutual TLS; changes come from a provider pushing over ProviderSyncService.
Storage matters here (the change feed, notifications), so the in-process tests run on SQLite
and PostgreSQL, and two real ``credgate serve`` processes share one database for the replica
test — on PostgreSQL woken by LISTEN/NOTIFY (the fallback poll is set far beyond the test's
patience, so only a notification can deliver in time), on SQLite by the short poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from opentelemetry.metrics import CallbackOptions

from credgate.adapters.mocks.population import Population, State
from credgate.adapters.mocks.providers import PLATFORM
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.channel import client_channel
from credgate.core.telemetry import instruments
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.client import CredgateClient, CredgateError, WatchedReport
from credgate.gateway.pki import institution_paths
from credgate.gateway.protection.keyring import Keyring
from tests.fixtures.pki import DevPki
from tests.sync_process import GatewayProcess, toml_document
from tests.sync_support import index_state
from tests.watch_support import (
    AS_OF,
    CASE,
    INDEX,
    JUDICIAL,
    REVIEW,
    Pusher,
    feed_document,
    grant_ongoing,
    running_gateway,
    update_for,
)

WAIT = 10.0


def judicial_query(identity_number: str) -> service_pb2.GetRepairStatusRequest:
    return service_pb2.GetRepairStatusRequest(
        identity_number=identity_number, purpose=JUDICIAL, case_reference=CASE, consistency=INDEX
    )


async def next_report(stream: AsyncIterator[WatchedReport]) -> WatchedReport:
    async with asyncio.timeout(WAIT):
        return await anext(stream)


def changes_of(report: WatchedReport) -> list[tuple[str, int]]:
    return [(c.source_id, c.sequence) for c in report.changes]


async def test_a_watcher_sees_exactly_the_changes_in_order_and_revocation_ends_it(
    dev_pki: DevPki, tmp_path: Path, database_url: str, population: Population
) -> None:
    subject = population.scenarios["observation"]
    bystander = population.scenarios["revoked"]
    document = feed_document(dev_pki, tmp_path, database_url)
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        await platform.push([platform.update(subject, State.PROCEDURE_PENDING, AS_OF)])
        grant = await grant_ongoing(gateway, subject.person.identity_number)
        query = service_pb2.GetRepairStatusRequest(
            identity_number=subject.person.identity_number,
            purpose=REVIEW,
            consent_id=grant.consent_id,
            consistency=INDEX,
        )
        async with gateway.client("bank-demo") as bank:
            stream = aiter(bank.watch_repair_status(query))
            first = await next_report(stream)
            assert first.changes == ()
            assert first.report.state == vocab.REPAIR_STATE_PROCEDURE_PENDING
            assert first.report.consent_id == grant.consent_id
            assert first.report.recipient_institution_id == "bank-demo"
            assert _open_watchers_gauge() == 1  # credgate.sync.watchers.open

            seen: list[tuple[str, int]] = []
            for days, state in ((30, State.OBSERVATION), (60, State.REVOKED)):
                bystanders = platform.update(bystander, state, AS_OF + dt.timedelta(days=days))
                await platform.push([bystanders])  # another subject: no report
                change = platform.update(subject, state, AS_OF + dt.timedelta(days=days))
                await platform.push([change])
                report = await next_report(stream)
                assert changes_of(report) == [(PLATFORM.source_id, change.sequence)]
                assert report.report.state == vocab.RepairState.Value(f"REPAIR_STATE_{state}")
                seen += changes_of(report)
            # Older facts do not change the index, so they are no change: no report for them.
            await platform.push([platform.update(subject, State.RESTORED, AS_OF)])
            last = platform.update(subject, State.OBSERVATION, AS_OF + dt.timedelta(days=90))
            await platform.push([last])
            report = await next_report(stream)
            seen += changes_of(report)
            assert seen == [(PLATFORM.source_id, s) for s in (3, 5, 7)]
            ids = [c.change_id for c in report.changes]
            assert ids == sorted(ids)

            started = time.monotonic()
            await bank.revoke_consent(grant.consent_id)
            with pytest.raises(CredgateError) as ended:
                await next_report(stream)  # the periodic re-check ends the quiet stream
            assert (ended.value.code, ended.value.reason) == (
                grpc.StatusCode.PERMISSION_DENIED, "CONSENT_REVOKED")  # fmt: skip
            assert time.monotonic() - started < WAIT
        await _until(lambda: gateway.gateway.followers.feed.open_watchers == 0)  # type: ignore[union-attr]


async def test_revocation_ends_the_stream_at_the_next_change(
    dev_pki: DevPki, tmp_path: Path, population: Population
) -> None:
    subject = population.scenarios["disclosure_suspended"]
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    document = feed_document(dev_pki, tmp_path, url, watch={"recheck_seconds": 600})
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        await platform.push([platform.update(subject, State.OBSERVATION, AS_OF)])
        grant = await grant_ongoing(gateway, subject.person.identity_number)
        query = service_pb2.GetRepairStatusRequest(
            identity_number=subject.person.identity_number, purpose=REVIEW,
            consent_id=grant.consent_id, consistency=INDEX,
        )  # fmt: skip
        async with gateway.client("bank-demo") as bank:
            stream = aiter(bank.watch_repair_status(query))
            await next_report(stream)
            await bank.revoke_consent(grant.consent_id)
            await platform.push(
                [platform.update(subject, State.DISCLOSURE_SUSPENDED, AS_OF + dt.timedelta(1))]
            )
            with pytest.raises(CredgateError) as ended:
                await next_report(stream)
            assert ended.value.reason == "CONSENT_REVOKED"


async def test_watching_needs_a_named_grant_that_allows_ongoing_updates(
    dev_pki: DevPki, tmp_path: Path, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    async with running_gateway(dev_pki, tmp_path, feed_document(dev_pki, tmp_path, url)) as gw:
        single = await grant_ongoing(gw, number, ongoing=False)
        async with gw.client("bank-demo") as bank:
            for consent_id, code, reason in (
                (single.consent_id, grpc.StatusCode.PERMISSION_DENIED,
                 "ONGOING_UPDATES_NOT_CONSENTED"),
                ("", grpc.StatusCode.INVALID_ARGUMENT, "CONSENT_ID_REQUIRED"),
            ):  # fmt: skip
                query = service_pb2.GetRepairStatusRequest(
                    identity_number=number, purpose=REVIEW, consent_id=consent_id
                )
                with pytest.raises(CredgateError) as refused:
                    await next_report(aiter(bank.watch_repair_status(query)))
                assert (refused.value.code, refused.value.reason) == (code, reason)
            # The same grant still answers single queries.
            report = await bank.get_repair_status(
                number, purpose=REVIEW, consent_id=single.consent_id, consistency=INDEX
            )
            assert report.consent_id == single.consent_id
        async with gw.client("lessor-demo") as lessor:  # a role the purpose does not allow
            with pytest.raises(CredgateError) as refused:
                await next_report(aiter(lessor.watch_repair_status(judicial_query(number))))
            assert refused.value.reason == "ROLE_NOT_PERMITTED"


async def test_a_slow_watcher_is_dropped_while_ingest_runs_at_full_speed(
    dev_pki: DevPki, tmp_path: Path, population: Population
) -> None:
    """One client never reads: its small window fills, the report write blocks, its queue
    overflows and it is dropped WATCHER_TOO_SLOW. Ingest meanwhile runs as fast as without it
    (the feed reader only ever offers, never waits), and a client that does read, watching the
    same subject through the same burst, keeps up and sees every change in order."""
    watched = population.scenarios["observation"]
    others = [s for s in population if s.case is not None and s is not watched][:40]
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    document = feed_document(
        dev_pki,
        tmp_path,
        url,
        # Small batches: a batch announces each subject it changes once, so the watched
        # subject changes about once per batch.
        sync={"max_batch": 16, "queue_size": 16},
        watch={"queue_size": 32, "max_write_seconds": 600},
    )
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        feed = gateway.gateway.followers.feed  # type: ignore[union-attr]
        query = judicial_query(watched.person.identity_number)

        def burst(first_minute: int, count: int) -> list[sync_pb2.ProviderUpdate]:
            """``count`` updates of 40 subjects, every 40th one of the watched subject."""
            return [
                update_for(
                    PLATFORM,
                    watched if i % 40 == 0 else others[i % len(others)],
                    State.OBSERVATION,
                    AS_OF + dt.timedelta(minutes=first_minute + i),
                    platform.next_sequence + i,
                )
                for i in range(count)
            ]

        async def timed_push(updates: list[sync_pb2.ProviderUpdate]) -> float:
            started = time.perf_counter()
            await platform.push(updates)
            return time.perf_counter() - started

        await platform.push([platform.update(watched, State.OBSERVATION, AS_OF)])
        keyring = Keyring.load(tmp_path / "keyring.json")
        tokens = SubjectTokenizer(keyring.subject_token_key)
        seen: list[tuple[str, int]] = []
        async with gateway.client("court-demo") as court:
            reader = asyncio.create_task(_follow(court.watch_repair_status(query), seen))
            await _until(lambda: feed.open_watchers == 1)
            baseline = await timed_push(burst(1, 3200))

            paths = institution_paths(dev_pki.paths.directory, "court-demo")
            slow = client_channel(
                gateway.target, dev_pki.paths.ca_cert, paths.cert, paths.key,
                # A small receive window (8 KiB), never enlarged: a few reports fill it.
                options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 8192)],
            )  # fmt: skip
            async with slow:
                call = service_grpc.RepairStatusServiceStub(slow).WatchRepairStatus(
                    service_pb2.WatchRepairStatusRequest(query=query)
                )
                await call.initial_metadata()
                await _until(lambda: feed.open_watchers == 2)
                with_slow_watcher = await timed_push(burst(4000, 3200))
                await _until(lambda: feed.open_watchers == 1)  # dropped, not waited for
                received: list[service_pb2.WatchRepairStatusResponse] = []
                with pytest.raises(grpc.aio.AioRpcError) as dropped:
                    await _read_all(call, received)  # it reads at last: what fit, then status
            state = await index_state(gateway.gateway.database, keyring, PLATFORM.source_id)
            token = tokens.token(watched.person.identity_number)
            expected = [(PLATFORM.source_id, q) for _, t, q in state.feed[1:] if t == token]
            await _until(lambda: len(seen) >= len(expected))
            reader.cancel()
        error = CredgateError(dropped.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCHER_TOO_SLOW")  # fmt: skip
        assert 0 < len(received) < 100
        assert len(expected) > 2 * (32 + 8)  # the slow watcher's queue had to overflow
        assert seen == expected  # the reading watcher: every change, once, in order
        assert with_slow_watcher < baseline * 2, (baseline, with_slow_watcher)


async def _follow(stream: AsyncIterator[WatchedReport], into: list[tuple[str, int]]) -> None:
    async for watched in stream:
        into += changes_of(watched)


async def test_a_change_on_one_replica_reaches_a_watcher_on_another(
    dev_pki: DevPki, tmp_path: Path, database_url: str, population: Population
) -> None:
    """Two ``credgate serve`` processes on one database; the provider pushes to replica A, the
    court watches on replica B."""
    subject = population.scenarios["procedure_pending"]
    postgres = database_url.startswith("postgresql")
    watch = {"notified_poll_seconds": 600.0} if postgres else {"poll_seconds": 0.1}
    document = feed_document(dev_pki, tmp_path, database_url, watch=watch)
    document.pop("consent")  # not needed; keeps the config to scalars and arrays of tables
    Keyring.load(tmp_path / "keyring.json")  # sync_document created it; both replicas share it
    replicas = []
    for name in ("a", "b"):
        config = tmp_path / f"replica-{name}.toml"
        config.write_text(toml_document(document), encoding="utf-8")
        replicas.append(GatewayProcess(config, tmp_path / f"replica-{name}.log"))
    async with contextlib.AsyncExitStack() as stack:
        for replica in replicas:
            await replica.start()  # one after the other: the first creates the signing keys
            stack.push_async_callback(replica.stop)
        a, b = replicas
        platform = Pusher(PLATFORM, dev_pki, a.port)
        await platform.push([platform.update(subject, State.PROCEDURE_PENDING, AS_OF)])
        paths = institution_paths(dev_pki.paths.directory, "court-demo")
        target = f"127.0.0.1:{b.port}"
        channel = client_channel(target, dev_pki.paths.ca_cert, paths.cert, paths.key)
        async with CredgateClient(channel) as court:
            query = judicial_query(subject.person.identity_number)
            stream = aiter(court.watch_repair_status(query))
            first = await next_report(stream)
            assert first.report.state == vocab.REPAIR_STATE_PROCEDURE_PENDING
            for days, state in ((10, State.OBSERVATION), (20, State.DISCLOSURE_SUSPENDED)):
                change = platform.update(subject, state, AS_OF + dt.timedelta(days=days))
                started = time.monotonic()
                await platform.push([change])
                report = await next_report(stream)  # well before any fallback poll
                assert changes_of(report) == [(PLATFORM.source_id, change.sequence)]
                assert report.report.state == vocab.RepairState.Value(f"REPAIR_STATE_{state}")
                assert time.monotonic() - started < WAIT
        tokens = SubjectTokenizer(Keyring.load(tmp_path / "keyring.json").subject_token_key)
        assert first.report.subject_token == tokens.token(subject.person.identity_number)


def _open_watchers_gauge() -> float:
    """What the open-watchers gauge reports right now (every replica in this process)."""
    return sum(o.value for o in instruments._observe_watchers(CallbackOptions()))


async def _read_all(
    call: AsyncIterator[service_pb2.WatchRepairStatusResponse],
    into: list[service_pb2.WatchRepairStatusResponse],
) -> None:
    async for response in call:
        into.append(response)


async def _until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``condition`` (state of the gateway under test, which signals nothing)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
