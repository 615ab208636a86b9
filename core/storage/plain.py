"""Hot statements compiled once and run on the SQLite driver's own connection.

SQLAlchemy builds and types every statement; on the hot paths the per-execution work around
the statement — the compiled-cache lookup, the execution context, parameter and result
set-up, ``Row`` objects — costs several times the SQLite statement itself (a one-row SELECT of
the audit head: 158 µs through ``Connection.execute``, 25 µs on the driver; docs/benchmarks.md,
"Fifth pass"). A ``PlainStatement`` is what that context would derive on every
execution, derived once: the SQL, per positional parameter the caller's name and its type's
bind processor (or the statement's own constant, already processed), per result column its
result processor. The SQL and the stored values are SQLAlchemy's own, so a row written here
is byte for byte the row ``Connection.execute`` would write.

Statements must be module-level constants: they are cached by identity (and held, so an id
cannot be reused while cached), with the names of the parameters they are called with.
PostgreSQL (a ``pyformat`` driver, cheaper per statement than the work around it) and any
statement that needs SQLAlchemy at each execution (a caller's list expanded into an IN) take
``Connection.execute``.

A write on the driver is announced to the engine's statement listeners as SQLAlchemy would
announce it (``before_cursor_execute``), so ``core.storage.write_watch`` sees it like any
other; the commit stays SQLAlchemy's.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from credgate.core.storage.models import UTCDateTime

Parameters = Mapping[str, Any]


@dataclass(frozen=True)
class PlainStatement:
    """One statement compiled for the SQLite driver, for one set of parameter names."""

    sql: str
    slots: tuple[tuple[str | None, Any], ...]
    """Per ``?``: (the caller's name, its processor or None), or (None, the constant)."""
    results: tuple[Callable[[Any], Any] | None, ...]
    """Per result column, its processor (None: the driver's value as it is); empty for a
    statement that returns no rows."""

    def values(self, parameters: Parameters) -> list[Any]:
        """The positional values for ``parameters``, processed as their types say."""
        return [
            held if name is None else parameters[name] if held is None else held(parameters[name])
            for name, held in self.slots
        ]

    def run(self, driver: Any, parameters: Parameters) -> list[tuple[Any, ...]]:
        """Execute once on the DBAPI connection ``driver``; the rows, processed."""
        rows: list[tuple[Any, ...]] = driver.execute(self.sql, self.values(parameters)).fetchall()
        processors = self.results
        if not any(processors):
            return rows
        return [
            tuple(
                value if process is None or value is None else process(value)
                for value, process in zip(row, processors, strict=True)
            )
            for row in rows
        ]


def compile_plain(
    statement: Executable, dialect: Dialect, names: Collection[str]
) -> PlainStatement | None:
    """``statement`` compiled for the driver, called with parameters named ``names``; None
    where it needs SQLAlchemy at each execution (a caller's list expanded into an IN, a
    SELECT without result columns, a dialect that does not take positional parameters)."""
    element = cast(ClauseElement, statement)
    dml = bool(getattr(element, "is_dml", False))
    # An INSERT or UPDATE without values of its own sets the columns it is called with.
    compiled = element.compile(dialect=dialect, column_keys=list(names) if dml else None)
    if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
        return None
    if compiled.insert_prefetch or compiled.update_prefetch:
        return None  # Python-side column defaults: computed by SQLAlchemy at each execution
    if (not dml and not compiled._result_columns) or any(
        bind.expanding for bind in compiled.binds.values() if bind.key in names
    ):
        return None
    given = dict.fromkeys(names)
    values: dict[str, Any] = dict(compiled.construct_params(given))
    sql, positions = compiled.string, list(compiled.positiontup)
    processors: dict[str, Any] = dict(compiled._bind_processors)
    if compiled.post_compile_params or compiled.literal_execute_params:
        # The statement's own lists (``state IN (...)`` of constants): expanded once, here.
        expanded = compiled._process_parameters_for_postcompile(values)
        sql, values = expanded.statement, dict(expanded.parameters)
        positions = list(expanded.positiontup or ())
        processors.update(expanded.processors)
    slots: list[tuple[str | None, Any]] = []
    for name in positions:
        process = processors.get(name)
        if name in given:
            slots.append((name, process))
        else:
            constant = values[name]
            slots.append((None, constant if process is None else process(constant)))
    results = tuple(
        _sqlite_utc
        if dialect.name == "sqlite" and isinstance(column.type, UTCDateTime)
        else column.type._cached_result_processor(dialect, None)
        for column in compiled._result_columns
    )
    return PlainStatement(sql, tuple(slots), results)


def _sqlite_utc(value: str) -> dt.datetime:
    """``UTCDateTime``'s result on SQLite (its stored ISO text, UTC) by ``fromisoformat``,
    several times faster than the dialect's regular expression plus the decorator: an INDEX
    answer reads three timestamps per source."""
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


_compiled: dict[tuple[int, frozenset[str]], tuple[Executable, PlainStatement | None]] = {}
_compiled_lock = threading.Lock()


def plain_statement(
    statement: Executable, dialect: Dialect, names: Collection[str]
) -> PlainStatement | None:
    """``compile_plain``, once per statement and set of names; SQLite's own sync driver only
    (through the async engine the driver connection is aiosqlite's adapter)."""
    if dialect.name != "sqlite" or dialect.driver != "pysqlite":
        return None
    key = (id(statement), frozenset(names))
    cached = _compiled.get(key)
    if cached is None or cached[0] is not statement:
        plain = compile_plain(statement, dialect, names)
        with _compiled_lock:
            cached = _compiled[key] = (statement, plain)
    return cached[1]


def fetch(
    connection: Connection, statement: Executable, parameters: Parameters
) -> Sequence[tuple[Any, ...]]:
    """The rows of a SELECT (or a write with RETURNING) in ``connection``'s transaction, as
    tuples."""
    plain = plain_statement(statement, connection.dialect, parameters.keys())
    if plain is None:
        return [tuple(row) for row in connection.execute(statement, parameters)]
    return plain.run(connection.connection.driver_connection, parameters)


def execute(connection: Connection, statement: Executable, parameters: Parameters) -> int:
    """One write in ``connection``'s transaction; the rows it changed."""
    return execute_many(connection, statement, [parameters])


def execute_many(connection: Connection, statement: Executable, rows: Sequence[Parameters]) -> int:
    """One write per item of ``rows`` (each with the same names) in ``connection``'s
    transaction; the rows they changed, or -1 where the driver does not count them (psycopg's
    executemany). On the driver the write is first announced to the engine's statement
    listeners, with the processed values, as SQLAlchemy announces its own."""
    if not rows:
        return 0
    plain = plain_statement(statement, connection.dialect, rows[0].keys())
    if plain is None:
        result: Any = connection.execute(statement, rows[0] if len(rows) == 1 else list(rows))
        return int(result.rowcount)
    values = [plain.values(row) for row in rows]
    many = len(values) > 1
    announced: Any = values if many else values[0]
    connection.dispatch.before_cursor_execute(connection, None, plain.sql, announced, None, many)
    driver: Any = connection.connection.driver_connection
    cursor = driver.executemany(plain.sql, values) if many else driver.execute(plain.sql, values[0])
    return int(cursor.rowcount)
