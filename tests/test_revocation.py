"""Certificate revocation: the CA's CRL, ``credgate pki revoke``, and the gateway refusing a
revoked institution from its next call, without a restart, while everyone else carries on."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.institution import Institution, InstitutionRole
from credgate.gateway.app import Gateway, build_gateway
from credgate.gateway.client import CredgateClient, CredgateError
from credgate.gateway.config import ConfigError, TlsConfig, config_from_mapping, load_config
from credgate.gateway.pki import (
    CRL_FILE_NAME,
    PkiPaths,
    add_institution,
    load_certified_key,
    revoke_certificate,
    revoke_institution,
    write_dev_pki,
)
from credgate.gateway.revocation import RevocationList, RevocationListError
from credgate.gateway.workspace import init_workspace
from tests.fixtures.mocks import gateway_document
from tests.fixtures.pki import DevPki

ROOT = Path(__file__).resolve().parent.parent
CASE = "(2026)粤03执1号"


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def pki(tmp_path: Path) -> PkiPaths:
    """A fresh dev PKI of its own: revoking here cannot disturb the session's shared one."""
    return write_dev_pki(tmp_path / "pki")


def _revocation(pki: PkiPaths) -> RevocationList:
    assert pki.crl is not None
    return RevocationList(pki.crl, pki.ca_cert)


# -- the list and the dev CA ----------------------------------------------------------------------


def test_a_new_dev_pki_has_an_empty_crl_signed_by_its_ca(pki: PkiPaths) -> None:
    assert pki.crl == pki.directory / CRL_FILE_NAME
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert len(crl) == 0
    assert crl.is_signature_valid(_cert(pki.ca_cert).public_key())  # type: ignore[arg-type]
    revocation = _revocation(pki)
    assert not revocation.is_revoked(_cert(pki.institutions["bank-demo"].cert))


def test_revoking_lists_only_that_certificate_and_the_list_reloads(pki: PkiPaths) -> None:
    revocation = _revocation(pki)
    done = revoke_institution(pki.directory, "bank-demo", reason=x509.ReasonFlags.key_compromise)
    assert (done.crl_number, done.revoked_count, done.already_revoked) == (2, 1, False)
    bank = pki.institutions["bank-demo"].cert
    assert revocation.is_revoked(_cert(bank))
    assert revocation.is_revoked_pem(bank.read_bytes())
    assert not revocation.is_revoked(_cert(pki.institutions["court-demo"].cert))
    entry = next(iter(x509.load_pem_x509_crl(pki.directory.joinpath(CRL_FILE_NAME).read_bytes())))
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise


def test_revoking_twice_keeps_the_first_date_and_renews_the_list(pki: PkiPaths) -> None:
    first = revoke_institution(pki.directory, "tax-demo")
    crl_path = pki.directory / CRL_FILE_NAME
    date = next(iter(x509.load_pem_x509_crl(crl_path.read_bytes()))).revocation_date_utc
    again = revoke_institution(pki.directory, "tax-demo")
    assert again.already_revoked
    assert again.crl_number == first.crl_number + 1
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert len(crl) == 1
    assert next(iter(crl)).revocation_date_utc == date


def test_a_reissued_certificate_has_a_new_serial_and_is_not_revoked(pki: PkiPaths) -> None:
    revocation = _revocation(pki)
    revoke_institution(pki.directory, "bank-demo")
    bank = Institution("bank-demo", InstitutionRole.INSTITUTION_ROLE_FINANCIAL_INSTITUTION)
    reissued = add_institution(pki.directory, bank, force=True)
    assert not revocation.is_revoked(_cert(reissued.cert))


def test_a_certificate_of_another_ca_cannot_be_revoked_here(pki: PkiPaths, dev_pki: DevPki) -> None:
    foreign = _cert(dev_pki.foreign.institutions["foreign-bank"].cert)
    with pytest.raises(ValueError, match="not issued by the CA"):
        revoke_certificate(pki.directory, foreign)


def test_a_crl_not_signed_by_the_trusted_ca_stops_the_gateway(
    pki: PkiPaths, dev_pki: DevPki
) -> None:
    foreign_crl = dev_pki.foreign.directory / CRL_FILE_NAME
    with pytest.raises(RevocationListError, match=r"not signed by a CA in tls\.ca"):
        RevocationList(foreign_crl, pki.ca_cert)
    tls = TlsConfig(pki.ca_cert, pki.server.cert, pki.server.key, revocation_list=foreign_crl)
    with pytest.raises(ConfigError, match=r"tls\.revocation_list"):
        RevocationList.from_config(tls)


def test_a_configured_but_missing_list_stops_the_gateway(pki: PkiPaths, tmp_path: Path) -> None:
    tls = TlsConfig(
        pki.ca_cert, pki.server.cert, pki.server.key, revocation_list=tmp_path / "nope.pem"
    )
    with pytest.raises(ConfigError, match="cannot read"):
        RevocationList.from_config(tls)
    assert RevocationList.from_config(TlsConfig(pki.ca_cert, pki.server.cert, pki.server.key)) is (
        None
    )


