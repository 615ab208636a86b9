"""``[sync]`` and ``[[providers]]`` in the gateway configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from credgate.adapters.mocks.providers import PLATFORM, REGISTRY
from credgate.api.credit_repair.v1 import vocabulary_pb2
from credgate.gateway.config import ConfigError, config_from_mapping
from credgate.gateway.sync.settings import SyncSettings


def _config(document: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    return config_from_mapping(document, base_dir=Path("/srv/credgate"), environ=environ or {})


def test_providers_are_bound_to_one_source_kind_and_key() -> None:
    config = _config(
        {
            "sync": {"queue_size": 64, "max_batch": 32},
            "providers": [PLATFORM.provider_entry(), REGISTRY.provider_entry()],
        }
    )
    assert config.sync == SyncSettings(queue_size=64, max_batch=32)
    platform, registry = config.providers
    assert (platform.institution_id, platform.source_id) == (
        "provider-disclosure",
        "disclosure-platform",
    )
    assert platform.source_kind == vocabulary_pb2.SOURCE_KIND_DISCLOSURE_PLATFORM
    assert registry.source_kind == vocabulary_pb2.SOURCE_KIND_CREDIT_REGISTRY
    assert platform.public_key.public_bytes_raw() == (
        PLATFORM.signing_key.public_key().public_bytes_raw()
    )
    assert "public_key" not in repr(platform)


def test_defaults_and_environment_overrides() -> None:
    assert _config({}).sync == SyncSettings()
    assert _config({}).providers == ()
    config = _config({}, {"CREDGATE_SYNC_QUEUE_SIZE": "16", "CREDGATE_SYNC_MAX_BATCH": "4"})
    assert (config.sync.queue_size, config.sync.max_batch) == (16, 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"source_kind": "astrology"}, "providers[0].source_kind"),
        ({"source_kind": "unspecified"}, "providers[0].source_kind"),
        ({"public_key": "bm90IGEga2V5"}, "providers[0].public_key"),
        ({"institution_id": "Not An Id"}, "providers[0].institution_id"),
        ({"source_id": "a|b"}, "providers[0].source_id"),
        ({"signing_key": "x"}, "unknown key providers[0].signing_key"),
        ({"public_key": ""}, "providers[0].public_key is required"),
    ],
)
def test_a_bad_provider_entry_names_its_key(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _config({"providers": [{**PLATFORM.provider_entry(), **change}]})


def test_one_provider_per_source_and_per_institution() -> None:
    twice = [
        PLATFORM.provider_entry(),
        {**REGISTRY.provider_entry(), "source_id": "disclosure-platform"},
    ]
    with pytest.raises(ConfigError, match="source_id duplicates"):
        _config({"providers": twice})
    with pytest.raises(ConfigError, match="institution_id duplicates"):
        _config({"providers": [PLATFORM.provider_entry(), PLATFORM.provider_entry()]})


@pytest.mark.parametrize(
    "sync",
    [
        {"queue_size": 0},
        {"max_batch": -1},
        {"max_update_bytes": 10},
        {"max_batch_updates": 0},
        {"max_batch_updates": 5000},
        {"burst": 3},
    ],
)
def test_sync_settings_out_of_range_or_unknown_are_refused(sync: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="sync"):
        _config({"sync": sync})
