"""The repair-status certificate as a QR code (docs/certificate.md, issue #17).

The code carries the certificate's compact form (``repair_certificate_format.compact_certificate``:
base45 of the deflated payload and the signature), so whoever scans it holds everything a
lender needs to verify it offline — the QR content alone, fed to ``credgate
verify-certificate``, is the certificate. Rendering is segno's (pure Python, no image library):
SVG for the console page and files, PNG for files.

Error correction M (15 % of the code may be lost) at version 14 or so: a screen or a print a
phone reads at arm's length.
"""

from __future__ import annotations

from pathlib import Path

import segno

from credgate.gateway.repair_certificate_format import compact_certificate

ERROR_CORRECTION = "m"
QR_FORMATS = (".svg", ".png")


def certificate_qr(certificate: str) -> segno.QRCode:
    """The QR code of ``certificate`` (its ``CGRC1.…`` text form); ``ValueError`` if it is not
    one. The error correction is never raised above M: a higher level would only grow the
    code."""
    return segno.make_qr(
        compact_certificate(certificate), error=ERROR_CORRECTION, boost_error=False
    )


def certificate_qr_svg(certificate: str, *, scale: int = 4, title: str = "") -> str:
    """An inline SVG (no XML declaration, for an HTML page) of the certificate's QR code."""
    svg: str = certificate_qr(certificate).svg_inline(
        scale=scale, border=4, dark="#000", light="#fff", title=title or None
    )
    return svg


def save_certificate_qr(certificate: str, path: Path, *, scale: int = 6) -> None:
    """Write the QR code to ``path``: SVG or PNG by its suffix (``ValueError`` otherwise)."""
    if path.suffix.lower() not in QR_FORMATS:
        raise ValueError(f"--qr {path}: name a .svg or .png file")
    certificate_qr(certificate).save(str(path), scale=scale, border=4)
