"""SIGTERM always ends the process within the drain bound (issue #12, item 3).

Two layers are attacked: every step of releasing a real gateway is bounded (a step that hangs
on a stalled database is abandoned with a log line, the stop goes on), and behind them the
watchdog ends a real ``credgate serve`` process whose event loop is stuck — the deadlock seen
(the loop waiting on a lock a stuck thread holds) — within drain delay + grace + margin, saying
so in its log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from credgate.adapters.mocks.fleet import MockFleet
from credgate.gateway.app import build_gateway
from credgate.gateway.config import config_from_mapping
from credgate.gateway.server import RELEASE_SECONDS, SHUTDOWN_MARGIN_SECONDS
from tests.fixtures.mocks import gateway_document
from tests.fixtures.pki import DevPki
from tests.sync_process import _LISTENING, START_TIMEOUT_SECONDS, toml_document

GRACE = 0.5


async def test_a_release_step_that_hangs_cannot_hold_the_stop(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_from_mapping(
        gateway_document(mock_fleet, dev_pki, tmp_path), base_dir=tmp_path, environ={}
    )
    built = await build_gateway(config)
    await built.start()
    released = asyncio.Event()

    async def hangs() -> None:  # flushing fresh facts into a database that stalls
        await asyncio.sleep(3600)

    real_dispose = built.database.dispose

    async def dispose() -> None:
        await real_dispose()
        released.set()

    built.engine.aclose = hangs  # type: ignore[method-assign]
    built.database.dispose = dispose  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="credgate.gateway.server")
    started = time.monotonic()
    await asyncio.wait_for(built.stop(0), RELEASE_SECONDS + 10)
    elapsed = time.monotonic() - started

    assert elapsed < RELEASE_SECONDS + 1  # one budget for every release step, not one each
    assert released.is_set()  # the steps after the hung one still ran
    assert "closing the query engine did not finish" in caplog.text


STUCK_SERVE = textwrap.dedent(
    """
    import sys, threading
    import credgate.gateway.server as server

    held = threading.Lock()
    held.acquire()  # held for good, as by a thread stuck in a finalizer
    shutdown = server.GatewayServer._shutdown

    async def stuck(self, grace):
        held.acquire()  # the event loop blocks here: nothing on the loop runs any more
        await shutdown(self, grace)

    server.GatewayServer._shutdown = stuck
    from credgate.gateway.cli import main
    sys.exit(main(["serve", "--config", sys.argv[1]]))
    """
)


async def test_sigterm_ends_a_gateway_whose_event_loop_is_stuck_within_the_bound(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path
) -> None:
    document = gateway_document(mock_fleet, dev_pki, tmp_path)
    document["gateway"]["shutdown_grace_seconds"] = GRACE
    config = tmp_path / "gateway.toml"
    config.write_text(toml_document(document), encoding="utf-8")
    log = tmp_path / "gateway.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", STUCK_SERVE, str(config), stdout=out, stderr=out, env=env
        )
    try:
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            while not _LISTENING.search(log.read_text("utf-8", "replace")):
                assert process.returncode is None, log.read_text("utf-8", "replace")
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        bound = GRACE + SHUTDOWN_MARGIN_SECONDS
        status = await asyncio.wait_for(process.wait(), bound + 10)
        elapsed = time.monotonic() - started
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log.read_text("utf-8", "replace")
    assert status == 1, text
    assert bound - 0.5 <= elapsed < bound + 3, (elapsed, text)
    assert "did not stop within" in text
