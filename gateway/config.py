"""Gateway configuration: one TOML file, overridable per key from the environment.

A typo in a config file should stop the gateway at start, not silently fall back to a default
(a misspelt ``insecure_dev`` or TLS path is a security bug), so unknown keys and wrong types
are ``ConfigError``s naming the key. Environment variables ``CREDGATE_<SECTION>_<KEY>``
(e.g. ``CREDGATE_GATEWAY_LISTEN``) override single keys, for containers; other ``CREDGATE_*``
variables whose prefix is not a section name are left alone for other tools.

Relative paths in the file are resolved against the file's directory (in the environment,
against the working directory). Defaults derived from ``storage.data_dir``: the database
``sqlite:///<data_dir>/credgate.db``, TLS files in ``<data_dir>/pki/`` (the layout
``credgate pki init`` writes) and the keyring ``<data_dir>/keyring``.
See ``docs/example-config.toml`` for every key (and ``docs/telemetry.md`` for ``[telemetry]``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from credgate.adapters.base import SourceConfig
from credgate.adapters.catalog import available_kinds
from credgate.audit.cosignature import CosignerVerifier
from credgate.audit.note import NoteError
from credgate.core.institution import Institution, role_from_name
from credgate.core.storage.database import SQLITE_MAX_MMAP_BYTES
from credgate.gateway.calendar_file import CalendarFileError, load_calendar_file
from credgate.gateway.connection_limits import CONNECTION_KEYS, ConnectionLimits
from credgate.gateway.engine.consistency import (
    CONSISTENCY_KEYS,
    ConsistencySettings,
    NumberTable,
    parse_consistency,
)
from credgate.gateway.sync.settings import SYNC_KEYS, ProviderConfig, SyncSettings, parse_providers
from credgate.gateway.watch.settings import WATCH_KEYS, WatchSettings
from credgate.gateway.workdays import YearCalendar

ENV_PREFIX = "CREDGATE_"
MAX_WORKERS = 256
"""Most ``gateway.workers``: a typo such as 1000 should fail at start, not fork 1000 gateways."""


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


@dataclass(frozen=True)
class GatewaySettings:
    """``[gateway]``: how the server listens and behaves."""

    listen: str = "127.0.0.1:50051"
    insecure_dev: bool = False
    batch_max: int = 100
    default_deadline_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0
    drain_delay_seconds: float = 0.0
    workers: int = 1
    """Gateway processes on this host, all bound to ``listen`` with SO_REUSEPORT so the kernel
    spreads connections over them and every core is used; 1 = one process, no supervisor. Each
    worker is a whole gateway (its own database pool, audit batching, change-feed reader); the
    audit log stays one sequence (docs/deployment.md). ``credgate serve --workers N`` overrides
    it."""
    event_loop: str = "auto"
    """The event loop: ``uvloop`` (the optional ``credgate[uvloop]`` extra; 8 % fewer
    instructions per INDEX answer, docs/benchmarks.md), ``asyncio`` (the standard library's),
    or ``auto``: uvloop when it is installed, else asyncio."""
    index_view_entries: int = 1024
    """Subjects whose decrypted, merged facts INDEX answers keep in memory, reused until a
    write changes them (``gateway.engine.subject_view``; least recently used evicted; keyed by
    subject token). 0 disables the view: every INDEX answer reads the index. Memory per
    entry: the subject's decrypted facts and one merged copy per set of consulted sources
    (serialized, 2–6 KB each for the mock fleet's eight sources; several times that as Python
    objects). docs/sync.md, "INDEX answers from the per-subject view", states what another
    replica's write takes to show."""
    index_view_max_age_seconds: float = 30.0
    """Longest an entry of the view is used, in seconds: the bound on how long a change that
    the change feed does not announce (on another replica: a refresh that only moves a
    fetch time, an objection's intermediate step) or a decrypted fact stays in memory. 0
    disables the view."""


@dataclass(frozen=True)
class TlsConfig:
    """``[tls]``: the server certificate and the CA that client certificates must chain to."""

    ca: Path
    cert: Path
    key: Path
    revocation_list: Path | None = None
    """PEM CRL(s), each signed by a CA in ``ca``. A listed client certificate is refused:
    UNAUTHENTICATED, reason ``CERTIFICATE_REVOKED``. Re-read when the file changes, no restart
    (``gateway.revocation``). Unset: no revocation check."""


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: where state lives."""

    url: str
    data_dir: Path
    sqlite_proof_mmap_bytes: int = SQLITE_MAX_MMAP_BYTES
    """SQLite only: how many bytes of the database file the connection that reads audit proofs
    maps into memory (``PRAGMA mmap_size``; SQLite caps it at 2147418112). A proof at 10^7
    entries then reads its few dozen scattered pages as memory instead of through a 2 MB page
    cache (docs/benchmarks.md, "Proofs: mmap_size"). The gateway's resident memory grows by
    the pages proofs have touched (file-backed and reclaimable, but counted in RSS: ~400 MB
    after 4,000 random proofs over 10^7 entries), never by the fact index's. 0: proofs read
    as every other query does."""


@dataclass(frozen=True)
class KeysConfig:
    """``[keys]``: the keyring holding signing and blind-index keys."""

    keyring: Path
    reload_seconds: float = 1.0
    """How often, at most, a running gateway re-reads the keyring and the report-signing key
    file to take up a rotation copied to it (no restart): a promoted data key or a rotated
    signing key is used within this many seconds of reaching the replica. A record under a key
    this replica has not loaded yet makes it re-read the keyring at once."""


@dataclass(frozen=True)
class BreakerConfig:
    """``[breaker]``: when a failing source is skipped, and for how long."""

    failure_threshold: int = 5
    reset_seconds: float = 30.0


@dataclass(frozen=True)
class ConsentConfig:
    """``[consent]``: who may enrol subjects' consent-signing keys (in-person identity checks).

    Whoever enrols a key can sign consents in that subject's name, so only the listed offices
    may; empty by default, and then nobody can.
    """

    enrolment_offices: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditConfig:
    """``[audit]``: the audit log's periodic checkpoints and how long a decision may wait for
    its entry (docs/audit.md)."""

    checkpoint_interval_seconds: float = 300.0
    """How often, in seconds, a signed checkpoint of the audit log is made while it grows (none
    is signed when it has not grown; regulators can also ask for one at any time)."""
    write_timeout_seconds: float = 10.0
    """Longest, in seconds, a decision waits for its audit entry to commit; past it the caller
    gets UNAVAILABLE / AUDIT_UNAVAILABLE and no answer (a caller whose own deadline is shorter
    gets DEADLINE_EXCEEDED first). Either way nothing is released unrecorded. On SQLite a write
    blocked by another process gives up only at SQLite's busy timeout (5 s), if that is later."""
    witnesses: tuple[WitnessConfig, ...] = ()
    """Witnesses every new checkpoint is submitted to (C2SP tlog-witness), as an array of
    inline tables ``{url = "https://witness.example:8443", key = "<witness verifier key>"}``
    with an optional ``ca`` (CA bundle path). Their cosignatures are stored beside the
    checkpoints; see docs/audit.md, "Witnesses". Empty: no witness."""


@dataclass(frozen=True)
class OutboxConfig:
    """``[outbox]``: how each replica delivers committed filings and rulings to the sources
    (``gateway.workflows.outbox``, docs/deployment.md "The outbox")."""

    poll_seconds: float = 5.0
    """How often each replica drains the outbox (it also drains once when it starts): the
    longest a delivery that is due waits for a replica to pick it up."""
    claim_seconds: float = 60.0
    """How long a replica's claim on one delivery lasts. A replica that dies mid-delivery
    leaves its claim; another replica (or the same one restarted) takes the delivery over
    only once the claim runs out, so after a crash a filing reaches its source up to this many
    seconds late. Keep it well above the longest delivery (a ruling visits each source in
    turn, each within its ``timeout_seconds``): a claim that runs out mid-delivery lets a
    second replica send the same filing again (the source still holds it once)."""


class PathList(tuple[Path, ...]):
    """Schema type of a key holding an array of paths (each resolved like a path key)."""


@dataclass(frozen=True)
class WitnessConfig:
    """One entry of ``[audit] witnesses``: a witness the gateway submits checkpoints to."""

    url: str
    """Base URL of the witness (``https://...``; ``http://`` only to a loopback address)."""
    key: str
    """The witness's cosigner verifier key, ``<name>+<key id>+<base64>`` (type 0x04)."""
    ca: Path | None = None
    """CA bundle for an ``https`` URL (default: the system trust store)."""


class WitnessList(tuple[WitnessConfig, ...]):
    """Schema type of a key holding an array of ``{url, key[, ca]}`` inline tables."""


@dataclass(frozen=True)
class WorkdaysConfig:
    """``[workdays]``: the PRC holiday calendar the workflows' deadlines are counted on
    (``gateway.workdays``; docs/workflows.md, "Deadlines and the holiday calendar")."""

    calendar_files: tuple[Path, ...] = ()
    """Calendar files, one year's State Council holiday notice each (holidays and adjusted
    working weekends, format in ``gateway.calendar_file`` and docs/workflows.md). A listed
    year replaces the ``holidays`` library's calendar for that year and makes deadlines
    counted in it firm; without one, deadlines reaching a year the library has no notice for
    are marked provisional. Checked at start: a bad file stops the gateway, naming the file
    and the field or line. Read at start only (restart to load a new year); give every replica
    the same files, or replicas count the same deadline differently."""
    calendars: tuple[YearCalendar, ...] = field(default=(), compare=False)
    """The files' calendars, as loaded (not a key)."""


TELEMETRY_EXPORTERS = ("none", "console", "otlp", "prometheus")
LOG_FORMATS = ("text", "json")
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


@dataclass(frozen=True)
class TelemetryConfig:
    """``[telemetry]``: where traces and metrics go, and how log lines look (docs/telemetry.md).

    Trace ids exist whatever the exporter (they are in the logs and the audit entries), so
    ``"none"`` still traces; it just sends nothing anywhere. ``prometheus`` serves metrics for
    scraping and exports no traces.
    """

    exporter: str = "none"
    """One of ``TELEMETRY_EXPORTERS``: ``none``, ``console``, ``otlp``, ``prometheus``."""
    endpoint: str = ""
    """OTLP collector (gRPC), e.g. ``http://collector:4317``; empty = the exporter's default
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``http://localhost:4317``). ``http://`` is plaintext."""
    service_name: str = "credgate"
    """``service.name`` of every span and metric, to tell gateway deployments apart."""
    prometheus_host: str = "127.0.0.1"
    """Address the scrape endpoint binds to; loopback unless the scraper is elsewhere."""
    prometheus_port: int = 9464
    """Port of the scrape endpoint (``/metrics``); 0 picks a free one. With several
    ``gateway.workers``, worker i (from 0) serves its own metrics on this port + i."""
    export_interval_seconds: float = 60.0
    """How often metrics are pushed by the console and OTLP exporters."""
    log_format: str = "text"
    """``text`` for people at a terminal, ``json`` (one object a line, with trace ids) for a
    log pipeline."""


@dataclass(frozen=True)
class GatewayConfig:
    """The whole configuration, as loaded by ``load_config``."""

    gateway: GatewaySettings
    tls: TlsConfig
    storage: StorageConfig
    keys: KeysConfig
    breaker: BreakerConfig
    sources: tuple[SourceConfig, ...] = ()
    consent: ConsentConfig = field(default_factory=ConsentConfig)
    dev_identity: Institution | None = None
    """``[dev_identity]``: who cert-less callers are in ``insecure_dev`` mode (else unused)."""
    sync: SyncSettings = field(default_factory=SyncSettings)
    providers: tuple[ProviderConfig, ...] = ()
    """``[[providers]]``: data providers allowed to stream updates (``gateway.sync``)."""
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    """``[telemetry]``: exporters and log format (``gateway.telemetry``)."""
    audit: AuditConfig = field(default_factory=AuditConfig)
    """``[audit]``: checkpoints and write timeout of the audit log (``audit``)."""
    consistency: ConsistencySettings = field(default_factory=ConsistencySettings)
    """``[sync]`` consistency keys: default mode, freshness bounds (``gateway.engine``)."""
    watch: WatchSettings = field(default_factory=WatchSettings)
    """``[watch]``: watch streams and the change-feed reader (``gateway.watch``)."""
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    """``[connections]``: limits on the connections and streams of each gateway process, all
    enforced before any handler runs (``gateway.connection_limits``; docs/deployment.md,
    "Connection limits"). Without the section the defaults apply."""
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    """``[outbox]``: delivery of filings and rulings to the sources (``gateway.workflows``)."""
    workdays: WorkdaysConfig = field(default_factory=WorkdaysConfig)
    """``[workdays]``: published holiday calendars loaded from files (``gateway.workdays``)."""
    path: Path | None = field(default=None, compare=False)


# Keys of each table and their types; str(Path) keys are resolved against the base directory.
_SECTIONS: dict[str, dict[str, type]] = {
    "gateway": {
        "listen": str,
        "insecure_dev": bool,
        "batch_max": int,
        "default_deadline_seconds": float,
        "shutdown_grace_seconds": float,
        "drain_delay_seconds": float,
        "workers": int,
        "event_loop": str,
        "index_view_entries": int,
        "index_view_max_age_seconds": float,
    },
    "tls": {"ca": Path, "cert": Path, "key": Path, "revocation_list": Path},
    "storage": {"url": str, "data_dir": Path, "sqlite_proof_mmap_bytes": int},
    "keys": {"keyring": Path, "reload_seconds": float},
    "breaker": {"failure_threshold": int, "reset_seconds": float},
    "consent": {"enrolment_offices": list},
    "audit": {
        "checkpoint_interval_seconds": float,
        "write_timeout_seconds": float,
        "witnesses": WitnessList,
    },
    "outbox": {"poll_seconds": float, "claim_seconds": float},
    "workdays": {"calendar_files": PathList},
    "dev_identity": {"institution_id": str, "role": str, "display_name": str},
    "sync": {**SYNC_KEYS, **CONSISTENCY_KEYS},
    "watch": WATCH_KEYS,
    "connections": CONNECTION_KEYS,
    "telemetry": {
        "exporter": str,
        "endpoint": str,
        "service_name": str,
        "prometheus_host": str,
        "prometheus_port": int,
        "export_interval_seconds": float,
        "log_format": str,
    },
}
_SOURCE_KEYS: dict[str, type] = {
    "source_id": str,
    "kind": str,
    "endpoint": str,
    "display_name": str,
    "timeout_seconds": float,
    "options": dict,
}

# What each key means, for docs/configuration.md (scripts/gen_config_docs.py). A key documented
# by an attribute docstring on its dataclass (``[sync]``, ``[telemetry]``, ...) needs no entry;
# every other key must have one here, or the generator fails naming it.
KEY_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "gateway": {
        "listen": "host:port the gRPC server binds; port 0 picks a free port (tests). Behind a "
        "load balancer: `0.0.0.0:50051`.",
        "insecure_dev": "Plain TCP without TLS: callers are not authenticated and act as "
        "`[dev_identity]`. Local experiments only; the gateway logs a loud warning.",
        "batch_max": "Most subjects one `BatchGetRepairStatus` request may ask about.",
        "default_deadline_seconds": "Deadline applied to a call whose client set none, in seconds.",
        "shutdown_grace_seconds": "On SIGTERM/SIGINT health turns NOT_SERVING at once, then "
        "in-flight calls get this long to finish (docs/deployment.md).",
        "drain_delay_seconds": "On SIGTERM/SIGINT, how long the gateway keeps serving new calls "
        "after health turned NOT_SERVING, before it stops accepting them: set it to the time "
        "the load balancer takes to notice (health check interval × unhealthy threshold).",
    },
    "tls": {
        "ca": "PEM bundle of the CA(s) institution client certificates must chain to.",
        "cert": "The server's certificate chain (PEM).",
        "key": "The server's private key (PEM).",
    },
    "storage": {
        "url": "SQLAlchemy URL. SQLite for one node; several replicas share PostgreSQL: "
        "`postgresql+psycopg://credgate@db.internal/credgate`. A relative SQLite path in the "
        "URL is relative to the working directory, not to this file.",
        "data_dir": "Local state: the SQLite database, `report-signing-keys.json`, "
        "`audit-log.key`; the default home of the PKI and the keyring.",
    },
    "keys": {
        "keyring": "Keyring file: the data-encryption keys and the subject-token (blind index) "
        "key. Replicas share it.",
    },
    "breaker": {
        "failure_threshold": "Consecutive failures after which a source is skipped (answers "
        "marked STALE) ...",
        "reset_seconds": "... and how long, in seconds, before it is tried again.",
    },
    "consent": {
        "enrolment_offices": "Institution ids allowed to enrol subjects' consent-signing keys "
        "after an in-person identity check. Empty: nobody may enrol keys.",
    },
    "sync": {
        "default_consistency": "Consistency mode of requests that leave it unspecified: `auto` "
        "(the index when fresh enough, else the source), `index` or `live`.",
    },
    "dev_identity": {
        "institution_id": "Who a caller without a certificate is, in `insecure_dev` mode only.",
        "role": "Their role: financial_institution, commercial_institution, authorized_party, "
        "judicial_organ, tax_authority, statutory_organ, regulator, data_provider, subject.",
        "display_name": "Their display name.",
    },
    "sources": {
        "source_id": "Stable id, shown in provenance and audit entries.",
        "endpoint": "Where the source answers (URL, or host:port for gRPC sources).",
        "display_name": "Human-readable name.",
        "timeout_seconds": "Wall-clock budget for one lookup, retries included.",
    },
    "providers": {
        "institution_id": "The provider's certificate identity (`urn:credgate:institution:<id>`).",
        "source_id": "The one source it writes; at most one provider per source.",
        "source_kind": "What its facts count as in the precedence rules, e.g. "
        "`disclosure_platform`, `credit_registry`, `court`, `bank`.",
        "public_key": "Base64 raw Ed25519 public key its updates are signed with.",
        "display_name": "Human-readable name.",
    },
}
DERIVED_DEFAULTS: dict[str, str] = {
    "storage.url": "`sqlite:///<data_dir>/credgate.db`",
    "storage.data_dir": "`data` beside the config file",
    "tls.ca": "`<data_dir>/pki/ca.pem`",
    "tls.cert": "`<data_dir>/pki/server.pem`",
    "tls.key": "`<data_dir>/pki/server.key`",
    "keys.keyring": "`<data_dir>/keyring`",
    "sync.default_consistency": '`"auto"`',
    "sync.validation_workers": "one per core but one, at most 4 (0 on a single core)",
}
"""Defaults as the reference shows them where no dataclass field holds them as TOML would write
them: computed from other keys (``config_from_mapping``), or parsed into another type."""
_TYPE_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    Path: "a path string",
    dict: "a table of strings",
    list: "an array of strings",
    NumberTable: "a table of numbers",
    PathList: "an array of path strings",
    WitnessList: "an array of {url, key, ca} tables",
}


