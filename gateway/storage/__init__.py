"""Persistence: the database, its schema and migrations, and re-encryption.

``Database`` and the shared tables are ``core.storage``'s (every layer uses them); this
package adds the migrations and re-encryption on top. The fact index (``source_facts``) is
its own package, ``gateway.fact_index``.

Start-up order::

    upgrade_to_head(url)                      # sync; before the event loop or via to_thread
    keyring = Keyring.load(path)
    database = Database.from_url(url)
    facts = FactIndex(database, FieldCipher(keyring))   # gateway.fact_index
    ...
    await database.dispose()                  # at shutdown
"""

from credgate.core.storage.database import Database, DatabaseURLError
from credgate.core.storage.issued_reports import report_digest
from credgate.gateway.storage.migrate import current_revision, head_revision, upgrade_to_head

__all__ = [
    "Database",
    "DatabaseURLError",
    "current_revision",
    "head_revision",
    "report_digest",
    "upgrade_to_head",
]
