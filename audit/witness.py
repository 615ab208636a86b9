"""The witness's judgement (C2SP tlog-witness ``add-checkpoint``) and its durable memory.

A witness remembers, per log origin, the latest checkpoint it cosigned. It cosigns a new one
only when the log proves, with a Merkle consistency proof from that remembered size, that the
new tree extends it — so a log that forks (two histories) or shrinks (truncation, a restored
backup) cannot get a cosignature for the other history, and whoever holds the witness's
latest cosigned checkpoint can tell that the log lost what it once had.

The HTTP glue lives in ``gateway.witness`` (the audit layer has no web server); this module
decides, and keeps the state in one SQLite file: each request runs in one ``BEGIN IMMEDIATE``
transaction that reads the remembered size, checks, signs, stores and commits (with
``synchronous=FULL``) *before* the answer leaves — the check and the update are atomic, as the
spec demands, so two concurrent submissions can never roll the remembered size back, and a
witness that crashes after answering still remembers what it cosigned.

Status codes, as tlog-witness fixes them: 200 with the cosignature line; 400 malformed request
or an old size above the checkpoint's; 403 no valid signature by a trusted key of the origin
(or a bad one); 404 unknown origin; 409 (``text/x.tlog.size``, body = the remembered size)
when the old size is not the one the witness remembers; 422 when the proof does not verify,
the roots of equal sizes differ, or a size-0 checkpoint has a non-empty-tree root.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from credgate.audit.checkpoint import Checkpoint
from credgate.audit.cosignature import Cosigner
from credgate.audit.hashing import HASH_SIZE
from credgate.audit.note import NoteError, NoteVerifier, open_note, parse_note
from credgate.audit.proof import ProofError, verify_consistency

log = logging.getLogger(__name__)

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
EMPTY_ROOT = hashlib.sha256(b"").digest()
_OLD_LINE = re.compile(r"old (0|[1-9][0-9]{0,19})")
_STATE_FILE = "witness.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cosigned (
    origin TEXT PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    note TEXT NOT NULL,
    cosigned_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    refusal_id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    old_size INTEGER NOT NULL,
    tree_size INTEGER NOT NULL,
    note TEXT NOT NULL,
    refused_at INTEGER NOT NULL
);
"""


def origin_hash(origin: str) -> str:
    """Lower-case hex SHA-256 of the origin: the path segment of the monitoring endpoint."""
    return hashlib.sha256(origin.encode()).hexdigest()


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed ``add-checkpoint`` request body."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def encode(self) -> bytes:
        """The request body: ``old`` line, proof lines, a blank line, the checkpoint note."""
        lines = [f"old {self.old_size}\n"]
        lines += [base64.b64encode(h).decode() + "\n" for h in self.proof]
        return ("".join(lines) + "\n" + self.note).encode()

    @classmethod
    def decode(cls, body: bytes) -> AddCheckpoint:
        """Parse a request body; ValueError if it is not the format above."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("the request body is not UTF-8") from None
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise ValueError("no blank line between the proof and the checkpoint")
        first, *proof_lines = head.split("\n")
        match = _OLD_LINE.fullmatch(first)
        if match is None:
            raise ValueError("the first line must be 'old <size>'")
        if len(proof_lines) > MAX_PROOF_LINES:
            raise ValueError(f"more than {MAX_PROOF_LINES} consistency proof lines")
        proof: list[bytes] = []
        for line in proof_lines:
            try:
                digest = base64.b64decode(line, validate=True)
            except binascii.Error:
                raise ValueError("a consistency proof line is not base64") from None
            if len(digest) != HASH_SIZE:
                raise ValueError("a consistency proof line is not a 32-byte hash")
            proof.append(digest)
        return cls(int(match.group(1)), tuple(proof), note)


@dataclass(frozen=True)
class Answer:
    """What the witness answers: HTTP status, body, content type."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class CosignedState:
    """The latest checkpoint cosigned for one origin."""

    origin: str
    tree_size: int
    root_hash: bytes
    note: str
    """The log's checkpoint with the log signatures the witness verified and its cosignature."""
    cosigned_at: int


@dataclass(frozen=True)
class Refusal:
    """A submission the witness refused after the log's signature verified (possible evidence
    of misbehaviour, kept as tlog-witness allows)."""

    origin: str
    status: int
    reason: str
    old_size: int
    tree_size: int
    refused_at: int


class _Refused(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body)
        self.answer = answer


