"""Rendering a page: the jinja2 environment (autoescape on) and what every template gets.

Every template extends ``base.html`` and fills ``{% block content %}`` (and ``title``).
The context always has ``_`` (labels: ``{{ _("nav.home") }}``), ``lang``, ``reader``,
``mode``, ``nav`` (the navigation pages), ``path`` and ``csrf_field()`` (put it in every POST
form). Filters: ``when`` (a protobuf Timestamp or datetime as ``YYYY-MM-DD HH:MM:SSZ``),
``enum`` (``value|enum(Purpose, "PURPOSE_")`` → ``judicial_investigation``).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import jinja2
from aiohttp import web
from google.protobuf import timestamp_pb2
from markupsafe import Markup

from credgate.gateway.console.connection import GatewayConnection
from credgate.gateway.console.labels import LANGUAGE_COOKIE, choose_language, translate
from credgate.gateway.console.pages import navigation
from credgate.gateway.console.security import CSRF_FIELD, CSRF_KEY

CONNECTION_KEY = web.AppKey("connection", GatewayConnection)


def connection(request: web.Request) -> GatewayConnection:
    """The gateway connection pages call (``connection(request).regulator.ListAuditEntries``)."""
    return request.app[CONNECTION_KEY]


def when(value: Any) -> str:
    if isinstance(value, timestamp_pb2.Timestamp):
        if not value.seconds and not value.nanos:
            return "-"
        value = value.ToDatetime(dt.UTC)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return "-" if value is None else str(value)


def enum_label(value: int, enum: Any, prefix: str) -> str:
    name: str = enum.Name(value) if value in enum.values() else str(value)
    return name.removeprefix(prefix).lower()


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("credgate.gateway.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["enum"] = enum_label
    return env


def language(request: web.Request) -> str:
    return choose_language(
        request.query.get("lang"),
        request.cookies.get(LANGUAGE_COOKIE),
        request.headers.get("Accept-Language", ""),
    )


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """``template`` rendered with ``context`` and the common context, as an HTML response."""
    lang = language(request)
    gateway = connection(request)
    csrf = request.get(CSRF_KEY, "")
    common = {
        "_": functools.partial(translate, lang),
        "lang": lang,
        "reader": gateway.reader,
        "mode": gateway.mode,
        "nav": navigation(gateway.mode),
        "path": request.path,
        "csrf_field": lambda: Markup('<input type="hidden" name="{}" value="{}">').format(
            CSRF_FIELD, csrf
        ),
    }
    body = environment().get_template(template).render({**common, **context})
    response = web.Response(status=status, text=body, content_type="text/html")
    if request.query.get("lang") == lang:
        response.set_cookie(LANGUAGE_COOKIE, lang, httponly=True, samesite="Strict", path="/")
    return response


def page_url(request: web.Request, **changes: str | None) -> str:
    """This page's URL with query parameters changed (None or "" removes one): for pager links."""
    query = dict(request.query)
    for key, value in changes.items():
        if value:
            query[key] = value
        else:
            query.pop(key, None)
    return str(request.rel_url.with_query(query))
