"""Which adapter speaks to which kind of source: the ``credgate.adapters`` entry points.

Source kinds are named in configuration (``kind = "bank"``). Every kind is an entry point in the
``credgate.adapters`` group whose name is the kind and whose object is an *adapter factory*: a
``SourceAdapter`` class, or any callable taking a ``SourceConfig`` and returning an adapter.
A source operator's package declares its kinds in its ``pyproject.toml``; credgate's own kinds
are the same ``EntryPoint`` objects, declared below rather than read back from credgate's
installed metadata (which a stale ``*.egg-info`` on the path can shadow, leaving a gateway with
no adapters at all). From there a built-in kind and a plugin kind take one path — name check,
duplicate check, import, factory check — and installing a package is all it takes to deploy an
adapter written out of tree (docs/writing-an-adapter.md).

Plugins are third-party code loaded at start-up, so everything that can go wrong with one is a
configuration error (a ``ValueError``: ``credgate`` exits 2) naming the entry point and its
distribution, never a traceback: a kind claimed twice (a plugin may not shadow a built-in kind),
an entry point that fails to import, an object that is not an adapter factory, a factory that
fails or returns something that is not an adapter. Only the kinds a configuration names are
imported, so a broken plugin that is installed but not configured does not stop a gateway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from credgate.adapters.base import SourceAdapter, SourceConfig

ENTRY_POINT_GROUP = "credgate.adapters"
BUILTIN_DISTRIBUTION = "credgate"
KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""A kind name: what ``kind`` says in configuration and ``source_kind_name`` on the wire."""

AdapterFactory = Callable[[SourceConfig], SourceAdapter]
_ADAPTER_METHODS = ("fetch", "aclose")
"""What an adapter class must have; ``config`` and ``source_kind`` may be set per instance, so
they are checked on the adapter the factory returns."""
_PACKAGE = __name__.rpartition(".")[0]  # this package, however it is imported

BUILTIN_KINDS: tuple[EntryPoint, ...] = tuple(
    EntryPoint(name, f"{_PACKAGE}.{target}", ENTRY_POINT_GROUP)
    for name, target in (
        ("disclosure_platform", "disclosure_platform:DisclosurePlatformAdapter"),
        ("credit_registry", "credit_registry:CreditRegistryAdapter"),
        ("court", "court:CourtAdapter"),
        ("bank", "bank:BankAdapter"),
        ("tax", "tax:TaxAdapter"),
        ("social_insurance", "social_insurance:SocialInsuranceAdapter"),
        ("market_supervision", "market_supervision:MarketSupervisionAdapter"),
    )
)
"""credgate's own kinds, as the entry points they would be in its ``pyproject.toml``."""


class UnknownSourceKind(ValueError):
    """Configuration names a source kind no installed adapter speaks."""


class AdapterPluginError(ValueError):
    """An entry point of the ``credgate.adapters`` group cannot be used as an adapter."""


@dataclass(frozen=True)
class AdapterKind:
    """One registered kind: its entry point and the distribution that declared it."""

    name: str
    entry_point: EntryPoint
    distribution: str

    @property
    def builtin(self) -> bool:
        return _normalized(self.distribution) == BUILTIN_DISTRIBUTION

    def describe(self) -> str:
        """How error messages name it: enough to find the package and the line to fix."""
        return (
            f"adapter entry point {self.name!r} = {self.entry_point.value!r} "
            f"(group {ENTRY_POINT_GROUP}, distribution {self.distribution})"
        )


def available_kinds() -> dict[str, AdapterKind]:
    """Every installed kind by name, without importing any of them.

    Raises ``AdapterPluginError`` when two distributions claim one name or a name is not a
    valid kind name: which adapter a source would get must never depend on install order.
    """
    installed = [
        point
        for point in entry_points(group=ENTRY_POINT_GROUP)
        if _normalized(_distribution_of(point)) != BUILTIN_DISTRIBUTION
    ]
    return kinds_from([*BUILTIN_KINDS, *installed])


