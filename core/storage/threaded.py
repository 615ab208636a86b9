"""Whole transactions on sync SQLAlchemy Core connections, one thread hop per transaction.

Why this exists next to the async engine: on the hot paths (an INDEX answer's read, the audit
log's group commit, a live answer's fresh facts, provider sync ingest) the async stack costs
more than the database. Measured on one core (docs/benchmarks.md, "Where the time went"): a
one-row SELECT costs about 0.4–1.2 ms of CPU through ``AsyncSession``/``AsyncConnection``
over aiosqlite — every statement, BEGIN, fetch and COMMIT is a greenlet switch plus a hop to
the driver's thread and back — against 35 µs for the same SELECT in its own transaction on a
sync Core connection. So a hot path writes its transaction as a plain function of a sync
``Connection`` and hands the whole function to a worker thread: SQLAlchemy still builds and
types every statement (no hand-written dialect SQL), and the event loop pays one hop.

Writers and readers have separate executors. Writes go to one thread on SQLite (the database
has one writer anyway; queueing in a thread is fair and cheap, where queueing on SQLite's busy
handler sleeps and retries) and to a few on PostgreSQL. On SQLite, reads run inline on the
event loop: in WAL mode a reader never waits for a lock and a point lookup in the page cache
takes tens of microseconds, less than the hop. Everything else keeps using the async engine
(``Database.session``/``write``).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable
from sqlalchemy.engine import URL

from credgate.core.storage.plain import plain_statement

T = TypeVar("T")

POSTGRES_WRITER_THREADS = 4
POSTGRES_READER_THREADS = 4


class ThreadedTransactions:
    """Runs ``fn(connection)`` in a transaction on a sync engine, off the event loop."""

    def __init__(
        self,
        url: str | URL,
        backend: str,
        create_sync_engine: Callable[..., Engine],
        *,
        mapped_bytes: int = 0,
    ) -> None:
        # ``create_sync_engine`` is handed in by ``Database`` (``core.storage.database``), which
        # owns the engine settings: importing it here would make the two modules a loop.
        sqlite = backend == "sqlite"
        writers = 1 if sqlite else POSTGRES_WRITER_THREADS
        self._write_engine: Engine = create_sync_engine(
            url, writer=True, pool_size=writers, pool_pre_ping=not sqlite
        )
        self._read_engine: Engine = create_sync_engine(
            url, writer=False, pool_size=POSTGRES_READER_THREADS, pool_pre_ping=not sqlite
        )
        self._mapped_engine: Engine | None = None
        """SQLite only, with ``mapped_bytes``: ``fetch_mapped``'s engine, whose connections map
        the file (``PRAGMA mmap_size``). Its own engine, so that no other read maps pages."""
        if sqlite and mapped_bytes:
            self._mapped_engine = create_sync_engine(
                url, writer=False, sqlite_mmap_bytes=mapped_bytes, pool_size=1
            )
        self._threads = {True: writers, False: 0 if sqlite else POSTGRES_READER_THREADS}
        """Worker threads for writes (True) and reads (False); no read threads on SQLite,
        whose reads run inline on the event loop."""
        self._executors: dict[bool, ThreadPoolExecutor] = {}
        self._held: dict[tuple[int, int, bool], Connection] = {}
        """Each thread's connection (a worker's, or the event loop's for SQLite's inline
        reads), by thread, engine and autocommit, kept between uses: a pool checkout and return
        (with its reset) per transaction cost more CPU than a batch of ingest's rows, or than
        the read itself. Closed by ``dispose``."""
        self._sqlite = sqlite

    @property
    def engines(self) -> tuple[Engine, ...]:
        """Every engine it owns: write, read and (SQLite) the mapped proof reader
        (``Database`` watches their writes, so none can write unseen)."""
        mapped = () if self._mapped_engine is None else (self._mapped_engine,)
        return self._write_engine, self._read_engine, *mapped

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one write transaction (BEGIN IMMEDIATE on SQLite), committed when it
        returns, rolled back if it raises (the exception is re-raised here)."""
        return await self._off_loop(True, self._in_transaction, self._write_engine, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` in one read transaction: inline on SQLite (see the module docstring), on a
        reader thread on PostgreSQL."""
        if not self._threads[False]:
            return self._in_transaction(self._read_engine, fn)
        return await self._off_loop(False, self._in_transaction, self._read_engine, fn)

    async def fetch_all(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Any]:
        """The rows of one SELECT, run on its own (autocommit: a single statement is its own
        consistent snapshot, so no BEGIN/COMMIT is paid for). The hot single-statement reads
        use this; a read of several statements that must agree uses ``read``. The rows are
        ``sqlalchemy.Row`` (typed ``Any`` so callers can unpack them)."""
        if not self._threads[False]:
            return self._autocommit(statement, parameters)
        return await self._off_loop(False, self._autocommit, statement, parameters)

    async def fetch_mapped(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[Any]:
        """``fetch_all`` for reads that land on pages no cache holds: an audit proof's few
        dozen rows scattered over a multi-GB log. On SQLite (when ``mapped_bytes`` is set) it
        runs, inline, on a connection of its own that reads the file through a memory map:
        a page then costs a memory access instead of a ``pread`` into the connection's 2 MB
        page cache (docs/benchmarks.md, "Proofs: ``mmap_size``, the page cache, and
        PostgreSQL's plan"). Only this connection maps the file, so no other read maps
        pages, and it is opened by the first such read: a gateway that serves no proof maps
        nothing. The pages it touches count in the process's resident memory (clean,
        file-backed pages the kernel may drop: about 400 MB after 4,000 random proofs at 10^7
        entries). It is an autocommit connection in WAL mode, like ``fetch_all``'s: each
        statement sees the last commit and never blocks the writer. Elsewhere ``fetch_all``."""
        if self._mapped_engine is None:
            return await self.fetch_all(statement, parameters)
        return self._on_held(
            self._mapped_engine, True, lambda c: c.execute(statement, parameters).all()
        )

    async def fetch_rows(
        self, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[tuple[Any, ...]]:
        """``fetch_all`` for the hottest reads (an INDEX answer's facts and open objections):
        rows as plain tuples, and on SQLite the statement compiled once and run on the
        driver's own connection, inline (``core.storage.plain``: SQLAlchemy's per-execution
        work cost about five times the SQLite statement itself, docs/benchmarks.md, "INDEX and
        live, second pass"). ``statement`` must be a module-level constant whose parameters
        are all in ``parameters``. PostgreSQL takes ``fetch_all``'s path."""
        plain = plain_statement(statement, self._read_engine.dialect, parameters.keys())
        if plain is None:
            return await self.fetch_all(statement, parameters)
        return self._on_held(
            self._read_engine, True, lambda c: plain.run(c.connection.driver_connection, parameters)
        )

    async def _off_loop(self, write: bool, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the write or read threads (started on first use)."""
        executor = self._executors.get(write)
        if executor is None:
            executor = self._executors[write] = ThreadPoolExecutor(
                self._threads[write],
                thread_name_prefix="credgate-db-write" if write else "credgate-db-read",
            )
        return await asyncio.get_running_loop().run_in_executor(
            executor, functools.partial(fn, *args)
        )

    def _in_transaction(self, engine: Engine, fn: Callable[[Connection], T]) -> T:
        """``fn`` in a transaction on this thread's own held connection."""

        def run(connection: Connection) -> T:
            with connection.begin():
                return fn(connection)

        return self._on_held(engine, False, run)

    def _autocommit(
        self, statement: Executable, parameters: Mapping[str, Any] | None
    ) -> Sequence[Any]:
        """One statement on this thread's own autocommit connection."""
        return self._on_held(
            self._read_engine, True, lambda c: c.execute(statement, parameters).all()
        )

    def _on_held(self, engine: Engine, autocommit: bool, fn: Callable[[Connection], T]) -> T:
        key = (threading.get_ident(), id(engine), autocommit)
        connection = self._held.get(key)
        if connection is None or connection.closed or connection.invalidated:
            connection = engine.connect()
            if autocommit:
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            self._held[key] = connection
        try:
            return fn(connection)
        except BaseException:
            # The connection may be broken (a database restart): the next call gets a fresh
            # one rather than failing again.
            del self._held[key]
            connection.close()
            raise

    def dispose(self) -> None:
        """Wait for queued transactions, then close every connection and thread (both come
        back on next use, as the async engine's pool does)."""
        for executor in self._executors.values():
            executor.shutdown(wait=True)
        self._executors.clear()
        held = list(self._held.values())
        self._held.clear()
        for connection in held:
            connection.close()
        self._write_engine.dispose()
        self._read_engine.dispose()
        if self._mapped_engine is not None:
            self._mapped_engine.dispose()
