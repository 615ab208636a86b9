"""``credgate witness serve``: the tlog-witness HTTP endpoints over aiohttp.

* ``POST /add-checkpoint`` — the submission endpoint (``audit.witness.Witness`` judges);
* ``GET /<sha256(origin) hex>/checkpoint`` — the monitoring endpoint: the latest cosigned
  checkpoint of that log, its log signatures and the witness's cosignature (404 if none);
* ``GET /status`` — credgate's own addition: JSON with each log's cosigned size and time and
  the latest refusals, for a console or a monitoring probe.

TLS: with ``--tls-cert``/``--tls-key`` the witness serves HTTPS (the PKI's server certificate
fits); without them it serves plain HTTP and only on a loopback address. Nothing in the
protocol needs transport security for integrity — every answer is a signature the client
checks — but a regulator's witness on a network should not be reachable in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import ssl
import sys
from pathlib import Path

from aiohttp import web

from credgate.audit.witness import Answer, Witness

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
"""A checkpoint with 16 signatures and 63 proof lines is a few kilobytes."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _respond(answer: Answer) -> web.Response:
    content_type, _, charset = answer.content_type.partition("; charset=")
    return web.Response(
        status=answer.status,
        text=answer.body,
        content_type=content_type,
        charset=charset or None,
    )


def make_app(witness: Witness) -> web.Application:
    """The aiohttp application serving ``witness``."""

    async def add_checkpoint(request: web.Request) -> web.Response:
        body = await request.read()  # the whole body; past client_max_size aiohttp answers 413
        # SQLite commit with fsync: off the event loop.
        return _respond(await asyncio.to_thread(witness.add_checkpoint, body))

    async def checkpoint(request: web.Request) -> web.Response:
        note = await asyncio.to_thread(witness.checkpoint_for, request.match_info["origin_hash"])
        if note is None:
            return web.Response(status=404, text="no checkpoint cosigned for that log\n")
        return web.Response(text=note, content_type="text/plain", charset="utf-8")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(witness_status, witness))

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get("/{origin_hash:[0-9a-f]{64}}/checkpoint", checkpoint)
    app.router.add_get("/status", status)
    return app


def witness_status(witness: Witness) -> dict[str, object]:
    """The witness's name, key, and per log the cosigned size and the newest refusals."""
    latest = {s.origin: s for s in witness.state.all_latest()}
    logs = []
    for origin in witness.origins:
        state = latest.get(origin)
        logs.append(
            {
                "origin": origin,
                "cosigned_size": None if state is None else state.tree_size,
                "cosigned_at": None if state is None else state.cosigned_at,
                "refusals": [
                    {
                        "status": r.status,
                        "reason": r.reason,
                        "old_size": r.old_size,
                        "tree_size": r.tree_size,
                        "refused_at": r.refused_at,
                    }
                    for r in witness.state.refusals(origin, limit=10)
                ],
            }
        )
    return {"witness": witness.cosigner.verifier.to_vkey(), "logs": logs}


def server_tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def run_witness(
    witness: Witness,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    *,
    started: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled. Plain HTTP is refused unless ``host`` is loopback."""
    if tls is None and not is_loopback(host):
        raise ValueError("plain HTTP only on a loopback address; give --tls-cert and --tls-key")
    runner = web.AppRunner(make_app(witness), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        port = int(runner.addresses[0][1])  # the port bound, when 0 asked for any
        scheme = "https" if tls else "http"
        log.info(
            "witness %s listening on %s://%s:%d for %s",
            witness.cosigner.verifier.to_vkey(),
            scheme,
            host,
            port,
            ", ".join(witness.origins),
        )
        # The line tests and operators wait for, in one write (stdout may be unbuffered and
        # share its file with the log).
        sys.stdout.write(f"witness listening on {scheme}://{host}:{port}\n")
        sys.stdout.flush()
        if started is not None:
            started.set()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("witness stopping")
    finally:
        await runner.cleanup()


def status_json(witness: Witness) -> str:
    """``witness_status`` as indented JSON (``credgate witness status``)."""
    return json.dumps(witness_status(witness), indent=2)