def _check(where: str, value: Any, kind: type, base: Path) -> Any:
    """Validate one value's type; resolve relative paths against ``base``."""
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
        Path: isinstance(value, str) and value != "",
        dict: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
        list: isinstance(value, list) and all(isinstance(v, str) for v in value),
        PathList: isinstance(value, list) and all(isinstance(v, str) and v for v in value),
        NumberTable: isinstance(value, dict)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()),
        WitnessList: isinstance(value, list) and all(isinstance(v, dict) for v in value),
    }[kind]
    if not ok:
        raise ConfigError(f"{where} must be {_TYPE_NAMES[kind]}, got {type(value).__name__}")
    if kind is float:
        return float(value)
    if kind is Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    if kind is dict:
        return dict(value)
    if kind is list:
        return tuple(value)
    if kind is PathList:
        return tuple(_check(f"{where}[{i}]", v, Path, base) for i, v in enumerate(value))
    if kind is NumberTable:
        return {str(k): float(v) for k, v in value.items()}
    if kind is WitnessList:
        return tuple(_witness(f"{where}[{i}]", v, base) for i, v in enumerate(value))
    return value


_WITNESS_KEYS: dict[str, type] = {"url": str, "key": str, "ca": Path}


def _witness(where: str, raw: dict[str, Any], base: Path) -> WitnessConfig:
    """One witness entry, its key parsed and its URL's scheme checked now."""
    values = _table(where, raw, _WITNESS_KEYS, base)
    for required in ("url", "key"):
        if not values.get(required):
            raise ConfigError(f"{where}.{required} is required")
    try:
        CosignerVerifier.from_vkey(values["key"])
    except NoteError as exc:
        raise ConfigError(f"{where}.key: {exc}") from None
    url = urlsplit(values["url"])
    loopback = url.hostname in {"localhost", "127.0.0.1", "::1"}
    if url.scheme != "https" and not (url.scheme == "http" and loopback):
        raise ConfigError(f"{where}.url must be https:// (http:// only to a loopback address)")
    return WitnessConfig(**values)


