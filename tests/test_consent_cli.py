"""``credgate consent``: the subject's side of consent from the command line, end to end.

Each command runs as its own ``credgate`` process against the real gateway over mutual TLS,
as a subject would run it: the key is made by ``consent keygen`` (a file only the subject can
read), the enrolment office enrols its public key, the subject's certificate is issued for the
id ``keygen`` printed, the bank records terms the subject signed with that file. Then the
subject fetches and verifies a receipt, pauses, resumes (relayed by an institution) and
withdraws — each statement signed locally from the key file — and every refusal exits 3 with
the reason, a key file others can read exits 2.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

import pytest

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.gateway.client import CredgateError
from credgate.gateway.grant_receipts import verify_signed_receipt
from credgate.gateway.report_signing import index_public_keys
from credgate.gateway.subject_key_file import load_subject_key
from tests.fixtures.mocks import ENROLMENT_OFFICE, RunningGateway
from tests.fixtures.subjects import Subject, issue_subject_certificate

ROOT = Path(__file__).resolve().parent.parent
OBSERVATION = "440304198511030421"
REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW


def _command() -> list[str]:
    script = Path(sys.executable).with_name("credgate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "credgate.gateway.cli"]


async def credgate(*argv: str) -> tuple[int, str, str]:
    """Run ``credgate`` as its own process without blocking this event loop (the gateway)."""
    process = await asyncio.create_subprocess_exec(
        *_command(),
        *argv,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def new_subject(gateway: RunningGateway, key_file: Path, number: str) -> Subject:
    """``consent keygen``, then the office enrols the key and the CA issues the certificate."""
    code, out, err = await credgate("consent", "keygen", "--out", str(key_file), "--json")
    assert code == 0, err
    made = json.loads(out)
    assert (await asyncio.to_thread(key_file.stat)).st_mode & 0o777 == 0o600
    subject = Subject(number, load_subject_key(key_file))
    assert made["subject_key_id"] == subject.key_id
    assert made["certificate_institution_id"] == subject.institution_id
    async with gateway.client(ENROLMENT_OFFICE) as office:
        enrolled = await office.enroll_subject_key(number, base64.b64decode(made["public_key"]))
    assert enrolled == subject.key_id
    issue_subject_certificate(gateway, subject)
    return subject


async def record(gateway: RunningGateway, subject: Subject) -> tuple[str, bytes]:
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=subject.key_id,
        grantee_institution_id="bank-demo",
        collecting_institution_id="bank-demo",
        purposes=[REVIEW],
        categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR],
        nonce=secrets.token_bytes(16),
    )
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + dt.timedelta(days=30))
    signed, signature = grants.sign_terms(subject.key, terms)
    async with gateway.client("bank-demo") as bank:
        grant = await bank.grant_consent(subject.identity_number, signed, signature)
    return grant.consent_id, signature


async def bank_query(gateway: RunningGateway, consent_id: str) -> str:
    async with gateway.client("bank-demo") as bank:
        try:
            await bank.get_repair_status(OBSERVATION, purpose=REVIEW, consent_id=consent_id)
        except CredgateError as error:
            return error.reason
    return "ALLOWED"


async def test_the_subject_fetches_a_receipt_then_pauses_resumes_and_withdraws(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    key_file = tmp_path / "consent-key.pem"
    subject = await new_subject(gateway, key_file, OBSERVATION)
    consent_id, signature = await record(gateway, subject)
    connect = ["--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory)]
    as_subject = [*connect, "--subject-key", str(key_file)]

    code, out, err = await credgate(
        "consent", "receipt", consent_id, *as_subject, "--verify", "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["verified"] is True
    assert shown["consent_id"] == consent_id
    assert shown["subject_key_id"] == subject.key_id
    assert shown["subject_signature_sha256"] == hashlib.sha256(signature).hexdigest()
    assert shown["terms"]["granteeInstitutionId"] == "bank-demo"
    # What --json printed is a receipt that verifies on its own, offline.
    kept = consent_pb2.SignedGrantReceipt(
        receipt=base64.b64decode(shown["signed_receipt"]["receipt"]),
        key_id=shown["signed_receipt"]["key_id"],
        signature=base64.b64decode(shown["signed_receipt"]["signature"]),
    )
    async with gateway.client("court-demo") as anyone:
        keys = index_public_keys(k.public_key for k in await anyone.list_signing_keys())
    assert verify_signed_receipt(kept, keys, subject_signature=signature).consent_id == consent_id

    code, out, err = await credgate(
        "consent", "receipt", consent_id, *connect, "--institution", "bank-demo"
    )
    assert code == 0, err
    assert f"receipt for {consent_id}" in out
    assert "verified: no" in out

    code, out, err = await credgate("consent", "pause", consent_id, *as_subject, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "CONSENT_STATE_PAUSED"
    assert await bank_query(gateway, consent_id) == "CONSENT_PAUSED"

    relayed = [*as_subject, "--institution", "court-demo"]  # any institution may carry it
    code, out, err = await credgate("consent", "resume", consent_id, *relayed)
    assert code == 0, err
    assert out.strip() == f"grant {consent_id}: ACTIVE"
    assert await bank_query(gateway, consent_id) == "ALLOWED"

    code, out, err = await credgate("consent", "withdraw", consent_id, *as_subject, "--json")
    assert code == 0, err
    withdrawn = json.loads(out)
    assert withdrawn["state"] == "CONSENT_STATE_REVOKED"
    assert withdrawn["revokedBySubjectKeyId"] == subject.key_id
    assert await bank_query(gateway, consent_id) == "CONSENT_REVOKED"

    code, _, err = await credgate("consent", "pause", consent_id, *as_subject)
    assert code == 3
    assert "FAILED_PRECONDITION CONSENT_STATE_FINAL" in err


async def test_refusals_exit_3_and_a_key_file_others_can_read_exits_2(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    key_file = tmp_path / "mine.pem"
    subject = await new_subject(gateway, key_file, OBSERVATION)
    consent_id, _ = await record(gateway, subject)
    other_file = tmp_path / "other.pem"
    await new_subject(gateway, other_file, OBSERVATION)  # a re-enrolment: retires mine
    connect = ["--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory)]

    # The retired key's certificate no longer names the subject: no receipt, as for a stranger.
    code, _, err = await credgate(
        "consent", "receipt", consent_id, *connect, "--subject-key", str(key_file)
    )
    assert code == 3
    assert "NOT_FOUND CONSENT_NOT_FOUND" in err
    code, _, missing = await credgate(
        "consent", "receipt", "cg_" + "a" * 26, *connect, "--institution", "bank-demo"
    )
    assert code == 3
    # The same words (the request id aside): existence is not revealed.
    assert missing.splitlines()[0] == err.splitlines()[0]
    # The current key may withdraw the old grant; the retired one may not.
    code, _, err = await credgate(
        "consent",
        "withdraw",
        consent_id,
        *connect,
        "--subject-key",
        str(key_file),
        "--institution",
        "bank-demo",
    )
    assert code == 3
    assert "PERMISSION_DENIED CONSENT_STATEMENT_NOT_PERMITTED" in err
    code, out, err = await credgate(
        "consent", "withdraw", consent_id, *connect, "--subject-key", str(other_file)
    )
    assert code == 0, err
    assert out.strip() == f"grant {consent_id}: REVOKED"

    code, _, err = await credgate("consent", "keygen", "--out", str(other_file))
    assert code == 2  # never overwrites a key
    other_file.chmod(0o644)
    code, _, err = await credgate(
        "consent", "pause", consent_id, *connect, "--subject-key", str(other_file)
    )
    assert code == 2
    assert "chmod 600" in err
    code, _, err = await credgate("consent", "receipt", consent_id, *connect)
    assert code == 2
    assert "--institution" in err


@pytest.mark.parametrize("action", ["pause", "resume", "withdraw"])
def test_state_changes_require_the_subject_key(action: str) -> None:
    from credgate.gateway.cli import build_parser

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["consent", action, "cg_x"])
    assert caught.value.code == 2


def _key_file(path: Path, pem: bytes) -> Path:
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


def test_only_an_unencrypted_ed25519_key_file_is_a_subject_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    from credgate.gateway.subject_key_file import SubjectKeyFileError, write_subject_key

    key = Ed25519PrivateKey.generate()
    written = tmp_path / "key.pem"
    write_subject_key(written, key)
    assert grants.raw_public_key(load_subject_key(written)) == grants.raw_public_key(key)
    with pytest.raises(FileExistsError):
        write_subject_key(written, Ed25519PrivateKey.generate())

    refused = {
        "encrypted": key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pass")
        ),
        "x25519": X25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        ),
        "garbage": b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    }
    for name, pem in refused.items():
        with pytest.raises(SubjectKeyFileError):
            load_subject_key(_key_file(tmp_path / f"{name}.pem", pem))
    readable = _key_file(tmp_path / "readable.pem", written.read_bytes())
    readable.chmod(0o640)
    with pytest.raises(SubjectKeyFileError, match="chmod 600"):
        load_subject_key(readable)
