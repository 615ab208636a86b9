"""The regulator's witness (C2SP tlog-witness / tlog-cosignature), as real OS processes on
loopback with real Ed25519 keys; the gateway side on SQLite and PostgreSQL.

* the cosignature format: key ID, signed message, verification, key encodings;
* a witness cosigns a growing log, the gateway's submitter learning its size from a 409;
* it refuses a fork, a rewritten head and a truncated log (and keeps them as evidence),
  and goes on cosigning the honest history;
* after the newest entries, the head row and the newer checkpoints are removed from the
  database, ``credgate audit verify`` alone passes but ``--witness-key/--witness-url`` fails,
  naming the first missing entry and both sizes;
* the witness keeps its state across a graceful restart and a SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import signal
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select, text

from credgate.adapters.mocks.fleet import MockFleet
from credgate.api.credit_repair.v1 import regulator_service_pb2
from credgate.audit import AuditLog
from credgate.audit.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    open_checkpoint,
    sign_checkpoint,
)
from credgate.audit.checkpoints import PeriodicCheckpointer, make_checkpoint
from credgate.audit.cosignature import Cosigner, CosignerVerifier, cosigned_message
from credgate.audit.hashing import leaf_hash
from credgate.audit.log_signing_key import load_or_create_signer, public_key_path
from credgate.audit.note import NoteError, NoteSigner
from credgate.audit.proof import consistency_proof
from credgate.audit.store_models import AuditCosignatureRow
from credgate.audit.tree import CompactRange
from credgate.audit.witness import AddCheckpoint
from credgate.core.storage.database import Database
from credgate.gateway.commands.audit import register
from credgate.gateway.config import ConfigError, config_from_mapping
from credgate.gateway.witness.client import WitnessEndpoint, add_checkpoint, fetch_cosigned
from credgate.gateway.witness.status import witness_statuses
from credgate.gateway.witness.submit import WitnessSubmitter
from tests.fixtures.mocks import gateway_document
from tests.fixtures.pki import DevPki
from tests.sync_process import GatewayProcess, toml_document
from tests.test_audit_log import ORIGIN, make_entry
from tests.test_audit_service import (  # noqa: F401 - fixtures: the regulator's gateway
    RegulatorGateway,
    audit_certs,
    gateway,
    signer,
)
from tests.witness_process import WitnessProcess

WITNESS_NAME = "witness.regulator.test/w1"


# --- the cosignature format -------------------------------------------------------------


def test_cosignature_v1_format_follows_the_spec() -> None:
    cosigner = Cosigner.generate(WITNESS_NAME)
    public = cosigner.verifier.public_key
    expected_id = hashlib.sha256(WITNESS_NAME.encode() + b"\n\x04" + public).digest()[:4]
    assert cosigner.verifier.key_id == expected_id
    # Not the 0x01 key hash of an ordinary note signer with the same key.
    assert expected_id != hashlib.sha256(WITNESS_NAME.encode() + b"\n\x01" + public).digest()[:4]

    note_text = f"{ORIGIN}\n5\n{base64.b64encode(bytes(32)).decode()}\ntime 1767225600\n"
    assert cosigned_message(note_text, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n" + note_text.encode()
    )
    line = cosigner.cosign(note_text, 1679315147)
    name, blob_b64 = line.removeprefix("— ").rstrip("\n").split(" ")
    blob = base64.b64decode(blob_b64)
    assert name == WITNESS_NAME
    assert len(blob) == 4 + 8 + 64
    assert blob[:4] == expected_id
    assert struct.unpack(">Q", blob[4:12]) == (1679315147,)

    log_signer = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint.parse_text(note_text), log_signer).note
    assert cosigner.verifier.cosignature_time(note + line) == 1679315147
    # Verifies with an independent Ed25519 check over the documented message.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(public).verify(
        blob[12:], b"cosignature/v1\ntime 1679315147\n" + note_text.encode()
    )
    # Another checkpoint text, another timestamp, another key: refused.
    other = note.replace("\n5\n", "\n6\n")
    with pytest.raises(NoteError):
        cosigner.verifier.cosignature_time(other + line)
    forged = bytearray(blob)
    struct.pack_into(">Q", forged, 4, 1679315148)
    with pytest.raises(NoteError, match="does not verify"):
        cosigner.verifier.cosignature_time(
            note + f"— {WITNESS_NAME} {base64.b64encode(bytes(forged)).decode()}\n"
        )
    with pytest.raises(NoteError, match="no cosignature"):
        Cosigner.generate(WITNESS_NAME).verifier.cosignature_time(note + line)

    # Key encodings round-trip.
    again = Cosigner.from_skey(cosigner.to_skey())
    assert again.verifier == cosigner.verifier
    assert CosignerVerifier.from_vkey(cosigner.verifier.to_vkey()) == cosigner.verifier
    # A plain (0x01) Ed25519 vkey names the same key, as transparency-dev/formats accepts it,
    # but its cosignatures still carry the 0x04 key ID: the log's own note signature by that
    # key is not taken for a cosignature.
    as_witness = CosignerVerifier.from_vkey(log_signer.verifier.to_vkey())
    assert as_witness.public_key == log_signer.verifier.public_key
    assert as_witness.key_id != log_signer.verifier.key_hash
    with pytest.raises(NoteError, match="no cosignature"):
        as_witness.cosignature_time(note)
    with pytest.raises(NoteError):
        CosignerVerifier.from_vkey(log_signer.verifier.to_vkey().replace("+", "+0", 1))


def test_cosignature_layout_matches_transparency_dev() -> None:
    """The timestamped signature of transparency-dev/formats' note_cosigv1_test.go
    (TestCoSigV1Timestamp, "works"): key ID, then the big-endian u64 time, then 64 bytes."""
    blob = base64.b64decode(
        "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOwor"
        "DcFiEBYJXORmnFBOBA=="
    )
    assert len(blob) == 4 + 8 + 64
    assert struct.unpack(">Q", blob[4:12]) == (1727964367,)


def test_witness_config_entries_are_checked(tmp_path: Path) -> None:
    key = Cosigner.generate(WITNESS_NAME).verifier.to_vkey()
    config = config_from_mapping(
        {"audit": {"witnesses": [{"url": "https://witness.example:8443", "key": key}]}},
        base_dir=tmp_path,
    )
    assert config.audit.witnesses[0].key == key
    bad = [
        [{"url": "https://w.example", "key": key.replace("+", "+0", 1)}],  # wrong key ID
        [{"url": "http://w.example:8700", "key": key}],  # clear text off loopback
        [{"url": "https://w.example"}],
        [{"url": "https://w.example", "key": key, "colour": "red"}],
    ]
    for witnesses in bad:
        with pytest.raises(ConfigError):
            config_from_mapping({"audit": {"witnesses": witnesses}}, base_dir=tmp_path)


# --- fixtures ---------------------------------------------------------------------------


class Keys:
    def __init__(self, directory: Path) -> None:
        self.log = load_or_create_signer(directory / "audit-log.key", ORIGIN)
        self.log_pub = public_key_path(directory / "audit-log.key")
        self.witness_key = directory / "witness.key"
        self.cosigner = Cosigner.generate(WITNESS_NAME)
        self.witness_key.write_text(self.cosigner.to_skey() + "\n", encoding="utf-8")
        self.witness_key.chmod(0o600)
        self.witness_pub = directory / "witness.pub"
        self.witness_pub.write_text(self.cosigner.verifier.to_vkey() + "\n", encoding="utf-8")

    def endpoint(self, url: str) -> WitnessEndpoint:
        return WitnessEndpoint(url, self.cosigner.verifier)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
async def witness(keys: Keys, tmp_path: Path) -> AsyncIterator[WitnessProcess]:
    process = WitnessProcess(
        keys.witness_key, tmp_path / "witness-state", [keys.log_pub], tmp_path / "witness.out"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def signed(log_key: NoteSigner, leaves: list[bytes], size: int) -> SignedCheckpoint:
    tree = CompactRange()
    tree.extend(leaves[:size])
    return sign_checkpoint(Checkpoint(log_key.name, size, tree.root(), 1767225600 + size), log_key)


async def post(
    url: str, keys: Keys, old: int, proof: list[bytes], checkpoint: SignedCheckpoint
) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        result = await add_checkpoint(session, keys.endpoint(url), old, proof, checkpoint)
    return result.status, result.body


def leaves_of(tag: str, n: int) -> list[bytes]:
    return [leaf_hash(f"{tag}-{i}".encode()) for i in range(n)]


# --- the witness's judgement, over HTTP -------------------------------------------------


async def test_witness_refuses_forks_and_truncations_and_keeps_the_evidence(
    keys: Keys, witness: WitnessProcess
) -> None:
    honest = leaves_of("a", 20)
    url = witness.url
    status, body = await post(url, keys, 0, [], signed(keys.log, honest, 10))
    assert status == 200
    assert body.startswith(f"— {WITNESS_NAME} ")

    # A fork: the first 5 entries shared, then another history, signed by the same log key.
    fork = honest[:5] + leaves_of("b", 15)
    fork_proof = consistency_proof(fork, 10, 12)
    status, body = await post(url, keys, 10, fork_proof, signed(keys.log, fork, 12))
    assert status == 422
    assert "not consistent with the size 10" in body
    # The same size with another root (history rewritten in place): refused.
    assert (await post(url, keys, 10, [], signed(keys.log, fork, 10)))[0] == 422
    # Truncation: a smaller tree claiming to extend the cosigned one, or from its own size.
    assert (await post(url, keys, 10, [], signed(keys.log, honest, 8)))[0] == 400
    async with aiohttp.ClientSession() as session:
        stale = await add_checkpoint(
            session, keys.endpoint(url), 8, [], signed(keys.log, honest, 8)
        )
    assert (stale.status, stale.known_size) == (409, 10)
    # A proof that merely has the right shape is not enough.
    honest_proof = consistency_proof(honest, 10, 15)
    broken = [honest_proof[0], bytes(32), *honest_proof[2:]]
    assert (await post(url, keys, 10, broken, signed(keys.log, honest, 15)))[0] == 422
    # A proof from size 0 must be empty; size 0 must be the empty tree.
    assert (await post(url, keys, 0, [bytes(32)], signed(keys.log, honest, 10)))[0] == 409
    # Not the log's key; an unknown origin.
    impostor = NoteSigner.generate(ORIGIN)
    assert (await post(url, keys, 10, honest_proof, signed(impostor, honest, 15)))[0] == 403
    stranger = NoteSigner.generate("other.log/audit")
    assert (await post(url, keys, 0, [], signed(stranger, honest, 3)))[0] == 404
    # Malformed bodies.
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/add-checkpoint", data=b"old 01\n\nx\n") as response,
    ):
        assert response.status == 400
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/add-checkpoint", data=b"old 0\n" + b"A" * 100_000) as response,
    ):
        assert response.status == 413

    # Through all of that the witness still holds 10, and cosigns the honest extension.
    endpoint = keys.endpoint(url)
    held = await fetch_cosigned(endpoint, ORIGIN, [keys.log.verifier])
    assert held is not None
    assert held.signed.checkpoint.tree_size == 10
    status, body = await post(url, keys, 10, honest_proof, signed(keys.log, honest, 15))
    assert status == 200
    held = await fetch_cosigned(endpoint, ORIGIN, [keys.log.verifier])
    assert held is not None
    assert held.signed.checkpoint.tree_size == 15

    # The refusals whose log signature verified are kept, with what was submitted.
    async with aiohttp.ClientSession() as session, session.get(f"{url}/status") as response:
        status_json = await response.json()
    [log_status] = status_json["logs"]
    assert log_status["cosigned_size"] == 15
    refused = [(r["status"], r["tree_size"]) for r in log_status["refusals"]]
    assert (422, 12) in refused
    assert (422, 10) in refused
    assert (400, 8) in refused
    assert all(r["status"] != 403 for r in log_status["refusals"])  # unverified: not evidence


def test_add_checkpoint_body_round_trips() -> None:
    request = AddCheckpoint(7, (bytes(32), b"\x01" * 32), "o\n7\nroot\n\n— o sig\n")
    assert request.encode().startswith(b"old 7\n" + base64.b64encode(bytes(32)) + b"\n")
    assert AddCheckpoint.decode(request.encode()) == request
    for body in (b"old 7\n", b"new 7\n\nx", b"old -1\n\nx", b"old 7\nnot-base64!\n\nx"):
        with pytest.raises(ValueError):
            AddCheckpoint.decode(body)
    too_long = "old 7\n" + "".join(base64.b64encode(bytes(32)).decode() + "\n" for _ in range(64))
    with pytest.raises(ValueError, match="63"):
        AddCheckpoint.decode((too_long + "\nx").encode())


# --- the gateway's side ------------------------------------------------------------------


async def test_the_gateway_gets_a_growing_log_cosigned(
    database: Database, keys: Keys, witness: WitnessProcess
) -> None:
    audit_log = AuditLog(database, keys.log)
    submitter = WitnessSubmitter(database, [keys.endpoint(witness.url)])
    checkpointer = PeriodicCheckpointer(
        database, keys.log, interval_seconds=3600, on_checkpoint=submitter.submit
    )
    try:
        for size in (1, 9, 30):
            while (await make_checkpoint(database, keys.log)).checkpoint.tree_size < size:
                await audit_log.append(make_entry(size))
            await checkpointer.sign_last()  # what the periodic task and shutdown do
        async with database.session() as session:
            rows = (
                await session.scalars(
                    select(AuditCosignatureRow).order_by(AuditCosignatureRow.tree_size)
                )
            ).all()
        assert [r.tree_size for r in rows] == [1, 9, 30]
        for row in rows:  # each stored cosignature verifies on its own
            keys.cosigner.verifier.cosignature_time(row.note)
            assert row.witness_name == WITNESS_NAME
        [status] = await witness_statuses(database)
        assert (status.outcome, status.cosigned_size, status.alert) == ("cosigned", 30, None)

        # Another replica (or this one restarted) knows nothing: it starts from 0, learns 30
        # from the 409 and submits the next checkpoint with the proof from 30.
        await audit_log.append(make_entry(99))
        newer = await make_checkpoint(database, keys.log)
        fresh = WitnessSubmitter(database, [keys.endpoint(witness.url)])
        await database_sql(database, "DELETE FROM audit_witness_status")
        [result] = await fresh.submit(newer)
        assert (result.outcome, result.cosigned_size) == ("cosigned", 31)
        held = await fetch_cosigned(keys.endpoint(witness.url), ORIGIN, [keys.log.verifier])
        assert held is not None
        assert held.signed.checkpoint == newer.checkpoint
        # Already cosigned: not sent again.
        assert (await fresh.submit(newer))[0].detail == "already cosigned"
    finally:
        await audit_log.aclose()


async def database_sql(database: Database, statement: str, **params: object) -> None:
    async with database.write() as session:
        await session.execute(text(statement), params)


async def test_a_rolled_back_log_is_reported_by_the_submitter(
    database: Database, keys: Keys, witness: WitnessProcess
) -> None:
    audit_log = AuditLog(database, keys.log)
    try:
        for i in range(12):
            await audit_log.append(make_entry(i))
        submitter = WitnessSubmitter(database, [keys.endpoint(witness.url)])
        [done] = await submitter.submit(await make_checkpoint(database, keys.log))
        assert done.outcome == "cosigned"
        await truncate(database, 7)
        await database_sql(database, "DELETE FROM audit_witness_status")
        [result] = await WitnessSubmitter(database, [keys.endpoint(witness.url)]).submit(
            await make_checkpoint(database, keys.log)
        )
        assert result.outcome == "ahead"
        assert "cosigned size 12" in result.detail
        assert "size 7" in result.detail
        [status] = await witness_statuses(database)
        assert status.alert is not None
        assert status.alert.startswith("ROLLED BACK")
    finally:
        await audit_log.aclose()


async def test_an_unreachable_witness_is_reported_not_raised(
    database: Database, keys: Keys
) -> None:
    audit_log = AuditLog(database, keys.log)
    try:
        await audit_log.append(make_entry(1))
        submitter = WitnessSubmitter(
            database, [keys.endpoint("http://127.0.0.1:9")], timeout_seconds=2
        )
        [result] = await submitter.submit(await make_checkpoint(database, keys.log))
        assert result.outcome == "unreachable"
        [status] = await witness_statuses(database)
        assert status.alert is not None
        assert status.alert.startswith("UNREACHABLE")
    finally:
        await audit_log.aclose()


async def truncate(database: Database, keep: int) -> None:
    """What an operator with database access does to hide the newest entries: delete them,
    the newer checkpoints and cosignatures, and roll the head row back consistently."""
    await database_sql(database, "DELETE FROM audit_entries WHERE entry_index >= :k", k=keep)
    await database_sql(database, "DELETE FROM audit_checkpoints WHERE tree_size > :k", k=keep)
    await database_sql(database, "DELETE FROM audit_cosignatures WHERE tree_size > :k", k=keep)
    # A careful attacker also removes the interior nodes over the cut entries (audit.tiles),
    # which verify would otherwise report on their own.
    await database_sql(
        database, "DELETE FROM audit_tree_nodes WHERE ((node_index + 1) << level) > :k", k=keep
    )
    compact = CompactRange()
    async with database.session() as session:
        leaves = await session.execute(
            text("SELECT leaf_hash FROM audit_entries ORDER BY entry_index")
        )
        compact.extend(bytes(h) for h in leaves.scalars())
    await database_sql(
        database,
        "UPDATE audit_head SET tree_size = :s, compact_range = :c, root_hash = :r",
        s=keep,
        c=compact.to_bytes(),
        r=compact.root(),
    )


# --- audit verify against the witness -----------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="credgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def test_truncation_with_head_rollback_is_caught_against_the_witness(
    migrated_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = Keys(tmp_path)
    process = WitnessProcess(
        keys.witness_key, tmp_path / "witness-state", [keys.log_pub], tmp_path / "witness.out"
    )
    url = process.start()
    try:
        _seed_and_truncate(migrated_database_url, keys, url)
        base = ["audit", "verify", "--database-url", migrated_database_url]
        base += ["--key", str(tmp_path / "audit-log.key")]
        capsys.readouterr()
        # The database alone is consistent in itself: the cut is invisible.
        assert run_cli(base) == 0
        capsys.readouterr()
        witness_args = ["--witness-key", str(keys.witness_pub), "--witness-url", url]
        assert run_cli([*base, *witness_args]) == 1
        out = capsys.readouterr().out
        assert "TAMPERING DETECTED" in out
        assert "TRUNCATED" in out
        assert f"cosigned by witness {WITNESS_NAME}" in out
        assert "signs 40 entries but the log has 35" in out
        assert "cosigned size 40" in out
        assert "missing, from entry 35 on" in out
        assert run_cli([*base, *witness_args, "--json"]) == 1
        report = json.loads(capsys.readouterr().out)
        truncated = [f for f in report["findings"] if f["kind"] == "TRUNCATED"]
        assert [f["index"] for f in truncated] == [35]
        assert report["witnesses"][0]["cosigned_size"] == 40
        # Another witness key (a forged "cosignature") is not accepted as the anchor.
        other = tmp_path / "other.pub"
        other.write_text(Cosigner.generate(WITNESS_NAME).verifier.to_vkey(), encoding="utf-8")
        assert run_cli([*base, "--witness-key", str(other), "--witness-url", url]) == 1
        assert "no cosignature" in capsys.readouterr().err
    finally:
        process.stop()
    # A witness that cannot be asked fails the check rather than passing silently.
    assert run_cli([*base, *witness_args]) == 1
    assert "could not be asked" in capsys.readouterr().err


def _seed_and_truncate(url: str, keys: Keys, witness_url: str) -> None:
    async def body() -> None:
        database = Database.from_url(url)
        audit_log = AuditLog(database, keys.log)
        try:
            submitter = WitnessSubmitter(database, [keys.endpoint(witness_url)])
            for i in range(40):
                await audit_log.append(make_entry(i))
                if i + 1 in (20, 40):
                    [result] = await submitter.submit(await make_checkpoint(database, keys.log))
                    assert result.outcome == "cosigned"
            await truncate(database, 35)
            async with database.session() as session:
                assert (
                    await session.scalar(select(func.count()).select_from(AuditCosignatureRow)) == 1
                )
        finally:
            await audit_log.aclose()
            await database.dispose()

    asyncio.run(body())


# --- durability --------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
async def test_the_witness_keeps_its_state_across_a_restart(
    keys: Keys, tmp_path: Path, signum: int
) -> None:
    process = WitnessProcess(
        keys.witness_key, tmp_path / "witness-state", [keys.log_pub], tmp_path / "witness.out"
    )
    honest = leaves_of("a", 30)
    url = process.start()
    try:
        # Before anything is cosigned: a proof from 0 must be empty, size 0 the empty tree.
        assert (await post(url, keys, 0, [bytes(32)], signed(keys.log, honest, 10)))[0] == 422
        not_empty = Checkpoint(ORIGIN, 0, bytes(32), 1767225600)
        assert (await post(url, keys, 0, [], sign_checkpoint(not_empty, keys.log)))[0] == 422
        assert (await post(url, keys, 0, [], signed(keys.log, honest, 10)))[0] == 200
        proof = consistency_proof(honest, 10, 17)
        assert (await post(url, keys, 10, proof, signed(keys.log, honest, 17)))[0] == 200
    finally:
        process.stop(signum)  # SIGKILL: the 200 was only sent after the commit
    url = process.start()
    try:
        async with aiohttp.ClientSession() as session:
            learnt = await add_checkpoint(
                session, keys.endpoint(url), 0, [], signed(keys.log, honest, 17)
            )
        assert (learnt.status, learnt.known_size) == (409, 17)
        held = await fetch_cosigned(keys.endpoint(url), ORIGIN, [keys.log.verifier])
        assert held is not None
        assert held.signed.checkpoint.tree_size == 17
        # It still refuses a history that does not extend what it cosigned before the restart.
        fork = honest[:12] + leaves_of("b", 18)
        fork_proof = consistency_proof(fork, 17, 20)
        assert (await post(url, keys, 17, fork_proof, signed(keys.log, fork, 20)))[0] == 422
        proof = consistency_proof(honest, 17, 30)
        assert (await post(url, keys, 17, proof, signed(keys.log, honest, 30)))[0] == 200
    finally:
        process.stop()
    assert (tmp_path / "witness-state" / "witness.sqlite3").exists()


# --- the regulator sees the witnesses ------------------------------------------------------


async def test_get_latest_checkpoint_carries_each_witness_status(
    gateway: RegulatorGateway,  # noqa: F811 - the fixture imported above
    keys: Keys,
    witness: WitnessProcess,
) -> None:
    database = gateway.log.database
    await gateway.seed(5)
    good = WitnessSubmitter(database, [keys.endpoint(witness.url)])
    [result] = await good.submit(await make_checkpoint(database, keys.log))
    assert result.outcome == "cosigned"
    away = Cosigner.generate("witness.other.test/w2").verifier
    unreachable = WitnessSubmitter(
        database, [WitnessEndpoint("http://127.0.0.1:9", away)], timeout_seconds=2
    )
    await unreachable.submit(await make_checkpoint(database, keys.log))

    await gateway.seed(3)  # the call below signs a newer checkpoint, not yet witnessed
    reply = await gateway.stub().GetLatestCheckpoint(
        regulator_service_pb2.GetLatestCheckpointRequest(), timeout=10
    )
    assert reply.checkpoint.tree_size == 8
    by_name = {w.witness: w for w in reply.witnesses}
    assert [w.witness for w in reply.witnesses] == sorted(by_name)
    mine = by_name[WITNESS_NAME]
    assert (mine.outcome, mine.cosigned_size, mine.alert) == ("cosigned", 5, "")
    assert mine.url == witness.url
    # The cosigned checkpoint verifies with the two pinned keys, on its own.
    assert keys.cosigner.verifier.cosignature_time(mine.cosigned_checkpoint) > 0
    opened = open_checkpoint(mine.cosigned_checkpoint, [keys.log.verifier])
    assert opened.checkpoint.tree_size == 5
    other = by_name["witness.other.test/w2"]
    assert other.outcome == "unreachable"
    assert other.alert.startswith("UNREACHABLE")
    assert other.cosigned_checkpoint == ""


# --- a real gateway process submits on its own ---------------------------------------------


async def test_a_running_gateway_submits_its_checkpoints_to_the_witness(
    mock_fleet: MockFleet, dev_pki: DevPki, database_url: str, tmp_path: Path
) -> None:
    """``credgate serve`` with ``[audit] witnesses``: the periodic checkpointer hands every
    checkpoint to the witness, which cosigns the log as it grows (entries appended by another
    process, as by a replica); the witness's status is recorded in the database."""
    log_key = load_or_create_signer(tmp_path / "audit-log.key")  # the gateway's, made first
    cosigner = Cosigner.generate(WITNESS_NAME)
    witness_key = tmp_path / "witness.key"
    witness_key.write_text(cosigner.to_skey() + "\n", encoding="utf-8")
    witness_key.chmod(0o600)
    process = WitnessProcess(
        witness_key,
        tmp_path / "witness-state",
        [public_key_path(tmp_path / "audit-log.key")],
        tmp_path / "witness.out",
    )
    url = process.start()
    endpoint = WitnessEndpoint(url, cosigner.verifier)
    document = gateway_document(mock_fleet, dev_pki, tmp_path, database_url)
    document["audit"] = {"checkpoint_interval_seconds": 0.3}
    config = tmp_path / "gateway.toml"
    config.write_text(
        toml_document(document)
        + f'witnesses = [{{url = "{url}", key = "{cosigner.verifier.to_vkey()}"}}]\n',
        encoding="utf-8",
    )
    gateway_process = GatewayProcess(config, tmp_path / "gateway.log")
    await gateway_process.start()
    database = Database.from_url(database_url)
    audit_log = AuditLog(database, log_key)
    try:
        for i in range(6):
            await audit_log.append(make_entry(i))
        await _until_cosigned(endpoint, log_key, 6)
        for i in range(6, 11):
            await audit_log.append(make_entry(i))
        await _until_cosigned(endpoint, log_key, 11)
        # The witness answered; the gateway records the answer just after: wait for that
        # too before stopping it (the stop may otherwise cut the status write short).
        await _until_recorded(database, 11)
    finally:
        await audit_log.aclose()
        await gateway_process.stop()
        process.stop()
    try:
        [status] = await witness_statuses(database)
        assert (status.witness, status.outcome, status.cosigned_size) == (
            WITNESS_NAME,
            "cosigned",
            11,
        )
        async with database.session() as session:
            sizes = set((await session.scalars(select(AuditCosignatureRow.tree_size))).all())
        assert {6, 11} <= sizes
    finally:
        await database.dispose()


async def _until_cosigned(endpoint: WitnessEndpoint, log_key: NoteSigner, size: int) -> None:
    async with asyncio.timeout(30):
        while True:
            held = await fetch_cosigned(endpoint, log_key.name, [log_key.verifier])
            if held is not None and held.signed.checkpoint.tree_size >= size:
                return
            await asyncio.sleep(0.1)


async def _until_recorded(database: Database, size: int) -> None:
    """Until the gateway has recorded the witness's answer for ``size``."""
    async with asyncio.timeout(30):
        while True:
            if [s.cosigned_size for s in await witness_statuses(database)] == [size]:
                return
            await asyncio.sleep(0.1)


async def test_plain_http_is_refused_off_loopback(keys: Keys, tmp_path: Path) -> None:
    from credgate.audit.witness import Witness, WitnessState
    from credgate.gateway.witness.server import is_loopback, run_witness

    witness = Witness(keys.cosigner, [keys.log.verifier], WitnessState(tmp_path / "state"))
    with pytest.raises(ValueError, match="loopback"):
        await run_witness(witness, "0.0.0.0", 0, None)
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("witness.example")
