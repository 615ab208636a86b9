"""``/subject/certificate``: issue and download my repair-status certificate (docs/certificate.md).

The subject types their own identity number (the gateway checks it is theirs; it is not kept
here); the console asks for the certificate (``IssueRepairStatusCertificate``, an audited
disclosure to the subject), checks it against the gateway's published keys and status list as
a lender would, and shows its state, dates and QR code inline as SVG, with the certificate file
and the QR's SVG to download. The issued certificate is held in this console's memory only
(the last few, under an unguessable id, behind the session) so that the answer to the POST can
be a redirect.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

from aiohttp import web
from markupsafe import Markup

from credgate.gateway.client import CredgateError
from credgate.gateway.console.connection import Mode
from credgate.gateway.console.pages import page
from credgate.gateway.console.rendering import connection, render
from credgate.gateway.console.subject_common import refused
from credgate.gateway.console.subject_view import IssuedCertificate, issue_certificate

PATH = "/subject/certificate"
_KEPT = 8
_issued: OrderedDict[str, IssuedCertificate] = OrderedDict()
"""The last certificates this console issued, by a random id (memory only)."""


def _keep(certificate: IssuedCertificate) -> str:
    handle = secrets.token_urlsafe(16)
    _issued[handle] = certificate
    while len(_issued) > _KEPT:
        _issued.popitem(last=False)
    return handle


@page(PATH, mode=Mode.SUBJECT, nav="nav.subject_certificate", order=40)
async def certificate(request: web.Request) -> web.StreamResponse:
    handle = request.query.get("issued", "")
    issued = _issued.get(handle)
    return render(
        request,
        "subject/certificate.html",
        issued=issued,
        handle=handle if issued else "",
        # segno draws only paths (no title, no text of ours): nothing in it to escape
        qr=Markup(issued.qr_svg) if issued else "",  # noqa: S704
    )


@page(PATH, mode=Mode.SUBJECT, method="POST")
async def issue(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    number = str(form.get("identity_number", "")).strip()
    try:
        days = int(str(form.get("days", "") or 0))
    except ValueError:
        days = -1
    if not number or not 0 <= days <= 90:
        raise web.HTTPBadRequest(text="your identity number, and 1 to 90 days")
    try:
        issued = await issue_certificate(connection(request).client, number, validity_days=days)
    except CredgateError as error:
        return refused(request, error)
    raise web.HTTPSeeOther(f"{PATH}?issued={_keep(issued)}")


@page(PATH + "/{file}", mode=Mode.SUBJECT)
async def download(request: web.Request) -> web.StreamResponse:
    handle, _, suffix = request.match_info["file"].rpartition(".")
    issued = _issued.get(handle)
    if issued is None or suffix not in ("txt", "svg"):
        raise web.HTTPNotFound()
    body, content_type = (
        (issued.text + "\n", "text/plain") if suffix == "txt" else (issued.qr_svg, "image/svg+xml")
    )
    return web.Response(
        text=body,
        content_type=content_type,
        headers={"Content-Disposition": f'attachment; filename="repair-certificate.{suffix}"'},
    )