def kinds_from(points: Iterable[EntryPoint]) -> dict[str, AdapterKind]:
    """``available_kinds`` over the given entry points (tests pass their own)."""
    kinds: dict[str, AdapterKind] = {}
    for point in points:
        kind = AdapterKind(point.name, point, _distribution_of(point))
        if not KIND_NAME.fullmatch(point.name):
            raise AdapterPluginError(
                f"{kind.describe()}: {point.name!r} is not a valid kind name "
                "(lower-case letters, digits and underscores, starting with a letter)"
            )
        earlier = kinds.get(point.name)
        if earlier is None:
            kinds[point.name] = kind
            continue
        if earlier.entry_point.value == point.value and earlier.distribution == kind.distribution:
            continue  # the same distribution seen twice on the path: one claim
        builtin, other = (earlier, kind) if not kind.builtin else (kind, earlier)
        if builtin.builtin:
            raise AdapterPluginError(
                f"{other.describe()} duplicates the built-in kind {point.name!r}; "
                "a plugin must use a name of its own"
            )
        raise AdapterPluginError(
            f"adapter kind {point.name!r} is claimed twice: {earlier.describe()} and "
            f"{kind.describe()}; uninstall one or rename its entry point"
        )
    return kinds


def load_factory(kind: AdapterKind) -> AdapterFactory:
    """Import the kind's entry point and check that it is an adapter factory."""
    try:
        target = kind.entry_point.load()
    except Exception as exc:  # third-party code: any failure is the plugin's, not ours
        raise AdapterPluginError(
            f"{kind.describe()} failed to load: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(target):
        raise AdapterPluginError(
            f"{kind.describe()} is an object of type {type(target).__name__}, not an adapter "
            "factory (a SourceAdapter class, or a callable taking a SourceConfig)"
        )
    if isinstance(target, type):
        missing = [name for name in _ADAPTER_METHODS if not callable(getattr(target, name, None))]
        if missing:
            raise AdapterPluginError(
                f"{kind.describe()}: class {target.__name__} is not a SourceAdapter "
                f"(missing {', '.join(missing)})"
            )
    factory: AdapterFactory = target
    return factory


def build_adapter(
    config: SourceConfig, kinds: Mapping[str, AdapterKind] | None = None
) -> SourceAdapter:
    """The adapter for one configured source, from the entry point its ``kind`` names."""
    kinds = available_kinds() if kinds is None else kinds
    kind = _kind_of(config, kinds)
    factory = load_factory(kind)
    try:
        adapter = factory(config)
    except ValueError:
        raise  # a bad option, which the adapter names: a configuration error as it is
    except Exception as exc:
        raise AdapterPluginError(
            f"source {config.source_id!r}: {kind.describe()} failed to build its adapter: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(adapter, SourceAdapter):
        raise AdapterPluginError(
            f"source {config.source_id!r}: {kind.describe()} returned an object of type "
            f"{type(adapter).__name__}, not a SourceAdapter"
        )
    return adapter


def load_configured(configs: Iterable[SourceConfig]) -> None:
    """Import the factory of every configured kind, so that a broken plugin stops a gateway
    before it touches its database or opens a port, not half-way through starting."""
    kinds = available_kinds()
    for config in configs:
        load_factory(_kind_of(config, kinds))


def build_adapters(configs: Iterable[SourceConfig]) -> list[SourceAdapter]:
    """Adapters for every configured source, reading the installed kinds once."""
    kinds = available_kinds()
    return [build_adapter(config, kinds) for config in configs]


def _kind_of(config: SourceConfig, kinds: Mapping[str, AdapterKind]) -> AdapterKind:
    kind = kinds.get(config.kind)
    if kind is None:
        raise UnknownSourceKind(
            f"source {config.source_id!r}: unknown kind {config.kind!r} "
            f"(available: {', '.join(sorted(kinds)) or 'none installed'})"
        )
    return kind


def _distribution_of(point: EntryPoint) -> str:
    if point in BUILTIN_KINDS:
        return BUILTIN_DISTRIBUTION
    dist = point.dist
    return dist.name if dist is not None else "unknown distribution"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
