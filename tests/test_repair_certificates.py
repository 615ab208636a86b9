"""Repair-status certificates (issue #17): issued to a subject over the real server, checked
offline by the client library and by an independent script that knows only the documented
format (docs/certificate.md) and an Ed25519 library; altered, foreign, expired and revoked
certificates refused."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from credgate.adapters.mocks.court import CourtMock
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population, State
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.store_models import AuditEntryRow
from credgate.gateway.client import CredgateClient, CredgateError
from credgate.gateway.repair_certificate_format import (
    CertificateVerificationError,
    StatusList,
    read_status_list,
    verify_certificate,
)
from credgate.gateway.report_signing import index_public_keys
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.subjects import enrol_subject, subject_client
from tests.test_consent_cli import credgate

SELF = vocab.PURPOSE_SELF_INQUIRY
ISSUE = audit_pb2.AUDIT_ACTION_ISSUE_REPAIR_CERTIFICATE
DOC = Path(__file__).resolve().parents[1] / "docs" / "certificate.md"


async def _keys_and_list(client: CredgateClient) -> tuple[dict[str, bytes], StatusList, str]:
    async with client:
        keys = index_public_keys(k.public_key for k in await client.list_signing_keys())
        text = await client.get_certificate_status_list()
    return keys, read_status_list(text, keys), text


async def _issue(gateway: RunningGateway, number: str, days: int = 0) -> str:
    subject = await enrol_subject(gateway, number)
    async with subject_client(gateway, subject) as me:
        return await me.issue_repair_status_certificate(number, validity_days=days)


async def _entries(gateway: RunningGateway) -> list[audit_pb2.AuditEntry]:
    async with gateway.gateway.database.session() as session:
        blobs = await session.scalars(select(AuditEntryRow.entry_bytes))
        entries = [audit_pb2.AuditEntry.FromString(b) for b in blobs]
    return [e for e in entries if e.action == ISSUE]


def _payload(certificate: str) -> dict[str, Any]:
    body = certificate.split(".")[1]
    loaded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return loaded


async def test_a_restored_subject_gets_a_minimal_certificate_anyone_verifies_offline(
    gateway: RunningGateway, population: Population
) -> None:
    person = population.scenarios["restored_reorganization"].person
    certificate = await _issue(gateway, person.identity_number)
    assert certificate.startswith("CGRC1.")
    assert certificate.isascii()
    assert len(certificate) < 1200

    payload = _payload(certificate)
    assert payload["state"] == "RESTORED"
    assert set(payload["dates"]) == {"restored_on"}
    text = json.dumps(payload, ensure_ascii=False)
    assert person.identity_number not in text
    assert person.name not in text

    keys, status, _ = await _keys_and_list(gateway.client("bank-demo"))
    now = dt.datetime.now(dt.UTC)
    verified = verify_certificate(
        certificate, keys, now=now, status_list=status, identity_number=person.identity_number
    )
    assert verified.state == "RESTORED"
    assert verified.expires_at - verified.issued_at == dt.timedelta(days=30)
    with pytest.raises(CertificateVerificationError) as caught:
        verify_certificate(certificate, keys, now=now, identity_number="110101199003074514")
    assert caught.value.reason == "SUBJECT_MISMATCH"
    for odd in ("", "４４０３０４", person.identity_number + "中"):
        with pytest.raises(CertificateVerificationError) as caught:
            verify_certificate(certificate, keys, now=now, identity_number=odd)
        assert caught.value.reason == "SUBJECT_MISMATCH"
    before = verified.issued_at - dt.timedelta(seconds=1)
    with pytest.raises(CertificateVerificationError) as caught:
        verify_certificate(certificate, keys, now=before)
    assert caught.value.reason == "NOT_YET_VALID"
    hour = dt.timedelta(hours=1)
    verify_certificate(certificate, keys, now=now, status_list=status, status_max_age=hour)
    with pytest.raises(CertificateVerificationError) as caught:
        verify_certificate(
            certificate, keys, now=now + 2 * hour, status_list=status, status_max_age=hour
        )
    assert caught.value.reason == "STATUS_LIST_STALE"
    for too_late in (verified.expires_at, verified.expires_at + dt.timedelta(days=1)):
        with pytest.raises(CertificateVerificationError) as caught:
            verify_certificate(certificate, keys, now=too_late, status_list=status)
        assert caught.value.reason == "EXPIRED"

    [entry] = await _entries(gateway)  # an audited disclosure, by the subject
    assert entry.outcome == audit_pb2.AUDIT_OUTCOME_ALLOWED
    assert entry.purpose == vocab.PURPOSE_SELF_INQUIRY
    assert list(entry.categories) == [vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR]
    async with gateway.client("bank-demo") as bank:  # the client library's own check
        assert (await bank.verify_repair_certificate(certificate)).state == "RESTORED"


async def test_every_altered_byte_is_refused(
    gateway: RunningGateway, population: Population
) -> None:
    person = population.scenarios["restored_reorganization"].person
    certificate = await _issue(gateway, person.identity_number)
    keys, status, _ = await _keys_and_list(gateway.client("bank-demo"))
    now = dt.datetime.now(dt.UTC)
    for at in range(len(certificate)):
        for replacement in {"A", "B", "."} - {certificate[at]}:
            altered = certificate[:at] + replacement + certificate[at + 1 :]
            with pytest.raises(CertificateVerificationError):  # padding bits included
                verify_certificate(altered, keys, now=now, status_list=status)


async def test_only_the_subject_may_issue_and_every_refusal_is_audited(
    gateway: RunningGateway, population: Population
) -> None:
    mine = population.scenarios["observation"].person.identity_number
    theirs = population.scenarios["restored_reorganization"].person.identity_number
    me = await enrol_subject(gateway, mine)
    refusals = []
    for client, number in ((subject_client(gateway, me), theirs), (gateway.client(), mine)):
        async with client:
            with pytest.raises(CredgateError) as caught:
                await client.issue_repair_status_certificate(number)
        refusals.append((caught.value.code, caught.value.reason))
        assert theirs not in caught.value.message
        assert mine not in caught.value.message
    assert refusals == [
        (grpc.StatusCode.PERMISSION_DENIED, "SUBJECT_MISMATCH"),
        (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_PERMITTED"),
    ]
    entries = await _entries(gateway)
    assert [e.outcome for e in entries] == [audit_pb2.AUDIT_OUTCOME_DENIED] * 2
    async with subject_client(gateway, me) as client:
        with pytest.raises(CredgateError) as caught:
            await client.issue_repair_status_certificate(mine, validity_days=91)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_later_change_of_state_revokes_it_once_the_list_is_refreshed(
    gateway: RunningGateway, population: Population, mock_fleet: MockFleet, tmp_path: Path
) -> None:
    truth = population.scenarios["restored_reorganization"]
    other = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, truth.person.identity_number)
    async with subject_client(gateway, subject) as me:
        certificate = await me.issue_repair_status_certificate(truth.person.identity_number)
    unaffected = await _issue(gateway, other)
    keys, before, old_list = await _keys_and_list(gateway.client("bank-demo"))
    now = dt.datetime.now(dt.UTC)
    verify_certificate(certificate, keys, now=now, status_list=before)

    court = mock_fleet.mocks["court-shenzhen"]
    assert isinstance(court, CourtMock)
    assert truth.case is not None
    assert truth.case.restored_on is not None
    revoked_on = truth.case.restored_on + dt.timedelta(days=200)  # the court revokes the exemption
    court.desk.set_subject(
        dataclasses.replace(
            truth, state=State.REVOKED, case=dataclasses.replace(truth.case, revoked_on=revoked_on)
        )
    )
    async with subject_client(gateway, subject) as me:  # the subject's own report agrees
        own = await me.get_repair_status(truth.person.identity_number, purpose=SELF)
    assert own.state == vocab.REPAIR_STATE_REVOKED

    keys, after, new_list = await _keys_and_list(gateway.client("bank-demo"))
    with pytest.raises(CertificateVerificationError) as caught:
        verify_certificate(certificate, keys, now=now, status_list=after)
    assert caught.value.reason == "REVOKED"
    verify_certificate(unaffected, keys, now=now, status_list=after)  # its subject unchanged
    verify_certificate(certificate, keys, now=now, status_list=before)  # only the refresh tells
    # the independent script of the docs refuses it too, with the refreshed list only
    script = _write_lender_files(tmp_path, certificate, new_list, keys)
    revoked = _run_lender_script(script, truth.person.identity_number)
    assert revoked.returncode != 0
    assert "revoked" in revoked.stderr
    _write_lender_files(tmp_path, certificate, old_list, keys)
    assert _run_lender_script(script, truth.person.identity_number).returncode == 0
    # a burst of requests shares computations, and every answer says the same
    lists = await asyncio.gather(*(_keys_and_list(gateway.client("bank-demo")) for _ in range(4)))
    assert {listed.bits for _, listed, _ in lists} == {after.bits}
    # the revocation is for good, even if the court's record changes back
    court.desk.set_subject(truth)
    _, again, _ = await _keys_and_list(gateway.client("bank-demo"))
    with pytest.raises(CertificateVerificationError):
        verify_certificate(certificate, keys, now=now, status_list=again)
    # a forged list is refused: the list's own signature covers the bits
    forged = new_list.split(".")
    with pytest.raises(CertificateVerificationError):
        read_status_list(".".join([forged[0], old_list.split(".")[1], forged[2]]), keys)


async def test_an_independent_script_verifies_by_the_documented_format(
    gateway: RunningGateway, population: Population, tmp_path: Path
) -> None:
    """Only the docs' recipe, hashlib/base64/json and cryptography's Ed25519: no credgate."""
    person = population.scenarios["restored_reorganization"].person
    certificate = await _issue(gateway, person.identity_number)
    keys, _, status_text = await _keys_and_list(gateway.client("bank-demo"))
    script = _write_lender_files(tmp_path, certificate, status_text, keys)
    body = certificate.split(".")[1]
    tampered = _payload(certificate) | {"state": "RESTORED", "exp": "2099-01-01T00:00:00Z"}
    forged_body = base64.urlsafe_b64encode(json.dumps(tampered).encode()).rstrip(b"=").decode()
    _write_text(tmp_path / "forged.txt", certificate.replace(body, forged_body))

    ok = _run_lender_script(script, person.identity_number)
    assert ok.returncode == 0, ok.stderr
    restored_on = _payload(certificate)["dates"]["restored_on"]
    assert ok.stdout.split() == ["VALID", "RESTORED", f"restored_on={restored_on}"]
    forged = _run_lender_script(script, person.identity_number, cert="forged.txt")
    assert forged.returncode != 0
    assert "InvalidSignature" in forged.stderr
    other = _run_lender_script(script, "110101199003074514")
    assert other.returncode != 0
    assert "about another person" in other.stderr


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _script_from_docs() -> str:
    """The lender's script: the fenced ``python`` block of docs/certificate.md, verbatim."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("```python\n") + len("```python\n")
    return textwrap.dedent(text[start : text.index("```", start)])


