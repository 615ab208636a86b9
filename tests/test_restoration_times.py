"""Restoration times (ReconciliationService.ListRestorationTimes), on SQLite and PostgreSQL.

Real gateways with the scripted providers pushing over mutual TLS (the registry first, then the
platform that records the court's ruling): a subject the registry still shows in observation is
an open restoration with the registry lagging; one no other source has a view on is agreed at
first sight; the registry's catch-up closes the first, and a platform that moves a
subject back out of RESTORED before every source agreed takes its open restoration away. The
durations, the summary's nearest-rank figures and the paging are checked exactly against the
times pushed; a bank is refused, and both the refusal and the reads are in the audit log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from credgate.adapters.mocks.population import Population, State, Subject
from credgate.adapters.mocks.providers import PLATFORM, REGISTRY
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as pb
from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as pb_grpc
from credgate.api.credit_repair.v1 import regulator_service_pb2 as reg_pb
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as reg_grpc
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.reconciliation.models import LAGGING_LENGTH, RestorationRow
from credgate.gateway.reconciliation.restorations import (
    HISTOGRAM_BOUNDS,
    Restoration,
    lagging_text,
    list_restorations,
    nearest_rank,
    record_restorations,
    summarize,
)
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import DevPki, mtls_channel
from tests.watch_support import AS_OF, Pusher, feed_document, running_gateway, update_for

WAIT = 30.0
HOUR = dt.timedelta(hours=1)


async def page(
    gateway: RunningGateway, who: str = "regulator-demo", **fields: object
) -> pb.ListRestorationTimesResponse:
    async with mtls_channel(gateway.pki, gateway.port, who) as channel:
        stub = pb_grpc.ReconciliationServiceStub(channel)
        request = pb.ListRestorationTimesRequest(**fields)  # type: ignore[arg-type]
        answer: pb.ListRestorationTimesResponse = await stub.ListRestorationTimes(
            request, timeout=10
        )
        return answer


async def every_page(
    gateway: RunningGateway, *, page_size: int = 0, open_only: bool = False
) -> tuple[list[pb.RestorationTime], pb.RestorationSummary]:
    found: list[pb.RestorationTime] = []
    token = ""
    while True:
        answer = await page(gateway, page_size=page_size, page_token=token, open_only=open_only)
        found += answer.restorations
        token = answer.next_page_token
        if not token:
            return found, answer.summary


async def eventually(
    gateway: RunningGateway, check: Callable[[dict[str, pb.RestorationTime]], bool]
) -> dict[str, pb.RestorationTime]:
    """The listing by subject token once ``check`` holds (the reconciler runs behind)."""
    async with asyncio.timeout(WAIT):
        while True:
            listed, _ = await every_page(gateway)
            by_token = {r.subject_token: r for r in listed}
            if check(by_token):
                return by_token
            await asyncio.sleep(0.1)


async def push(pusher: Pusher, *changes: tuple[Subject, State, dt.datetime]) -> None:
    """Push ``changes`` in one go, numbered on from the pusher's history."""
    first = pusher.next_sequence
    await pusher.push(
        update_for(pusher.script, subject, state, as_of, first + i)
        for i, (subject, state, as_of) in enumerate(changes)
    )


def _time(stamp: object) -> dt.datetime:
    return stamp.ToDatetime(tzinfo=dt.UTC)  # type: ignore[attr-defined, no-any-return]


