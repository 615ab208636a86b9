"""Signed notes, checkpoints, the log key file and page tokens — no database needed.

The signed-note code is pinned to the known answer published with Go's
``golang.org/x/mod/sumdb/note`` (``tests/data/signed_note_vectors.json``): Ed25519 is
deterministic, so byte-for-byte equality means standard tooling reads our checkpoints.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from credgate.audit.checkpoint import (
    Checkpoint,
    TreeHeadVerifier,
    open_checkpoint,
    sign_checkpoint,
    sign_tree_head,
)
from credgate.audit.hashing import leaf_hash
from credgate.audit.log_signing_key import (
    AuditKeyError,
    load_or_create_signer,
    load_verifier,
    public_key_path,
)
from credgate.audit.note import (
    NoteError,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_note,
    sign_note,
)

NOTE_VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "signed_note_vectors.json").read_text(encoding="utf-8")
)
ROOT = leaf_hash(b"root")


def test_signed_note_matches_the_go_known_answer() -> None:
    signer = NoteSigner.from_skey(NOTE_VECTORS["signer_key"])
    assert signer.to_skey() == NOTE_VECTORS["signer_key"]
    assert signer.verifier.to_vkey() == NOTE_VECTORS["verifier_key"]
    assert signer.key_id == "c74f20a3"
    assert sign_note(NOTE_VECTORS["text"], [signer]) == NOTE_VECTORS["note"]
    verifier = NoteVerifier.from_vkey(NOTE_VECTORS["verifier_key"])
    text, signed_by = open_note(NOTE_VECTORS["note"], [verifier])
    assert text == NOTE_VECTORS["text"]
    assert signed_by == [verifier]


def test_tampered_or_unsigned_notes_are_rejected() -> None:
    verifier = NoteVerifier.from_vkey(NOTE_VECTORS["verifier_key"])
    note: str = NOTE_VECTORS["note"]
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note.replace("cryptography", "cryptographY"), [verifier])
    stranger = NoteSigner.generate("stranger.example/log")
    with pytest.raises(NoteError, match="not signed by any trusted key"):
        open_note(note, [stranger.verifier])
    # An unknown signature beside a known one is ignored, as the spec requires.
    both = note + sign_note(NOTE_VECTORS["text"], [stranger]).split("\n\n", 1)[1]
    assert open_note(both, [verifier])[1] == [verifier]
    for malformed in ("no blank line\n", NOTE_VECTORS["text"] + "\n— x notbase64!\n"):
        with pytest.raises(NoteError):
            parse_note(malformed)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong hash
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "PeterNeumann+c74f20a3+AhpcuQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # algorithm byte
        "PeterNeumann+c74f20a3",
    ],
)
def test_malformed_verifier_keys_are_rejected(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.from_vkey(vkey)


def test_checkpoint_is_a_c2sp_note_with_a_signed_time_line() -> None:
    signer = NoteSigner.generate("credgate.test/audit")
    signed = sign_checkpoint(Checkpoint(signer.name, 1024, ROOT, 1767225600), signer)
    lines = signed.note.split("\n")
    assert lines[:5] == [
        "credgate.test/audit",
        "1024",
        base64.b64encode(ROOT).decode(),
        "time 1767225600",
        "",
    ]
    assert lines[5].startswith("— credgate.test/audit ")
    assert base64.b64decode(lines[5].split(" ")[2])[:4] == signer.verifier.key_hash
    opened = open_checkpoint(signed.note, [signer.verifier])
    assert opened.checkpoint == Checkpoint(signer.name, 1024, ROOT, 1767225600)
    assert opened.checkpoint.time is not None
    assert opened.checkpoint.time.year == 2026
    # Altering the signed time (or anything else) breaks the signature.
    with pytest.raises(NoteError):
        open_checkpoint(
            signed.note.replace("time 1767225600", "time 1767225601"), [signer.verifier]
        )


def test_checkpoints_only_count_with_a_key_named_as_the_origin() -> None:
    log_key = NoteSigner.generate("credgate.test/audit")
    other = NoteSigner.generate("credgate.test/other")
    with pytest.raises(ValueError, match="origin"):
        sign_checkpoint(Checkpoint("credgate.test/audit", 1, ROOT), other)
    signed = sign_checkpoint(Checkpoint(log_key.name, 1, ROOT), log_key)
    with pytest.raises(NoteError):
        open_checkpoint(signed.note, [other.verifier])


@pytest.mark.parametrize(
    "text",
    [
        "origin\n01\nAAAA\n",
        "origin\n1\nnot base64!\n",
        "origin\n1\n" + base64.b64encode(b"x" * 31).decode() + "\n",
        "origin\n1\n",
        "origin\n1\n" + base64.b64encode(ROOT).decode() + "\n\n",
    ],
)
def test_malformed_checkpoint_text_is_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse_text(text)


def test_tree_head_signatures_verify_only_for_their_size_and_root() -> None:
    signer = NoteSigner.generate("credgate.test/audit")
    signature = sign_tree_head(signer, 7, ROOT)
    heads = TreeHeadVerifier(signer.name, [signer.verifier])
    assert heads.verify(7, ROOT, signature)
    assert not heads.verify(8, ROOT, signature)
    assert not heads.verify(7, leaf_hash(b"other"), signature)
    assert not heads.verify(7, ROOT, signature[:-1] + bytes([signature[-1] ^ 1]))
    stranger = NoteSigner.generate(signer.name)
    assert not heads.verify(7, ROOT, sign_tree_head(stranger, 7, ROOT))


def test_log_key_file_is_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "data" / "audit-log.key"
    signer = load_or_create_signer(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signer.name.startswith("credgate.local/audit-")
    assert load_or_create_signer(path).verifier == signer.verifier
    published = public_key_path(path).read_text().strip()
    assert load_verifier(published) == signer.verifier
    assert load_verifier(str(public_key_path(path))) == signer.verifier
    assert "PRIVATE" not in repr(signer)
    with pytest.raises(AuditKeyError, match="origin"):
        load_or_create_signer(path, "credgate.test/elsewhere")
    os.chmod(path, 0o644)
    with pytest.raises(AuditKeyError, match="chmod 600"):
        load_or_create_signer(path)


def test_replicas_creating_the_key_at_once_share_one(tmp_path: Path) -> None:
    path = tmp_path / "audit-log.key"
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = list(pool.map(lambda _: load_or_create_signer(path).verifier, range(16)))
    assert len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
