"""The fault soak's callers: random calls with random deadlines, and what became of each.

Every caller draws from its own seeded generator which call to make (``GetRepairStatus`` or a
small ``BatchGetRepairStatus``), about which subject, and with which deadline: none at all (the
gateway's ``default_deadline_seconds`` then applies), a very short one (a few milliseconds, so
calls are cancelled in every stage of their handling), or anything up to a few seconds.

The invariant is *every call gets a status by its deadline plus a margin*. A gRPC client
enforces its own deadline, so a call that carries one always ends by then on the client side
whatever the gateway does; the calls that carry none are the ones that show a gateway that
never answers (a handler that died without a status). They are therefore waited for on the
client's own clock: ``deadline + margin`` is the bound, and the call is given up only after a
further ``hard_wait`` (then it counts as ``NO_STATUS``), so a late answer is told from none.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from bench.loadgen import percentile
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2

NO_STATUS = "NO_STATUS"
"""The call had no status ``hard_wait`` seconds past its bound and was given up."""
UNDEFINED_STATUSES = frozenset({"UNKNOWN", "INTERNAL"})
"""Statuses no fault may produce: a fault is UNAVAILABLE, DEADLINE_EXCEEDED or a partial answer."""
GET = "get"
BATCH = "batch"
MAX_SAMPLES = 200
"""Violating calls kept in the results, each with its phase and times."""
MAX_DETAIL = 160


@dataclass(frozen=True)
class CallPlan:
    kind: str
    payload: bytes
    deadline: float
    """Seconds the caller may wait: its own deadline, or the gateway's default without one."""
    client_deadline: bool
    trace_id: str = ""
    """W3C trace id sent as ``traceparent``: the gateway's log lines for this call carry it, so
    a call that went wrong can be found in the log (the request id is the server's own)."""

    def metadata(self) -> tuple[tuple[str, str], ...]:
        if not self.trace_id:
            return ()
        return (("traceparent", f"00-{self.trace_id}-{self.trace_id[:16]}-01"),)


def draw_call(
    rng: random.Random,
    gets: Sequence[bytes],
    batches: Sequence[bytes],
    gateway_deadline: float,
    batch_share: float,
) -> CallPlan:
    """One call of the mix: 35% without deadline, 15% of 1-50 ms, the rest 0.1-6 s."""
    kind = BATCH if rng.random() < batch_share else GET
    payload = rng.choice(batches if kind == BATCH else gets)
    trace = f"{rng.getrandbits(128) | 1:032x}"
    pick = rng.random()
    if pick < 0.35:
        return CallPlan(kind, payload, gateway_deadline, False, trace)
    if pick < 0.50:
        return CallPlan(kind, payload, round(rng.uniform(0.001, 0.05), 4), True, trace)
    return CallPlan(kind, payload, round(rng.uniform(0.1, 6.0), 3), True, trace)


@dataclass
class CallRecord:
    phase: int
    kind: str
    deadline: float
    client_deadline: bool
    status: str
    elapsed: float
    trace_id: str = ""
    started_at: float = 0.0
    """Seconds from the start of the load to the call (stalls are timed the same way)."""
    partial: bool = False
    """OK, but at least one source failed (the answer says which): a contained fault."""
    detail: str = ""

    def late(self, margin: float) -> bool:
        return self.status == NO_STATUS or self.elapsed > self.deadline + margin

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _partial(kind: str, answer: bytes) -> bool:
    if kind == GET:
        return bool(service_pb2.GetRepairStatusResponse.FromString(answer).report.failures)
    batch = service_pb2.BatchGetRepairStatusResponse.FromString(answer)
    return any(item.HasField("error") or bool(item.report.failures) for item in batch.results)