def _table(where: str, raw: Any, keys: Mapping[str, type], base: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known: {', '.join(keys)})")
    return {k: _check(f"{where}.{k}", v, keys[k], base) for k, v in raw.items()}


def _parse_env_value(name: str, text: str, kind: type) -> Any:
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(text)
            return lowered in {"true", "1", "yes"}
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is list or kind is PathList:
            return [item.strip() for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"environment {name} must be {_TYPE_NAMES[kind]}") from None
    return text


def _env_overrides(environ: Mapping[str, str], base: Path) -> dict[str, dict[str, Any]]:
    """``CREDGATE_<SECTION>_<KEY>`` values, typed; longest section name wins the prefix."""
    found: dict[str, dict[str, Any]] = {}
    sections = sorted(_SECTIONS, key=len, reverse=True)
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            continue
        key = rest[len(section) + 1 :]
        kind = _SECTIONS[section].get(key)
        if kind is None:
            raise ConfigError(f"unknown key {section}.{key} (from environment {name})")
        value = _parse_env_value(name, text, kind)
        found.setdefault(section, {})[key] = _check(name, value, kind, base)
    return found


def _sources(raw: Any, base: Path) -> tuple[SourceConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("sources must be an array of tables ([[sources]])")
    sources: list[SourceConfig] = []
    for i, item in enumerate(raw):
        where = f"sources[{i}]"
        values = _table(where, item, _SOURCE_KEYS, base)
        for required in ("source_id", "kind", "endpoint"):
            if not values.get(required):
                raise ConfigError(f"{where}.{required} is required")
        if any(s.source_id == values["source_id"] for s in sources):
            raise ConfigError(f"{where}.source_id duplicates an earlier source")
        sources.append(SourceConfig(**values))
    _check_kinds(sources)
    return tuple(sources)


def _check_kinds(sources: list[SourceConfig]) -> None:
    """Every ``kind`` names an installed adapter (``credgate.adapters`` entry point). Only the
    names are read here; the configured kinds are imported when the gateway builds them."""
    if not sources:
        return
    kinds = available_kinds()
    for i, source in enumerate(sources):
        if source.kind not in kinds:
            raise ConfigError(
                f"sources[{i}].kind {source.kind!r} is not an installed adapter kind "
                f"(available: {', '.join(sorted(kinds))})"
            )


def _dev_identity(values: dict[str, Any] | None) -> Institution | None:
    if values is None:
        return None
    if not values.get("institution_id"):
        raise ConfigError("dev_identity.institution_id is required")
    try:
        role = role_from_name(values.get("role", ""))
    except ValueError as exc:
        raise ConfigError(f"dev_identity.role: {exc}") from None
    return Institution(values["institution_id"], role, values.get("display_name", ""))


def _validate_listen(listen: str) -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(f"gateway.listen must be host:port, got {listen!r}")


def _numbers(
    settings: GatewaySettings,
    breaker: BreakerConfig,
    audit: AuditConfig,
    keys: KeysConfig,
    outbox: OutboxConfig,
) -> None:
    if settings.event_loop not in EVENT_LOOPS:
        raise ConfigError(
            f"gateway.event_loop must be one of {', '.join(EVENT_LOOPS)}, "
            f"got {settings.event_loop!r}"
        )
    checks = {
        "gateway.batch_max": settings.batch_max > 0,
        "gateway.default_deadline_seconds": settings.default_deadline_seconds > 0,
        "gateway.shutdown_grace_seconds": settings.shutdown_grace_seconds >= 0,
        "gateway.drain_delay_seconds": settings.drain_delay_seconds >= 0,
        "gateway.workers": 1 <= settings.workers <= MAX_WORKERS,
        "gateway.index_view_entries": settings.index_view_entries >= 0,
        "gateway.index_view_max_age_seconds": settings.index_view_max_age_seconds >= 0,
        "breaker.failure_threshold": breaker.failure_threshold > 0,
        "breaker.reset_seconds": breaker.reset_seconds > 0,
        "audit.checkpoint_interval_seconds": audit.checkpoint_interval_seconds > 0,
        "audit.write_timeout_seconds": audit.write_timeout_seconds > 0,
        "keys.reload_seconds": 0 < keys.reload_seconds <= 3600,
        "outbox.poll_seconds": 0 < outbox.poll_seconds <= 3600,
        "outbox.claim_seconds": 0 < outbox.claim_seconds <= 3600,
    }
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"{key} is out of range")


