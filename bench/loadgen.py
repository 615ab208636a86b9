"""A closed-loop load generator for unary gRPC calls over mutual TLS, optionally multi-process.

Closed loop: each of ``concurrency`` clients sends a call, waits for the answer, sends the
next. Throughput is then what the server sustains at that many calls in flight, and latency is
not inflated by a client queue (an open-loop generator that falls behind reports its own
backlog as server latency).

Python clients are CPU-hungry (TLS, HTTP/2 framing and protobuf all cost client CPU), so the
clients can be spread over several processes, each with its own channel and event loop; the
processes meet at a barrier so their measured windows overlap. Processes are started with the
``spawn`` method: gRPC's threads do not survive ``fork``.

Every run is bounded twice: in time (``warmup`` + ``duration``, then each client stops
issuing) and in count (``max_requests`` recorded calls in all). Payloads are pre-serialized
bytes and calls are made without serializers, so the client spends no time building requests;
answers are parsed only to check they are complete (a gateway that answered fast because its
sources failed must not look fast), outside the timed span.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.queues
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import grpc

from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2

CONNECT_TIMEOUT_SECONDS = 30.0
BARRIER_TIMEOUT_SECONDS = 60.0
SPAWN_ALLOWANCE_SECONDS = 60.0
"""Time allowed for worker processes to start, import gRPC and connect."""
ERROR_BACKOFF_SECONDS = 0.01
"""Pause after a failed call, so a dead server is not hammered in a hot loop."""
MAX_ERROR_SAMPLES = 3


class Check(StrEnum):
    """How an answer is checked for completeness."""

    ECHO = "echo"
    """The answer must be the request's bytes."""
    REPORT = "report"
    """A ``GetRepairStatusResponse`` whose report lists no failed source."""
    BATCH = "batch"
    """A ``BatchGetRepairStatusResponse`` whose every item has a report without failures."""


@dataclass(frozen=True)
class ClientTls:
    """The CA to trust and the client certificate to present (mutual TLS)."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class LoadSpec:
    """One load run: where to call, with what, how hard and for how long. Picklable."""

    name: str
    target: str
    tls: ClientTls
    method: str
    """Full method path, ``/package.Service/Method``."""
    payloads: tuple[bytes, ...]
    """Serialized requests, used round-robin (each client walks its own residue class)."""
    check: Check
    concurrency: int
    processes: int = 1
    duration: float = 10.0
    warmup: float = 2.0
    max_requests: int = 1_000_000
    call_timeout: float = 10.0
    connections: int = 1
    """Connections (separate HTTP/2 connections, not shared subchannels) per load process; the
    clients take turns over them. Several worker processes sharing a port (SO_REUSEPORT)
    split *connections*, not calls, so measuring N workers needs at least N connections."""
    min_requests: int = 1
    """The window is stretched (by at most ``call_timeout``) until this many calls completed
    in it, so a scenario whose calls are slower than the window still yields a measurement."""

    def __post_init__(self) -> None:
        if not self.payloads:
            raise ValueError("a load run needs at least one payload")
        if self.concurrency < 1 or self.processes < 1 or self.connections < 1:
            raise ValueError("concurrency, processes and connections must be at least 1")
        if self.duration <= 0 or self.warmup < 0 or self.max_requests < 1:
            raise ValueError("duration must be > 0, warmup >= 0, max_requests >= 1")


@dataclass
class WorkerResult:
    """What one worker process measured inside its window."""

    latencies: list[float] = field(default_factory=list)
    """Seconds per successful call completed inside the window."""
    errors: int = 0
    partial: int = 0
    """Successful calls whose answer failed the completeness check."""
    window: float = 0.0
    """Seconds the window actually lasted (shorter when ``max_requests`` was reached)."""
    calls: int = 0
    """Every successful call, warm-up and stragglers included: what the server really did."""
    error_samples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadResult:
    """The merged measurement of a load run."""

    name: str
    concurrency: int
    processes: int
    requests: int
    errors: int
    partial: int
    window_seconds: float
    qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    calls: int = 0
    """Successful calls over the whole run, warm-up included (for server CPU per call)."""
    error_samples: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when there are none).

    Nearest rank rather than interpolation: the reported p99 is a latency some call really had.
    """
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(
    name: str, concurrency: int, processes: int, results: Sequence[WorkerResult]
) -> LoadResult:
    """Merge per-process results: throughputs add up, latencies are pooled."""
    latencies = sorted(x for r in results for x in r.latencies)
    qps = sum(len(r.latencies) / r.window for r in results if r.window > 0)
    samples = tuple(s for r in results for s in r.error_samples)[:MAX_ERROR_SAMPLES]
    ms = 1000.0
    return LoadResult(
        name=name,
        concurrency=concurrency,
        processes=processes,
        requests=len(latencies),
        errors=sum(r.errors for r in results),
        partial=sum(r.partial for r in results),
        window_seconds=max((r.window for r in results), default=0.0),
        qps=qps,
        p50_ms=percentile(latencies, 50) * ms,
        p95_ms=percentile(latencies, 95) * ms,
        p99_ms=percentile(latencies, 99) * ms,
        mean_ms=(sum(latencies) / len(latencies) * ms) if latencies else math.nan,
        max_ms=(latencies[-1] * ms) if latencies else math.nan,
        calls=sum(r.calls for r in results),
        error_samples=samples,
    )


def _complete_echo(request: bytes, answer: bytes) -> bool:
    return answer == request