async def one_call(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    plan: CallPlan,
    *,
    phase: int,
    margin: float,
    hard_wait: float,
    origin: float = 0.0,
) -> CallRecord:
    """Make one call and wait for its status as the module docstring says; ``origin`` is the
    ``time.perf_counter()`` its start time is counted from."""
    began = time.perf_counter()
    pending = asyncio.ensure_future(
        call(
            plan.payload,
            timeout=plan.deadline if plan.client_deadline else None,
            metadata=plan.metadata(),
        )
    )
    done, _ = await asyncio.wait({pending}, timeout=plan.deadline + margin)
    if not done:
        done, _ = await asyncio.wait({pending}, timeout=hard_wait)
    elapsed = time.perf_counter() - began
    record = CallRecord(
        phase,
        plan.kind,
        plan.deadline,
        plan.client_deadline,
        NO_STATUS,
        elapsed,
        trace_id=plan.trace_id,
        started_at=began - origin,
    )
    if not done:
        pending.cancel()
        with contextlib.suppress(BaseException):
            await pending
        return record
    try:
        answer = pending.result()
    except grpc.aio.AioRpcError as error:
        record.status = error.code().name
        record.detail = (error.details() or "")[:MAX_DETAIL]
        return record
    record.status = grpc.StatusCode.OK.name
    record.partial = _partial(plan.kind, answer)
    return record


@dataclass
class Clients:
    """``concurrency`` closed-loop callers sharing the run's record list and phase counter."""

    calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]]
    gets: Sequence[bytes]
    batches: Sequence[bytes]
    gateway_deadline: float
    margin: float
    hard_wait: float
    batch_share: float
    records: list[CallRecord] = field(default_factory=list)
    phase: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    origin: float = field(default_factory=time.perf_counter)

    async def caller(self, rng: random.Random) -> None:
        while not self.stop.is_set():
            plan = draw_call(rng, self.gets, self.batches, self.gateway_deadline, self.batch_share)
            self.records.append(
                await one_call(
                    self.calls[plan.kind],
                    plan,
                    phase=self.phase,
                    margin=self.margin,
                    hard_wait=self.hard_wait,
                    origin=self.origin,
                )
            )

    async def run(self, seed: int, concurrency: int) -> None:
        """Until ``stop`` is set; caller i draws from ``Random(f"{seed}/{i}")``."""
        await asyncio.gather(
            *(self.caller(random.Random(f"{seed}/{i}")) for i in range(concurrency))  # noqa: S311
        )


@dataclass(frozen=True)
class LoadSummary:
    calls: int
    by_status: dict[str, int]
    by_kind: dict[str, dict[str, int]]
    partial_ok: int
    client_deadline_calls: int
    short_deadline_calls: int
    late: int
    """Status after deadline + margin, or none at all: must be 0."""
    no_status: int
    undefined: int
    """UNKNOWN or INTERNAL statuses: must be 0."""
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    late_samples: tuple[dict[str, Any], ...]
    undefined_samples: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_calls(records: Sequence[CallRecord], margin: float) -> LoadSummary:
    """Statuses, violations (with samples naming their phase) and how late statuses came.

    Lateness is elapsed minus the deadline the caller had; negative when the answer came early.
    """
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for record in records:
        by_kind[record.kind][record.status] += 1
    total = collections.Counter(record.status for record in records)
    lateness = sorted(record.elapsed - record.deadline for record in records)
    late = [record for record in records if record.late(margin)]
    undefined = [record for record in records if record.status in UNDEFINED_STATUSES]
    ms = 1000.0
    return LoadSummary(
        calls=len(records),
        by_status=dict(total.most_common()),
        by_kind={kind: dict(counts.most_common()) for kind, counts in sorted(by_kind.items())},
        partial_ok=sum(1 for record in records if record.partial),
        client_deadline_calls=sum(1 for record in records if record.client_deadline),
        short_deadline_calls=sum(
            1 for record in records if record.client_deadline and record.deadline <= 0.05
        ),
        late=len(late),
        no_status=total[NO_STATUS],
        undefined=len(undefined),
        lateness_p50_ms=percentile(lateness, 50) * ms,
        lateness_p99_ms=percentile(lateness, 99) * ms,
        lateness_max_ms=(lateness[-1] * ms) if lateness else float("nan"),
        late_samples=tuple(record.as_dict() for record in late[:MAX_SAMPLES]),
        undefined_samples=tuple(record.as_dict() for record in undefined[:MAX_SAMPLES]),
    )
