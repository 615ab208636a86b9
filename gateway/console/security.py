"""What keeps other local programs and web pages out of the console.

The console serves data the reader's certificate may see, on a loopback port any local process
(or any web page the reader visits, through the browser) could reach. So:

* **One-time secret.** The printed URL carries ``?token=SECRET``. The first request with it
  gets a session cookie (HttpOnly, SameSite=Strict, named per port) and a redirect that drops
  the token from the address bar; the token is then spent, and any later use is refused.
  Every request without the session cookie gets a plain 403 page, no data.
* **Host check.** The Host header must be the address:port the console is bound to, so a
  hostile name that resolves to 127.0.0.1 (DNS rebinding) gets nothing.
* **CSRF.** Every POST form carries the session's CSRF token (``csrf_field()`` in templates);
  a POST without it is refused.
* **Headers.** A Content-Security-Policy of ``default-src 'self'`` (no inline script or style:
  inline SVG must use presentation attributes such as ``fill``, not ``style``), no framing,
  no referrer, and no caching of any page.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN_PARAMETER = "token"  # noqa: S105 - the query parameter's name, not a secret
CSRF_FIELD = "csrf"
_SECRET_BYTES = 32
CSRF_KEY = web.RequestKey("csrf", str)
"""The session's CSRF token, on every request past the gate (``rendering`` puts it in forms)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class SecretGate:
    """The one-time secret and the sessions it opened (in memory: a restart needs a new URL)."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(_SECRET_BYTES))
    spent: bool = False
    sessions: dict[str, str] = field(default_factory=dict)
    """Session id -> that session's CSRF token."""

    def spend(self, offered: str) -> str | None:
        """A new session id if ``offered`` is the unspent token; None otherwise."""
        if self.spent or not hmac.compare_digest(offered.encode(), self.token.encode()):
            return None
        self.spent = True
        session = secrets.token_urlsafe(_SECRET_BYTES)
        self.sessions[session] = secrets.token_urlsafe(_SECRET_BYTES)
        return session

    def csrf_for(self, session: str | None) -> str | None:
        """The CSRF token of a live session, None for an unknown one."""
        if not session:
            return None
        for known, csrf in self.sessions.items():
            if hmac.compare_digest(known.encode(), session.encode()):
                return csrf
        return None


def cookie_name(port: int) -> str:
    """Cookies are per host, not per port: two consoles on one machine must not share one."""
    return f"credgate_console_{port}"


def refusal(why: str) -> web.Response:
    """The plain 403 page: says what to do, shows nothing else."""
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>credgate console: refused"
        f"</title><h1>Refused</h1><p>{why}</p><p>Open the console with the URL "
        "<code>credgate console</code> printed (it works once), from this machine.</p></html>"
    )
    return web.Response(status=403, text=body, content_type="text/html")


def security_middleware(gate: SecretGate, allowed_hosts: Callable[[], set[str]]) -> Any:
    """The aiohttp middleware doing all of the above, before any page handler runs."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.headers.get("Host", "") not in allowed_hosts():
            return refusal("This console answers only at its own loopback address.")
        name = cookie_name(request.url.port or 0)
        offered = request.query.get(TOKEN_PARAMETER)
        if offered is not None:
            session = gate.spend(offered)
            if session is None:
                return refusal("This one-time link has already been used, or is wrong.")
            query = {k: v for k, v in request.query.items() if k != TOKEN_PARAMETER}
            location = request.rel_url.with_query(query)
            response = web.Response(status=303, headers={"Location": str(location)})
            response.set_cookie(
                name, session, httponly=True, samesite="Strict", path="/", secure=False
            )
            return response
        csrf = gate.csrf_for(request.cookies.get(name))
        if csrf is None:
            return refusal("No console session: this browser has not opened the console's link.")
        if request.method not in ("GET", "HEAD"):
            form = await request.post()
            sent = form.get(CSRF_FIELD)
            if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), csrf.encode()):
                return refusal("The form was not sent from this console (CSRF check failed).")
        request[CSRF_KEY] = csrf
        return await handler(request)

    return middleware


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, streamed ones included, gets the headers."""
    for header, value in SECURITY_HEADERS.items():
        response.headers.setdefault(header, value)
