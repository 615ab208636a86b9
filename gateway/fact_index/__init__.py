"""The fact index: every read and write of ``source_facts``, under one rule.

One owner for one table. The index holds, per subject and source, the facts the gateway last
knew, encrypted; it is written by the live query path, by provider pushes and by the workflows'
corrections, and read by queries, watchers, the reconciler and objections. Every writer keeps
the same facts (``precedence``: newest as-of, then a signed push over an unsigned pull) and
takes the same change-feed lock (``feed``), so facts never go backwards whoever writes last.

Pieces, each with one job:

* ``precedence`` — the rule, written once: a Python ranking and the SQL condition, derived from
  one definition;
* ``feed`` — the change feed's lock key (``FEED_LOCK_KEY``) and the live sequence number;
* ``index`` — ``FactIndex``: reads, the live path's stores, subjects, issued-report records,
  key rotation;
* ``live_writes`` — the live path's compare-and-set writes and ``FactWriter`` (write-behind);
* ``pushed`` — the upsert a provider-sync batch writes its facts with (``gateway.sync.store``);
* ``corrections`` — the workflows' writes (objection corrections, ruling propagation);
* ``models`` / ``history`` — ``source_fact_history``: the answers the rule did not let in,
  kept (encrypted) with whether they disagreed with what they lost to.
"""

from credgate.gateway.fact_index.feed import FEED_LOCK_KEY, LIVE_SEQUENCE
from credgate.gateway.fact_index.index import (
    FACT_INDEX_COLUMNS,
    FactIndex,
    FactIndexError,
    UnreadableRecordError,
    facts_context,
    identity_context,
)
from credgate.gateway.fact_index.live_writes import IndexedFacts

__all__ = [
    "FACT_INDEX_COLUMNS",
    "FEED_LOCK_KEY",
    "LIVE_SEQUENCE",
    "FactIndex",
    "FactIndexError",
    "IndexedFacts",
    "UnreadableRecordError",
    "facts_context",
    "identity_context",
]