async def test_the_cli_issues_saves_the_status_and_verifies_offline_and_online(
    gateway: RunningGateway, population: Population, tmp_path: Path
) -> None:
    number = population.scenarios["restored_reorganization"].person.identity_number
    subject = await enrol_subject(gateway, number)
    async with subject_client(gateway, subject):
        pass  # issues the subject's TLS certificate
    pki = str(gateway.pki.paths.directory)
    where = ["--target", gateway.target, "--pki-dir", pki]
    cert, keys, status = (str(tmp_path / n) for n in ("c.txt", "keys.json", "list.txt"))
    code, out, err = await credgate(
        "certificate",
        "issue",
        number,
        "--out",
        cert,
        "--institution",
        subject.institution_id,
        *where,
    )
    assert code == 0, err
    code, _, err = await credgate(
        "certificate", "status", "--keys-out", keys, "--status-list-out", status, *where
    )
    assert code == 0, err
    offline = ["verify-certificate", cert, "--keys", keys, "--status-list", status, "--json"]
    code, out, err = await credgate(*offline, "--identity-number", number)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["state"] == "RESTORED"
    assert shown["status_checked"] is True
    assert shown["identity_checked"] is True
    code, _, err = await credgate(*offline, "--identity-number", "110101199003074514")
    assert code == 3
    assert "SUBJECT_MISMATCH" in err
    code, out, err = await credgate("verify-certificate", cert, *where)  # online
    assert code == 0, err
    assert out.startswith("VALID RESTORED restored_on=")
    _alter_one_character(Path(cert), at=20)
    code, _, err = await credgate(*offline)
    assert code == 3
    assert "NOT VALID" in err