class WitnessState:
    """The SQLite file under the witness's state directory."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / _STATE_FILE
        self._lock = threading.Lock()
        with self._connect() as connection:
            connection.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=10.0)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            yield connection
        finally:
            connection.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        with self._lock, self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def latest(self, origin: str) -> CosignedState | None:
        """The latest cosigned checkpoint for ``origin``, if any."""
        with self._connect() as connection:
            return _read(connection, origin)

    def all_latest(self) -> list[CosignedState]:
        """Every origin's latest cosigned checkpoint."""
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT origin, tree_size, root_hash, note, cosigned_at FROM cosigned"
            ).fetchall()
        return [CosignedState(r[0], int(r[1]), bytes(r[2]), r[3], int(r[4])) for r in rows]

    def refusals(self, origin: str | None = None, limit: int = 100) -> list[Refusal]:
        """The newest refusals (for ``origin`` when given), newest first."""
        query = "SELECT origin, status, reason, old_size, tree_size, refused_at FROM refusals"
        params: tuple[object, ...] = ()
        if origin is not None:
            query += " WHERE origin = ?"
            params = (origin,)
        query += " ORDER BY refusal_id DESC LIMIT ?"
        with self._connect() as connection:
            rows = connection.execute(query, (*params, limit)).fetchall()
        return [Refusal(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows]


def _read(connection: sqlite3.Connection, origin: str) -> CosignedState | None:
    row = connection.execute(
        "SELECT origin, tree_size, root_hash, note, cosigned_at FROM cosigned WHERE origin = ?",
        (origin,),
    ).fetchone()
    return (
        None
        if row is None
        else CosignedState(row[0], int(row[1]), bytes(row[2]), row[3], int(row[4]))
    )


class Witness:
    """Judges ``add-checkpoint`` submissions for the configured logs and cosigns the good ones."""

    def __init__(
        self,
        cosigner: Cosigner,
        logs: Iterable[NoteVerifier],
        state: WitnessState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = cosigner
        self.state = state
        self._clock = clock
        self._logs: dict[str, list[NoteVerifier]] = {}
        for verifier in logs:
            self._logs.setdefault(verifier.name, []).append(verifier)

    @property
    def origins(self) -> list[str]:
        """The origins this witness cosigns for."""
        return sorted(self._logs)

    def add_checkpoint(self, body: bytes) -> Answer:
        """Judge one request body; cosign, remember and answer 200, or refuse."""
        try:
            request = AddCheckpoint.decode(body)
            text, _ = parse_note(request.note)
            checkpoint = Checkpoint.parse_text(text)
        except (ValueError, NoteError) as exc:
            return Answer(400, f"malformed add-checkpoint request: {exc}\n")
        verifiers = self._logs.get(checkpoint.origin)
        if verifiers is None:
            return Answer(404, "unknown log origin\n")
        try:
            _, signed_by = open_note(request.note, verifiers)
        except NoteError as exc:
            return Answer(403, f"checkpoint not signed by a trusted key of the log: {exc}\n")
        if request.old_size > checkpoint.tree_size:
            # The log signed a tree smaller than one it claims to extend: a truncated log
            # that learnt the witness's size. Kept as evidence.
            answer = Answer(400, "old size is larger than the checkpoint size\n")
            self._record_refusal(request, checkpoint, answer)
            return answer
        try:
            with self.state.transaction() as connection:
                return self._judge(connection, request, checkpoint, text, signed_by)
        except _Refused as refused:
            self._record_refusal(request, checkpoint, refused.answer)
            return refused.answer

    def _judge(
        self,
        connection: sqlite3.Connection,
        request: AddCheckpoint,
        checkpoint: Checkpoint,
        text: str,
        signed_by: list[NoteVerifier],
    ) -> Answer:
        current = _read(connection, checkpoint.origin)
        known_size = 0 if current is None else current.tree_size
        if request.old_size != known_size:
            # Not a refusal of the log: the submitter only had a stale idea of our size.
            return Answer(409, f"{known_size}\n", SIZE_CONTENT_TYPE)
        if checkpoint.tree_size == 0 and checkpoint.root_hash != EMPTY_ROOT:
            raise _Refused(Answer(422, "a size-0 checkpoint must have the empty tree's root\n"))
        if request.old_size == 0:
            if request.proof:
                raise _Refused(Answer(422, "a proof from size 0 must be empty\n"))
        else:
            assert current is not None
            try:
                verify_consistency(
                    current.tree_size,
                    checkpoint.tree_size,
                    current.root_hash,
                    checkpoint.root_hash,
                    request.proof,
                )
            except ProofError as exc:
                raise _Refused(
                    Answer(
                        422,
                        f"checkpoint of size {checkpoint.tree_size} is not consistent with the "
                        f"size {current.tree_size} this witness cosigned: {exc}\n",
                    )
                ) from None
        timestamp = max(int(self._clock()), 1)
        line = self.cosigner.cosign(text, timestamp)
        note = _cosigned_note(request.note, text, signed_by) + line
        connection.execute(
            "INSERT INTO cosigned (origin, tree_size, root_hash, note, cosigned_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET tree_size = "
            "excluded.tree_size, root_hash = excluded.root_hash, note = excluded.note, "
            "cosigned_at = excluded.cosigned_at",
            (checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash, note, timestamp),
        )
        log.info(
            "witness cosigned %s at size %d (was %d)",
            checkpoint.origin,
            checkpoint.tree_size,
            known_size,
        )
        return Answer(200, line)

    def _record_refusal(
        self, request: AddCheckpoint, checkpoint: Checkpoint, answer: Answer
    ) -> None:
        log.warning(
            "witness refused %s at size %d from old size %d: %s",
            checkpoint.origin,
            checkpoint.tree_size,
            request.old_size,
            answer.body.strip(),
        )
        with self.state.transaction() as connection:
            connection.execute(
                "INSERT INTO refusals (origin, status, reason, old_size, tree_size, note, "
                "refused_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    checkpoint.origin,
                    answer.status,
                    answer.body.strip(),
                    request.old_size,
                    checkpoint.tree_size,
                    request.note,
                    int(self._clock()),
                ),
            )

    def checkpoint_for(self, hashed_origin: str) -> str | None:
        """The latest cosigned checkpoint of the log whose origin hashes to ``hashed_origin``
        (the monitoring endpoint), or None."""
        for origin in self._logs:
            if origin_hash(origin) == hashed_origin:
                state = self.state.latest(origin)
                return None if state is None else state.note
        return None


def _cosigned_note(note: str, text: str, signed_by: list[NoteVerifier]) -> str:
    """The checkpoint text with only the log signatures the witness verified (lines by unknown
    keys are not vouched for), ready for the cosignature line."""
    _, signatures = parse_note(note)
    trusted = {(v.name, v.key_hash) for v in signed_by}
    lines = [
        f"— {s.name} {base64.b64encode(s.key_hash + s.signature).decode()}\n"
        for s in signatures
        if (s.name, s.key_hash) in trusted
    ]
    return text + "\n" + "".join(lines)
