"""Certificate identity fields are read exactly: one value each, byte for byte, no hidden tails.

Each hostile certificate is signed by the trusted dev CA (``tests.fixtures.pki``), so TLS
accepts it and only ``core.institution`` stands between it and an identity. A certificate
that two parsers could read as two identities — a role followed by a NUL, a look-alike letter
that upper-cases into a role, two roles, two institution URIs — is UNAUTHENTICATED with an
ErrorInfo reason, never a role.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from credgate.core.institution import (
    INSTITUTION_URI_PREFIX,
    CertificateRejected,
    InstitutionRole,
    institution_from_certificate,
)
from credgate.gateway.pki import CertKeyPaths, load_certified_key
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.pki import DevPki, _crafted_client_cert, mtls_channel, running_gateway
from tests.test_mtls import SERVICE, probe_handler

OU = NameOID.ORGANIZATIONAL_UNIT_NAME
O = NameOID.ORGANIZATION_NAME  # noqa: E741 - the X.500 attribute's own name
CN = NameOID.COMMON_NAME
ID = "hostile-bank"
SUBJECT_ID = "subject." + "a" * 32


def _uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _ours(institution_id: str = ID) -> list[x509.GeneralName]:
    return [_uri(INSTITUTION_URI_PREFIX + institution_id)]


def _bank(role: str) -> x509.Name:
    return _name((O, "Hostile Bank"), (OU, role), (CN, ID))


TWO_OU_RDN = x509.Name(
    [
        x509.RelativeDistinguishedName(
            [x509.NameAttribute(OU, "financial_institution"), x509.NameAttribute(OU, "regulator")]
        ),
        x509.RelativeDistinguishedName([x509.NameAttribute(CN, ID)]),
    ]
)

HOSTILE: dict[str, tuple[x509.Name, list[x509.GeneralName], str]] = {
    # The role (OU): exactly one value, exactly a known name.
    "role-nul-tail": (_bank("judicial_organ\x00regulator"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-trailing-nul": (_bank("regulator\x00"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-dotless-i": (_bank("fınancial_institution"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-long-s": (_bank("financial_inſtitution"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-upper-case": (_bank("REGULATOR"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-full-width": (_bank("ｒｅｇｕｌａｔｏｒ"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-padded": (_bank(" regulator"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-newline": (_bank("regulator\n"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-rtl-mark": (_bank("\u200fregulator"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-zero-width": (_bank("regu\u200blator"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-unspecified": (_bank("unspecified"), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "role-missing": (_name((O, "Hostile Bank"), (CN, ID)), _ours(), "INSTITUTION_ROLE_UNKNOWN"),
    "two-roles": (
        _name((OU, "financial_institution"), (OU, "regulator"), (CN, ID)),
        _ours(),
        "INSTITUTION_ROLE_AMBIGUOUS",
    ),
    "same-role-twice": (
        _name((OU, "regulator"), (OU, "regulator"), (CN, ID)),
        _ours(),
        "INSTITUTION_ROLE_AMBIGUOUS",
    ),
    "two-roles-one-rdn": (TWO_OU_RDN, _ours(), "INSTITUTION_ROLE_AMBIGUOUS"),
    # The institution id (URI SAN): exactly one in the namespace, exactly the id shape.
    "two-ids": (
        _bank("financial_institution"),
        _ours() + _ours("regulator-demo"),
        "INSTITUTION_ID_AMBIGUOUS",
    ),
    "second-id-in-upper-case-scheme": (
        _bank("financial_institution"),
        [*_ours(), _uri("URN:CREDGATE:INSTITUTION:regulator-demo")],
        "INSTITUTION_ID_AMBIGUOUS",
    ),
    "id-in-upper-case-scheme": (
        _bank("financial_institution"),
        [_uri("URN:CREDGATE:INSTITUTION:" + ID)],
        "INSTITUTION_ID_INVALID",
    ),
    "id-nul-tail": (
        _bank("financial_institution"),
        _ours(ID + "\x00regulator-demo"),
        "INSTITUTION_ID_INVALID",
    ),
    "id-newline": (_bank("financial_institution"), _ours(ID + "\n"), "INSTITUTION_ID_INVALID"),
    "bank-with-a-subject-id": (
        _bank("financial_institution"),
        _ours(SUBJECT_ID),
        "INSTITUTION_ID_INVALID",
    ),
    "subject-id-nul-tail": (
        _name((OU, "subject"), (CN, "s")),
        _ours(SUBJECT_ID + "\x00"),
        "INSTITUTION_ID_INVALID",
    ),
    # The display name (O): at most one, no control or format characters.
    "two-names": (
        _name((O, "Hostile Bank"), (O, "Demo Regulator"), (OU, "financial_institution")),
        _ours(),
        "INSTITUTION_NAME_INVALID",
    ),
    "name-nul": (
        _name((O, "Hostile Bank\x00Demo Regulator"), (OU, "financial_institution")),
        _ours(),
        "INSTITUTION_NAME_INVALID",
    ),
    "name-rtl-override": (
        _name((O, "Hostile \u202eknaB"), (OU, "financial_institution")),
        _ours(),
        "INSTITUTION_NAME_INVALID",
    ),
    "name-bell": (
        _name((O, "Hostile Bank\x07"), (OU, "financial_institution")),
        _ours(),
        "INSTITUTION_NAME_INVALID",
    ),
}


@pytest.fixture(scope="module")
def hostile_certs(dev_pki: DevPki) -> dict[str, CertKeyPaths]:
    """Every hostile certificate, signed by the trusted dev CA."""
    ca = load_certified_key(dev_pki.paths.ca_cert, dev_pki.paths.ca_key)
    directory: Path = dev_pki.paths.directory
    return {
        case: _crafted_client_cert(ca, directory, f"hostile-{case}", subject, sans)
        for case, (subject, sans, _) in HOSTILE.items()
    }


def _load(paths: CertKeyPaths) -> x509.Certificate:
    return x509.load_pem_x509_certificate(paths.cert.read_bytes())


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_identity_fields_are_rejected(
    hostile_certs: dict[str, CertKeyPaths], case: str
) -> None:
    with pytest.raises(CertificateRejected) as rejected:
        institution_from_certificate(_load(hostile_certs[case]))
    assert rejected.value.reason == HOSTILE[case][2]
    assert re.fullmatch(r"[A-Z_]+", rejected.value.reason)


def test_exact_fields_are_still_accepted_with_unrelated_sans_and_a_chinese_name(
    dev_pki: DevPki,
) -> None:
    """The control: the checks refuse ambiguity, not ordinary certificates."""
    ca = load_certified_key(dev_pki.paths.ca_cert, dev_pki.paths.ca_key)
    paths = _crafted_client_cert(
        ca,
        dev_pki.paths.directory,
        "exact-bank",
        _name((O, "示例银行 股份有限公司"), (OU, "financial_institution"), (CN, ID)),
        [*_ours(), _uri("https://bank.example/"), x509.DNSName("bank.example")],
    )
    found = institution_from_certificate(_load(paths))
    assert found.institution_id == ID
    assert found.role == InstitutionRole.INSTITUTION_ROLE_FINANCIAL_INSTITUTION
    assert found.display_name == "示例银行 股份有限公司"


@pytest.mark.parametrize(
    "case", ["role-nul-tail", "role-dotless-i", "two-roles", "two-ids", "bank-with-a-subject-id"]
)
async def test_hostile_certificate_is_unauthenticated_over_mtls(
    dev_pki: DevPki, hostile_certs: dict[str, CertKeyPaths], case: str
) -> None:
    async with (
        running_gateway(dev_pki, [(probe_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0, hostile_certs[case]) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
    code, info, _ = parse_error(caught.value)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert info is not None
    assert (info.reason, info.domain) == (HOSTILE[case][2], "credgate")