def _complete_report(_: bytes, answer: bytes) -> bool:
    response = service_pb2.GetRepairStatusResponse.FromString(answer)
    return response.HasField("report") and not response.report.failures


def _complete_batch(_: bytes, answer: bytes) -> bool:
    response = service_pb2.BatchGetRepairStatusResponse.FromString(answer)
    return bool(response.results) and all(
        item.HasField("report") and not item.report.failures for item in response.results
    )


_CHECKS: dict[Check, Callable[[bytes, bytes], bool]] = {
    Check.ECHO: _complete_echo,
    Check.REPORT: _complete_report,
    Check.BATCH: _complete_batch,
}


def split(total: int, parts: int) -> list[int]:
    """``total`` clients spread as evenly as possible over ``parts`` processes."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _measure(
    spec: LoadSpec, index: int, concurrency: int, max_requests: int, barrier: Barrier
) -> WorkerResult:
    # Imported here: the channel helper pulls in the gateway package, needed only in workers.
    from credgate.core.channel import client_channel

    result = WorkerResult()
    complete = _CHECKS[spec.check]
    payloads = spec.payloads
    offset = index * (len(payloads) // spec.processes)
    # A local subchannel pool per channel: otherwise channels with equal arguments share one
    # connection process-wide.
    channels = [
        client_channel(
            spec.target,
            spec.tls.ca,
            spec.tls.cert,
            spec.tls.key,
            options=[("grpc.use_local_subchannel_pool", 1)],
        )
        for _ in range(spec.connections)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for channel in channels:
            await stack.enter_async_context(channel)
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_SECONDS)
        # No serializers: bytes in, bytes out.
        calls = [channel.unary_unary(spec.method) for channel in channels]
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT_SECONDS)
        window_start = time.perf_counter() + spec.warmup
        window_end = window_start + spec.duration
        hard_end = window_end + spec.call_timeout
        min_requests = max(1, spec.min_requests // spec.processes)
        last_end = window_start

        def open_at(now: float) -> bool:
            """Inside the window, or stretched past it for lack of completed calls."""
            return now < window_end or (len(result.latencies) < min_requests and now < hard_end)

        async def client(slot: int) -> None:
            nonlocal window_end, last_end
            position = offset + slot
            call = calls[slot % len(calls)]
            while open_at(time.perf_counter()):
                payload = payloads[position % len(payloads)]
                position += concurrency
                began = time.perf_counter()
                try:
                    answer: bytes = await call(payload, timeout=spec.call_timeout)
                except grpc.aio.AioRpcError as error:
                    if began >= window_start:
                        result.errors += 1
                        if len(result.error_samples) < MAX_ERROR_SAMPLES:
                            result.error_samples.append(f"{error.code().name}: {error.details()}")
                    await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                    continue
                ended = time.perf_counter()
                result.calls += 1
                if ended < window_start or not open_at(ended):
                    continue
                result.latencies.append(ended - began)
                last_end = max(last_end, ended)
                if not complete(payload, answer):
                    result.partial += 1
                if len(result.latencies) >= max_requests:
                    window_end = ended  # the count bound: every client stops now

        await asyncio.gather(*(client(slot) for slot in range(concurrency)))
        # Normally the window as planned; shorter when the count bound ended it, longer when
        # it was stretched to complete ``min_requests`` calls.
        measured_to = (
            last_end if len(result.latencies) >= max_requests else max(window_end, last_end)
        )
        result.window = max(measured_to - window_start, 0.0)
    return result


def _worker_main(
    spec: LoadSpec,
    index: int,
    concurrency: int,
    max_requests: int,
    barrier: Barrier,
    results: multiprocessing.queues.Queue[tuple[int, WorkerResult | None, str]],
) -> None:
    """Entry point of one load process: measure, then hand the result (or the error) back."""
    try:
        measured = asyncio.run(_measure(spec, index, concurrency, max_requests, barrier))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            barrier.abort()  # release the others rather than leaving them at the barrier
        results.put((index, None, f"{type(exc).__name__}: {exc}"))
        return
    results.put((index, measured, ""))


class LoadError(RuntimeError):
    """A load run could not be carried out (a worker failed or did not report in time)."""


def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` in ``spec.processes`` spawned processes and merge what they measured."""
    processes = min(spec.processes, spec.concurrency)
    shares = split(spec.concurrency, processes)
    per_process_max = max(1, spec.max_requests // processes)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results: multiprocessing.queues.Queue[tuple[int, WorkerResult | None, str]] = context.Queue()
    worker_spec = replace(spec, processes=processes)
    workers = [
        context.Process(
            target=_worker_main,
            args=(worker_spec, i, shares[i], per_process_max, barrier, results),
            name=f"bench-load-{spec.name}-{i}",
            daemon=True,
        )
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    deadline = (
        time.monotonic() + SPAWN_ALLOWANCE_SECONDS + spec.warmup + spec.duration + spec.call_timeout
    )
    collected: list[WorkerResult] = []
    try:
        for _ in workers:
            try:
                _, measured, failure = results.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                raise LoadError(f"{spec.name}: load workers did not report in time") from None
            if measured is None:
                raise LoadError(f"{spec.name}: a load worker failed: {failure}")
            collected.append(measured)
    finally:
        for worker in workers:
            worker.join(timeout=5.0)
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5.0)
    return summarize(spec.name, spec.concurrency, processes, collected)