def _workdays(values: dict[str, Any]) -> WorkdaysConfig:
    """The listed calendar files, each loaded and checked now (a bad one stops the start)."""
    files: tuple[Path, ...] = values.get("calendar_files", ())
    calendars: list[YearCalendar] = []
    for i, path in enumerate(files):
        try:
            calendar = load_calendar_file(path)
        except CalendarFileError as exc:
            raise ConfigError(f"workdays.calendar_files[{i}]: {exc}") from None
        earlier = next((c for c in calendars if c.year == calendar.year), None)
        if earlier is not None:
            raise ConfigError(
                f"workdays.calendar_files[{i}]: {path}: year {calendar.year} is already "
                f"loaded from {earlier.origin}"
            )
        calendars.append(calendar)
    return WorkdaysConfig(calendar_files=files, calendars=tuple(calendars))


def _telemetry(values: dict[str, Any]) -> TelemetryConfig:
    telemetry = TelemetryConfig(**values)
    if telemetry.exporter not in TELEMETRY_EXPORTERS:
        raise ConfigError(
            f"telemetry.exporter must be one of {', '.join(TELEMETRY_EXPORTERS)}, "
            f"got {telemetry.exporter!r}"
        )
    if telemetry.log_format not in LOG_FORMATS:
        raise ConfigError(
            f"telemetry.log_format must be one of {', '.join(LOG_FORMATS)}, "
            f"got {telemetry.log_format!r}"
        )
    if not telemetry.service_name:
        raise ConfigError("telemetry.service_name must not be empty")
    if not 0 <= telemetry.prometheus_port <= 65535:
        raise ConfigError("telemetry.prometheus_port is out of range")
    if telemetry.export_interval_seconds <= 0:
        raise ConfigError("telemetry.export_interval_seconds is out of range")
    return telemetry


