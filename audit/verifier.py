"""Recompute the log from its rows and say exactly what, if anything, was tampered with.

Nothing stored is trusted except signatures by the log's key. The verifier is fed the entry
rows in index order, recomputes every leaf hash from the entry bytes and the whole tree from
the leaves; stored hashes, roots and the head row are only compared, never believed.

What it reports (``TamperKind``), and how each is found:

* **MODIFIED** — an entry's bytes no longer hash to its stored leaf hash, or no longer parse,
  or the query columns beside it disagree with the bytes; or the entry changed together with
  its leaf hash, so the recomputed tree stops matching the signed tree head stored with it.
* **DELETED / INSERTED / REORDERED** — from the indexes inside the entries (``sequence.py``).
* **REWRITTEN** — the hashes are all consistent, but from some entry on no tree head verifies
  with the log's key: someone recomputed the chain after an edit, without the private key.
* **TRUNCATED** — the head row or a signed checkpoint covers more entries than exist.
* **CHECKPOINT_INVALID / CHECKPOINT_MISMATCH** — a stored (or supplied) checkpoint's signature
  fails, or its root differs from the root recomputed at its size.
* **HEAD_MISMATCH / TREE_HEAD_ALTERED** — the head row, or a stored per-entry tree head, was
  altered while the entries themselves still verify.
* **NODE_ALTERED** — a stored interior node (``audit.tiles``, what proofs are built from) is
  not the hash of the authenticated entries it covers, is missing, or covers entries the log
  does not hold. Proofs built from it would fail against signed roots (a client is never
  fooled), but the log would deny honest proofs: it is reported like any other tampering.

The *authenticated size* is the largest tree size whose recomputed root a valid signature
vouches for (a per-entry tree head or a checkpoint): everything before it is proven intact, and
when it falls short of the log, the first entry after it is where tampering starts.

Cost: per row, one leaf hash, about one node hash, a protobuf parse and one tuple comparison of
the query columns; rows come in batches of plain tuples (``feed``), and the tree grows a chunk
of ``SAMPLE_EVERY`` leaves at a time, hashed a layer at a time, keeping the nodes at the stored
levels 3, 6, ... (one per 7 rows) to compare as the node rows stream past (``check_nodes``).
Stored roots are compared every ``SAMPLE_EVERY`` entries and only the chunk holding the first
mismatch is read in full; signatures are checked for the newest head and the checkpoints, then
by a galloping search back from the first mismatch — so verification costs hashing, not
public-key operations. The ``thorough`` mode also checks every stored tree head and its
signature (about 20x slower): it finds a per-entry tree head altered on its own, which cannot
hide or change any entry.
"""

from __future__ import annotations

from array import array
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.audit.checkpoint import TreeHeadVerifier, open_checkpoint
from credgate.audit.hashing import leaf_hashes, parent_layer
from credgate.audit.note import NoteError, NoteVerifier
from credgate.audit.sequence import MAX_LISTED, sequence_findings
from credgate.audit.tamper_findings import TamperFinding, TamperKind, VerificationResult
from credgate.audit.tiles import (
    STRIDE,
    TILE_WIDTH,
    StoredNode,
    append_keeping,
    append_subtree_keeping,
)
from credgate.audit.tree import CompactRange, PackedHashes

SAMPLE_EVERY = 1024
_CHUNK_LEVEL = 10
"""``SAMPLE_EVERY`` leaves make a perfect subtree of this height: the unit the tree grows by."""
assert 1 << _CHUNK_LEVEL == SAMPLE_EVERY
_TILE_MASK = TILE_WIDTH - 1
_parse = audit_pb2.AuditEntry.FromString

FetchHeads = Callable[[Sequence[int]], Awaitable[Mapping[int, tuple[bytes, bytes]]]]
"""Given stored entry indexes, those rows' (tree_root, tree_signature); absent rows omitted."""


