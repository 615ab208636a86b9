"""``credgate serve`` as a separate OS process, for the tests that kill it (and the rate).

The gateway runs exactly as an operator starts it: the ``credgate`` entry point, a TOML config
file, its own interpreter. Its log goes to a file the test reads to learn the port.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.fixtures.pki import DevPki
from tests.sync_support import ensure_provider_certs, sync_document

START_TIMEOUT_SECONDS = 30.0
_LISTENING = re.compile(r"gateway listening on \S+ \(port (\d+)\)")


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)  # strings, numbers, booleans and arrays of them read alike in TOML


def toml_document(document: dict[str, Any]) -> str:
    """Just enough TOML for a gateway config: tables, arrays of tables, inline tables."""
    lines: list[str] = []
    for section, body in document.items():
        for table in body if isinstance(body, list) else [body]:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def credgate_command() -> list[str]:
    script = Path(sys.executable).with_name("credgate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "credgate.gateway.cli"]


class GatewayProcess:
    """``credgate serve`` in its own OS process, started and killed at will."""

    def __init__(self, config: Path, log: Path) -> None:
        self._config = config
        self._log = log
        self._process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.starts = 0

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
        env["CREDGATE_GATEWAY_LISTEN"] = f"127.0.0.1:{self.port}"
        offset = self._log.stat().st_size if self._log.exists() else 0
        with self._log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *credgate_command(), "serve", "--config", str(self._config),
                stdout=log, stderr=log, env=env,
            )  # fmt: skip
        self.starts += 1
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            while True:
                text = self._log.read_bytes()[offset:].decode("utf-8", "replace")
                found = _LISTENING.search(text)
                if found:
                    self.port = int(found.group(1))
                    return
                if self._process.returncode is not None:
                    raise AssertionError(f"credgate serve exited early:\n{text}")
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL: no graceful stop, no flush, nothing the process can react to."""
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)
        assert await self._process.wait() == -signal.SIGKILL

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self._process.wait(), 15)


@asynccontextmanager
async def gateway_process(
    pki: DevPki, directory: Path, storage_url: str
) -> AsyncIterator[GatewayProcess]:
    ensure_provider_certs(pki)
    config = directory / "gateway.toml"
    config.write_text(toml_document(sync_document(pki, directory, storage_url)), encoding="utf-8")
    process = GatewayProcess(config, directory / "gateway.log")
    await process.start()
    try:
        yield process
    finally:
        await process.stop()
