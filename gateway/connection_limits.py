"""``[connections]``: how many connections and streams one gateway process holds, and for how long.

gRPC core sets no limit of its own on a server: before this section, one client could hold
1,000 idle mutual-TLS connections open (file descriptors 24 → 1,024, the default soft limit,
and 135 → 201 MiB resident; issue #18), open any number of streams on one connection, and keep
a connection — and the certificate check done at its handshake — for ever. Every limit here is
a gRPC core channel argument of the server (``server_options``), enforced in the transport
before any handler runs:

* ``max_connections`` (``grpc.max_allowed_incoming_connections``): a connection past it is
  closed as it is accepted; the client sees UNAVAILABLE and retries with back-off.
* ``max_concurrent_streams`` (``grpc.max_concurrent_streams``, the HTTP/2 setting
  SETTINGS_MAX_CONCURRENT_STREAMS): calls past it on one connection wait in the client until a
  stream ends (HTTP/2 semantics: they are queued, not refused).
* ``max_connection_idle_seconds`` (``grpc.max_connection_idle_ms``): a connection without a
  call for that long gets GOAWAY and is closed; the client reconnects on its next call.
* ``max_connection_age_seconds`` + ``max_connection_age_grace_seconds``
  (``grpc.max_connection_age_ms`` / ``_grace_ms``): every connection gets GOAWAY at that age
  (± 10 % jitter, gRPC's own), new calls go to a new connection — a new TLS handshake, which
  checks the client certificate's chain and validity again — and calls still open after the
  grace are cut off (a watch stream then resumes on the new connection).
* keep-alive: the server pings a connection with calls in flight that has been silent for
  ``keepalive_time_seconds`` and drops it if no answer comes within
  ``keepalive_timeout_seconds`` (a dead peer no longer holds a watch slot until TCP notices);
  a client pinging more often than ``min_ping_interval_seconds`` gets GOAWAY
  ``too_many_pings``; pings on a connection without calls are allowed only if
  ``permit_keepalive_without_calls`` (else at most one per two hours, gRPC's default), so pings
  cannot keep an idle connection alive past ``max_connection_idle_seconds``.
* ``handshake_timeout_seconds`` (``grpc.server_handshake_timeout_ms``, 120 s in gRPC): a
  connection that has not finished its TLS handshake by then is closed.

``first_message_seconds`` is not a transport limit: the request interceptor bounds how long a
call may wait for its first request message (``gateway.first_message``).

With several ``gateway.workers`` every limit applies per worker process. Parsing raises
``ValueError`` naming the key; ``gateway.config`` turns it into a ``ConfigError``. This module
imports nothing from ``gateway.config`` (no import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CONNECTION_KEYS: dict[str, type] = {
    "max_connections": int,
    "max_concurrent_streams": int,
    "max_connection_idle_seconds": float,
    "max_connection_age_seconds": float,
    "max_connection_age_grace_seconds": float,
    "keepalive_time_seconds": float,
    "keepalive_timeout_seconds": float,
    "min_ping_interval_seconds": float,
    "permit_keepalive_without_calls": bool,
    "handshake_timeout_seconds": float,
    "first_message_seconds": float,
}
"""The ``[connections]`` keys and their types (``gateway.config`` checks them, env too)."""

_NO_LIMIT_MS = 2**31 - 1
"""gRPC core's "infinite" for its millisecond arguments (INT_MAX)."""


def _ms(seconds: float) -> int:
    """Seconds as a gRPC core millisecond argument; 0 (no limit) as gRPC's infinity."""
    if seconds == 0:
        return _NO_LIMIT_MS
    return max(1, min(round(seconds * 1000), _NO_LIMIT_MS))


