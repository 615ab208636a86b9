"""``credgate witness serve`` in its own OS process on loopback, for the witness tests.

Plain ``subprocess`` (not asyncio's): the witness outlives event loops in the CLI tests, and
starting or stopping it blocks only for the moment it takes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.sync_process import credgate_command

_LISTENING = re.compile(r"^witness listening on (http://127\.0\.0\.1:(\d+))\n", re.MULTILINE)
START_TIMEOUT_SECONDS = 30.0


class WitnessProcess:
    """A witness server process; restartable on the same state directory."""

    def __init__(self, key: Path, state: Path, logs: list[Path], output: Path) -> None:
        self._key = key
        self._state = state
        self._logs = logs
        self._output = output
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        """Start and wait for the listening line; return the base URL."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
        offset = self._output.stat().st_size if self._output.exists() else 0
        argv = [*credgate_command(), "witness", "serve", "--key", str(self._key)]
        argv += ["--state", str(self._state), "--listen", "127.0.0.1:0"]
        for log in self._logs:
            argv += ["--log", str(log)]
        with self._output.open("ab") as out:
            self._process = subprocess.Popen(argv, stdout=out, stderr=out, env=env)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            text = self._output.read_bytes()[offset:].decode("utf-8", "replace")
            found = _LISTENING.search(text)
            if found:
                self.url = found.group(1)
                return self.url
            if self._process.poll() is not None:
                raise AssertionError(f"credgate witness serve exited early:\n{text}")
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        text = self._output.read_bytes()[offset:].decode("utf-8", "replace")
        raise AssertionError(f"credgate witness serve did not start in time:\n{text}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` (SIGKILL: no chance to flush anything) and wait for the exit."""
        process, self._process = self._process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signum)
        return process.wait(timeout=30)
