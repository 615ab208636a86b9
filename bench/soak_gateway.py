"""The gateway of the fault soak: the unmodified ``credgate serve``, plus one debug-only gauge.

The soak must judge the process operators run — its logging set-up, its SIGTERM handling, its
drain — so the gateway is started through ``gateway.cli.main(["serve", ...])`` in a child
process of its own, never rebuilt from parts. What ``credgate serve`` does not tell is whether
tasks pile up on its event loop (a call whose handler never finishes, a fan-out task nobody
awaits) or whether the loop still turns at all (a handler lock held by another thread). This
launcher adds exactly that, from outside the gateway's code:

* an event-loop policy that remembers the loop ``asyncio.run`` creates, and
* observable gauges on the global OpenTelemetry meter, which the gateway's own Prometheus
  scrape endpoint (``[telemetry] exporter = "prometheus"``) then serves beside its metrics:
  ``credgate_bench_event_loop_tasks{coroutine=...}`` (tasks alive, by coroutine) and
  ``credgate_bench_event_loop_lag_seconds`` (how long a callback waited for the loop;
  ``PROBE_TIMEOUT_SECONDS`` when the loop did not run it at all).

The count is taken *on* the loop (``call_soon_threadsafe``), because the scrape runs on the
exporter's HTTP thread and ``asyncio.all_tasks`` is only consistent on the loop's own thread.

    python -m bench.soak_gateway --config var/soak/gateway.toml      # as `credgate serve`
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

TASKS_METRIC = "credgate.bench.event_loop.tasks"
LAG_METRIC = "credgate.bench.event_loop.lag"
PROBE_TIMEOUT_SECONDS = 2.0
"""How long a scrape waits for the loop to run the counting callback before calling it stuck."""
SAMPLE_REUSE_SECONDS = 0.5
"""Both gauges of one scrape share a sample (the loop is asked once per scrape)."""
COROUTINE_LABEL = "coroutine"


@dataclass(frozen=True)
class LoopSample:
    """One look at the event loop: live tasks by coroutine name, and the wait to get there."""

    tasks: dict[str, int]
    lag_seconds: float
    responsive: bool


class LoopProbe:
    """Counts the tasks of one event loop from another thread, on the loop's own thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._last: tuple[float, LoopSample] | None = None

    def sample(self) -> LoopSample | None:
        """The loop's tasks now; ``responsive=False`` if it did not turn within the timeout;
        ``None`` before the loop exists or after it closed."""
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < SAMPLE_REUSE_SECONDS:
                return self._last[1]
            loop = self.loop
            if loop is None or loop.is_closed():
                return None
            counted: concurrent.futures.Future[tuple[dict[str, int], float]] = (
                concurrent.futures.Future()
            )
            asked = time.monotonic()

            def count() -> None:
                names = collections.Counter(_coroutine_name(t) for t in asyncio.all_tasks(loop))
                counted.set_result((dict(names), time.monotonic() - asked))

            try:
                loop.call_soon_threadsafe(count)
                tasks, lag = counted.result(PROBE_TIMEOUT_SECONDS)
                sample = LoopSample(tasks, lag, responsive=True)
            except RuntimeError:  # the loop closed meanwhile
                return None
            except concurrent.futures.TimeoutError:
                sample = LoopSample({}, PROBE_TIMEOUT_SECONDS, responsive=False)
            self._last = (time.monotonic(), sample)
            return sample


def _coroutine_name(task: asyncio.Task[Any]) -> str:
    coroutine = task.get_coro()
    return str(getattr(coroutine, "__qualname__", type(coroutine).__name__))


_probe = LoopProbe()


