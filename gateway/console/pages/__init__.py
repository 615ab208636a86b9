"""The console's pages: one module per page (or small group), found without a list to edit.

A page is an aiohttp handler registered with ``@page``::

    from credgate.gateway.console.pages import page
    from credgate.gateway.console.connection import Mode
    from credgate.gateway.console.rendering import connection, render

    @page("/regulator/objections", mode=Mode.REGULATOR, nav="nav.objections", order=40)
    async def overdue_objections(request: web.Request) -> web.StreamResponse:
        response = await connection(request).objections.ListOverdueObjections(...)
        return render(request, "regulator/objections.html", objections=response.objections)

``name`` (default: the handler's name) names the route for ``router[name].url_for()``;
``mode`` is who the page is for (the wrong certificate gets a 403 page; None: everyone);
``nav`` a label key to show it in the navigation bar, ordered by ``order``; ``method`` GET
(the default) or POST. Every module in this package is imported by ``discover()``, so a new
page is a new file here and its templates under ``templates/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from credgate.gateway.console.connection import Mode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Page:
    path: str
    handler: Handler
    mode: Mode | None
    nav: str | None
    order: int
    method: str
    name: str
    """The route's name, for ``request.app.router[name].url_for()``."""


PAGES: list[Page] = []


def page(
    path: str,
    *,
    mode: Mode | None,
    nav: str | None = None,
    order: int = 100,
    method: str = "GET",
    name: str = "",
) -> Callable[[Handler], Handler]:
    """Register the decorated handler at ``path`` (see the module docstring)."""

    def register(handler: Handler) -> Handler:
        if any(p.path == path and p.method == method for p in PAGES):
            raise ValueError(f"two console pages at {method} {path}")
        PAGES.append(Page(path, handler, mode, nav, order, method, name or handler.__name__))
        return handler

    return register


def discover() -> list[Page]:
    """Import every page module of this package; the registered pages."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return list(PAGES)


def navigation(mode: Mode) -> list[Page]:
    """The pages shown in the navigation bar for ``mode``, in order."""
    return sorted(
        (p for p in PAGES if p.nav and p.method == "GET" and p.mode in (None, mode)),
        key=lambda p: (p.order, p.path),
    )