@dataclass(frozen=True)
class ConnectionLimits:
    """``[connections]``: limits on the connections and streams one gateway process holds."""

    max_connections: int = 500
    """Most client connections one gateway process holds; a connection past it is closed as it
    is accepted (the client sees UNAVAILABLE and retries). Keep it well below the process's
    file-descriptor limit (`ulimit -n`, often 1,024), which the database and log files share.
    0: no limit."""
    max_concurrent_streams: int = 100
    """Most calls open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS);
    further calls wait in the client until one ends."""
    max_connection_idle_seconds: float = 300.0
    """A connection without a call for this long is closed (GOAWAY); the client reconnects on
    its next call. 0: never."""
    max_connection_age_seconds: float = 3600.0
    """Every connection is closed (GOAWAY, ± 10 % jitter) at this age, so that the client
    reconnects and its certificate is checked again by a new TLS handshake. 0: never."""
    max_connection_age_grace_seconds: float = 300.0
    """How long calls still open on a connection past its age may finish; then they are cut
    off UNAVAILABLE (a watch stream resumes on a new connection). 0: no limit."""
    keepalive_time_seconds: float = 120.0
    """A connection with calls in flight that has been silent this long is pinged ..."""
    keepalive_timeout_seconds: float = 20.0
    """... and closed if the ping is not answered within this long (a dead peer)."""
    min_ping_interval_seconds: float = 30.0
    """Least interval between a client's keep-alive pings; a client pinging more often is
    disconnected (GOAWAY ``too_many_pings``). Clients' ``grpc.keepalive_time_ms`` must be at
    least this."""
    permit_keepalive_without_calls: bool = False
    """Whether clients may ping a connection without calls at that interval; false: at most
    every two hours, so that pings cannot keep an idle connection open."""
    handshake_timeout_seconds: float = 10.0
    """A connection must finish its TLS handshake within this long, or it is closed."""
    first_message_seconds: float = 5.0
    """How long a call may wait for its first request message after it opened; past it the
    call ends DEADLINE_EXCEEDED, reason ``REQUEST_NOT_RECEIVED`` (streams that never send
    their request no longer stay open). Once it has arrived, a stream lives as long as its own
    limits allow."""

    def __post_init__(self) -> None:
        checks = {
            "connections.max_connections": self.max_connections >= 0,
            "connections.max_concurrent_streams": self.max_concurrent_streams > 0,
            "connections.max_connection_idle_seconds": self.max_connection_idle_seconds >= 0,
            "connections.max_connection_age_seconds": self.max_connection_age_seconds >= 0,
            "connections.max_connection_age_grace_seconds": (
                self.max_connection_age_grace_seconds >= 0
            ),
            "connections.keepalive_time_seconds": self.keepalive_time_seconds >= 1,
            "connections.keepalive_timeout_seconds": self.keepalive_timeout_seconds > 0,
            "connections.min_ping_interval_seconds": self.min_ping_interval_seconds >= 0,
            "connections.handshake_timeout_seconds": self.handshake_timeout_seconds > 0,
            "connections.first_message_seconds": self.first_message_seconds > 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"{key} is out of range")

    def server_options(self) -> list[tuple[str, Any]]:
        """The gRPC core channel arguments of a server enforcing these limits."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.max_connection_idle_ms", _ms(self.max_connection_idle_seconds)),
            ("grpc.max_connection_age_ms", _ms(self.max_connection_age_seconds)),
            ("grpc.max_connection_age_grace_ms", _ms(self.max_connection_age_grace_seconds)),
            ("grpc.keepalive_time_ms", _ms(self.keepalive_time_seconds)),
            ("grpc.keepalive_timeout_ms", _ms(self.keepalive_timeout_seconds)),
            # gRPC core (1.5x on) times a keep-alive ping out by the *ping* timeout, one minute
            # unless set: without this a dead peer outlived keepalive_timeout by a minute.
            ("grpc.http2.ping_timeout_ms", _ms(self.keepalive_timeout_seconds)),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                round(self.min_ping_interval_seconds * 1000),
            ),
            ("grpc.keepalive_permit_without_calls", int(self.permit_keepalive_without_calls)),
            # Server pings must go on while a quiet watch stream sends nothing (gRPC stops
            # after 2 pings without data by default): that is when a dead peer must be found.
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.server_handshake_timeout_ms", _ms(self.handshake_timeout_seconds)),
        ]
        if self.max_connections:
            options.append(("grpc.max_allowed_incoming_connections", self.max_connections))
        return options
