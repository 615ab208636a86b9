"""``/``: who the console is signed in as, and where to go from here."""

from __future__ import annotations

from aiohttp import web

from credgate.gateway.console.pages import page
from credgate.gateway.console.rendering import connection, render


@page("/", mode=None, nav="nav.home", order=0)
async def home(request: web.Request) -> web.StreamResponse:
    gateway = connection(request)
    return render(request, "home.html", gateway_target=gateway.target)
