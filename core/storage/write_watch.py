"""Committed writes per table and subject, as the engine itself sees them.

An in-memory copy of rows (the INDEX answers' per-subject view, ``gateway.engine.subject_view``)
is correct only if every write that changes those rows reaches it. Trusting each writer to
tell the copy would fail the first time someone adds a writer and forgets. So the engines
report it: listeners on every engine of a ``Database`` (the async engine that sessions and ORM
flushes use, and both engines of ``Database.threaded``) see every INSERT, UPDATE and DELETE
executed through SQLAlchemy — compiled statements, ORM flushes, ``exec_driver_sql`` text — and
note, per connection, which table it wrote and which subjects: the parameters' values that have
the shape of a subject token (``core.tokens``). A write whose parameters name no subject (an
UPDATE by another key, a DELETE by age) counts as touching every subject.

Observers are told **after the commit** (the dialect's ``do_commit`` is wrapped: SQLAlchemy has
no after-commit event on Core connections), on the thread that committed, before the writer's
caller gets control back. A reader that started before the commit became visible is therefore
always told after it started; that is what lets a cache refuse to install what such a reader
read (``gateway.engine.subject_view``: a stamp taken before the read). A rolled-back
transaction tells nobody; a statement in autocommit mode is its own commit.

What it does not see: a write that bypasses SQLAlchemy (SQL on the DBAPI driver connection)
without announcing itself. credgate's one driver-level writer, ``core.storage.plain``, fires
the engine's ``before_cursor_execute`` with its SQL and values first, as SQLAlchemy would; its
other driver-level SQL (``fetch_rows``, ``audit verify``'s reader) is SELECT.
tests/test_index_view.py checks that every writer of the watched tables is seen, and that no
new way to reach the driver appears unchecked.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, TextClause, event

from credgate.core.tokens import is_subject_token

Touched = frozenset[str] | None
"""The subjects a committed write touched; None: unknown, so every subject."""
Observer = Callable[[Touched], None]

_PENDING = "credgate.write_watch.pending"
"""``Connection.info`` key: table name → tokens touched in the open transaction (None: all)."""
_DML = re.compile(
    r"^\s*(?:WITH\b.*?\)\s*)?(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)",
    re.IGNORECASE | re.DOTALL,
)


class WriteWatch:
    """Observers of committed writes to given tables (one per ``Database``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observers: dict[int, tuple[frozenset[str], Observer]] = {}
        self._next = 0
        self._tables: frozenset[str] = frozenset()
        """Every table some observer watches (what the statement listener looks for)."""
        self._sql_tables: dict[str, str | None] = {}

    def observe(self, tables: Iterable[str], observer: Observer) -> Callable[[], None]:
        """Call ``observer`` after every commit that wrote one of ``tables``, with the subjects
        it touched there; returns the function that stops it."""
        watched = frozenset(tables)
        with self._lock:
            key = self._next
            self._next += 1
            self._observers[key] = (watched, observer)
            self._tables = self._tables | watched

        def stop() -> None:
            with self._lock:
                self._observers.pop(key, None)
                self._tables = frozenset().union(*(t for t, _ in self._observers.values()))

        return stop

    def install(self, engine: Engine) -> None:
        """Listen on ``engine`` (its statements, commits and rollbacks)."""
        event.listen(engine, "before_cursor_execute", self._on_statement)
        event.listen(engine, "rollback", self._on_rollback)
        dialect = engine.dialect
        if getattr(dialect, "_credgate_write_watch", None) is self:
            return
        commit = dialect.do_commit

        def do_commit(dbapi_connection: Any) -> None:
            commit(dbapi_connection)
            self._committed(dbapi_connection.info)

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect._credgate_write_watch = self  # type: ignore[attr-defined]

    # -- listeners -------------------------------------------------------------------------------

    def _on_statement(
        self,
        connection: Any,
        _cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        tables = self._tables
        if not tables:
            return
        table = self._table_of(statement, context)
        if table is None or table not in tables:
            return
        found: set[str] = set()
        complete = _tokens_in(parameters, found)
        pending: dict[str, set[str] | None] = connection.info.setdefault(_PENDING, {})
        held = pending.setdefault(table, set())
        if held is not None:  # None: every subject of the table already
            if complete and found:
                held.update(found)
            else:
                pending[table] = None
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            self._committed(connection.info)  # the statement was its own transaction

    def _on_rollback(self, connection: Any) -> None:
        connection.info.pop(_PENDING, None)

    def _table_of(self, statement: str, context: Any) -> str | None:
        """The table a statement writes (None: not a write)."""
        compiled = getattr(context, "compiled", None)
        if compiled is not None:
            if context.isinsert or context.isupdate or context.isdelete:
                target = getattr(compiled.statement, "table", None)
                name = getattr(target, "name", None)
                if isinstance(name, str):
                    return name
            elif not isinstance(compiled.statement, TextClause):
                return None  # a SELECT (or DDL) built with SQLAlchemy: not a write
        # A text() statement, driver SQL, or a DML statement without a plain table: its text.
        known = self._sql_tables.get(statement, "")
        if known != "":
            return known
        match = _DML.match(statement)
        table = match.group(1).lower() if match else None
        if len(self._sql_tables) > 4096:
            self._sql_tables.clear()  # SQLite's expanded IN lists make many texts
        self._sql_tables[statement] = table
        return table

    def _committed(self, info: dict[str, Any]) -> None:
        pending: dict[str, set[str] | None] | None = info.pop(_PENDING, None)
        if not pending:
            return
        with self._lock:
            observers = list(self._observers.values())
        for tables, observer in observers:
            touched: set[str] | None = set()
            for table in tables & pending.keys():
                tokens = pending[table]
                if tokens is None or touched is None:
                    touched = None
                else:
                    touched |= tokens
            if touched is None:
                observer(None)
            elif touched:
                observer(frozenset(touched))


def _tokens_in(parameters: Any, found: set[str], depth: int = 0) -> bool:
    """Add the subject tokens among ``parameters`` (a dict, a sequence of them, arrays) to
    ``found``; False when the structure is too deep to be sure nothing was missed."""
    if isinstance(parameters, str):
        if parameters.startswith("st_") and is_subject_token(parameters):
            found.add(parameters)
        return True
    if isinstance(parameters, (bytes, bytearray, memoryview, int, float)) or parameters is None:
        return True
    if depth > 3:
        return False
    values = parameters.values() if isinstance(parameters, dict) else parameters
    try:
        return all(_tokens_in(value, found, depth + 1) for value in values)
    except TypeError:  # not iterable: a date, a decimal
        return True