def test_a_broken_replacement_keeps_the_last_good_list(
    pki: PkiPaths, caplog: pytest.LogCaptureFixture
) -> None:
    revocation = _revocation(pki)
    revoke_institution(pki.directory, "bank-demo")
    bank = _cert(pki.institutions["bank-demo"].cert)
    assert revocation.is_revoked(bank)
    assert pki.crl is not None
    pki.crl.write_bytes(b"-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")
    with caplog.at_level(logging.ERROR, logger="credgate.gateway.revocation"):
        assert revocation.is_revoked(bank)
    assert "stays in force" in caplog.text
    pki.crl.unlink()
    assert revocation.is_revoked(bank)


def test_a_list_past_its_next_update_is_still_enforced(
    pki: PkiPaths, caplog: pytest.LogCaptureFixture
) -> None:
    ca = load_certified_key(pki.ca_cert, pki.ca_key)
    bank = _cert(pki.institutions["bank-demo"].cert)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
    stale = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(long_ago)
        .next_update(long_ago + dt.timedelta(days=30))
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(bank.serial_number)
            .revocation_date(long_ago)
            .build()
        )
        .sign(ca.key, hashes.SHA256())
    )
    path = pki.directory / "stale-crl.pem"
    path.write_bytes(stale.public_bytes(serialization.Encoding.PEM))
    with caplog.at_level(logging.WARNING, logger="credgate.gateway.revocation"):
        revocation = RevocationList(path, pki.ca_cert)
    assert revocation.is_revoked(bank)
    assert "past its next update" in caplog.text


def test_the_workspace_config_names_the_crl(tmp_path: Path) -> None:
    workspace = init_workspace(tmp_path / "ws")
    config = load_config(workspace.config_path, environ={})
    assert config.tls.revocation_list == workspace.pki_dir / CRL_FILE_NAME
    assert RevocationList.from_config(config.tls) is not None


# -- through the real gateway ---------------------------------------------------------------------


@dataclass
class RevokingGateway:
    gateway: Gateway
    port: int
    pki: PkiPaths

    def client(self, institution_id: str) -> CredgateClient:
        return CredgateClient.from_pki_dir(
            f"127.0.0.1:{self.port}", self.pki.directory, institution_id
        )


@pytest.fixture
async def revoking_gateway(
    mock_fleet: MockFleet, dev_pki: DevPki, pki: PkiPaths, tmp_path: Path
) -> AsyncIterator[RevokingGateway]:
    """The real composition (mTLS, migrations, sources) with ``[tls] revocation_list`` set."""
    document = gateway_document(mock_fleet, dev_pki, tmp_path)
    document["tls"] = {
        "ca": str(pki.ca_cert),
        "cert": str(pki.server.cert),
        "key": str(pki.server.key),
        "revocation_list": str(pki.crl),
    }
    built = await build_gateway(config_from_mapping(document, base_dir=tmp_path, environ={}))
    port = await built.start()
    try:
        yield RevokingGateway(built, port, pki)
    finally:
        await built.stop(0)


def _credgate(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("credgate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "credgate.gateway.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, check=False, cwd=ROOT, timeout=60
    )


async def _court_query(client: CredgateClient, subject: str) -> str:
    report = await client.get_repair_status(
        subject, purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION, case_reference=CASE, timeout=10
    )
    return str(report.subject_token)


async def _tax_query(client: CredgateClient, subject: str) -> str:
    report = await client.get_repair_status(
        subject, purpose=vocab.PURPOSE_TAX_INVESTIGATION, case_reference=CASE, timeout=10
    )
    return str(report.subject_token)


async def test_a_revoked_institution_is_refused_at_once_without_a_restart(
    revoking_gateway: RevokingGateway, population: Population
) -> None:
    subject = population.scenarios["observation"].person.identity_number
    async with (
        revoking_gateway.client("court-demo") as court,
        revoking_gateway.client("tax-demo") as tax,
    ):
        # Both work, over connections that stay open across the revocation.
        assert await _court_query(court, subject)
        assert await _tax_query(tax, subject)

        revoked = _credgate(
            "pki", "revoke", "--dir", str(revoking_gateway.pki.directory),
            "--institution", "court-demo", "--reason", "key_compromise",
        )  # fmt: skip
        assert revoked.returncode == 0, revoked.stderr

        for call in (
            _court_query(court, subject),
            court.list_signing_keys(),  # every service that reads identity refuses it
        ):
            with pytest.raises(CredgateError) as refused:
                await call
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert refused.value.reason == "CERTIFICATE_REVOKED"
            assert subject not in refused.value.message

        # A new connection with the revoked certificate fares no better ...
        async with revoking_gateway.client("court-demo") as again:
            with pytest.raises(CredgateError) as refused_again:
                await _court_query(again, subject)
        assert refused_again.value.reason == "CERTIFICATE_REVOKED"
        # ... while every other institution carries on, on the same gateway process.
        assert await _tax_query(tax, subject)
        async with revoking_gateway.client("regulator-demo") as regulator:
            assert await regulator.list_signing_keys()

    # The court gets a new certificate (new serial) and is back.
    court_id = Institution("court-demo", InstitutionRole.INSTITUTION_ROLE_JUDICIAL_ORGAN)
    add_institution(revoking_gateway.pki.directory, court_id, force=True)
    async with revoking_gateway.client("court-demo") as court:
        assert await _court_query(court, subject)
