"""Start every mock source at once and describe them as gateway source configuration.

This is what ``credgate mocks`` runs and what the integration tests start: one seeded
population, one mock server per source on loopback, each with its own fault injector, and a
control endpoint to change faults while everything runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from credgate.adapters.base import SourceConfig
from credgate.adapters.mocks.faults import FaultInjector, FaultSettings
from credgate.adapters.mocks.population import Population


class MockSource(Protocol):
    source_id: str
    kind: str
    faults: FaultInjector

    @property
    def endpoint(self) -> str: ...

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int: ...

    async def set_down(self, down: bool) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class MockSpec:
    """One source of the demo world: which mock serves it and how the gateway reaches it."""

    source_id: str
    kind: str
    mock_class: str
    """``module:Class`` under adapters.mocks."""
    display_name: str
    options: dict[str, str] = field(default_factory=dict)


DEFAULT_FLEET: tuple[MockSpec, ...] = (
    MockSpec(
        "disclosure-platform",
        "disclosure_platform",
        "disclosure_platform:DisclosurePlatformMock",
        "深圳市个人破产信息公开平台",
    ),
    MockSpec(
        "credit-registry",
        "credit_registry",
        "credit_registry:CreditRegistryMock",
        "征信中心个人信用信息基础数据库",
    ),
    MockSpec("court-shenzhen", "court", "court:CourtMock", "深圳市中级人民法院"),
    MockSpec(
        "bank-qianhai",
        "bank",
        "bank:BankMock",
        "前海银行",
        {"bank_id": "bank-qianhai", "dialect": "xml"},
    ),
    MockSpec(
        "bank-pengcheng",
        "bank",
        "bank:BankMock",
        "鹏城银行",
        {"bank_id": "bank-pengcheng", "dialect": "csv-gb18030"},
    ),
    MockSpec("tax-shenzhen", "tax", "tax:TaxMock", "国家税务总局深圳市税务局"),
    MockSpec(
        "social-insurance-shenzhen",
        "social_insurance",
        "social_insurance:SocialInsuranceMock",
        "深圳市社会保险基金管理局",
    ),
    MockSpec(
        "market-supervision-shenzhen",
        "market_supervision",
        "market_supervision:MarketSupervisionMock",
        "深圳市市场监督管理局",
    ),
)


def _mock_class(spec: MockSpec) -> Any:
    module_name, class_name = spec.mock_class.split(":")
    return getattr(importlib.import_module(f"credgate.adapters.mocks.{module_name}"), class_name)


class MockFleet:
    """The running mock sources."""

    def __init__(
        self,
        population: Population,
        specs: tuple[MockSpec, ...] = DEFAULT_FLEET,
        faults: dict[str, FaultSettings] | None = None,
    ) -> None:
        self.population = population
        self.specs = {spec.source_id: spec for spec in specs}
        self.mocks: dict[str, MockSource] = {}
        faults = faults or {}
        for seed, spec in enumerate(specs):
            injector = FaultInjector(faults.get(spec.source_id), seed=seed)
            self.mocks[spec.source_id] = _mock_class(spec)(
                spec.source_id, population, faults=injector, **spec.options
            )

    async def start(self, host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> None:
        for source_id, mock in self.mocks.items():
            await mock.start(host, (ports or {}).get(source_id, 0))

    async def stop(self) -> None:
        for mock in self.mocks.values():
            await mock.stop()

    async def set_faults(self, source_id: str, changes: dict[str, Any]) -> FaultSettings:
        """Apply fault changes to one running source; ``down`` opens or closes its listener."""
        mock = self.mocks[source_id]
        settings = mock.faults.settings.updated(changes)
        mock.faults.settings = settings.updated({"down": mock.faults.settings.down})
        if settings.down != mock.faults.settings.down:
            await mock.set_down(settings.down)
        return mock.faults.settings

    def source_configs(self, timeout_seconds: float = 2.0) -> list[SourceConfig]:
        """How the gateway reaches each running mock."""
        configs = []
        for source_id, mock in self.mocks.items():
            spec = self.specs[source_id]
            options = dict(spec.options)
            options.update(getattr(mock, "adapter_options", {}))
            configs.append(
                SourceConfig(
                    source_id=source_id,
                    kind=spec.kind,
                    endpoint=mock.endpoint,
                    display_name=spec.display_name,
                    timeout_seconds=timeout_seconds,
                    options=options,
                )
            )
        return configs


def planned_source_configs(
    population: Population, host: str, ports: dict[str, int], timeout_seconds: float = 2.0
) -> list[SourceConfig]:
    """The configuration a gateway needs for a fleet that will listen on ``ports``, computed
    without starting it, so a config file can be written before the mocks run."""
    fleet = MockFleet(population)
    for source_id, mock in fleet.mocks.items():
        mock.host, mock.port = host, ports[source_id]  # type: ignore[attr-defined]
    return fleet.source_configs(timeout_seconds)
