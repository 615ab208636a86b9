"""What the gateway, not the source, says about a source's answer: whose it is and of what kind.

Every path on which an adapter's answer enters the gateway — the query fan-out, and the
workflows that fetch a source's original for an objection or after a ruling — stamps it here,
so the index holds one form of a fact whichever path wrote it (an objection compares the index
with the source's original byte for byte; the index counts a difference as a change).
"""

from __future__ import annotations

import datetime as dt

from credgate.adapters.base import SourceConfig
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2


def stamped(
    facts: report_pb2.SourceFacts,
    config: SourceConfig,
    kind: vocabulary_pb2.SourceKind.ValueType,
) -> report_pb2.SourceFacts:
    """A copy whose identity fields come from configuration, not from the payload.

    Precedence is decided by source kind, so an adapter (or a source feeding it) must not be
    able to present a bank's answer as a court's. ``source_kind_name`` is the configured kind
    on every provenance: for a plugin's kind (SOURCE_KIND_OTHER) it is the only name the kind
    has. ``fetched_at`` is filled if the adapter left it unset, because it is what "last known
    as of" shows when the source later fails.
    """
    out = report_pb2.SourceFacts()
    out.CopyFrom(facts)
    out.source_id = config.source_id
    out.source_kind = kind
    out.source_kind_name = config.kind
    if not out.display_name:
        out.display_name = config.display_name
    out.stale = False
    out.provenance.source_id = config.source_id
    out.provenance.source_kind = kind
    for provenance in (out.provenance, *(c.provenance for c in out.cases),
                       *(r.provenance for r in out.records)):  # fmt: skip
        provenance.source_kind_name = config.kind
    if not out.provenance.HasField("fetched_at"):
        out.provenance.fetched_at.FromDatetime(dt.datetime.now(dt.UTC))
    return out
