"""Which contradictions a subject's indexed facts contain: the query engine's own rules.

The reconciler does not have rules of its own. It puts every configured source's indexed
facts about a subject through ``gateway.engine.merge`` — the function every report is built
with — and takes its contradictions, so the list an operator works from says exactly what reports
say (docs/precedence.md). Pure apart from the keyed digest; no I/O.

One contradiction is not between two sources but between a source and itself
(``outdated_answers``, subject matter ``OUTDATED_ANSWER``): the source's own query interface
answered older facts that disagree with the newer (or signed) facts the index holds from it.
The index keeps the newer facts (``gateway.fact_index.precedence``); the older answer is in
``source_fact_history`` and is listed here until the source's answer agrees or the index moves
on (docs/sync.md, "Facts never go backwards").

Each contradiction is identified by a keyed digest of everything it says (kind, both sources,
both values, the explanation with its record ids), so one subject's two defaults are two
contradictions and a value that changes on either side resolves the old one and opens another.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from credgate.adapters.base import SourceConfig
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.gateway.config import GatewayConfig
from credgate.gateway.engine.fanout import SourceOutcome
from credgate.gateway.engine.merge import MergedReport, merge
from credgate.gateway.fact_index import IndexedFacts
from credgate.gateway.fact_index.history import RecordedAnswer
from credgate.gateway.sync.settings import source_kind_from_name

SourceKind: TypeAlias = vocabulary_pb2.SourceKind.ValueType
KEY_LABEL = b"credgate/reconciliation/contradiction-key/v1"
OUTDATED_ANSWER = "outdated_answer"
"""The subject matter of a source's older answer disagreeing with its newer facts."""


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


def merged(
    facts: Mapping[str, report_pb2.SourceFacts],
    catalog: Mapping[str, SourceKind],
    *,
    now: dt.datetime,
) -> MergedReport:
    """The configured sources' ``facts`` about one subject through the report's merge: its
    contradictions (``contradictions_in``) and its state (``restorations.restoration_of``)
    come from this one call."""
    outcomes = [
        SourceOutcome(SourceConfig(source_id, "index", ""), catalog[source_id], facts=held)
        for source_id, held in sorted(facts.items())
        if source_id in catalog
    ]
    return merge(outcomes, {}, now=now)


def contradictions_in(token: str, report: MergedReport, *, key: bytes) -> list[Observed]:
    """The contradictions of subject ``token``'s merged ``report``, each with its identity."""
    found: dict[str, Observed] = {}
    for item in report.categorized:
        observed = Observed(contradiction_key(key, token, item.contradiction),
                            item.contradiction)  # fmt: skip
        found.setdefault(observed.key, observed)
    return list(found.values())


def outdated_answers(
    token: str,
    indexed: Mapping[str, IndexedFacts],
    answers: Sequence[RecordedAnswer],
    catalog: Mapping[str, SourceKind],
    *,
    key: bytes,
) -> list[Observed]:
    """A source's answer about subject ``token`` that the index did not take, where it is the
    source's latest word and disagrees with what the index holds from it *now*.

    Per configured source the index holds: of the history rows recorded against the held
    facts as they are (same as-of and sequence), the one seen last; it is listed if it
    disagrees. So the contradiction goes when the source's answer agrees again (a newer
    recorded answer that agrees; for unsigned held facts also a refetch of them, which moves
    their ``fetched_at`` past it) or when the index moves on (other held facts)."""
    found: list[Observed] = []
    for source_id, held in sorted(indexed.items()):
        if source_id not in catalog:
            continue
        standing = (held.source_as_of, held.sequence)
        against = [
            a
            for a in answers
            if a.source_id == source_id and (a.held.source_as_of, a.held.sequence) == standing
        ]
        if not against:
            continue
        latest = max(against, key=lambda a: (a.last_seen, a.source_as_of, a.history_id))
        if not latest.disagrees:
            continue
        if held.sequence is None and held.fetched_at > latest.last_seen:
            continue  # the source has answered the held facts again since
        contradiction = _outdated(latest, held)
        found.append(Observed(contradiction_key(key, token, contradiction), contradiction))
    return found


def _outdated(answer: RecordedAnswer, held: IndexedFacts) -> report_pb2.Contradiction:
    """The contradiction of a source's outdated ``answer``: as-of times and record ids only."""
    source_id = answer.source_id
    older, newer = _as_of(answer.source_as_of), _as_of(held.source_as_of)
    what = (f"its signed update {held.sequence}" if held.sequence is not None
            else "its own earlier answer")  # fmt: skip
    return report_pb2.Contradiction(
        subject_matter=OUTDATED_ANSWER,
        prevailing_source_id=source_id,
        prevailing_value=f"as of {newer}",
        dissenting_source_id=source_id,
        dissenting_value=f"as of {older}",
        explanation=(
            f"{source_id} answered facts as of {older} (history record {answer.history_id}) "
            f"that disagree with {what}, as of {newer}, which the index keeps as the newer "
            f"facts. {source_id}'s query interface lags its own data and should catch up."
        ),
    )


def _as_of(value: dt.datetime | None) -> str:
    return "unknown" if value is None else f"{value.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"


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
