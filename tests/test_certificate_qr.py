"""The repair-status certificate as a QR code (issue #17): the code a real decoder reads back
(zxing-cpp) is the certificate's compact form, which verifies offline on its own — with the
client library and with ``credgate verify-certificate`` — and is refused when altered."""

from __future__ import annotations

import datetime as dt
import json
import zlib
from pathlib import Path

import pytest
import segno
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.mocks.population import Population
from credgate.gateway.certificate_qr import certificate_qr, certificate_qr_svg
from credgate.gateway.repair_certificate_format import (
    COMPACT_PREFIX,
    CertificateVerificationError,
    b45decode,
    b45encode,
    compact_certificate,
    expand_certificate,
    sign_certificate,
    verify_certificate,
)
from credgate.gateway.report_signing import SIGNATURE_BYTES, index_public_keys, raw_public_key
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.subjects import enrol_subject, subject_client
from tests.test_consent_cli import credgate

NUMBER = "440304198511030421"


def _signed(key: Ed25519PrivateKey, now: dt.datetime) -> str:
    return sign_certificate(
        key,
        certificate_id="0f" * 16,
        state="OBSERVATION",
        dates={"observation_start": "2026-01-05", "observation_end": "2029-01-05"},
        issued_at=now,
        expires_at=now + dt.timedelta(days=30),
        status_list_id="cl_" + "a" * 29,
        status_index=40_000,
        identity_number=NUMBER,
    )


def _scanned(code: segno.QRCode) -> str:
    """What a scanner reads off the code: the symbol drawn as a grey image, decoded by
    zxing-cpp (an independent decoder) rather than read back from segno."""
    scale, border = 4, 4
    matrix = [list(row) for row in code.matrix]
    side = (len(matrix) + 2 * border) * scale
    pixels = bytearray()
    for y in range(side):
        row = y // scale - border
        for x in range(side):
            column = x // scale - border
            inside = 0 <= row < len(matrix) and 0 <= column < len(matrix)
            pixels.append(0 if inside and matrix[row][column] else 255)
    [found] = zxingcpp.read_barcodes(memoryview(bytes(pixels)).cast("B", (side, side)))
    assert found.format == zxingcpp.BarcodeFormat.QRCode
    return str(found.text)


def test_base45_is_rfc_9285() -> None:
    assert b45encode(b"AB") == "BB8"  # the RFC's examples
    assert b45encode(b"Hello!!") == "%69 VD92EX0"
    assert b45encode(b"base-45") == "UJCLQE7W581"
    assert b45decode("QED8WEX0") == b"ietf!"
    for bad in ("GGW", "a", "ABCD", "Q~D"):  # out of range, lower case, a lone char, alphabet
        with pytest.raises(ValueError):
            b45decode(bad)
    data = bytes(range(256))
    assert b45decode(b45encode(data)) == data


def test_the_code_holds_the_same_signed_bytes_and_verifies_from_its_content_alone() -> None:
    key = Ed25519PrivateKey.generate()
    keys = index_public_keys([raw_public_key(key)])
    now = dt.datetime.now(dt.UTC)
    text = _signed(key, now)
    code = certificate_qr(text)
    scanned = _scanned(code)
    assert scanned == compact_certificate(text)
    assert scanned.startswith(COMPACT_PREFIX)
    assert expand_certificate(scanned) == text  # the gateway's bytes and signature, unchanged
    assert verify_certificate(scanned, keys, now=now, identity_number=NUMBER).state == (
        "OBSERVATION"
    )
    # Smaller than a code of the text form: the reason the compact form exists.
    assert code.error == "M"
    text_version = segno.make_qr(text, error="m", boost_error=False).version
    assert isinstance(code.version, int)
    assert isinstance(text_version, int)
    assert code.version < text_version
    assert code.version <= 16

    svg = certificate_qr_svg(text, title="certificate")
    assert svg.startswith("<svg")
    assert "<title>certificate</title>" in svg
    assert "<?xml" not in svg
    assert "script" not in svg


def test_an_altered_or_inflated_compact_form_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    keys = index_public_keys([raw_public_key(key)])
    now = dt.datetime.now(dt.UTC)
    compact = compact_certificate(_signed(key, now))
    body = compact[len(COMPACT_PREFIX) :]
    for at in range(0, len(body), 7):
        replacement = "0" if body[at] != "0" else "1"
        altered = COMPACT_PREFIX + body[:at] + replacement + body[at + 1 :]
        with pytest.raises(CertificateVerificationError):
            verify_certificate(altered, keys, now=now)
    signature = b45decode(body)[-SIGNATURE_BYTES:]
    bomb = zlib.compress(b"{" + b" " * 10_000_000 + b"}", 9) + signature
    for hostile in (bomb, b"\x00" * 10, zlib.compress(b"{}") + b"x" + signature):
        with pytest.raises(CertificateVerificationError) as caught:
            verify_certificate(COMPACT_PREFIX + b45encode(hostile), keys, now=now)
        assert caught.value.reason == "MALFORMED"


async def test_the_cli_writes_a_qr_whose_content_verify_certificate_accepts(
    gateway: RunningGateway, population: Population, tmp_path: Path
) -> None:
    number = population.scenarios["restored_reorganization"].person.identity_number
    subject = await enrol_subject(gateway, number)
    async with subject_client(gateway, subject):
        pass  # issues the subject's TLS certificate
    where = ["--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory)]
    issue = ["certificate", "issue", number, "--institution", subject.institution_id, *where]
    code, _, err = await credgate(*issue, "--out", str(tmp_path / "c.txt"), "--qr", "c.gif")
    assert code == 2
    assert ".svg or .png" in err
    assert not (tmp_path / "c.txt").exists()  # refused before anything was issued
    svg, png = tmp_path / "c.svg", tmp_path / "c.png"
    for qr in (svg, png):
        code, out, err = await credgate(*issue, "--out", str(tmp_path / "c.txt"), "--qr", str(qr))
        assert code == 0, err
        assert "QR code written" in out
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    text = (tmp_path / "c.txt").read_text().strip()
    scanned = tmp_path / "scanned.txt"  # what a lender's scanner hands verify-certificate
    scanned.write_text(_scanned(certificate_qr(text)) + "\n")
    keys, status = str(tmp_path / "keys.json"), str(tmp_path / "list.txt")
    code, _, err = await credgate(
        "certificate", "status", "--keys-out", keys, "--status-list-out", status, *where
    )
    assert code == 0, err
    offline = ["verify-certificate", str(scanned), "--keys", keys, "--status-list", status]
    code, out, err = await credgate(*offline, "--identity-number", number, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "RESTORED"


def test_the_documented_expand_function_gives_back_the_text_form() -> None:
    """docs/certificate.md's ``expand`` (its last ``python`` block), run on its own."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "certificate.md").read_text("utf-8")
    start = doc.rindex("```python\n") + len("```python\n")
    namespace: dict[str, object] = {}
    exec(doc[start : doc.index("```", start)], namespace)  # the docs' own code
    key = Ed25519PrivateKey.generate()
    text = _signed(key, dt.datetime.now(dt.UTC))
    expand = namespace["expand"]
    assert callable(expand)
    assert expand(compact_certificate(text)) == text