def config_from_mapping(
    document: Mapping[str, Any],
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> GatewayConfig:
    """Build a config from a parsed TOML document plus environment overrides."""
    unknown = sorted(set(document) - set(_SECTIONS) - {"sources", "providers"})
    if unknown:
        raise ConfigError(f"unknown section {unknown[0]!r}")
    tables = {
        s: _table(s, document[s], keys, base_dir) for s, keys in _SECTIONS.items() if s in document
    }
    env = os.environ if environ is None else environ
    for section, values in _env_overrides(env, Path.cwd()).items():
        tables.setdefault(section, {}).update(values)

    settings = GatewaySettings(**tables.get("gateway", {}))
    _validate_listen(settings.listen)
    storage_raw = tables.get("storage", {})
    data_dir: Path = storage_raw.get("data_dir", base_dir / "data")
    storage = StorageConfig(
        url=storage_raw.get("url", f"sqlite:///{data_dir / 'credgate.db'}"),
        data_dir=data_dir,
        **{k: v for k, v in storage_raw.items() if k not in ("url", "data_dir")},
    )
    if storage.sqlite_proof_mmap_bytes < 0:
        raise ConfigError("storage.sqlite_proof_mmap_bytes must be 0 (off) or positive")
    tls_raw = tables.get("tls", {})
    pki = data_dir / "pki"
    tls = TlsConfig(
        ca=tls_raw.get("ca", pki / "ca.pem"),
        cert=tls_raw.get("cert", pki / "server.pem"),
        key=tls_raw.get("key", pki / "server.key"),
        revocation_list=tls_raw.get("revocation_list"),
    )
    keys_raw = tables.get("keys", {})
    keys = KeysConfig(
        keyring=keys_raw.get("keyring", data_dir / "keyring"),
        **{k: v for k, v in keys_raw.items() if k != "keyring"},
    )
    breaker = BreakerConfig(**tables.get("breaker", {}))
    audit = AuditConfig(**tables.get("audit", {}))
    outbox = OutboxConfig(**tables.get("outbox", {}))
    _numbers(settings, breaker, audit, keys, outbox)
    try:
        sync_table = tables.get("sync", {})
        sync = SyncSettings(**{k: v for k, v in sync_table.items() if k in SYNC_KEYS})
        consistency = parse_consistency(
            {k: v for k, v in sync_table.items() if k in CONSISTENCY_KEYS}
        )
        watch = WatchSettings(**tables.get("watch", {}))
        connections = ConnectionLimits(**tables.get("connections", {}))
        providers = parse_providers(document.get("providers", []))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return GatewayConfig(
        gateway=settings,
        tls=tls,
        storage=storage,
        keys=keys,
        breaker=breaker,
        sources=_sources(document.get("sources", []), base_dir),
        consent=ConsentConfig(**tables.get("consent", {})),
        dev_identity=_dev_identity(tables.get("dev_identity")),
        sync=sync,
        consistency=consistency,
        watch=watch,
        connections=connections,
        outbox=outbox,
        workdays=_workdays(tables.get("workdays", {})),
        providers=providers,
        telemetry=_telemetry(tables.get("telemetry", {})),
        audit=audit,
        path=path,
    )


def load_config(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Load ``path`` (or only defaults + environment when None); raise ConfigError if invalid."""
    if path is None:
        return config_from_mapping({}, base_dir=Path.cwd(), environ=environ)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return config_from_mapping(document, base_dir=path.resolve().parent, environ=environ, path=path)
