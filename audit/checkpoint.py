"""Checkpoints: the log's signed tree heads, as C2SP ``tlog-checkpoint`` signed notes.

The note text is the origin line, the tree size, the base64 root hash and — credgate's one
extension line — ``time <POSIX seconds>`` so that the signature also covers *when* the log had
that size (the issue asks for signed time; an extension line is how the format carries it, and
tools that only know the first three lines still read and verify the note):

    credgate.local/audit-3f2a9c1e
    1024
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
    time 1767225600

    — credgate.local/audit-3f2a9c1e <base64(key hash || Ed25519 signature)>

Besides these published checkpoints, every appended entry carries a *tree-head signature*: the
same key's signature over the three-line checkpoint text for the size reached by that append.
Those are what let ``verify`` say exactly where a history rewritten with recomputed hashes
starts (see ``audit/verify.py``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from credgate.audit.hashing import HASH_SIZE
from credgate.audit.note import (
    KEY_HASH_SIZE,
    NoteError,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_note,
    sign_note,
)

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_TIME_LINE = re.compile(r"time (0|[1-9][0-9]{0,18})")


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint states: this log had this many entries with this root (at this time)."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: int | None = None
    """POSIX seconds; None for the three-line form used by per-entry tree-head signatures."""

    @property
    def time(self) -> dt.datetime | None:
        """``timestamp`` as an aware UTC datetime."""
        return None if self.timestamp is None else dt.datetime.fromtimestamp(self.timestamp, dt.UTC)

    def text(self) -> str:
        """The note text that is signed."""
        if len(self.root_hash) != HASH_SIZE or self.tree_size < 0:
            raise ValueError("a checkpoint needs a 32-byte root and a non-negative size")
        root = base64.b64encode(self.root_hash).decode()
        lines = f"{self.origin}\n{self.tree_size}\n{root}\n"
        return lines if self.timestamp is None else lines + f"time {self.timestamp}\n"

    @classmethod
    def parse_text(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text; NoteError if it does not follow tlog-checkpoint."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise NoteError("checkpoint text needs at least three non-empty lines")
        origin, size, root_b64, *extensions = lines[:-1]
        if not _SIZE.fullmatch(size):
            raise NoteError("checkpoint tree size is not a decimal number")
        try:
            root = base64.b64decode(root_b64, validate=True)
        except binascii.Error:
            raise NoteError("checkpoint root hash is not base64") from None
        if len(root) != HASH_SIZE:
            raise NoteError("checkpoint root hash is not 32 bytes")
        timestamp = None
        for line in extensions:
            match = _TIME_LINE.fullmatch(line)
            if match is not None:
                timestamp = int(match.group(1))
        return cls(origin, int(size), root, timestamp)


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint and its signed note, verbatim."""

    checkpoint: Checkpoint
    note: str


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> SignedCheckpoint:
    """Sign ``checkpoint``; the log's key name must be its origin (as the spec recommends)."""
    if checkpoint.origin != signer.name:
        raise ValueError("the signing key's name must be the checkpoint origin")
    return SignedCheckpoint(checkpoint, sign_note(checkpoint.text(), [signer]))


def open_checkpoint(note: str, verifiers: Iterable[NoteVerifier]) -> SignedCheckpoint:
    """Verify ``note`` with the trusted keys and parse it; NoteError if either fails.

    Only a key whose name is the origin counts: a valid signature by some other trusted log
    does not vouch for this one.
    """
    text, _ = parse_note(note)
    checkpoint = Checkpoint.parse_text(text)
    open_note(note, [v for v in verifiers if v.name == checkpoint.origin])
    return SignedCheckpoint(checkpoint, note)


def sign_tree_head(signer: NoteSigner, tree_size: int, root_hash: bytes) -> bytes:
    """key hash || signature over the three-line checkpoint text for ``tree_size``/``root``."""
    text = Checkpoint(signer.name, tree_size, root_hash).text()
    return signer.verifier.key_hash + signer.sign(text.encode())


class TreeHeadVerifier:
    """Checks per-entry tree-head signatures against a set of trusted keys of one origin."""

    def __init__(self, origin: str, verifiers: Iterable[NoteVerifier]) -> None:
        self.origin = origin
        self._by_hash = {v.key_hash: v for v in verifiers if v.name == origin}

    def verify(self, tree_size: int, root_hash: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (key hash || sig) is a trusted key's over this tree head."""
        verifier = self._by_hash.get(signature[:KEY_HASH_SIZE])
        if verifier is None or len(root_hash) != HASH_SIZE:
            return False
        text = Checkpoint(self.origin, tree_size, root_hash).text()
        return verifier.verify(text.encode(), signature[KEY_HASH_SIZE:])