async def test_restorations_are_timed_from_the_ruling_until_every_source_agrees(
    dev_pki: DevPki, tmp_path: Path, database_url: str, population: Population
) -> None:
    document = feed_document(dev_pki, tmp_path, database_url)
    keyring = Keyring.load(tmp_path / "keyring.json")
    tokenizer = SubjectTokenizer(keyring.subject_token_key)
    lagging, agreed, withdrawn = (
        population.scenarios[name]
        for name in ("observation", "restored_reorganization", "disclosure_suspended")
    )
    a, b, c = (tokenizer.token(s.person.identity_number) for s in (lagging, agreed, withdrawn))
    ruled = {a: AS_OF, b: AS_OF + HOUR, c: AS_OF + 2 * HOUR}
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        registry = Pusher(REGISTRY, dev_pki, gateway.port)
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        earlier = AS_OF - dt.timedelta(days=1)
        await push(
            registry,
            (lagging, State.OBSERVATION, earlier),
            (withdrawn, State.OBSERVATION, earlier),
        )
        await push(
            platform,
            (lagging, State.RESTORED, ruled[a]),
            (agreed, State.RESTORED, ruled[b]),
            (withdrawn, State.RESTORED, ruled[c]),
        )
        listed = await eventually(
            gateway,
            lambda found: set(found) == {a, b, c} and not found[b].open and found[a].open,
        )
        for token in (a, c):
            item = listed[token]
            assert (item.open, list(item.lagging_source_ids)) == (True, [REGISTRY.source_id])
            assert not item.HasField("agreed_time")
        for token, item in listed.items():
            assert item.ruling_source_id == PLATFORM.source_id
            assert _time(item.ruling_time) == ruled[token]
        first_sight = listed[b]
        assert list(first_sight.lagging_source_ids) == []
        assert _time(first_sight.agreed_time) == _time(first_sight.first_seen_time)
        assert first_sight.duration.ToTimedelta() == _time(first_sight.agreed_time) - ruled[b]

        # The registry catches up with the court's ruling for the first subject.
        catch_up_sent = dt.datetime.now(dt.UTC)
        await registry.push([registry.update(lagging, State.RESTORED, AS_OF + 3 * HOUR)])
        listed = await eventually(gateway, lambda found: not found[a].open)
        closed = listed[a]
        assert list(closed.lagging_source_ids) == []
        assert _time(closed.agreed_time) >= catch_up_sent
        assert closed.duration.ToTimedelta() == _time(closed.agreed_time) - ruled[a]

        # The page, the filter and the summary.
        before = dt.datetime.now(dt.UTC)
        everything, summary = await every_page(gateway)
        after = dt.datetime.now(dt.UTC)
        assert [r.subject_token for r in (await every_page(gateway, page_size=1))[0]] == [
            r.subject_token for r in everything
        ]
        still_open, _ = await every_page(gateway, open_only=True)
        assert [r.subject_token for r in still_open] == [c]
        age = next(r for r in everything if r.subject_token == c).duration.ToTimedelta()
        assert before - ruled[c] <= age <= after - ruled[c]
        durations = sorted(listed[t].duration.ToTimedelta() for t in (a, b))
        assert (summary.agreed_count, summary.open_count) == (2, 1)
        assert summary.median.ToTimedelta() == durations[nearest_rank(2, 50)] == durations[0]
        assert summary.p90.ToTimedelta() == durations[nearest_rank(2, 90)] == durations[1]
        assert summary.max.ToTimedelta() == durations[1]
        assert before - ruled[c] <= summary.oldest_open_age.ToTimedelta() <= after - ruled[c]
        bounds = [*HISTOGRAM_BOUNDS, None]
        assert [
            (b.upper_bound.ToTimedelta() if b.HasField("upper_bound") else None)
            for b in summary.histogram
        ] == bounds
        lower = [dt.timedelta(0), *HISTOGRAM_BOUNDS]
        assert [b.count for b in summary.histogram] == [
            sum(1 for d in durations if lower[i] <= d and (bound is None or d < bound))
            for i, bound in enumerate(bounds)
        ]

        # The platform moves the third subject out of RESTORED before the registry agreed:
        # there is no restoration left to finish.
        await platform.push([platform.update(withdrawn, State.OBSERVATION, AS_OF + 4 * HOUR)])
        await eventually(gateway, lambda found: set(found) == {a, b})
        _, summary = await every_page(gateway)
        assert (summary.agreed_count, summary.open_count) == (2, 0)
        assert not summary.HasField("oldest_open_age")

        # Regulators only; the refusal is recorded, as every read was.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await page(gateway, "bank-demo")
        info = parse_error(caught.value).error_info
        assert (caught.value.code(), info.reason if info else "") == (
            grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_PERMITTED")  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await page(gateway, page_token="forged")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        async with mtls_channel(gateway.pki, gateway.port, "regulator-demo") as channel:
            entries = await reg_grpc.RegulatorServiceStub(channel).ListAuditEntries(
                reg_pb.ListAuditEntriesRequest(page_size=1000), timeout=10
            )
        reads = [
            r.entry
            for r in entries.records
            if r.entry.action == audit_pb2.AUDIT_ACTION_READ_RESTORATION_TIMES
        ]
        assert [e.reason for e in reads if e.institution_id == "bank-demo"] == [
            "ROLE_NOT_PERMITTED"
        ]
        regulator_reads = [e for e in reads if e.institution_id == "regulator-demo"]
        assert regulator_reads
        assert all(e.reason == "ALLOWED" and not e.subject_token for e in regulator_reads)


def test_a_long_list_of_lagging_sources_is_cut_at_whole_ids() -> None:
    ids = [f"source-{i:03d}-" + "x" * 100 for i in range(20)]
    text = lagging_text(ids)
    assert len(text) <= LAGGING_LENGTH
    assert text.split() == ids[: len(text.split())]
    assert len(text.split()) == 9  # 9 ids of 111 characters and their spaces fit in 1024
    assert lagging_text(["a", "b"]) == "a b"


def test_nearest_rank_positions() -> None:
    assert [nearest_rank(n, 50) for n in (1, 2, 3, 4, 10)] == [0, 0, 1, 1, 4]
    assert [nearest_rank(n, 90) for n in (1, 2, 3, 10, 11)] == [0, 1, 2, 8, 9]


async def test_the_rules_for_a_withdrawn_and_a_repeated_restoration(database: Database) -> None:
    """The transitions the pushes above do not reach: an agreed restoration whose state goes
    away is kept, marked withdrawn; a restoration after that replaces it; a lagging source
    after agreement does not reopen it. On both backends, through the reconciler's writer."""
    token = "st_" + "a" * 32
    t0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

    async def record(restoration: Restoration | None, now: dt.datetime) -> list[RestorationRow]:
        await database.threaded.write(
            lambda connection: record_restorations(connection, {token: restoration}, now)
        )
        return await list_restorations(database)

    [row] = await record(Restoration("court", t0, ("bank",)), t0 + HOUR)
    assert (row.agreed_at, row.lagging, row.first_seen) == (None, "bank", t0 + HOUR)
    [row] = await record(Restoration("court", t0, ()), t0 + 3 * HOUR)
    assert (row.agreed_at, row.duration_micros) == (t0 + 3 * HOUR, 3 * 3600 * 10**6)
    first_id = row.restoration_id
    [row] = await record(Restoration("court", t0, ("bank",)), t0 + 4 * HOUR)  # a later lag
    assert (row.agreed_at, row.lagging, row.withdrawn_at) == (t0 + 3 * HOUR, "", None)
    [row] = await record(None, t0 + 5 * HOUR)  # the ruling revoked after agreement
    assert (row.restoration_id, row.withdrawn_at) == (first_id, t0 + 5 * HOUR)
    later = t0 + dt.timedelta(days=30)
    [row] = await record(Restoration("court", later, ("bank",)), later + HOUR)  # restored again
    assert (row.ruled_at, row.first_seen) == (later, later + HOUR)  # a new restoration
    assert (row.agreed_at, row.withdrawn_at, row.duration_micros) == (None, None, None)
    summary = await summarize(database)
    assert (summary.agreed, summary.open, summary.oldest_open_ruling) == (0, 1, later)
    # Revoked before anyone agreed: nothing to finish.
    assert await record(None, later + 2 * HOUR) == []
