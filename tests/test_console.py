"""The console's gate (docs/console.md, "Security"): the one-time secret, the session cookie,
the Host check, CSRF and the response headers — plain HTTP, no browser needed.

The console here is connected to a dev PKI certificate but to no gateway: these tests never
get past the gate to a page that calls one (the home page calls nothing).
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from credgate.gateway.console.app import Console, require_loopback
from credgate.gateway.console.connection import GatewayConnection, Mode
from credgate.gateway.console.labels import LABELS
from credgate.gateway.console.pages import discover, page
from credgate.gateway.console.security import SECURITY_HEADERS, cookie_name
from tests.fixtures.pki import DevPki

NOWHERE = "127.0.0.1:9"
"""A gateway address nothing listens on: these tests never call the gateway."""


POST_PAGE = "/test/post"
POSTED: list[str] = []


async def _record(request: web.Request) -> web.StreamResponse:
    POSTED.append(str((await request.post()).get("note")))
    return web.Response(text="recorded")


class _ConsoleWithAForm(Console):
    """The console plus a throwaway POST page, to see which POSTs reach a handler."""

    def build(self) -> web.Application:
        app = super().build()
        app.router.add_post(POST_PAGE, _record)
        return app


@pytest.fixture
async def console(dev_pki: DevPki) -> AsyncIterator[Console]:
    paths = dev_pki.institution("regulator-demo")
    connection = GatewayConnection.open(
        NOWHERE, ca=dev_pki.paths.ca_cert, cert=paths.cert, key=paths.key
    )
    console = _ConsoleWithAForm(connection)
    await console.start()
    try:
        yield console
    finally:
        await console.stop()


def _session() -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar otherwise ignores cookies set by an IP-address host.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def _base(console: Console) -> str:
    return f"http://127.0.0.1:{console.port}"


async def test_without_the_secret_every_request_is_refused(console: Console) -> None:
    async with _session() as http:
        for path in ("/", "/static/console.css", "/regulator/audit", "/no-such-page"):
            async with http.get(_base(console) + path, allow_redirects=False) as response:
                assert response.status == 403, path
                body = await response.text()
                assert "Refused" in body
                assert "regulator-demo" not in body


async def test_the_secret_opens_one_session_and_is_then_spent(console: Console) -> None:
    async with _session() as http:
        async with http.get(console.url, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/"  # the token left the address bar
            cookie = response.cookies[cookie_name(console.port)]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Strict"
        async with http.get(_base(console) + "/") as response:
            assert response.status == 200
            assert "regulator-demo" in await response.text()
            for header, value in SECURITY_HEADERS.items():
                assert response.headers[header] == value
    async with _session() as other:  # someone else (or a second tab's replay) with the link
        async with other.get(console.url, allow_redirects=False) as response:
            assert response.status == 403
            assert "already been used" in await response.text()
        async with other.get(_base(console) + "/") as response:
            assert response.status == 403


async def test_a_wrong_secret_is_refused_and_does_not_spend_the_right_one(
    console: Console,
) -> None:
    async with _session() as http:
        async with http.get(_base(console) + "/?token=guess", allow_redirects=False) as response:
            assert response.status == 403
        async with http.get(console.url, allow_redirects=False) as response:
            assert response.status == 303


async def test_a_forged_cookie_is_refused(console: Console) -> None:
    async with _session() as http:
        http.cookie_jar.update_cookies({cookie_name(console.port): "forged"})
        async with http.get(_base(console) + "/") as response:
            assert response.status == 403


async def test_another_host_name_is_refused_even_with_the_secret(console: Console) -> None:
    """DNS rebinding: a hostile name resolving to 127.0.0.1 reaches the port, not the data."""
    async with _session() as http:
        headers = {"Host": f"evil.example:{console.port}"}
        async with http.get(console.url, headers=headers, allow_redirects=False) as response:
            assert response.status == 403
        async with http.get(console.url, allow_redirects=False) as response:
            assert response.status == 303  # the refused request did not spend the secret
        async with http.get(_base(console) + "/", headers=headers) as response:
            assert response.status == 403
        async with http.get(_base(console) + "/", headers={"Host": "localhost"}) as response:
            assert response.status == 403


async def test_a_post_without_the_csrf_token_is_refused(console: Console) -> None:
    POSTED.clear()
    page_path = POST_PAGE
    async with _session() as http:
        async with http.get(console.url) as response:
            assert response.status == 200
            text = await response.text()
        async with http.post(_base(console) + page_path, data={"note": "a"}) as response:
            assert response.status == 403
        async with http.post(
            _base(console) + page_path, data={"note": "b", "csrf": "wrong"}
        ) as response:
            assert response.status == 403
        csrf = console.gate.sessions[next(iter(console.gate.sessions))]
        async with http.post(
            _base(console) + page_path, data={"note": "c", "csrf": csrf}
        ) as response:
            assert response.status == 200
    assert POSTED == ["c"]
    assert "regulator-demo" in text


def test_the_console_listens_on_loopback_only() -> None:
    assert require_loopback("127.0.0.1") == "127.0.0.1"
    assert require_loopback("::1") == "::1"
    for host in ("0.0.0.0", "192.168.1.5", "::", "localhost.evil", ""):
        with pytest.raises(ValueError, match="loopback"):
            require_loopback(host)


def test_every_label_has_english_and_chinese() -> None:
    discover()
    assert set(LABELS["en"]) == set(LABELS["zh"]), set(LABELS["en"]) ^ set(LABELS["zh"])


def test_two_pages_at_one_path_are_refused() -> None:
    discover()
    with pytest.raises(ValueError, match="two console pages"):
        page("/", mode=Mode.REGULATOR)(lambda request: None)  # type: ignore[arg-type,return-value]


def _cli(dev_pki: DevPki, *extra: str) -> list[str]:
    paths = dev_pki.institution("regulator-demo")
    return [
        sys.executable,
        "-m",
        "credgate.gateway.cli",
        "console",
        "--gateway",
        NOWHERE,
        "--cert",
        str(paths.cert),
        "--key",
        str(paths.key),
        "--ca",
        str(dev_pki.paths.ca_cert),
        *extra,
    ]


def test_the_command_prints_the_one_time_url_and_serves_it(dev_pki: DevPki) -> None:
    process = subprocess.Popen(_cli(dev_pki), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert "regulator mode, as regulator-demo" in lines[0]
        url = urllib.parse.urlsplit(lines[1].split()[-1])
        assert url.hostname == "127.0.0.1"
        assert url.query.startswith("token=")
        assert len(url.query.removeprefix("token=")) >= 43  # 32 random bytes
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        connection.request("GET", f"/?{url.query}")
        response = connection.getresponse()
        assert response.status == 303
        assert "HttpOnly" in (response.getheader("Set-Cookie") or "")
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_command_refuses_a_non_loopback_address(dev_pki: DevPki) -> None:
    done = subprocess.run(
        _cli(dev_pki, "--host", "0.0.0.0"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr
