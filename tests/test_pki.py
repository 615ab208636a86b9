"""The development PKI issues certificates that carry the identity where the gateway reads it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from credgate.core.institution import (
    INSTITUTION_URI_PREFIX,
    CertificateRejected,
    Institution,
    InstitutionRole,
    institution_from_certificate,
    known_role_names,
    role_from_name,
)
from credgate.gateway.pki import (
    DEFAULT_DEV_INSTITUTIONS,
    add_institution,
    create_ca,
    issue_institution_cert,
    issue_server_cert,
    load_certified_key,
    write_dev_pki,
)
from tests.fixtures.pki import DevPki

CA = create_ca("test CA")


def _verify_client(ca: x509.Certificate, leaf: x509.Certificate) -> None:
    verifier = PolicyBuilder().store(Store([ca])).build_client_verifier()
    verifier.verify(leaf, [])


def test_institution_cert_carries_san_ou_cn_and_o() -> None:
    _, cert = issue_institution_cert(CA, "bank-demo", "financial_institution", "Demo Bank")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:credgate:institution:bank-demo"
    ]
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bank-demo"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Demo Bank"
    ou = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in ou] == ["financial_institution"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_institution_cert_chains_to_its_ca_and_not_to_another() -> None:
    _, cert = issue_institution_cert(CA, "court-demo", "judicial_organ", "Demo Court")
    _verify_client(CA.cert, cert)
    with pytest.raises(VerificationError):
        _verify_client(create_ca("other CA").cert, cert)


@pytest.mark.parametrize("role", known_role_names())
def test_every_role_round_trips_through_the_certificate(role: str) -> None:
    _, cert = issue_institution_cert(CA, "inst-1", role, "Inst")
    assert institution_from_certificate(cert) == Institution("inst-1", role_from_name(role), "Inst")


def test_role_names_are_the_lower_snake_enum_names() -> None:
    assert known_role_names() == (
        "financial_institution",
        "commercial_institution",
        "authorized_party",
        "judicial_organ",
        "tax_authority",
        "statutory_organ",
        "regulator",
        "data_provider",
        "subject",
    )
    for bad in ("unspecified", "REGULATOR", "astrologer", ""):
        with pytest.raises(ValueError):
            role_from_name(bad)


def test_server_cert_names_loopback_and_chains_to_ca() -> None:
    _, cert = issue_server_cert(CA, ["gateway.internal"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "gateway.internal"} <= set(san.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        PolicyBuilder().store(Store([CA.cert])).build_server_verifier(name).verify(cert, [])


def test_ca_may_sign_leaves_only() -> None:
    constraints = CA.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)


def test_validity_can_be_overridden_to_make_an_expired_cert() -> None:
    now = dt.datetime.now(dt.UTC)
    _, cert = issue_institution_cert(
        CA,
        "old-bank",
        "financial_institution",
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    assert cert.not_valid_after_utc < now
    verifier = PolicyBuilder().store(Store([CA.cert])).time(now).build_client_verifier()
    with pytest.raises(VerificationError):
        verifier.verify(cert, [])


@pytest.mark.parametrize("institution_id", ["Bank", "../etc", "", "a b", "x" * 70])
def test_unsafe_institution_ids_are_refused(institution_id: str) -> None:
    with pytest.raises(ValueError, match="institution id"):
        issue_institution_cert(CA, institution_id, "regulator")


def test_write_dev_pki_writes_default_institutions_with_private_keys(tmp_path: Path) -> None:
    paths = write_dev_pki(tmp_path / "pki")
    assert set(paths.institutions) == {i.institution_id for i in DEFAULT_DEV_INSTITUTIONS}
    assert {"bank-demo", "court-demo", "regulator-demo", "office-demo"} <= set(paths.institutions)
    expected_roles = {i.institution_id: i.role for i in DEFAULT_DEV_INSTITUTIONS}
    assert expected_roles["court-demo"] == InstitutionRole.INSTITUTION_ROLE_JUDICIAL_ORGAN
    ca = load_certified_key(paths.ca_cert, paths.ca_key)
    for institution_id, files in paths.institutions.items():
        _, cert = load_certified_key(files.cert, files.key)
        _verify_client(ca.cert, cert)
        assert institution_from_certificate(cert).role == expected_roles[institution_id]
    for key in (paths.ca_key, paths.server.key, *(f.key for f in paths.institutions.values())):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_write_dev_pki_refuses_to_replace_an_existing_ca(tmp_path: Path) -> None:
    write_dev_pki(tmp_path, [])
    with pytest.raises(FileExistsError):
        write_dev_pki(tmp_path, [])
    write_dev_pki(tmp_path, [], force=True)


def test_add_institution_issues_from_the_existing_ca(tmp_path: Path) -> None:
    paths = write_dev_pki(tmp_path, [])
    tax = Institution("tax-demo", InstitutionRole.INSTITUTION_ROLE_TAX_AUTHORITY, "Demo Tax")
    files = add_institution(tmp_path, tax)
    _, cert = load_certified_key(files.cert, files.key)
    _verify_client(x509.load_pem_x509_certificate(paths.ca_cert.read_bytes()), cert)
    assert institution_from_certificate(cert) == tax
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        add_institution(tmp_path, tax)


@pytest.mark.parametrize(
    ("fixture_cert", "reason"),
    [("no_san", "INSTITUTION_ID_MISSING"), ("unknown_role", "INSTITUTION_ROLE_UNKNOWN")],
)
def test_certs_without_valid_identity_are_rejected_with_a_reason(
    dev_pki: DevPki, fixture_cert: str, reason: str
) -> None:
    cert = x509.load_pem_x509_certificate(getattr(dev_pki, fixture_cert).cert.read_bytes())
    with pytest.raises(CertificateRejected) as caught:
        institution_from_certificate(cert)
    assert caught.value.reason == reason


def test_uri_prefix_is_the_documented_urn() -> None:
    assert INSTITUTION_URI_PREFIX == "urn:credgate:institution:"