StoredRow = tuple[int, bytes, bytes, str, int, int, int, str, str, int | None]
"""One ``audit_entries`` row as read: (entry_index, entry_bytes, leaf_hash, institution_id,
role, purpose, outcome, reason, subject_token, decision time in microseconds since the epoch,
UTC — None if the stored value is not a time). The query columns are copies that must agree
with the entry's bytes; tree heads are fetched separately, when needed."""


class LogVerifier:
    """Feed rows in stored index order with ``feed``, then ``await finish(...)``."""

    def __init__(
        self, origin: str, verifiers: Sequence[NoteVerifier], *, thorough: bool = False
    ) -> None:
        self._origin = origin
        self._thorough = thorough
        self._all_roots: list[bytes] = []
        self._root_mismatches: list[int] = []
        self._verifiers = list(verifiers)
        self._heads = TreeHeadVerifier(origin, self._verifiers)
        self._leaves = PackedHashes()
        self._pending: list[bytes] = []
        """Leaf hashes not yet in ``_compact``: they join it a whole chunk at a time."""
        self._compact = CompactRange()
        self._snapshots: list[CompactRange] = [CompactRange()]
        self._sample_roots: list[bytes] = []
        self._positions = array("q")
        self._embedded = array("q")
        self._findings: list[TamperFinding] = []
        self._kept: list[StoredNode] = []
        self._computed: dict[int, PackedHashes] = {}
        """The recomputed tree's nodes at each stored level (``audit.tiles``), by index: they
        complete in index order, so 32 bytes each and no keys."""
        self._node_problems: list[tuple[str, int, int, int]] = []
        """(what, level, first, last) found by ``check_nodes``; judged in ``finish``."""

    @property
    def rows(self) -> int:
        """Rows fed so far."""
        return len(self._positions)

    def feed(self, rows: Sequence[StoredRow]) -> None:
        """Take the next rows.

        The per-row work is the least that checks everything: one leaf hash (all of a batch
        in one comprehension, compared as one list), a protobuf parse and one tuple
        comparison of the query columns. The tree grows a whole chunk at a time
        (``_append_chunk``); the leaves of a partial last chunk wait for ``_settle``.
        """
        leaves = leaf_hashes([row[1] for row in rows])
        if leaves != [row[2] for row in rows]:
            for row, leaf in zip(rows, leaves, strict=True):
                if leaf != row[2]:
                    self._add(TamperKind.MODIFIED, row[0], "content does not match its leaf hash")
        embedded = self._embedded
        position = len(embedded)
        add = self._add
        parse = _parse
        for index, data, _, institution, role, purpose, outcome, reason, token, micros in rows:
            try:
                entry = parse(data)
            except DecodeError:
                add(TamperKind.MODIFIED, index, "content is not a readable audit entry")
                embedded.append(position)
            else:
                time = entry.decision_time
                if (
                    entry.institution_id,
                    entry.role,
                    entry.purpose,
                    entry.outcome,
                    entry.reason,
                    entry.subject_token,
                    time.seconds * 1_000_000 + time.nanos // 1000,
                ) != (institution, role, purpose, outcome, reason, token, micros):
                    add(TamperKind.MODIFIED, index, "query columns disagree with the entry")
                embedded.append(entry.index)
            position += 1
        self._positions.extend([row[0] for row in rows])
        self._leaves.extend(leaves)
        if self._thorough:
            for leaf in leaves:
                self._append_leaf(leaf)
            return
        pending = self._pending
        pending.extend(leaves)
        if len(pending) >= SAMPLE_EVERY:
            whole = len(pending) - len(pending) % SAMPLE_EVERY
            for start in range(0, whole, SAMPLE_EVERY):
                self._append_chunk(pending[start : start + SAMPLE_EVERY])
            del pending[:whole]

    def _append_chunk(self, leaves: list[bytes]) -> None:
        """Add ``SAMPLE_EVERY`` leaves (``_compact`` at a multiple of it) as one perfect
        subtree: its levels hashed a layer at a time, the stored levels among them kept."""
        computed = self._computed
        layer = leaves
        for height in range(1, _CHUNK_LEVEL + 1):
            layer = parent_layer(layer)
            if height % STRIDE == 0:
                computed.setdefault(height, PackedHashes()).extend(layer)
        compact = self._compact
        kept = self._kept
        append_subtree_keeping(compact, _CHUNK_LEVEL, layer[0], kept)
        for level, _, digest in kept:
            computed.setdefault(level, PackedHashes()).append(digest)
        kept.clear()
        self._snapshots.append(compact.copy())
        self._sample_roots.append(compact.root())

    def _append_leaf(self, leaf: bytes) -> None:
        """Add one leaf to ``_compact`` (thorough mode, and the last partial chunk)."""
        compact = self._compact
        if (compact.size + 1) & _TILE_MASK:
            compact.append(leaf)
        else:  # this leaf completes at least one node at a stored level: keep it
            kept = self._kept
            append_keeping(compact, leaf, kept)
            for level, _, digest in kept:
                self._computed.setdefault(level, PackedHashes()).append(digest)
            kept.clear()
        if self._thorough:
            self._all_roots.append(compact.root())
        if compact.size % SAMPLE_EVERY == 0:
            self._snapshots.append(compact.copy())
            self._sample_roots.append(compact.root())

    def _settle(self) -> None:
        """Add the leaves still pending to the tree (after the last row, before any check)."""
        for leaf in self._pending:
            self._append_leaf(leaf)
        self._pending.clear()

    def _add(self, kind: TamperKind, index: int | None, detail: str) -> None:
        self._findings.append(TamperFinding(kind, index, detail))

    def root_at(self, size: int) -> bytes:
        """The recomputed root of the first ``size`` rows."""
        compact = self._snapshots[size // SAMPLE_EVERY].copy()
        while compact.size < size:
            compact.append(self._leaves[compact.size])
        return compact.root()

    async def finish(
        self,
        fetch_heads: FetchHeads,
        *,
        head_size: int | None,
        head_root: bytes | None,
        checkpoints: Sequence[tuple[str, str]] = (),
    ) -> VerificationResult:
        """Run the whole-log checks and return the report.

        ``checkpoints`` are (label, signed note) pairs: the stored ones and any a regulator
        kept (only an outside copy can reveal a truncation that also deleted checkpoints).
        The stored interior nodes are judged if ``check_nodes`` was given them.
        """
        self._settle()
        n = self.rows
        report = VerificationResult(entries=n, head_size=head_size)
        self._findings.extend(sequence_findings(self._embedded, self._positions))
        if self._thorough:
            mismatches = await self._every_head_mismatch(fetch_heads)
            bad = set(mismatches)
            authenticated = next((r + 1 for r in range(n - 1, -1, -1) if r not in bad), 0)
        else:
            mismatches = await self._first_root_mismatch(fetch_heads)
            first = mismatches[0] if mismatches else None
            authenticated = await self._authenticated_size(fetch_heads, first)
        mismatch = min(self._root_mismatches or mismatches, default=None)
        for label, note in checkpoints:
            authenticated = max(authenticated, self._check_checkpoint(label, note, report))
        self._head_findings(head_size, head_root)
        for row in [m for m in mismatches if m < authenticated][:MAX_LISTED]:
            detail = "the stored tree head was altered (the entries themselves verify)"
            self._add(TamperKind.TREE_HEAD_ALTERED, self._positions[row], detail)
        if authenticated < n:
            self._explain_divergence(authenticated, head_size, mismatch)
        self._node_findings(authenticated)
        report.authenticated_size = authenticated
        report.findings = sorted(
            self._findings, key=lambda f: (f.index is None, f.index or 0, f.kind)
        )
        return report

    async def _first_root_mismatch(self, fetch_heads: FetchHeads) -> list[int]:
        """The first row whose stored tree root differs from the recomputed one (sampled)."""
        n = self.rows
        sizes = list(range(SAMPLE_EVERY, n + 1, SAMPLE_EVERY))
        roots = list(self._sample_roots)
        if n % SAMPLE_EVERY:
            sizes.append(n)
            roots.append(self._compact.root())
        stored = await fetch_heads([self._positions[s - 1] for s in sizes])
        for size, root in zip(sizes, roots, strict=True):
            head = stored.get(self._positions[size - 1])
            if head is not None and head[0] == root:
                continue
            start = (size - 1) // SAMPLE_EVERY * SAMPLE_EVERY
            chunk = await fetch_heads([self._positions[r] for r in range(start, size)])
            compact = self._snapshots[start // SAMPLE_EVERY].copy()
            for row in range(start, size):
                compact.append(self._leaves[row])
                head = chunk.get(self._positions[row])
                if head is None or head[0] != compact.root():
                    return [row]
        return []

    async def _every_head_mismatch(self, fetch_heads: FetchHeads) -> list[int]:
        """Thorough mode: every row whose stored tree head is not the recomputed, signed one."""
        stored = await fetch_heads(list(self._positions))
        bad = []
        for row, root in enumerate(self._all_roots):
            head = stored.get(self._positions[row])
            if head is None or head[0] != root:
                self._root_mismatches.append(row)
                bad.append(row)
            elif not self._heads.verify(row + 1, *head):
                bad.append(row)
        return bad

    async def _auth(self, size: int, fetch_heads: FetchHeads) -> bool:
        """Whether a valid tree-head signature vouches for the recomputed root at ``size``."""
        if size == 0:
            return True
        position = self._positions[size - 1]
        head = (await fetch_heads([position])).get(position)
        if head is None:
            return False
        root, signature = head
        return root == self.root_at(size) and self._heads.verify(size, root, signature)

    async def _authenticated_size(self, fetch_heads: FetchHeads, mismatch: int | None) -> int:
        """The largest authenticated size: the newest head, else gallop back from a mismatch.

        The search assumes what a rewrite produces — heads valid up to the edit, invalid after
        — and so checks O(log n) signatures instead of n.
        """
        n = self.rows
        if await self._auth(n, fetch_heads):
            return n
        top = n - 1 if mismatch is None else mismatch
        bad, probe, step = top + 1, top, 1
        while probe > 0 and not await self._auth(probe, fetch_heads):
            bad = probe
            probe = max(0, bad - step)
            step *= 2
        good = probe
        while bad - good > 1:
            middle = (good + bad) // 2
            if await self._auth(middle, fetch_heads):
                good = middle
            else:
                bad = middle
        return good

    def _check_checkpoint(self, label: str, note: str, report: VerificationResult) -> int:
        """Verify one checkpoint; return the size it authenticates (0 if none)."""
        report.checkpoints_checked += 1
        try:
            checkpoint = open_checkpoint(note, self._verifiers).checkpoint
        except NoteError as exc:
            self._add(TamperKind.CHECKPOINT_INVALID, None, f"checkpoint {label}: {exc}")
            return 0
        if checkpoint.origin != self._origin:
            self._add(TamperKind.CHECKPOINT_INVALID, None, f"checkpoint {label}: other origin")
            return 0
        size = checkpoint.tree_size
        if size > self.rows:
            detail = f"checkpoint {label} signs {size} entries but the log has {self.rows}"
            self._add(TamperKind.TRUNCATED, self.rows, detail)
            return 0
        if self.root_at(size) != checkpoint.root_hash:
            detail = f"checkpoint {label}: the first {size} entries differ from what was signed"
            self._add(TamperKind.CHECKPOINT_MISMATCH, None, detail)
            return 0
        report.checkpoints_valid += 1
        return size

    def check_nodes(self, stored: Iterable[StoredNode]) -> None:
        """Compare the stored interior nodes, in (level, index) order, with the recomputed
        ones, after every row was fed; what differs is judged in ``finish``. Streams: the
        problems are kept as ranges, never the nodes."""
        self._settle()
        problems = self._node_problems
        rows = self.rows
        expected: dict[int, int] = {}  # per level, the next index a complete run would have
        for level, index, digest in stored:
            computed = self._computed.get(level)
            count = len(computed) if computed is not None else 0
            if level % STRIDE or level <= 0:
                problems.append(("level", level, index, index))
                continue
            following = expected.get(level, 0)
            if following < min(index, count):
                problems.append(("missing", level, following, min(index, count) - 1))
            expected[level] = index + 1
            if (index + 1) << level > rows:
                problems.append(("beyond", level, index, index))
            elif computed is not None and computed[index] != digest:
                problems.append(("altered", level, index, index))
        for level, computed in self._computed.items():
            following = expected.get(level, 0)
            if following < len(computed):
                problems.append(("missing", level, following, len(computed) - 1))

    def _node_findings(self, authenticated: int) -> None:
        """Findings for what ``check_nodes`` found.

        Only nodes within the authenticated prefix are judged against the recomputation (past
        it the entries themselves are already findings, and a stored node may well hold the
        signed value the altered entries lost); a node past the last entry (unless the log was
        found truncated, which explains it), or missing where the authenticated entries
        complete it, or at a level the log does not keep, is a finding too.
        """
        truncated = any(f.kind is TamperKind.TRUNCATED for f in self._findings)
        found: list[TamperFinding] = []
        for what, level, first, last in self._node_problems:
            where = f"interior node {level}/{first}"
            start = first << level
            if what == "level":
                detail = f"{where} is at a level the log does not keep"
                found.append(TamperFinding(TamperKind.NODE_ALTERED, None, detail))
            elif what == "beyond" and not truncated:
                detail = f"{where} covers entries not in the log"
                found.append(TamperFinding(TamperKind.NODE_ALTERED, None, detail))
            elif what == "altered" and (first + 1) << level <= authenticated:
                end = ((first + 1) << level) - 1
                detail = (
                    f"{where} (entries {start}..{end}) is not the hash of the entries it covers"
                )
                found.append(TamperFinding(TamperKind.NODE_ALTERED, start, detail))
            elif what == "missing" and (first + 1) << level <= authenticated:
                last = min(last, (authenticated >> level) - 1)
                span = where if last == first else f"interior nodes {level}/{first}..{last}"
                detail = f"{span} missing (proofs over them fail)"
                found.append(TamperFinding(TamperKind.NODE_ALTERED, start, detail))
        self._findings.extend(found[:MAX_LISTED])

    def _head_findings(self, head_size: int | None, head_root: bytes | None) -> None:
        n = self.rows
        if head_size is None:
            self._add(TamperKind.HEAD_MISMATCH, None, "the head row is missing")
        elif head_size > n:
            detail = f"the head records {head_size} entries; {n} remain"
            self._add(TamperKind.TRUNCATED, n, detail)
        elif head_size == n and head_root != self._compact.root():
            self._add(TamperKind.HEAD_MISMATCH, None, "the head row's root was altered")

    def _explain_divergence(
        self, authenticated: int, head_size: int | None, mismatch: int | None
    ) -> None:
        """Name the first unauthenticated entry unless a finding already explains it."""
        index = self._positions[authenticated]
        if any(f.index in (authenticated, index) for f in self._findings):
            return
        if head_size is not None and authenticated >= head_size:
            for row in range(authenticated, min(self.rows, authenticated + MAX_LISTED)):
                detail = "appended beyond the head row, without a valid signature"
                self._add(TamperKind.INSERTED, self._positions[row], detail)
            return
        if mismatch == authenticated:
            detail = "no valid signature covers this entry: it (with its leaf hash) was changed"
            self._add(TamperKind.MODIFIED, index, detail)
            return
        detail = "hashes were recomputed from here on, but no tree head verifies with the log key"
        self._add(TamperKind.REWRITTEN, index, detail)
