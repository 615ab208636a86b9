"""Which adapter speaks to which kind of source.

Source kinds are named in configuration (``kind = "bank"``); this table is the only place that
turns a name into code, so adding a source kind is one module plus one line here.
"""

from __future__ import annotations

import importlib

from adapters.base import SourceAdapter, SourceConfig

ADAPTER_KINDS: dict[str, str] = {
    "disclosure_platform": "adapters.disclosure_platform:DisclosurePlatformAdapter",
    "credit_registry": "adapters.credit_registry:CreditRegistryAdapter",
    "court": "adapters.court:CourtAdapter",
    "bank": "adapters.bank:BankAdapter",
    "tax": "adapters.tax:TaxAdapter",
    "social_insurance": "adapters.social_insurance:SocialInsuranceAdapter",
    "market_supervision": "adapters.market_supervision:MarketSupervisionAdapter",
}


class UnknownSourceKind(ValueError):
    """Configuration names a source kind no adapter speaks."""


def build_adapter(config: SourceConfig) -> SourceAdapter:
    try:
        target = ADAPTER_KINDS[config.kind]
    except KeyError:
        known = ", ".join(sorted(ADAPTER_KINDS))
        raise UnknownSourceKind(
            f"source {config.source_id!r}: unknown kind {config.kind!r} (known: {known})"
        ) from None
    module_name, class_name = target.split(":")
    adapter_class = getattr(importlib.import_module(module_name), class_name)
    adapter: SourceAdapter = adapter_class(config)
    return adapter
