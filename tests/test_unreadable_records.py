"""An unreadable stored record is never answered as "nothing there" (issue #18 item 1).

Before the fix, a record under a key the gateway did not hold turned an INDEX-mode report into
a signed OK answer with no state, no sources and no facts, where it had said OBSERVATION with
all its facts a moment before: false by omission, and signed. Here a real gateway writes
records under a key that is then taken out of its keyring (the key is lost, or never reached
this replica), and every reader of encrypted rows is asked: each answers with an error that
says why (RECORD_UNREADABLE; UNAVAILABLE, since the key may yet arrive) or, where a source can
be asked instead, an honest live answer with every fact — never an OK answer that omits them.
A tampered row is INTERNAL RECORD_UNREADABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import select, update

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as app_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.channel import client_channel
from credgate.core.secret_files import write_secret
from credgate.core.storage.models import SourceFactsRow
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.app import build_gateway
from credgate.gateway.client import CredgateClient, CredgateError
from credgate.gateway.config import config_from_mapping
from credgate.gateway.engine.consistency import Mode
from credgate.gateway.pki import institution_paths
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import RunningGateway, gateway_document
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, enrol_subject, issue_subject_certificate
from tests.test_key_rotation_workflows import _seed
from tests.watch_support import AUTO, CASE, INDEX, JUDICIAL, LIVE

RELOAD_SECONDS = 0.1
UNREADABLE = (grpc.StatusCode.UNAVAILABLE, "RECORD_UNREADABLE")


@contextlib.asynccontextmanager
async def _gateway(
    fleet: MockFleet, pki: DevPki, directory: Path, url: str
) -> AsyncIterator[RunningGateway]:
    document = gateway_document(fleet, pki, directory, url)
    document["keys"]["reload_seconds"] = RELOAD_SECONDS
    config = config_from_mapping(document, base_dir=directory, environ={})
    built = await build_gateway(config)
    port = await built.start()
    try:
        yield RunningGateway(built, port, pki)
    finally:
        async with asyncio.timeout(60):
            await built.stop(0)


def _lose_key(path: Path, key_id: str, primary: str) -> None:
    """The keyring file without ``key_id`` (lost, or never copied here), atomically."""
    ring = Keyring.load(path)
    kept = Keyring(
        subject_token_key=ring.subject_token_key,
        data_keys={k: v for k, v in ring._data_keys.items() if k != key_id},
        primary_key_id=primary,
    )
    write_secret(path, kept._to_json(), exclusive=False)


async def _refused(call: Any) -> tuple[grpc.StatusCode, str]:
    """The code and reason ``call`` failed with (it must fail, with no stack trace shown)."""
    with pytest.raises((grpc.aio.AioRpcError, CredgateError)) as caught:
        await call
    error = caught.value
    if isinstance(error, CredgateError):
        assert "Traceback" not in error.message
        return error.code, error.reason
    parsed = parse_error(error)
    assert "Traceback" not in (error.details() or "")
    return parsed.code, parsed.error_info.reason if parsed.error_info else ""


def _subject_channel(gateway: RunningGateway, subject: Subject) -> grpc.aio.Channel:
    pki = gateway.pki.paths.directory
    paths = institution_paths(pki, subject.institution_id)
    return client_channel(gateway.target, pki / "ca.pem", paths.cert, paths.key)


def _query(number: str, consistency: Mode) -> service_pb2.GetRepairStatusRequest:
    return service_pb2.GetRepairStatusRequest(
        identity_number=number, purpose=JUDICIAL, case_reference=CASE, consistency=consistency
    )


async def _judicial(court: CredgateClient, number: str, consistency: Mode) -> Any:
    return await court.get_repair_status(
        number, purpose=JUDICIAL, case_reference=CASE, consistency=consistency
    )


async def test_every_reader_of_an_unreadable_record_errs_or_answers_live_never_empty(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    mock_fleet: MockFleet,
    population: Population,
) -> None:
    number = population.scenarios["observation"].person.identity_number
    other = population.scenarios["revoked"].person.identity_number
    async with _gateway(mock_fleet, dev_pki, tmp_path, database_url) as gateway:
        keys = gateway.gateway.keys
        assert keys is not None
        path = tmp_path / "keyring.json"
        first = keys.current().primary_key_id
        async with gateway.client("court-demo") as court:
            await _judicial(court, other, LIVE)  # indexed under the first key: stays readable
        await gateway.gateway.engine._index.flush()
        lost = Keyring.load(path).add_key(primary=True)  # `credgate keys rotate`'s first half
        # From here records are written under ``lost``.
        async with asyncio.timeout(30):
            while keys.current().primary_key_id != lost:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        async with gateway.client("court-demo") as court:
            live = await _judicial(court, number, LIVE)
            await gateway.gateway.engine._index.flush()
            indexed = await _judicial(court, number, INDEX)
        assert indexed.state == live.state == vocab.REPAIR_STATE_OBSERVATION
        assert len(indexed.sources) == len(live.sources) > 0
        subject = await enrol_subject(gateway, number)
        issue_subject_certificate(gateway, subject)
        registry = next(s for s in live.sources if s.source_id == "credit-registry")
        async with _subject_channel(gateway, subject) as channel:
            filed = await obj_grpc.ObjectionServiceStub(channel).FileObjection(
                obj_pb2.FileObjectionRequest(
                    request_id="lost-key",
                    identity_number=number,
                    fact=obj_pb2.FactReference(
                        source_id="credit-registry",
                        source_record_id=registry.cases[0].provenance.source_record_id,
                    ),
                    aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
                    requested_correction="the case stage shown is wrong",
                )
            )
        objection_id = filed.objection.objection_id
        token = SubjectTokenizer(keys.current().subject_token_key).token(number)
        seeded = await _seed(gateway.gateway.database, FieldCipher(keys), token)

        # The key is lost: the file no longer holds it, and the gateway takes that file up.
        whole = path.read_bytes()
        _lose_key(path, lost, first)
        async with asyncio.timeout(30):
            while keys.current().holds(lost):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

        async with gateway.client("court-demo") as court:
            # The status reads: INDEX has nothing else to answer from — an error, not a blank.
            assert await _refused(_judicial(court, number, INDEX)) == UNREADABLE
            # LIVE with a source down needs the index for that source: an error again.
            await mock_fleet.set_faults("credit-registry", {"down": True})
            try:
                assert await _refused(_judicial(court, number, LIVE)) == UNREADABLE
            finally:
                await mock_fleet.set_faults("credit-registry", {"down": False})
            # A batch: the unreadable subject's item fails on its own, the other is answered.
            results = await court.batch_get_repair_status(
                [_query(number, INDEX), _query(other, INDEX)]
            )
            assert results[0].HasField("error")
            assert results[0].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
            info = error_details_pb2.ErrorInfo()
            assert results[0].error.details[0].Unpack(info)
            assert info.reason == "RECORD_UNREADABLE"
            assert not results[0].HasField("report")
            assert results[1].report.sources
            # A watch: its first report cannot be made, so the stream ends with the error.
            watch = court.watch_repair_status(_query(number, INDEX))
            assert await _refused(anext(aiter(watch))) == UNREADABLE
            # AUTO asks every source instead: an honest live answer with every fact, whose
            # storing replaces the unreadable rows (the index heals for this subject).
            auto = await _judicial(court, number, AUTO)
            assert auto.state == live.state
            assert {s.source_id for s in auto.sources} == {s.source_id for s in live.sources}
            assert not auto.failures
            await gateway.gateway.engine._index.flush()
            healed = await _judicial(court, number, INDEX)
            assert {s.source_id for s in healed.sources} == {s.source_id for s in live.sources}

        # The workflows' sealed details and steps: objections and repair applications.
        async with _subject_channel(gateway, subject) as channel:
            objections = obj_grpc.ObjectionServiceStub(channel)
            assert await _refused(objections.ListObjections(obj_pb2.ListObjectionsRequest())) == (
                UNREADABLE
            )
            assert (
                await _refused(
                    objections.GetObjection(obj_pb2.GetObjectionRequest(objection_id=objection_id))
                )
                == UNREADABLE
            )
        pki = gateway.pki.paths.directory
        court_paths = institution_paths(pki, "court-demo")
        async with client_channel(
            gateway.target, pki / "ca.pem", court_paths.cert, court_paths.key
        ) as channel:
            applications = app_grpc.RepairApplicationServiceStub(channel)
            assert (
                await _refused(
                    applications.ListRepairApplications(app_pb2.ListRepairApplicationsRequest())
                )
                == UNREADABLE
            )
            assert (
                await _refused(
                    applications.GetRepairApplication(
                        app_pb2.GetRepairApplicationRequest(application_id=seeded.application_id)
                    )
                )
                == UNREADABLE
            )

        # The key comes back (its copy arrives): everything reads again at once, no restart.
        write_secret(path, whole, exclusive=False)
        async with gateway.client("court-demo") as court:
            again = await _judicial(court, number, INDEX)
        assert again.state == indexed.state
        assert len(again.sources) == len(indexed.sources)
        async with _subject_channel(gateway, subject) as channel:
            listed = await obj_grpc.ObjectionServiceStub(channel).ListObjections(
                obj_pb2.ListObjectionsRequest()
            )
        assert objection_id in {o.objection_id for o in listed.objections}


async def test_a_tampered_index_row_is_internal_record_unreadable_not_an_empty_report(
    dev_pki: DevPki, tmp_path: Path, mock_fleet: MockFleet, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    async with (
        _gateway(mock_fleet, dev_pki, tmp_path, url) as gateway,
        gateway.client("court-demo") as court,
    ):
        await _judicial(court, number, LIVE)
        await gateway.gateway.engine._index.flush()
        assert (await _judicial(court, number, INDEX)).sources
        async with gateway.gateway.database.write() as session:
            blob = await session.scalar(select(SourceFactsRow.facts_ciphertext).limit(1))
            assert blob is not None
            flipped = blob[:-1] + bytes([blob[-1] ^ 1])
            await session.execute(
                update(SourceFactsRow)
                .where(SourceFactsRow.facts_ciphertext == blob)
                .values(facts_ciphertext=flipped)
            )
        assert await _refused(_judicial(court, number, INDEX)) == (
            grpc.StatusCode.INTERNAL,
            "RECORD_UNREADABLE",
        )
