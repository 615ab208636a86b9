"""Key rotation under traffic, with no restart and not one failed call (issue #18 item 1).

Real gateways (``build_gateway``: mTLS, audit, workflows) in front of the mock source fleet.
Two replicas share one PostgreSQL database, each with its own copy of the keyring file, and
the multi-replica steps of docs/deployment.md run while clients read from both without pause:
``keys add`` → copy the file → ``keys promote`` → copy → ``keys reencrypt``, then
``keys rotate-signing`` on the shared signing-key file. Every call must
succeed and return what it returned before the rotation — INDEX-mode reports with all their
facts, batches, the subject's objections with their sealed words — and each replica must write
under the promoted key without a restart. At the end the old key is taken out of both rings and
everything still reads: nothing was left under it. The same runs on one SQLite node with
``keys rotate`` and a keyring file torn mid-copy while the gateway serves.

Against the gateway before issue #18 (keyring read once at start) the two-replica run fails:
replica B cannot read what A writes after the promotion (INTERNAL UnknownKeyError).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from sqlalchemy import select

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.core.channel import client_channel
from credgate.core.secret_files import write_secret
from credgate.core.storage.models import SourceFactsRow
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.app import Gateway, build_gateway
from credgate.gateway.config import GatewayConfig, config_from_mapping
from credgate.gateway.data_key_rotation import (
    ENCRYPTED_COLUMNS,
    add_data_key,
    promote_data_key,
    reencrypt_records,
    rotate_keys,
)
from credgate.gateway.pki import institution_paths
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.report_signing_keys import FILE_NAME as SIGNING_FILE
from credgate.gateway.report_signing_keys import ReportSigner, rotate_signing_key
from credgate.gateway.storage.reencrypt import count_stale
from credgate.gateway.workflows.models import ObjectionRow
from tests.fixtures.mocks import RunningGateway, gateway_document, unstale
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, enrol_subject, issue_subject_certificate
from tests.watch_support import CASE, INDEX, JUDICIAL, LIVE

_SINGLE = (str, bytes, int, float, Message)
"""A singular field's value (everything else ``ListFields`` gives is a repeated container)."""
RELOAD_SECONDS = 0.2
WAIT = 30.0
"""Generous bound for anything awaited (CPU is shared with other test runs)."""
CALLS_PER_PHASE = 4
"""Rounds of reads each replica must complete between two rotation steps."""
READ_SCENARIOS = ("observation", "revoked", "procedure_pending")


def _keyring_path(directory: Path, name: str) -> Path:
    return directory / f"keyring-{name}.json"


def _document(
    fleet: MockFleet, pki: DevPki, directory: Path, url: str, name: str
) -> dict[str, Any]:
    """Replica ``name``'s configuration: the shared data directory (signing and audit keys),
    the shared database, and its own keyring file."""
    document = gateway_document(fleet, pki, directory, url)
    document["keys"] = {
        "keyring": str(_keyring_path(directory, name)),
        "reload_seconds": RELOAD_SECONDS,
    }
    return document


def distribute(source: Path, target: Path) -> None:
    """The operator copies the keyring to a replica (atomically: write, then rename)."""
    write_secret(target, source.read_bytes(), exclusive=False)


@contextlib.asynccontextmanager
async def replica(
    document: dict[str, Any], directory: Path, pki: DevPki
) -> AsyncIterator[tuple[RunningGateway, GatewayConfig]]:
    config = config_from_mapping(document, base_dir=directory, environ={})
    built = await build_gateway(config)
    port = await built.start()
    try:
        yield RunningGateway(built, port, pki), config
    finally:
        async with asyncio.timeout(60):
            await built.stop(0)


def _shape(report: report_pb2.RepairStatusReport) -> tuple[Any, ...]:
    """What must not change across a rotation: the state, every source and how many facts
    each holds (provenance times may move when a source is asked again)."""
    facts = {
        s.source_id: sum(len(v) for _, v in s.ListFields() if not isinstance(v, _SINGLE))
        for s in report.sources
    }
    return report.state, tuple(sorted(facts.items())), len(report.failures)


def _objections(answer: obj_pb2.ListObjectionsResponse) -> list[tuple[str, str, int]]:
    return sorted((o.objection_id, o.requested_correction, len(o.steps)) for o in answer.objections)


