"""Provider sync: data providers stream signed fact updates; the gateway applies each once.

Pieces, each with one job:

* ``settings`` — the ``[sync]`` and ``[[providers]]`` configuration (which certificate may write
  which source, with which signing key);
* ``signing`` — the canonical, domain-separated bytes a provider signs, for both sides;
* ``validate`` — everything that can be checked about one update without the database;
* ``plan`` — the ordering rules: applied, rejected, duplicate or gap, relative to the cursor;
* ``models`` / ``store`` — the cursor, the journal of signed originals, the change feed, and
  the one transaction that applies a batch;
* ``stream`` / ``service`` — the bidirectional stream: bounded queue, batching, acknowledgements;
* ``provider_client`` — a reference client for providers (resume, reconnect, acks);
* ``rotation`` — moving the signed originals onto a new data key.

The protocol, its rules and their reasons: ``docs/sync.md``.

This package imports nothing at package level so ``gateway.config`` can use ``settings``
without an import cycle.
"""
