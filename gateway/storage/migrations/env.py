"""Alembic environment: runs migrations on the connection ``migrate.py`` hands over.

``gateway.storage.migrate`` opens the connection itself (with credgate's SQLite settings and,
on PostgreSQL, an advisory lock so replicas starting together do not migrate twice) and passes
it in ``config.attributes["connection"]``. Offline mode (``--sql``) renders SQL for a DBA from
the ``sqlalchemy.url`` main option instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

# Importing these registers their tables on Base.metadata.
import credgate.audit.store_models
import credgate.consent.event_models
import credgate.gateway.fact_index.models
import credgate.gateway.reconciliation.models
import credgate.gateway.sync.models  # noqa: F401
from credgate.core.storage.models import Base
from credgate.gateway.workflows import models as workflow_models  # noqa: F401  (workflow tables)

target_metadata = Base.metadata


def _run_offline() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=bool(url and url.startswith("sqlite")),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through gateway.storage.migrate, not the alembic CLI")
    _run_online(connection)