@dataclasses.dataclass
class Traffic:
    """Clients reading from every replica until told to stop; every call is checked."""

    numbers: list[str]
    expected: dict[str, tuple[Any, ...]]
    subject: Subject
    expected_objections: list[tuple[str, str, int]]
    rounds: Counter[str] = dataclasses.field(default_factory=Counter)
    calls: Counter[str] = dataclasses.field(default_factory=Counter)
    failures: list[str] = dataclasses.field(default_factory=list)
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    async def run(self, name: str, gateway: RunningGateway) -> None:
        pki = gateway.pki.paths.directory
        paths = institution_paths(pki, self.subject.institution_id)
        async with (
            gateway.client("court-demo") as court,
            client_channel(gateway.target, pki / "ca.pem", paths.cert, paths.key) as channel,
        ):
            objections = obj_grpc.ObjectionServiceStub(channel)
            while not self.stop.is_set():
                for number in self.numbers:
                    await self._call(name, f"INDEX {number[-4:]}", self._index(court, number))
                await self._call(name, "batch", self._batch(court))
                await self._call(name, "ListObjections", self._list(objections))
                self.rounds[name] += 1

    async def _call(self, name: str, what: str, check: Awaitable[str | None]) -> None:
        self.calls[name] += 1
        try:
            wrong = await check
        except Exception as error:  # the count of these is what the test is about
            wrong = f"{type(error).__name__}: {error}"
        if wrong is not None:
            self.failures.append(f"{name} {what}: {wrong}")

    async def _index(self, court: Any, number: str) -> str | None:
        report = await court.get_repair_status(
            number, purpose=JUDICIAL, case_reference=CASE, consistency=INDEX
        )
        got = _shape(report)
        return None if got == self.expected[number] else f"{got} != {self.expected[number]}"

    async def _batch(self, court: Any) -> str | None:
        items = [
            service_pb2.GetRepairStatusRequest(
                identity_number=n, purpose=JUDICIAL, case_reference=CASE, consistency=INDEX
            )
            for n in self.numbers
        ]
        results = await court.batch_get_repair_status(items)
        for number, result in zip(self.numbers, results, strict=True):
            if result.HasField("error"):
                return f"item {number[-4:]}: {result.error.message}"
            if _shape(result.report) != self.expected[number]:
                return f"item {number[-4:]}: {_shape(result.report)}"
        return None

    async def _list(self, stub: obj_grpc.ObjectionServiceStub) -> str | None:
        answer = await stub.ListObjections(obj_pb2.ListObjectionsRequest(), timeout=10)
        got = _objections(answer)
        # Every objection known to exist, exactly as it was; one filed a moment ago on another
        # replica may also be listed (it must be whole: its sealed words opened).
        whole = all(words and steps for _, words, steps in got)
        return None if whole and set(self.expected_objections) <= set(got) else f"{got}"

    async def progress(self, names: tuple[str, ...]) -> None:
        """Wait until every replica has served ``CALLS_PER_PHASE`` more rounds of reads."""
        start = {name: self.rounds[name] for name in names}
        async with asyncio.timeout(WAIT):
            while any(self.rounds[n] < start[n] + CALLS_PER_PHASE for n in names):  # noqa: ASYNC110
                await asyncio.sleep(0.02)


def _signs_with(signer: ReportSigner, key_id: str) -> bool:
    return signer.current_key_id == key_id


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def _file_objection(
    gateway: RunningGateway, subject: Subject, request_id: str, source_id: str = "credit-registry"
) -> str:
    """The subject objects to a source's case (it goes to the source: stays open, its words
    sealed)."""
    async with gateway.client("court-demo") as court:
        report = await court.get_repair_status(
            subject.identity_number, purpose=JUDICIAL, case_reference=CASE, consistency=LIVE
        )
    facts = next(s for s in report.sources if s.source_id == source_id)
    record_id = facts.cases[0].provenance.source_record_id
    pki = gateway.pki.paths.directory
    paths = institution_paths(pki, subject.institution_id)
    async with client_channel(gateway.target, pki / "ca.pem", paths.cert, paths.key) as channel:
        answer = await obj_grpc.ObjectionServiceStub(channel).FileObjection(
            obj_pb2.FileObjectionRequest(
                request_id=request_id,
                identity_number=subject.identity_number,
                fact=obj_pb2.FactReference(source_id=source_id, source_record_id=record_id),
                aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
                requested_correction=f"the case stage shown is wrong ({request_id})",
            ),
            timeout=10,
        )
    return str(answer.objection.objection_id)


