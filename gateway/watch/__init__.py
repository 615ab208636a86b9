"""Watching subjects: the change-feed reader of a replica and the WatchRepairStatus streams on it.

* ``notify`` — PostgreSQL LISTEN/NOTIFY wake-ups (migration ``0005``'s trigger on ``change_feed``);
* ``feed`` — one reader per replica, bounded subscriptions that never make it wait;
* ``service`` — one stream: who may watch, a report per change, consent re-checks, slow readers;
* ``settings`` — ``[watch]``; ``runtime`` — builds and runs it all with the reconciler.

The protocol, its rules and their reasons: docs/sync.md ("Watch"). This package imports nothing at
package level, so ``gateway.config`` can use ``settings`` without an import cycle.
"""
