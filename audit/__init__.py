"""The tamper-evident audit log: one entry per access decision, in a Merkle tree (RFC 9162)
with signed C2SP checkpoints, and the regulator's view of it. See docs/audit.md.

One concept per module (after transparency-dev/merkle):

``hashing``  leaf/node hashes          ``tree``         compact ranges, roots
``proof``    inclusion/consistency     ``note``         signed notes, key encodings
``checkpoint`` checkpoint format       ``log_signing_key`` the log's key file
``entry``    building entries          ``store_models`` tables
``log``      AuditLog (append)         ``checkpoints``  making/storing checkpoints
``storage``  reading back, proofs      ``verifier``, ``sequence``, ``tamper_findings``, ``verify``
``queries``  listing, history                           tamper detection
``unusual``  unusual-access report     ``page_token``   AIP-158 tokens
``trail``    the one write path        ``offline``      checking an export file

The regulator's gRPC service and ``credgate audit`` sit in the gateway layer above
(``gateway.regulator_service``, ``gateway.commands.audit``); this package imports only
``core`` and ``api`` (docs/architecture.md, "Layers").
"""

from credgate.audit.entry import (
    ALLOWED,
    ALLOWED_REASON,
    DENIED,
    AuditEntry,
    AuditEntryError,
    new_entry,
)
from credgate.audit.log import AppendReceipt, AuditLog, AuditUnavailable
from credgate.audit.log_signing_key import load_or_create_signer

__all__ = [
    "ALLOWED",
    "ALLOWED_REASON",
    "DENIED",
    "AppendReceipt",
    "AuditEntry",
    "AuditEntryError",
    "AuditLog",
    "AuditUnavailable",
    "load_or_create_signer",
    "new_entry",
]
