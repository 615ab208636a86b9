"""Which contradictions a subject's indexed facts contain: the query engine's own rules.

The reconciler does not have rules of its own. It puts every configured source's indexed
facts about a subject through ``gateway.engine.merge`` — the function every report is built
with — and takes its contradictions, so the list an operator works from says exactly what reports
say (docs/precedence.md). Pure apart from the keyed digest; no I/O.

Each contradiction is identified by a keyed digest of everything it says (kind, both sources,
both values, the explanation with its record ids), so one subject's two defaults are two
contradictions and a value that changes on either side resolves the old one and opens another.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from credgate.adapters.base import SourceConfig
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.gateway.config import GatewayConfig
from credgate.gateway.engine.fanout import SourceOutcome
from credgate.gateway.engine.merge import merge
from credgate.gateway.sync.settings import source_kind_from_name

SourceKind: TypeAlias = vocabulary_pb2.SourceKind.ValueType
KEY_LABEL = b"credgate/reconciliation/contradiction-key/v1"


@dataclass(frozen=True)
class Observed:
    """A contradiction found in a subject's facts, with its identity."""

    key: str
    contradiction: report_pb2.Contradiction


def derive_key(subject_token_key: bytes, label: bytes) -> bytes:
    """A key for one purpose, derived from the keyring's subject-token key (domain-separated)."""
    return hmac.new(subject_token_key, label, hashlib.sha256).digest()


def source_catalog(config: GatewayConfig) -> dict[str, SourceKind]:
    """Every configured source (queried or pushing) by id, with the kind it counts as."""
    catalog: dict[str, SourceKind] = {p.source_id: p.source_kind for p in config.providers}
    for source in config.sources:
        try:
            catalog[source.source_id] = source_kind_from_name(source.kind)
        except ValueError:
            # A plugin's kind (adapters.catalog): it ranks as OTHER, below every known kind.
            catalog[source.source_id] = vocabulary_pb2.SOURCE_KIND_OTHER
    return catalog


def contradictions_of(
    token: str,
    facts: Mapping[str, report_pb2.SourceFacts],
    catalog: Mapping[str, SourceKind],
    *,
    key: bytes,
    now: dt.datetime,
) -> list[Observed]:
    """The contradictions among the configured sources' ``facts`` about subject ``token``."""
    outcomes = [
        SourceOutcome(SourceConfig(source_id, "index", ""), catalog[source_id], facts=held)
        for source_id, held in sorted(facts.items())
        if source_id in catalog
    ]
    found: dict[str, Observed] = {}
    for item in merge(outcomes, {}, now=now).categorized:
        observed = Observed(contradiction_key(key, token, item.contradiction),
                            item.contradiction)  # fmt: skip
        found.setdefault(observed.key, observed)
    return list(found.values())


def contradiction_key(key: bytes, token: str, contradiction: report_pb2.Contradiction) -> str:
    """Hex HMAC-SHA256 of the subject and everything the contradiction says."""
    parts = (
        token,
        contradiction.subject_matter,
        contradiction.prevailing_source_id,
        contradiction.prevailing_value,
        contradiction.dissenting_source_id,
        contradiction.dissenting_value,
        contradiction.explanation,
    )
    message = b"\x00".join(part.encode("utf-8") for part in parts)
    return hmac.new(key, message, hashlib.sha256).hexdigest()
