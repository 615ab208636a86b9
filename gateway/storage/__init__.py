"""Persistence: the database, its schema and migrations, and the encrypted fact index.

``Database`` and the shared tables are ``core.storage``'s (every layer uses them); this
package adds the migrations, the fact index and re-encryption on top.

Start-up order::

    upgrade_to_head(url)                      # sync; before the event loop or via to_thread
    keyring = Keyring.load(path)
    database = Database.from_url(url)
    facts = FactIndex(database, FieldCipher(keyring))
    ...
    await database.dispose()                  # at shutdown
"""

from credgate.core.storage.database import Database, DatabaseURLError
from credgate.core.storage.issued_reports import report_digest
from credgate.gateway.storage.fact_index import (
    FactIndex,
    FactIndexError,
    UnreadableRecordError,
)
from credgate.gateway.storage.migrate import current_revision, head_revision, upgrade_to_head

__all__ = [
    "Database",
    "DatabaseURLError",
    "FactIndex",
    "FactIndexError",
    "UnreadableRecordError",
    "current_revision",
    "head_revision",
    "report_digest",
    "upgrade_to_head",
]
