"""The data protection primitives: keyring file, subject tokens, field encryption."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from credgate.core.identity_number import validate
from credgate.core.tokens import SubjectTokenizer, is_subject_token
from credgate.gateway.protection.cipher import (
    DecryptionError,
    FieldCipher,
    MalformedEnvelopeError,
    parse_envelope,
)
from credgate.gateway.protection.keyring import Keyring, KeyringError, UnknownKeyError
from tests.fixtures.storage import make_identity_number

IDENTITY = make_identity_number("11010519491231002")
OTHER_IDENTITY = make_identity_number("44030519820615123")
CONTEXT = b"source_facts.facts_ciphertext|st_example|bank-a"


def test_test_identity_numbers_are_valid() -> None:
    assert validate(IDENTITY) is None
    assert validate(OTHER_IDENTITY) is None


# -- subject tokens ----------------------------------------------------------------------------


def test_token_is_stable_and_url_safe() -> None:
    tokenizer = SubjectTokenizer(b"k" * 32)
    token = tokenizer.token(IDENTITY)
    assert token == SubjectTokenizer(b"k" * 32).token(IDENTITY)
    assert is_subject_token(token)
    assert token.startswith("st_")
    assert len(token) == 35
    assert IDENTITY not in token
    assert tokenizer.token(OTHER_IDENTITY) != token


def test_token_is_keyed() -> None:
    assert SubjectTokenizer(b"a" * 32).token(IDENTITY) != SubjectTokenizer(b"b" * 32).token(
        IDENTITY
    )


def test_token_normalizes_how_people_type_the_number() -> None:
    tokenizer = SubjectTokenizer(b"k" * 32)
    number = "11010519491231002" + "X"  # any 17 digits + X exercises the case rule
    assert tokenizer.token(number) == tokenizer.token(f"  {number.lower()} ")


def test_tokenizer_rejects_short_key_and_hides_key() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        SubjectTokenizer(b"short")
    assert "kkkk" not in repr(SubjectTokenizer(b"k" * 32))


def test_identity_number_is_not_a_token() -> None:
    assert not is_subject_token(IDENTITY)
    assert not is_subject_token("st_" + "A" * 32)


# -- field encryption --------------------------------------------------------------------------


def test_encrypt_round_trip_and_envelope(keyring: Keyring) -> None:
    cipher = FieldCipher(keyring)
    blob = cipher.encrypt(IDENTITY.encode(), context=CONTEXT)
    assert IDENTITY.encode() not in blob
    envelope = parse_envelope(blob)
    assert envelope.version == 1
    assert envelope.key_id == keyring.primary_key_id == FieldCipher.key_id_of(blob)
    assert len(envelope.nonce) == 12
    assert cipher.decrypt(blob, context=CONTEXT) == IDENTITY.encode()


def test_nonce_is_random(keyring: Keyring) -> None:
    cipher = FieldCipher(keyring)
    assert cipher.encrypt(b"same", context=CONTEXT) != cipher.encrypt(b"same", context=CONTEXT)


def test_wrong_context_fails(keyring: Keyring) -> None:
    cipher = FieldCipher(keyring)
    blob = cipher.encrypt(IDENTITY.encode(), context=b"subjects.identity_ciphertext|st_a")
    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(blob, context=b"subjects.identity_ciphertext|st_b")
    assert IDENTITY not in str(caught.value)


@pytest.mark.parametrize("where", ["key_id", "nonce", "ciphertext", "tag"])
def test_tampered_ciphertext_fails(keyring: Keyring, where: str) -> None:
    cipher = FieldCipher(keyring)
    blob = bytearray(cipher.encrypt(IDENTITY.encode(), context=CONTEXT))
    header = 2 + blob[1]
    index = {"key_id": 2, "nonce": header, "ciphertext": header + 12, "tag": len(blob) - 1}[where]
    blob[index] ^= 0x01
    expected: type[Exception] = UnknownKeyError if where == "key_id" else DecryptionError
    with pytest.raises(expected):
        cipher.decrypt(bytes(blob), context=CONTEXT)


def test_malformed_envelopes_are_rejected(keyring: Keyring) -> None:
    cipher = FieldCipher(keyring)
    blob = cipher.encrypt(b"x", context=CONTEXT)
    with pytest.raises(MalformedEnvelopeError):
        cipher.decrypt(blob[:10], context=CONTEXT)
    with pytest.raises(MalformedEnvelopeError):
        cipher.decrypt(b"\x02" + blob[1:], context=CONTEXT)
    with pytest.raises(MalformedEnvelopeError):
        cipher.decrypt(b"", context=CONTEXT)


def test_key_from_another_keyring_is_unknown(keyring: Keyring, tmp_path: Path) -> None:
    other = Keyring.generate(tmp_path / "other.json")
    blob = FieldCipher(other).encrypt(b"x", context=CONTEXT)
    with pytest.raises(UnknownKeyError, match="not in the keyring"):
        FieldCipher(keyring).decrypt(blob, context=CONTEXT)


def test_rotation_keeps_old_ciphertexts_readable(keyring: Keyring) -> None:
    cipher = FieldCipher(keyring)
    old_blob = cipher.encrypt(b"before", context=CONTEXT)
    old_key = keyring.primary_key_id
    assert not cipher.needs_rotation(old_blob)

    new_key = keyring.add_key()

    assert new_key != old_key
    assert cipher.primary_key_id == new_key
    assert cipher.needs_rotation(old_blob)
    assert cipher.decrypt(old_blob, context=CONTEXT) == b"before"
    new_blob = cipher.encrypt(b"after", context=CONTEXT)
    assert FieldCipher.key_id_of(new_blob) == new_key
    assert not cipher.needs_rotation(new_blob)


# -- keyring file ------------------------------------------------------------------------------


def test_keyring_round_trips_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    created = Keyring.generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    loaded = Keyring.load(path)

    assert loaded.primary_key_id == created.primary_key_id
    assert loaded.subject_token_key == created.subject_token_key
    assert loaded.data_key(loaded.primary_key_id) == created.data_key(created.primary_key_id)
    doc = json.loads(path.read_text())
    assert doc["format"] == "credgate-keyring/1"
    assert set(doc["data_keys"]) == {created.primary_key_id}


def test_add_key_persists_and_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    keyring = Keyring.generate(path)
    first = keyring.primary_key_id
    second = keyring.add_key()

    loaded = Keyring.load(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert loaded.primary_key_id == second
    assert loaded.key_ids == (first, second)
    assert loaded.data_key(first) == keyring.data_key(first)
    assert loaded.subject_token_key == keyring.subject_token_key
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]  # no temp files left


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    Keyring.generate(path)
    before = path.read_bytes()
    with pytest.raises(KeyringError, match="refusing to overwrite"):
        Keyring.generate(path)
    assert path.read_bytes() == before


def test_load_refuses_a_readable_by_others_file(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    Keyring.generate(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        Keyring.load(path)


@pytest.mark.parametrize(
    "content",
    [b"not json", b"{}", b'{"format": "credgate-keyring/1", "data_keys": {}}'],
)
def test_load_rejects_malformed_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keyring.json"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyringError):
        Keyring.load(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="cannot read"):
        Keyring.load(tmp_path / "absent.json")


def test_repr_never_shows_key_material(keyring: Keyring) -> None:
    key = keyring.data_key(keyring.primary_key_id)
    assert key.hex() not in repr(keyring)
    assert repr(key) not in repr(keyring)