async def _prepare(
    gateway: RunningGateway, population: Population
) -> tuple[list[str], dict[str, tuple[Any, ...]], Subject]:
    """Index the read subjects (a LIVE answer stores its facts) and record what INDEX says."""
    numbers = [population.scenarios[s].person.identity_number for s in READ_SCENARIOS]
    expected: dict[str, tuple[Any, ...]] = {}
    async with gateway.client("court-demo") as court:
        for number in numbers:  # the setup needs every source's facts, not their timing
            await unstale(
                functools.partial(
                    court.get_repair_status,
                    number,
                    purpose=JUDICIAL,
                    case_reference=CASE,
                    consistency=LIVE,
                )
            )
        await gateway.gateway.engine._index.flush()
        for number in numbers:
            report = await court.get_repair_status(
                number, purpose=JUDICIAL, case_reference=CASE, consistency=INDEX
            )
            assert not report.failures  # really from the index
            assert report.sources
            expected[number] = _shape(report)
    subject = await enrol_subject(gateway, numbers[0])
    issue_subject_certificate(gateway, subject)
    return numbers, expected, subject


async def _list_objections(gateway: RunningGateway, subject: Subject) -> list[Any]:
    pki = gateway.pki.paths.directory
    paths = institution_paths(pki, subject.institution_id)
    async with client_channel(gateway.target, pki / "ca.pem", paths.cert, paths.key) as channel:
        answer = await obj_grpc.ObjectionServiceStub(channel).ListObjections(
            obj_pb2.ListObjectionsRequest(), timeout=10
        )
    return _objections(answer)


async def _key_ids(built: Gateway, model: Any, token: str) -> set[str]:
    async with built.database.session() as session:
        rows = await session.scalars(select(model.key_id).where(model.subject_token == token))
        return set(rows)


async def _reencrypt_until_done(config: GatewayConfig) -> int:
    """Step 3, repeated until it reports 0 (docs/deployment.md)."""
    total = 0
    for _ in range(5):
        moved = await reencrypt_records(config)
        total += moved
        if moved == 0:
            return total
    raise AssertionError("re-encryption never reached 0")


def _without_key(path: Path, key_id: str) -> None:
    """Rewrite the keyring file without ``key_id`` (a retired key), atomically."""
    ring = Keyring.load(path)
    kept = Keyring(
        subject_token_key=ring.subject_token_key,
        data_keys={k: v for k, v in ring._data_keys.items() if k != key_id},
        primary_key_id=ring.primary_key_id,
    )
    write_secret(path, kept._to_json(), exclusive=False)


