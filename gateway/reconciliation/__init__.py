"""Reconciliation: contradictions between sources, recorded as they arise and cleared when resolved.

* ``evaluate`` — a subject's contradictions, by the query engine's own merge rules (pure);
* ``models`` / ``store`` — the open contradictions and the reconciler's cursor in the database;
* ``reconciler`` — the background reconciler following the change feed on every replica;
* ``service`` — ReconciliationService.ListOpenContradictions (data providers, regulators);
* ``listing`` — the open contradictions as ``credgate reconcile`` prints them (the command
  itself: ``gateway.commands.reconcile``).

docs/sync.md ("Reconciliation") explains the rules and why the explanations are not stored.
"""
