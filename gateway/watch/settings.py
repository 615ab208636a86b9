"""``[watch]``: how watch streams and the change-feed reader behave on one replica.

Parsing raises ``ValueError`` naming the key; ``gateway.config`` turns it into a
``ConfigError``. Imports nothing from ``gateway.config`` (no import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass

WATCH_KEYS: dict[str, type] = {
    "queue_size": int,
    "max_write_seconds": float,
    "recheck_seconds": float,
    "poll_seconds": float,
    "notified_poll_seconds": float,
    "max_watchers": int,
    "max_watchers_per_caller": int,
    "feed_retention_seconds": float,
    "prune_interval_seconds": float,
    "expiry_sweep_seconds": float,
}
"""The ``[watch]`` keys and their types (``gateway.config`` checks them, env overrides too)."""


@dataclass(frozen=True)
class WatchSettings:
    """``[watch]``: per-watcher limits, consent re-checks and how the change feed is read."""

    queue_size: int = 256
    """Changes of the watched subject that may wait for their report, per watcher. A watcher
    that falls this far behind (its client is not reading) is dropped with RESOURCE_EXHAUSTED
    WATCHER_TOO_SLOW: the feed reader never waits for a watcher, so ingest never does. While
    the gateway itself prepares a report, four times as many may wait (a reading client is not
    blamed for the gateway's own latency)."""
    max_write_seconds: float = 30.0
    """How long one report may wait for the client to take it before the watcher is dropped
    the same way, even when no further change arrives."""
    recheck_seconds: float = 30.0
    """How often a quiet watch re-checks that it is still allowed (revoked or expired consent
    ends the stream); every change is checked anyway, as each report is decided afresh."""
    poll_seconds: float = 0.2
    """How often the change feed is read when nothing announces changes (SQLite)."""
    notified_poll_seconds: float = 5.0
    """On PostgreSQL, changes are announced (LISTEN/NOTIFY) and the feed is read at once; this
    slower poll only covers a lost notification or a reconnecting listener."""
    max_watchers: int = 1000
    """Open watch streams one replica serves; more are refused RESOURCE_EXHAUSTED
    TOO_MANY_WATCHERS."""
    max_watchers_per_caller: int = 100
    """Open watch streams one caller (an institution, or a subject watching itself: whoever
    the client certificate names) may hold on one replica; more are refused
    RESOURCE_EXHAUSTED TOO_MANY_WATCHERS_FOR_CALLER, so that one caller cannot take every
    slot and lock the others out of watching."""
    feed_retention_seconds: float = 7 * 24 * 3600.0
    """How long a change-feed row is kept (by its ``changed_at``) before it may be pruned; rows
    the reconciler has not evaluated yet, and the newest row, are kept regardless. It must exceed
    the lag of every feed reader on every replica (they read within a second or on NOTIFY), or
    a lagging reader would miss the rows pruned under it."""
    prune_interval_seconds: float = 300.0
    """How often each replica prunes the change feed (in batches of 10,000 rows per
    transaction, so the write lock is never held long)."""
    expiry_sweep_seconds: float = 5.0
    """How often each replica looks for consent grants whose validity window has ended and
    writes their EXPIRED event (once per grant, whichever replica notices first), for the
    consent event streams (WatchConsentEvents)."""

    def __post_init__(self) -> None:
        checks = {
            "watch.queue_size": self.queue_size > 0,
            "watch.max_write_seconds": self.max_write_seconds > 0,
            "watch.recheck_seconds": self.recheck_seconds > 0,
            "watch.poll_seconds": self.poll_seconds > 0,
            "watch.notified_poll_seconds": self.notified_poll_seconds > 0,
            "watch.max_watchers": self.max_watchers > 0,
            "watch.max_watchers_per_caller": self.max_watchers_per_caller > 0,
            "watch.feed_retention_seconds": self.feed_retention_seconds > 0,
            "watch.prune_interval_seconds": self.prune_interval_seconds > 0,
            "watch.expiry_sweep_seconds": self.expiry_sweep_seconds > 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key} is out of range")
