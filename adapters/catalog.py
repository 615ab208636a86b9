"""Which adapter speaks to which kind of source.

Source kinds are named in configuration (``kind = "bank"``); this table is the only place that
turns a name into code, so adding a source kind is one module plus one line here.
"""

from __future__ import annotations

import importlib

from credgate.adapters.base import SourceAdapter, SourceConfig

ADAPTER_KINDS: dict[str, str] = {
    "disclosure_platform": "credgate.adapters.disclosure_platform:DisclosurePlatformAdapter",
    "credit_registry": "credgate.adapters.credit_registry:CreditRegistryAdapter",
    "court": "credgate.adapters.court:CourtAdapter",
    "bank": "credgate.adapters.bank:BankAdapter",
    "tax": "credgate.adapters.tax:TaxAdapter",
    "social_insurance": "credgate.adapters.social_insurance:SocialInsuranceAdapter",
    "market_supervision": "credgate.adapters.market_supervision:MarketSupervisionAdapter",
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
