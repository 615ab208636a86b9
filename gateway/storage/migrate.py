"""Schema migrations: bring a database to the schema this code expects.

Alembic is configured here in code, with ``script_location`` pointing at the ``migrations``
directory inside the installed package, so an installed gateway (wheel, container) can migrate
without an alembic.ini or a source checkout.

These functions are synchronous (alembic is). Call them before the event loop starts, from the
``credgate db upgrade`` CLI, or from async code via ``asyncio.to_thread``.

Several gateway replicas may start at once against one PostgreSQL: ``upgrade_to_head`` takes a
transaction-scoped advisory lock first, so exactly one of them migrates and the others find the
schema already at head. On SQLite the migration transaction begins IMMEDIATE, to the same end.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL

from credgate.core.storage.database import create_sync_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ADVISORY_LOCK_KEY = 0x63726564676174  # "credgat": any constant unique to credgate migrations


def alembic_config() -> Config:
    """An alembic ``Config`` for the packaged migrations (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    """The newest revision this code ships."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


NEWER_SCHEMA = (
    "this database (schema revision {revision}) is newer than this release of credgate: "
    "upgrade credgate, or restore a backup made by this release"
)


class NewerSchemaError(ValueError):
    """The database was migrated by a newer credgate: never run, nor "upgrade", against it.

    A ValueError, so that every command exits 2 (fix the set-up; systemd does not restart),
    like any other configuration problem.
    """


def is_known_revision(revision: str | None) -> bool:
    """Whether this code ships ``revision`` (None: an empty, never migrated database)."""
    if revision is None:
        return True
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises for a revision it cannot resolve
        return False


def check_not_newer(revision: str | None) -> None:
    """Raise ``NewerSchemaError`` for a revision this code does not ship."""
    if not is_known_revision(revision):
        raise NewerSchemaError(NEWER_SCHEMA.format(revision=revision))


def upgrade_to_head(url: str | URL) -> None:
    """Apply every pending migration, in one transaction (PostgreSQL DDL is transactional);
    ``NewerSchemaError`` for a database a newer release migrated."""
    engine = create_sync_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
                )
            check_not_newer(MigrationContext.configure(connection).get_current_revision())
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def current_revision(url: str | URL) -> str | None:
    """The revision the database is at; ``None`` for an empty (never migrated) database."""
    engine = create_sync_engine(url, writer=False)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def is_at_head(url: str | URL) -> bool:
    """Whether the database schema matches this code (a readiness check at start-up)."""
    return current_revision(url) == head_revision()
