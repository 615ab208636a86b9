"""One place that turns a configured database URL into engines with the right settings.

Operators write plain URLs (``sqlite:///var/credgate.db``, ``postgresql://user@host/db``); the
drivers are an implementation detail chosen here: aiosqlite and psycopg 3 for the gateway's
async code, pysqlite and psycopg 3 (sync) for alembic migrations.

SQLite is the embedded single-node default, and needs care to behave under concurrency:

* **WAL** so readers never block the writer and vice versa;
* **foreign keys on** (SQLite leaves them off per connection);
* **synchronous=FULL**, so a commit is durable when it returns;
* **a busy timeout**, so a writer waits for the lock instead of failing at once;
* **SQLAlchemy emits BEGIN itself** (the sqlite3 driver's legacy mode does not begin a
  transaction for SELECTs, which breaks read-then-write atomicity), and write transactions
  start with ``BEGIN IMMEDIATE``: they take the write lock up front, so two read-then-write
  transactions queue on the busy timeout instead of one failing with SQLITE_BUSY on upgrade.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from credgate.core.storage.threaded import ThreadedTransactions
from credgate.core.storage.write_watch import WriteWatch

BUSY_TIMEOUT_MS = 5000
SQLITE_MAX_MMAP_BYTES = 2_147_418_112
"""SQLite's compile-time ceiling on ``mmap_size`` (``SQLITE_MAX_MMAP_SIZE``, 2 GiB - 64 KiB):
a larger ``PRAGMA mmap_size`` is silently lowered to it."""
_SQLITE_BEGIN_OPTION = "credgate_sqlite_begin"
"""Execution option naming the BEGIN variant SQLite transactions start with."""

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}
_ACCEPTED = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg": "postgresql",
}


class DatabaseURLError(ValueError):
    """The configured URL names a backend or driver credgate does not support."""


def backend_of(url: str | URL) -> str:
    """``"sqlite"`` or ``"postgresql"`` for a supported URL, else ``DatabaseURLError``."""
    parsed = make_url(url)
    backend = _ACCEPTED.get(parsed.drivername)
    if backend is None:
        raise DatabaseURLError(
            f"unsupported database driver {parsed.drivername!r}; "
            "use sqlite:///path or postgresql://user@host/db"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        # Each pooled connection would see its own empty database, and migrations (run on a
        # separate sync engine) could never reach it.
        raise DatabaseURLError("SQLite needs a file path; in-memory databases are not supported")
    return backend


def async_url(url: str | URL) -> URL:
    """The URL with the async driver the gateway uses."""
    return make_url(url).set(drivername=_ASYNC_DRIVERS[backend_of(url)])


def sync_url(url: str | URL) -> URL:
    """The URL with the sync driver alembic uses."""
    return make_url(url).set(drivername=_SYNC_DRIVERS[backend_of(url)])


def create_sync_engine(
    url: str | URL, *, writer: bool = True, sqlite_mmap_bytes: int = 0, **engine_kwargs: Any
) -> Engine:
    """A sync engine with the gateway's SQLite settings, for migrations, maintenance tools and
    the hot paths' threaded transactions (``core.storage.threaded``).

    With ``writer`` its SQLite transactions begin IMMEDIATE, so two processes migrating at once
    queue on the lock instead of interleaving DDL. ``sqlite_mmap_bytes``: SQLite connections
    read up to that many bytes of the file through a memory map (``PRAGMA mmap_size``; 0, the
    default, reads every page with ``pread`` into the connection's own page cache); ignored on
    PostgreSQL. ``engine_kwargs`` go to ``create_engine``.
    """
    if backend_of(url) != "sqlite":
        return create_engine(sync_url(url), **engine_kwargs)
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"
    engine = create_engine(
        sync_url(url), execution_options={_SQLITE_BEGIN_OPTION: begin}, **engine_kwargs
    )
    _install_sqlite_hooks(engine, mmap_bytes=sqlite_mmap_bytes)
    return engine


class Database:
    """The gateway's async engine and its session factories.

    ``session()`` is for reads; ``write()`` opens a transaction meant to write (on SQLite it
    takes the write lock at BEGIN). Both commit or roll back as a unit.
    """

    def __init__(
        self, engine: AsyncEngine, backend: str, *, proof_mmap_bytes: int = SQLITE_MAX_MMAP_BYTES
    ) -> None:
        self.engine = engine
        self.backend = backend
        self.threaded = ThreadedTransactions(
            engine.url, backend, create_sync_engine, mapped_bytes=proof_mmap_bytes
        )
        """Sync-Core transactions for the hot paths (``core.storage.threaded``); on SQLite its
        ``fetch_mapped`` reads through a connection of its own that maps up to
        ``proof_mmap_bytes`` of the file (0: none; ``ThreadedTransactions.fetch_mapped``)."""
        self.writes = WriteWatch()
        """Tells observers which subjects each committed write touched, whoever wrote
        (``core.storage.write_watch``): listening on every engine this object owns."""
        for sync_engine in (engine.sync_engine, *self.threaded.engines):
            self.writes.install(sync_engine)
        self._reads = async_sessionmaker(engine, expire_on_commit=False)
        writer_bind = engine.execution_options(**{_SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        self._writes = async_sessionmaker(writer_bind, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database(url={self.engine.url!r})"  # SQLAlchemy's URL repr hides the password

    @classmethod
    def from_url(
        cls, url: str | URL, *, proof_mmap_bytes: int = SQLITE_MAX_MMAP_BYTES, **engine_kwargs: Any
    ) -> Database:
        """Build from a plain URL; ``proof_mmap_bytes`` as in ``__init__``; ``engine_kwargs`` go
        to ``create_async_engine`` (pool sizes)."""
        backend = backend_of(url)
        engine_kwargs.setdefault("pool_pre_ping", backend == "postgresql")
        engine = create_async_engine(async_url(url), **engine_kwargs)
        if backend == "sqlite":
            _install_sqlite_hooks(engine.sync_engine)
        return cls(engine, backend, proof_mmap_bytes=proof_mmap_bytes)

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        """The read session factory, for code that manages sessions itself."""
        return self._reads

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success (use for reads)."""
        async with self._reads() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed on success, rolled back on error."""
        async with self._writes() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection (at shutdown, and in tests before reading files)."""
        await asyncio.to_thread(self.threaded.dispose)
        await self.engine.dispose()


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL once (it persists), retrying while another connection holds it.

    Changing the journal mode needs the file to itself, and SQLite can answer "database is
    locked" at once rather than through the busy handler, so replicas or workers opening a new
    database together would fail here; a connection that finds WAL already on changes nothing.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except Exception:  # sqlite3's OperationalError, or aiosqlite's adaptation of it
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _install_sqlite_hooks(engine: Engine, *, mmap_bytes: int = 0) -> None:
    """Connection pragmas and SQLAlchemy-controlled BEGIN, per the module docstring
    (``mmap_bytes``: ``create_sync_engine``)."""
    if mmap_bytes < 0:
        raise ValueError("mmap_bytes must be 0 (off) or positive")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 driver: we emit it in _on_begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            _use_wal(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS:d}")
            # FULL: a commit is fsynced before it returns, so an acknowledged update or a
            # released answer's audit entry survives power loss (NORMAL in WAL mode may roll
            # the newest commits back). Group commit keeps the fsyncs few.
            cursor.execute("PRAGMA synchronous=FULL")
            if mmap_bytes:
                cursor.execute(f"PRAGMA mmap_size={mmap_bytes:d}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # each statement its own transaction (``ThreadedTransactions.fetch_all``)
        # On the driver: through ``exec_driver_sql`` the BEGIN alone cost ~0.1 ms, a third of
        # an audit group commit's own work (docs/benchmarks.md, "Fifth pass").
        cursor: Any = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(options.get(_SQLITE_BEGIN_OPTION, "BEGIN"))
        finally:
            cursor.close()
