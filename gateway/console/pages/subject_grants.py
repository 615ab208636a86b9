"""``/subject/grants``: my consent grants and their states, with withdraw / pause / resume.

A button posts the grant and the change (a form with the session's CSRF token); the console
signs the ``ConsentStateChange`` here with the subject's key file (``--subject-key``) and sends
only the statement and its signature (``subject_view.change_own_grant``, the code
``credgate consent withdraw`` runs). The key is never rendered and never leaves the process.
"""

from __future__ import annotations

from aiohttp import web

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.client import CredgateError
from credgate.gateway.console.connection import Mode
from credgate.gateway.console.labels import translate
from credgate.gateway.console.pages import page
from credgate.gateway.console.rendering import connection, language, render
from credgate.gateway.console.subject_common import enum_labeller, refused, subject_key
from credgate.gateway.console.subject_view import GRANT_ACTIONS, change_own_grant, own_grants
from credgate.gateway.subject_key_file import SubjectKeyFileError

PATH = "/subject/grants"


@page(PATH, mode=Mode.SUBJECT, nav="nav.subject_grants", order=20)
async def grants(request: web.Request) -> web.StreamResponse:
    gateway = connection(request)
    try:
        rows = await own_grants(gateway.client)
    except CredgateError as error:
        return refused(request, error)
    done = request.query.get("done", "")
    return render(
        request,
        "subject/grants.html",
        grants=rows,
        done=done if done in GRANT_ACTIONS else "",
        done_grant=request.query.get("grant", ""),
        can_sign=gateway.subject_key is not None,
        E=enum_labeller(request),
        Purpose=vocab.Purpose,
        Category=vocab.DataCategory,
        State=consent_pb2.ConsentState,
    )


@page(PATH, mode=Mode.SUBJECT, method="POST")
async def change_grant(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    consent_id, action = str(form.get("consent_id", "")), str(form.get("action", ""))
    if action not in GRANT_ACTIONS or not consent_id:
        raise web.HTTPBadRequest(text="a grant and one of pause, resume, withdraw")
    try:
        key = subject_key(request)
    except SubjectKeyFileError as unusable:  # says which file and why; nothing was sent
        return render(request, "message.html", status=409, message=str(unusable))
    if key is None:
        message = translate(language(request), "subject.no_key")
        return render(request, "message.html", status=409, message=message)
    gateway = connection(request)
    try:
        await change_own_grant(gateway.client, key, consent_id, action, timeout=gateway.timeout)
    except CredgateError as error:
        return refused(request, error)
    raise web.HTTPSeeOther(f"{PATH}?done={action}&grant={consent_id}")
