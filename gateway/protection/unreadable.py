"""The one mark of "a stored record could not be opened", whatever the store.

Every reader of encrypted rows (the fact index, the workflows' sealed details and steps, the
providers' signed originals) decrypts through ``FieldCipher``; what it raises when a record
cannot be read — a key the keyring lacks, a ciphertext that does not authenticate, an envelope
or message that does not parse — is a ``RecordUnreadable``. Readers let it propagate (a store
may wrap it in its own ``RecordUnreadable`` subclass) and the gRPC layer answers it with
ErrorInfo reason ``RECORD_UNREADABLE`` (``gateway.interceptors``): an unreadable record is
never turned into "nothing found", which a signed answer would then state as fact (issue #18).
"""

from __future__ import annotations


class RecordUnreadable(Exception):
    """A stored record could not be opened. Messages name rows and key ids, never people.

    ``transient`` is True when it may pass without anyone touching the record (a key not yet
    distributed to this replica): callers are told UNAVAILABLE and may retry; otherwise
    (tampered, moved or corrupt) INTERNAL.
    """

    transient = False


def unreadable_in(exc: BaseException) -> RecordUnreadable | None:
    """The ``RecordUnreadable`` that ``exc`` is or was raised from (transient ones first)."""
    found: RecordUnreadable | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RecordUnreadable):
            if current.transient:
                return current
            found = found or current
        current = current.__cause__ or current.__context__
    return found
