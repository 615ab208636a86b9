"""The source an adapter is tested against: a mock source server, or a real test endpoint.

Mock sources run on their own event loop in a background thread. They are real servers on
loopback, so the adapter under test speaks its native protocol over real sockets; running them
apart from the test's loop keeps the two sides honest: the adapter cannot lean on sharing a loop
with its source, the mock's latency does not block the adapter's timers, and every task left on
the test's loop after a cancelled ``fetch`` is unambiguously the adapter's.

A mock takes part in the kit by following the shape of ``adapters.mocks.fleet.MockSource``
(``start``/``set_down``/``stop``, ``endpoint``, a ``FaultInjector`` as ``faults``) and exposing
its malformed-payload corpus in one of the two ways the built-in mocks do:

* ``malformed``: an ``adapters.mocks.rendering.MalformedCycle`` (preferred), or
* ``malformed_variants``: a tuple read on every malformed answer, cycled in order.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from credgate.adapters.base import SourceConfig
from credgate.adapters.mocks.faults import FaultInjector, FaultSettings
from credgate.adapters.mocks.fleet import DEFAULT_FLEET, MockSource, MockSpec
from credgate.adapters.mocks.population import Population
from credgate.adapters.mocks.rendering import MalformedCycle

_T = TypeVar("_T")
MockFactory = Callable[..., MockSource]
"""``factory(source_id, population, faults=FaultInjector, **options)``, as the fleet calls it."""


class SourceUnderTest(Protocol):
    """What the kit needs from the source side: start it, reach it, and misbehave on demand."""

    kind: str
    """The configured kind name (``SourceConfig.kind``)."""

    @property
    def fault_control(self) -> bool:
        """Whether faults can be injected; without it the fault tests are skipped."""
        ...

    @property
    def thread_ident(self) -> int | None:
        """The thread the source runs in, if in this process: its log records are the
        source's own, not the adapter's."""
        ...

    def malformed_variants(self, population: Population) -> tuple[str, ...]:
        """The malformed-payload corpus, known before the source starts (for test ids)."""
        ...

    def start(self, population: Population) -> SourceConfig:
        """Start serving ``population``; return how an adapter reaches the source."""
        ...

    def stop(self) -> None: ...

    async def reset(self) -> None:
        """Back to a healthy source: no faults, listener up."""
        ...

    async def set_faults(self, **changes: Any) -> None:
        """Change fault settings (``FaultSettings`` names; ``down`` closes the listener)."""
        ...

    async def select_malformed(self, variant: str) -> None:
        """Make every malformed answer from now on the given variant."""
        ...


@dataclass(frozen=True)
class RunningSource:
    """A started source under test and the configuration an adapter reaches it with."""

    source: SourceUnderTest
    config: SourceConfig


class _LoopThread:
    """An event loop running in a daemon thread, for servers the test's loop must not share."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the thread's loop and wait for it (from synchronous code)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def arun(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the thread's loop and await it from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


def corpus_of(mock: object) -> tuple[str, ...]:
    """The malformed variants a mock can produce (empty if it has no corpus)."""
    cycle = getattr(mock, "malformed", None)
    if isinstance(cycle, MalformedCycle):
        return tuple(cycle.variants)
    variants = getattr(mock, "malformed_variants", None)
    if isinstance(variants, tuple) and all(isinstance(v, str) for v in variants):
        return variants
    return ()


def _select(mock: object, corpus: tuple[str, ...], variant: str) -> None:
    """Make ``variant`` the next (``malformed``) or only (``malformed_variants``) variant;
    ``corpus`` is the mock's full corpus, as it was before any selection narrowed it."""
    if variant not in corpus:
        raise ValueError(f"the mock has no malformed variant {variant!r}")
    cycle = getattr(mock, "malformed", None)
    if isinstance(cycle, MalformedCycle):
        cycle.select(variant)
    else:
        mock.malformed_variants = (variant,)  # type: ignore[attr-defined]


@dataclass
class MockedSource:
    """A mock source server started by the kit, one per test class.

    ``factory`` is the mock's class (or any callable with the fleet's signature); ``options``
    are passed to it and, with the mock's own ``adapter_options`` (such as a public key), end up
    in ``SourceConfig.options`` for the adapter.
    """

    source_id: str
    kind: str
    factory: MockFactory
    options: Mapping[str, str] = field(default_factory=dict)
    display_name: str = ""
    timeout_seconds: float = 2.0
    _thread: _LoopThread | None = field(default=None, init=False, repr=False)
    _mock: MockSource | None = field(default=None, init=False, repr=False)
    _corpus: tuple[str, ...] = field(default=(), init=False, repr=False)

    @property
    def fault_control(self) -> bool:
        return True

    @property
    def thread_ident(self) -> int | None:
        """The thread the mock runs in (its log records are the source's, not the adapter's)."""
        return self._thread.ident if self._thread else None

    def _build(self, population: Population) -> MockSource:
        return self.factory(self.source_id, population, faults=FaultInjector(), **self.options)

    def malformed_variants(self, population: Population) -> tuple[str, ...]:
        return corpus_of(self._build(population))

    def start(self, population: Population) -> SourceConfig:
        self._thread = _LoopThread(f"mock:{self.source_id}")
        mock = self._build(population)
        self._thread.run(mock.start())
        self._mock, self._corpus = mock, corpus_of(mock)
        options = dict(self.options)
        options.update(getattr(mock, "adapter_options", {}))
        return SourceConfig(
            source_id=self.source_id,
            kind=self.kind,
            endpoint=mock.endpoint,
            display_name=self.display_name,
            timeout_seconds=self.timeout_seconds,
            options=options,
        )

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._mock is not None:
            self._thread.run(self._mock.stop())
            self._mock = None
        self._thread.close()
        self._thread = None

    def _running(self) -> tuple[_LoopThread, MockSource]:
        if self._thread is None or self._mock is None:
            raise RuntimeError(f"mock source {self.source_id!r} is not running")
        return self._thread, self._mock

    async def reset(self) -> None:
        await self.set_faults(**FaultSettings().as_dict())

    async def set_faults(self, **changes: Any) -> None:
        thread, mock = self._running()

        async def apply() -> None:
            # As MockFleet.set_faults: ``down`` is a listener change, the rest plain settings.
            wanted = mock.faults.settings.updated(changes)
            mock.faults.settings = wanted.updated({"down": mock.faults.settings.down})
            if wanted.down != mock.faults.settings.down:
                await mock.set_down(wanted.down)

        await thread.arun(apply())

    async def select_malformed(self, variant: str) -> None:
        thread, mock = self._running()

        async def apply() -> None:
            _select(mock, self._corpus, variant)

        await thread.arun(apply())


def fleet_source(
    source_id: str, fleet: tuple[MockSpec, ...] = DEFAULT_FLEET, timeout_seconds: float = 2.0
) -> MockedSource:
    """The mock of one source of the demo fleet, configured as ``MockFleet`` configures it."""
    spec = next((s for s in fleet if s.source_id == source_id), None)
    if spec is None:
        known = ", ".join(s.source_id for s in fleet)
        raise ValueError(f"no source {source_id!r} in the fleet (known: {known})")
    module_name, class_name = spec.mock_class.split(":")
    mock_module = importlib.import_module(f"credgate.adapters.mocks.{module_name}")
    mock_class = getattr(mock_module, class_name)
    return MockedSource(
        spec.source_id, spec.kind, mock_class, options=dict(spec.options),
        display_name=spec.display_name, timeout_seconds=timeout_seconds,
    )


@dataclass
class EndpointSource:
    """A real test endpoint run by the source operator, seeded with the synthetic population.

    The kit cannot inject faults into it, so only the mapping tests run; point the kit at a
    mock with fault injection to prove deadlines, cancellation and error handling.
    """

    config: SourceConfig

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def fault_control(self) -> bool:
        return False

    @property
    def thread_ident(self) -> int | None:
        return None

    def malformed_variants(self, population: Population) -> tuple[str, ...]:
        return ()

    def start(self, population: Population) -> SourceConfig:
        return self.config

    def stop(self) -> None:
        return None

    async def reset(self) -> None:
        return None

    async def set_faults(self, **changes: Any) -> None:
        raise RuntimeError("a real endpoint has no fault control")

    async def select_malformed(self, variant: str) -> None:
        raise RuntimeError("a real endpoint has no malformed-payload corpus")
