"""``[sync]`` and ``[[providers]]``: how the sync stream behaves, and who may write what.

A provider's right to write is configuration, not something a request can claim: each
``[[providers]]`` entry binds one certificate identity (``institution_id``) to exactly one
``source_id``, the ``source_kind`` its facts count as in the precedence rules (a bank must not
be able to push facts that outrank the court), and the Ed25519 ``public_key`` its updates are
signed with (the TLS key authenticates the connection; the signing key, which can live in the
provider's HSM, answers for the content — Art. 9).

Parsing raises ``ValueError`` with a message naming the key; ``gateway.config`` turns it into
a ``ConfigError``. This module imports nothing from ``gateway.config`` (no import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from credgate.adapters.signing import SigningKeyError, load_public_key
from credgate.api.credit_repair.v1 import vocabulary_pb2
from credgate.core.institution import INSTITUTION_ID_SHAPE
from credgate.core.storage.models import SOURCE_ID_LENGTH

SourceKindValue: TypeAlias = vocabulary_pb2.SourceKind.ValueType

SYNC_KEYS: dict[str, type] = {
    "queue_size": int,
    "max_batch": int,
    "max_update_bytes": int,
    "max_batch_updates": int,
    "max_clock_skew_seconds": float,
    "validation_workers": int,
}
"""The ``[sync]`` keys and their types (``gateway.config`` checks them, env overrides too)."""
PROVIDER_KEYS = ("institution_id", "source_id", "source_kind", "public_key", "display_name")
_KIND_PREFIX = "SOURCE_KIND_"


@dataclass(frozen=True)
class SyncSettings:
    """``[sync]``: flow control and limits of the provider sync stream."""

    queue_size: int = 256
    """Updates read off the wire but not yet applied, per stream. When full, the gateway stops
    reading, and gRPC flow control makes the provider wait."""
    max_batch: int = 256
    """Most updates applied in one transaction."""
    max_update_bytes: int = 256 * 1024
    """Largest accepted ``update_bytes``; bigger updates are rejected UPDATE_TOO_LARGE."""
    max_batch_updates: int = 4096
    """Most updates in one ``SignedUpdateBatch``; a bigger batch is refused BATCH_MALFORMED. A
    batch is applied in one transaction whatever its size (it is stored all or nothing)."""
    max_clock_skew_seconds: float = 300.0
    """How far in the future a ``source_as_of`` may lie (provider clocks drift)."""
    validation_workers: int | None = None
    """Worker processes that validate ``SignedUpdateBatch`` messages (signature, input rules,
    tokens, encryption) off the event loop, so batch N+1 validates while batch N commits and
    validation uses every core; 0 validates on the event loop. Unset: one per core but one, at
    most 4 (0 on a single core). The per-update form is always validated on the event loop."""

    def __post_init__(self) -> None:
        checks = {
            "sync.queue_size": self.queue_size > 0,
            "sync.max_batch": self.max_batch > 0,
            "sync.max_update_bytes": self.max_update_bytes >= 1024,
            "sync.max_batch_updates": 1 <= self.max_batch_updates <= 4096,
            "sync.max_clock_skew_seconds": self.max_clock_skew_seconds >= 0,
            "sync.validation_workers": self.validation_workers is None
            or 0 <= self.validation_workers <= 64,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key} is out of range")


@dataclass(frozen=True)
class ProviderConfig:
    """One ``[[providers]]`` entry: a data provider's certificate bound to its source."""

    institution_id: str
    source_id: str
    source_kind: SourceKindValue
    public_key: Ed25519PublicKey
    display_name: str = ""

    def __repr__(self) -> str:
        kind = vocabulary_pb2.SourceKind.Name(self.source_kind)
        return (
            f"ProviderConfig(institution_id={self.institution_id!r}, "
            f"source_id={self.source_id!r}, source_kind={kind})"
        )


def source_kind_name(kind: SourceKindValue) -> str:
    """``SOURCE_KIND_DISCLOSURE_PLATFORM`` → ``"disclosure_platform"`` (``source_kind_name``)."""
    return vocabulary_pb2.SourceKind.Name(kind).removeprefix(_KIND_PREFIX).lower()


def source_kind_from_name(name: str) -> SourceKindValue:
    """``"disclosure_platform"`` → ``SOURCE_KIND_DISCLOSURE_PLATFORM``; ValueError if unknown."""
    if not name or name != name.lower():
        raise ValueError("must be a lower_snake source kind, e.g. 'disclosure_platform'")
    try:
        kind = vocabulary_pb2.SourceKind.Value(_KIND_PREFIX + name.upper())
    except ValueError:
        raise ValueError(f"unknown source kind {name!r}") from None
    if kind == vocabulary_pb2.SOURCE_KIND_UNSPECIFIED:
        raise ValueError("source kind must not be 'unspecified'")
    return kind


def parse_providers(raw: Any) -> tuple[ProviderConfig, ...]:
    """Validate the ``[[providers]]`` array; each institution and source appears at most once."""
    if not isinstance(raw, list):
        raise ValueError("providers must be an array of tables ([[providers]])")
    providers: list[ProviderConfig] = []
    for index, item in enumerate(raw):
        where = f"providers[{index}]"
        provider = _provider(where, item)
        if any(p.institution_id == provider.institution_id for p in providers):
            raise ValueError(f"{where}.institution_id duplicates an earlier provider")
        if any(p.source_id == provider.source_id for p in providers):
            # One writer per source: the sequence counter belongs to the source.
            raise ValueError(f"{where}.source_id duplicates an earlier provider")
        providers.append(provider)
    return tuple(providers)


def _provider(where: str, item: Any) -> ProviderConfig:
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(item) - set(PROVIDER_KEYS))
    if unknown:
        raise ValueError(f"unknown key {where}.{unknown[0]} (known: {', '.join(PROVIDER_KEYS)})")
    for key in PROVIDER_KEYS:
        if key in item and not isinstance(item[key], str):
            raise ValueError(f"{where}.{key} must be a string")
    for key in PROVIDER_KEYS[:4]:
        if not item.get(key):
            raise ValueError(f"{where}.{key} is required")
    institution_id, source_id = item["institution_id"], item["source_id"]
    if not INSTITUTION_ID_SHAPE.fullmatch(institution_id):
        raise ValueError(f"{where}.institution_id is not a valid institution id")
    if len(source_id) > SOURCE_ID_LENGTH or not source_id.isascii() or "|" in source_id:
        # "|" separates fields in the ciphertext contexts built from source ids.
        raise ValueError(f"{where}.source_id must be printable ASCII without '|'")
    try:
        kind = source_kind_from_name(item["source_kind"])
    except ValueError as exc:
        raise ValueError(f"{where}.source_kind: {exc}") from None
    try:
        public_key = load_public_key(item["public_key"])
    except SigningKeyError as exc:
        raise ValueError(f"{where}.public_key: {exc}") from None
    return ProviderConfig(institution_id, source_id, kind, public_key, item.get("display_name", ""))