class _ProbedPolicy(asyncio.DefaultEventLoopPolicy):
    """The default policy, remembering the loop it makes (the one ``asyncio.run`` serves on)."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        _probe.loop = loop
        return loop


def _install_gauges() -> None:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Observation

    def tasks(_: CallbackOptions) -> Iterable[Observation]:
        sample = _probe.sample()
        if sample is None or not sample.responsive:
            return []
        return [Observation(n, {COROUTINE_LABEL: name}) for name, n in sorted(sample.tasks.items())]

    def lag(_: CallbackOptions) -> Iterable[Observation]:
        sample = _probe.sample()
        return [] if sample is None else [Observation(sample.lag_seconds)]

    # The global meter: a proxy until `credgate serve` installs its provider, then real.
    meter = metrics.get_meter("credgate.bench")
    meter.create_observable_gauge(
        TASKS_METRIC,
        callbacks=[tasks],
        unit="{task}",
        description="Debug (bench.soak_gateway): asyncio tasks alive, by coroutine.",
    )
    meter.create_observable_gauge(
        LAG_METRIC,
        callbacks=[lag],
        unit="s",
        description="Debug (bench.soak_gateway): wait for the event loop to run a callback.",
    )


def _probe_loop_factory() -> None:
    """Also remember a loop made by ``[gateway] event_loop``'s factory (uvloop), which
    ``asyncio.Runner`` uses instead of the policy (``gateway.server.loop_factory``)."""
    from credgate.gateway import server

    chosen = server.loop_factory

    def probed(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
        factory = chosen(choice)
        if factory is None:
            return None  # the policy's loop: ``_ProbedPolicy`` remembers it

        def make() -> asyncio.AbstractEventLoop:
            loop = factory()
            _probe.loop = loop
            return loop

        return make

    server.loop_factory = probed


def main(argv: Sequence[str] | None = None) -> int:
    """``credgate serve`` with ``argv`` as its arguments, with the loop probe installed."""
    from credgate.gateway.cli import main as credgate

    _install_gauges()
    asyncio.set_event_loop_policy(_ProbedPolicy())
    _probe_loop_factory()
    return credgate(["serve", *(sys.argv[1:] if argv is None else argv)])


# -- the gateway's configuration -------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key, ensure_ascii=False)


def toml_document(document: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]]) -> str:
    """A gateway config document (tables, arrays of tables) as TOML for ``credgate serve``."""
    lines: list[str] = []
    for table, body in document.items():
        items = [body] if isinstance(body, Mapping) else list(body)
        for item in items:
            lines.append(f"[{table}]" if isinstance(body, Mapping) else f"[[{table}]]")
            lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items())
            lines.append("")
    return "\n".join(lines)


def gateway_document(
    base: Mapping[str, Any],
    *,
    grpc_port: int,
    metrics_port: int,
    storage_url: str,
    default_deadline: float,
    shutdown_grace: float,
) -> dict[str, Any]:
    """The bench's gateway configuration (``bench.suite``) made a production one: the real
    breaker, the soak's deadline and grace, no drain delay, a scrape endpoint on
    ``metrics_port``, and the storage asked for."""
    document = dict(base)
    document.pop("breaker", None)
    document["gateway"] = {
        **base["gateway"],
        "listen": f"127.0.0.1:{grpc_port}",
        "default_deadline_seconds": default_deadline,
        "shutdown_grace_seconds": shutdown_grace,
        "drain_delay_seconds": 0.0,
    }
    document["storage"] = {**base["storage"], "url": storage_url}
    document["telemetry"] = {
        "exporter": "prometheus",
        "prometheus_host": "127.0.0.1",
        "prometheus_port": metrics_port,
    }
    return document


# -- the soak's side ---------------------------------------------------------------------------

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)"
)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
TASKS_SAMPLE = "credgate_bench_event_loop_tasks"
LAG_SAMPLE = "credgate_bench_event_loop_lag"
RPC_REQUESTS_SAMPLE = "credgate_rpc_server_requests"


@dataclass(frozen=True)
class Scrape:
    """What one scrape of ``/metrics`` says about the event loop and the RPCs answered."""

    tasks: dict[str, int]
    lag_seconds: float | None
    rpc_statuses: dict[str, float] = field(default_factory=dict)
    """``credgate.rpc.server.requests`` summed by ``rpc.response.status_code`` (the code's name)."""

    @property
    def total_tasks(self) -> int | None:
        """Tasks alive; ``None`` when the loop did not answer (stuck) or is not there."""
        return sum(self.tasks.values()) if self.tasks else None


def parse_scrape(text: str) -> Scrape:
    """The probe's gauges and the RPC counter from a Prometheus text exposition."""
    tasks: dict[str, int] = {}
    lag: float | None = None
    statuses: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, value = match["name"], float(match["value"])
        labels = dict(_LABEL.findall(match["labels"] or ""))
        if name.startswith(TASKS_SAMPLE):
            key = labels.get(COROUTINE_LABEL, "?")
            tasks[key] = tasks.get(key, 0) + int(value)
        elif name.startswith(LAG_SAMPLE):
            lag = value
        elif name.startswith(RPC_REQUESTS_SAMPLE) and name.endswith("_total"):
            statuses[labels.get("rpc_response_status_code", "?")] += value
    return Scrape(tasks, lag, dict(statuses))


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's pick; released at once)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServedGateway:
    """``python -m bench.soak_gateway --config FILE`` as a child process, logging to a file.

    It is stopped only the way operators stop it, with SIGTERM (``stop``), and killed only if
    that fails, so the time and exit code of that stop are a measurement, not an assumption.
    """

    def __init__(self, config_path: Path, log_path: Path, metrics_port: int) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("gateway not started")
        return self._process.pid

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.soak_gateway", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def scrape(self, timeout: float = PROBE_TIMEOUT_SECONDS + 3.0) -> Scrape | None:
        """The metrics endpoint now; ``None`` if it did not answer (blocking: run in a thread)."""
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=timeout) as answer:  # noqa: S310
                return parse_scrape(answer.read().decode("utf-8", "replace"))
        except OSError:
            return None

    def stop(self, bound: float) -> tuple[int | None, float]:
        """SIGTERM, then wait up to ``bound`` seconds: (exit code or None, seconds waited).
        A process still alive then is killed (and its code stays None in the result)."""
        if self._process is None:
            return None, 0.0
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self._process.wait(bound)
        except subprocess.TimeoutExpired:
            code = None
        waited = time.monotonic() - began
        if code is None:
            self.kill()
        return code, waited

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10.0)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines of the gateway's log (what it said before a failure)."""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return text.splitlines()[-lines:]
        return []


if __name__ == "__main__":
    sys.exit(main())
