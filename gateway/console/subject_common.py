"""What every subject page shares: the enum labels in the request's language, the page for a
refusal, and the subject's key (loaded only when a change is signed)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.gateway.client import CredgateError
from credgate.gateway.console.labels import translate
from credgate.gateway.console.rendering import connection, language, render
from credgate.gateway.console.subject_labels import enum_key
from credgate.gateway.subject_key_file import load_subject_key


def enum_labeller(request: web.Request) -> Any:
    """``E(Purpose, value)`` for the templates: the value's label in the request's language."""
    lang = language(request)

    def labelled(enum: Any, value: int) -> str:
        return "-" if value == 0 else translate(lang, enum_key(enum, value))  # 0: not set

    return labelled


def refused(request: web.Request, error: CredgateError) -> web.Response:
    """The gateway's refusal as the console's error page (its code, reason and message)."""
    status = {"PERMISSION_DENIED": 403, "INVALID_ARGUMENT": 400, "NOT_FOUND": 404}
    return render(request, "error.html", status=status.get(error.code.name, 502), error=error)


def subject_key(request: web.Request) -> Ed25519PrivateKey | None:
    """The subject's signing key from ``--subject-key``, read from its file now; ``None`` when
    the console was started without one. It is used in this process and never sent or shown."""
    path = connection(request).subject_key
    return None if path is None else load_subject_key(path)
