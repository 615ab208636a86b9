"""The audit log's tables, declared on the gateway's shared ``Base`` (migration ``0003``).

* ``audit_entries`` — one row per entry, keyed by its index. ``entry_bytes`` is the source of
  truth (the Merkle leaf is its hash); the columns beside it (time, institution, subject token,
  purpose, outcome, reason) are copies to filter by, and ``verify`` checks them against the
  bytes. ``tree_root``/``tree_signature`` are the signed tree head after this entry.
* ``audit_head`` — exactly one row: the tree size and compact range after the last append.
  Appenders lock it (``SELECT ... FOR UPDATE``), which is what keeps several replicas on one
  gap-free sequence; it is a cache of the entries, so ``verify`` recomputes and compares it.
* ``audit_checkpoints`` — every checkpoint ever signed, as its signed note verbatim.
* ``audit_tree_nodes`` (migration ``0013``) — the hash of every complete perfect subtree at the
  levels ``audit.tiles`` keeps (multiples of 3), written with the entries that complete it, so
  proofs read O(log n) rows; like the head it is derived data, and ``verify`` recomputes it.

No personal data: the subject appears only as a token.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, PrimaryKeyConstraint, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from credgate.core.storage.models import TOKEN_LENGTH, Base, UTCDateTime

INSTITUTION_ID_LENGTH = 255
REASON_LENGTH = 64
HEAD_ROW_ID = 1


class AuditEntryRow(Base):
    """One audit entry: canonical bytes, leaf hash, signed tree head, and query columns."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index(None, "institution_id", "entry_index"),
        Index(None, "subject_token", "entry_index"),
        # Covering for the statistics (audit.statistics, migration 0016): a window's counts
        # per institution, day, outcome, reason, purpose and distinct subject come from this
        # index alone. It replaces the plain decision_time index of 0003 (its prefix).
        Index(
            "ix_audit_entries_statistics",
            "decision_time",
            "institution_id",
            "outcome",
            "reason",
            "purpose",
            "subject_token",
        ),
        # Proofs read leaf hashes by index range (audit.tiles): covering, so SQLite reads them
        # from this index alone instead of one table lookup per leaf (migration 0013).
        Index(None, "entry_index", "leaf_hash"),
    )

    entry_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    decision_time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    institution_id: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    role: Mapped[int] = mapped_column(Integer)
    """``credit_repair.v1.InstitutionRole`` value."""
    purpose: Mapped[int] = mapped_column(Integer)
    """``credit_repair.v1.Purpose`` value."""
    outcome: Mapped[int] = mapped_column(Integer)
    """``credit_repair.v1.AuditOutcome`` value."""
    reason: Mapped[str] = mapped_column(String(REASON_LENGTH))
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    """Empty when the decision named no subject."""
    entry_bytes: Mapped[bytes] = mapped_column(LargeBinary)
    """The canonical ``AuditEntry`` serialization: what the leaf hash covers."""
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    """SHA-256(0x00 || entry_bytes)."""
    tree_root: Mapped[bytes] = mapped_column(LargeBinary)
    """Merkle root of the first ``entry_index + 1`` entries."""
    tree_signature: Mapped[bytes] = mapped_column(LargeBinary)
    """Key hash || Ed25519 signature over the checkpoint text for that size and root."""


class AuditHeadRow(Base):
    """The single head row: where the next append continues the tree."""

    __tablename__ = "audit_head"

    head_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    compact_range: Mapped[bytes] = mapped_column(LargeBinary)
    """The perfect-subtree hashes of the tree (``audit.tree.CompactRange.to_bytes``)."""
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)


class AuditCheckpointRow(Base):
    """A signed checkpoint, kept verbatim."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (Index(None, "tree_size"),)

    checkpoint_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    note: Mapped[str] = mapped_column(Text)
    """The C2SP signed note; the other columns are parsed from it for querying."""


WITNESS_NAME_LENGTH = 255
WITNESS_OUTCOME_LENGTH = 32


class AuditCosignatureRow(Base):
    """A witness's cosignature on one of the log's checkpoints (migration ``0014``).

    ``note`` is the checkpoint with the log's signature and the cosignature line: a
    self-contained statement anyone holding the two public keys can check. The other columns
    are parsed from it for querying; the gateway checked the cosignature before storing it.
    """

    __tablename__ = "audit_cosignatures"
    __table_args__ = (Index(None, "witness_name", "tree_size"),)

    cosignature_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    witness_name: Mapped[str] = mapped_column(String(WITNESS_NAME_LENGTH))
    witness_key_id: Mapped[str] = mapped_column(String(8))
    tree_size: Mapped[int] = mapped_column(BigInteger)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    cosigned_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    """The cosignature's own timestamp (signed by the witness)."""
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    note: Mapped[str] = mapped_column(Text)


class AuditWitnessStatusRow(Base):
    """Per configured witness, how the last submission went: what a console or a probe shows
    (``gateway.witness.status``). One row per witness name, overwritten by every attempt."""

    __tablename__ = "audit_witness_status"

    witness_name: Mapped[str] = mapped_column(String(WITNESS_NAME_LENGTH), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    cosigned_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The size the witness last told us it cosigned (200, or learnt from a 409)."""
    submitted_size: Mapped[int] = mapped_column(BigInteger)
    """The checkpoint size of the last attempt."""
    outcome: Mapped[str] = mapped_column(String(WITNESS_OUTCOME_LENGTH))
    """``cosigned``, ``refused`` (400/403/404/422), ``ahead`` (the witness cosigned more than
    the log now has: a rollback), ``unreachable`` or ``error``."""
    detail: Mapped[str] = mapped_column(Text)
    attempted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    cosigned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditTreeNodeRow(Base):
    """One complete interior node: the tree hash of leaves ``[index << level, (index+1) << level)``
    (``audit.tiles``); written once, by the append that completes it."""

    __tablename__ = "audit_tree_nodes"
    __table_args__ = (
        # On PostgreSQL the key carries the hash: a proof's node rows are read from the index
        # alone (migration 0017). On SQLite the table is its key (WITHOUT ROWID, migration
        # 0018): one B-tree search per node span instead of the key's index and then the row.
        PrimaryKeyConstraint("level", "node_index", postgresql_include=["node_hash"]),
        {"sqlite_with_rowid": False},
    )

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    node_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node_hash: Mapped[bytes] = mapped_column(LargeBinary)