def _alter_one_character(path: Path, *, at: int) -> None:
    text = path.read_text()
    path.write_text(text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :])


def _write_lender_files(
    directory: Path, certificate: str, status_list: str, keys: dict[str, bytes]
) -> Path:
    """The docs' script and what a lender hands it: certificate, status list, published keys."""
    script = directory / "lender_check.py"
    script.write_text(_script_from_docs())
    (directory / "cert.txt").write_text(certificate)
    (directory / "list.txt").write_text(status_list)
    (directory / "keys.json").write_text(json.dumps({k: v.hex() for k, v in keys.items()}))
    return script


def _run_lender_script(
    script: Path, number: str, cert: str = "cert.txt"
) -> subprocess.CompletedProcess[str]:
    """Run the docs' script in its own interpreter, isolated from credgate (``-I``)."""
    directory = script.parent
    return subprocess.run(
        [
            sys.executable,
            "-I",
            str(script),
            str(directory / cert),
            str(directory / "list.txt"),
            str(directory / "keys.json"),
            number,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
        check=False,
    )


async def test_a_change_nothing_brought_into_the_index_is_found_by_the_rolling_sweep(
    gateway: RunningGateway, population: Population, mock_fleet: MockFleet
) -> None:
    """A refresh re-evaluates only the subjects the change feed names, plus a rolling slice of
    the others: a court's change that no query or push brought in stays unseen until the sweep
    reaches its subject, and then revokes the certificate."""
    certificates = gateway.gateway.certificates
    assert certificates is not None
    truth = population.scenarios["restored_reorganization"]
    certificate = await _issue(gateway, truth.person.identity_number)
    unaffected = await _issue(gateway, population.scenarios["observation"].person.identity_number)
    certificates.sweep_interval, certificates.sweep_subjects = 3600.0, 1
    keys, first, _ = await _keys_and_list(gateway.client("bank-demo"))  # sweeps one subject
    now = dt.datetime.now(dt.UTC)
    verify_certificate(certificate, keys, now=now, status_list=first)

    court = mock_fleet.mocks["court-shenzhen"]
    assert isinstance(court, CourtMock)
    assert truth.case is not None
    assert truth.case.restored_on is not None
    revoked_on = truth.case.restored_on + dt.timedelta(days=200)
    court.desk.set_subject(
        dataclasses.replace(
            truth, state=State.REVOKED, case=dataclasses.replace(truth.case, revoked_on=revoked_on)
        )
    )
    _, unswept, _ = await _keys_and_list(gateway.client("bank-demo"))  # no sweep due yet
    verify_certificate(certificate, keys, now=now, status_list=unswept)

    certificates.sweep_interval = 0.0
    lists = [(await _keys_and_list(gateway.client("bank-demo")))[1] for _ in range(2)]
    with pytest.raises(CertificateVerificationError) as caught:
        verify_certificate(certificate, keys, now=now, status_list=lists[-1])
    assert caught.value.reason == "REVOKED"
    for listed in lists:
        verify_certificate(unaffected, keys, now=now, status_list=listed)