async def test_two_replicas_rotate_under_traffic_with_zero_failed_calls(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    mock_fleet: MockFleet,
    population: Population,
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share PostgreSQL; one SQLite node: the single-node test below")
    path_a, path_b = _keyring_path(tmp_path, "a"), _keyring_path(tmp_path, "b")
    Keyring.generate(path_a)
    distribute(path_a, path_b)  # the same keyring on both replicas
    old = Keyring.load(path_a).primary_key_id
    tokens = SubjectTokenizer(Keyring.load(path_a).subject_token_key)
    doc_a = _document(mock_fleet, dev_pki, tmp_path, database_url, "a")
    doc_b = _document(mock_fleet, dev_pki, tmp_path, database_url, "b")
    async with contextlib.AsyncExitStack() as stack:
        a, config_a = await stack.enter_async_context(replica(doc_a, tmp_path, dev_pki))
        b, _ = await stack.enter_async_context(replica(doc_b, tmp_path, dev_pki))
        numbers, expected, subject = await _prepare(a, population)
        first = await _file_objection(a, subject, "before-rotation")
        traffic = Traffic(numbers, expected, subject, await _list_objections(a, subject))
        assert [o[0] for o in traffic.expected_objections] == [first]
        readers = [
            asyncio.create_task(traffic.run("a", a)),
            asyncio.create_task(traffic.run("b", b)),
        ]
        both = ("a", "b")
        try:
            await traffic.progress(both)

            # 1. A new key, not yet primary, copied to every replica.
            new = add_data_key(config_a)
            distribute(path_a, path_b)
            await traffic.progress(both)

            # 2. Promote it and copy again; each replica writes under it within reload_seconds.
            promote_data_key(config_a, new)
            distribute(path_a, path_b)
            assert a.gateway.keys is not None
            assert b.gateway.keys is not None
            keys_a, keys_b = a.gateway.keys, b.gateway.keys
            await _until(
                lambda: keys_a.current().primary_key_id == keys_b.current().primary_key_id == new
            )
            # Writes under the new key on B, read on A (and by the traffic on both): a fresh
            # subject's facts, and a second objection with its sealed words.
            fresh = population.scenarios["disclosure_suspended"].person.identity_number
            async with b.client("court-demo") as court:
                await court.get_repair_status(
                    fresh, purpose=JUDICIAL, case_reference=CASE, consistency=LIVE
                )
            await b.gateway.engine._index.flush()
            assert await _key_ids(b.gateway, SourceFactsRow, tokens.token(fresh)) == {new}
            second = await _file_objection(b, subject, "after-promotion", "disclosure-platform")
            assert await _key_ids(a.gateway, ObjectionRow, tokens.token(numbers[0])) == {
                old,
                new,
            }
            traffic.expected_objections = await _list_objections(a, subject)
            assert {o[0] for o in traffic.expected_objections} == {first, second}
            assert await _list_objections(b, subject) == traffic.expected_objections
            await traffic.progress(both)

            # 3. Move every old record onto the new key, while both replicas read.
            moved = await _reencrypt_until_done(config_a)
            assert moved > 0
            await traffic.progress(both)

            # The report-signing key rotates too (one file, shared): both replicas sign with
            # the new key within reload_seconds, and the clients (which verify every report)
            # fetch it when they first meet it.
            signing = rotate_signing_key(tmp_path / SIGNING_FILE)
            for running in (a, b):
                signer = running.gateway.signer
                assert signer is not None
                await _until(functools.partial(_signs_with, signer, signing))
                async with running.client("court-demo") as court:
                    fresh_report = await court.get_signed_repair_status(
                        numbers[0], purpose=JUDICIAL, case_reference=CASE, consistency=INDEX
                    )
                assert fresh_report.signed.key_id == signing
            await traffic.progress(both)
        finally:
            traffic.stop.set()
            await asyncio.gather(*readers, return_exceptions=True)
        for task in readers:
            task.result()  # a reader that crashed (not a failed call) fails here
        assert traffic.failures == [], traffic.failures[:10]
        assert min(traffic.calls["a"], traffic.calls["b"]) >= 4 * CALLS_PER_PHASE * 5

        # After: nothing is left under the old key, and with it gone from both rings every
        # record still reads on both replicas.
        for column in ENCRYPTED_COLUMNS:
            assert await count_stale(a.gateway.database, column, new) == 0, column.table
        for path in (path_a, path_b):
            _without_key(path, old)
        await _until(lambda: not keys_a.current().holds(old) and not keys_b.current().holds(old))
        traffic.stop = asyncio.Event()
        for name, gateway in (("a", a), ("b", b)):
            task = asyncio.create_task(traffic.run(name, gateway))
            await traffic.progress((name,))
            traffic.stop.set()
            await task
            traffic.stop = asyncio.Event()
        assert traffic.failures == [], traffic.failures[:10]


async def test_one_sqlite_node_rotates_and_survives_a_torn_keyring_copy_under_traffic(
    dev_pki: DevPki, tmp_path: Path, mock_fleet: MockFleet, population: Population
) -> None:
    """``credgate keys rotate`` (add a primary key, re-encrypt) while the node serves; then a
    keyring copy torn half-way through and left so while the node serves changes nothing."""
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    path = _keyring_path(tmp_path, "a")
    Keyring.generate(path)
    old = Keyring.load(path).primary_key_id
    async with replica(_document(mock_fleet, dev_pki, tmp_path, url, "a"), tmp_path, dev_pki) as (
        node,
        config,
    ):
        numbers, expected, subject = await _prepare(node, population)
        await _file_objection(node, subject, "before-rotation")
        traffic = Traffic(numbers, expected, subject, await _list_objections(node, subject))
        reader = asyncio.create_task(traffic.run("a", node))
        try:
            await traffic.progress(("a",))
            new, moved = await rotate_keys(config)
            assert moved > 0
            assert node.gateway.keys is not None
            keys = node.gateway.keys
            await _until(lambda: keys.current().primary_key_id == new)
            await traffic.progress(("a",))
            assert await _reencrypt_until_done(config) == 0  # the node wrote nothing old

            # A torn copy (`cp` caught half-way) sits in place while the node serves...
            good = path.read_bytes()
            with path.open("r+b") as torn:
                torn.truncate(len(good) // 2)
            await asyncio.sleep(RELOAD_SECONDS * 3)  # several reload checks see it
            await traffic.progress(("a",))
            assert keys.current().primary_key_id == new
            # ... then the copy completes.
            path.write_bytes(good)
            await traffic.progress(("a",))
        finally:
            traffic.stop.set()
            await asyncio.gather(reader, return_exceptions=True)
        reader.result()
        assert traffic.failures == [], traffic.failures[:10]
        for column in ENCRYPTED_COLUMNS:
            assert await count_stale(node.gateway.database, column, new) == 0, column.table
        assert old != new
