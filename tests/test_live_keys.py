"""A running gateway follows its key files: rotations are taken up live, bad files never are.

``LiveKeyring`` and ``ReportSigner`` over real files and real crypto, on a clock the test
moves: a key added to the file is read with at once when a ciphertext names it, a promoted key
is written with once the check interval has passed, and a torn, malformed, world-readable or
foreign keyring file — or one that vanished — changes nothing and is logged at ERROR.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from credgate.api.credit_repair.v1 import report_pb2
from credgate.core.secret_files import write_secret
from credgate.gateway.config import ConfigError, config_from_mapping
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring, UnknownKeyError
from credgate.gateway.protection.live_keyring import LiveKeyring
from credgate.gateway.report_signing import index_public_keys, verify_signed_report
from credgate.gateway.report_signing_keys import (
    FILE_NAME,
    ReportSigner,
    load_signing_keys,
    rotate_signing_key,
)

CONTEXT = b"test|row-1"
CHECK = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def pass_check(self) -> None:
        self.now += CHECK + 0.001


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """The replica's own copy of the keyring."""
    Keyring.generate(tmp_path / "keyring.json")
    return tmp_path / "keyring.json"


def _live(path: Path, clock: Clock) -> LiveKeyring:
    return LiveKeyring(path, check_seconds=CHECK, clock=clock)


def _operator_copy(path: Path) -> Keyring:
    """The operator's keyring (another host's file), copied from the replica's."""
    other = path.with_name("operator-keyring.json")
    other.write_bytes(path.read_bytes())
    other.chmod(0o600)
    return Keyring.load(other)


def _distribute(operator: Keyring, path: Path) -> None:
    """Copy the operator's file over the replica's, atomically (write then rename)."""
    assert operator.path is not None
    write_secret(path, operator.path.read_bytes(), exclusive=False)


def test_a_key_added_elsewhere_is_read_with_on_first_sight_and_written_with_after_promote(
    path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="credgate.gateway.protection")
    live = _live(path, clock)
    cipher = FieldCipher(live)
    first = live.current().primary_key_id
    old_blob = cipher.encrypt(b"before", context=CONTEXT)

    operator = _operator_copy(path)
    new = operator.add_key(primary=True)  # another replica writes under it at once...
    other_replica = FieldCipher(operator)
    written_elsewhere = other_replica.encrypt(b"elsewhere", context=CONTEXT)
    _distribute(operator, path)

    # ... and this replica reads it without waiting for its check interval (no clock moved).
    assert cipher.decrypt(written_elsewhere, context=CONTEXT) == b"elsewhere"
    assert cipher.decrypt(old_blob, context=CONTEXT) == b"before"
    # That read took up the whole new file, primary included.
    assert FieldCipher.key_id_of(cipher.encrypt(b"x", context=CONTEXT)) == new
    assert "keyring reloaded: primary data key " + new in caplog.text

    # A promotion is taken up on the first use after the check interval, without a read.
    operator.set_primary(first)
    _distribute(operator, path)
    assert FieldCipher.key_id_of(cipher.encrypt(b"x", context=CONTEXT)) == new  # not yet
    clock.pass_check()
    assert FieldCipher.key_id_of(cipher.encrypt(b"x", context=CONTEXT)) == first


def test_a_key_nobody_has_is_unknown_and_the_file_is_read_once_per_miss(
    path: Path, clock: Clock
) -> None:
    live = _live(path, clock)
    cipher = FieldCipher(live)
    stranger = FieldCipher(Keyring.generate(path.with_name("stranger.json")))
    blob = stranger.encrypt(b"x", context=CONTEXT)
    for _ in range(3):
        with pytest.raises(UnknownKeyError) as caught:
            cipher.decrypt(blob, context=CONTEXT)
        assert caught.value.transient  # the gRPC layer says UNAVAILABLE: retry


@pytest.mark.parametrize(
    "damage",
    ["torn", "empty", "not_json", "no_primary", "bad_base64", "world_readable", "foreign"],
)
def test_a_bad_keyring_file_changes_nothing_and_is_logged_once(
    path: Path, clock: Clock, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    live = _live(path, clock)
    cipher = FieldCipher(live)
    blob = cipher.encrypt(b"kept", context=CONTEXT)
    primary = live.current().primary_key_id
    operator = _operator_copy(path)
    operator.add_key(primary=True)
    assert operator.path is not None
    good = operator.path.read_bytes()
    doc = json.loads(good)
    if damage == "torn":  # a `cp` caught half-way
        path.write_bytes(good[: len(good) // 2])
    elif damage == "empty":  # ... or just after it truncated the file
        path.write_bytes(b"")
    elif damage == "not_json":
        path.write_bytes(b"\x00\xff garbage")
    elif damage == "no_primary":
        doc["primary_key_id"] = "dek_000000000000"
        path.write_text(json.dumps(doc))
    elif damage == "bad_base64":
        next(iter(doc["data_keys"].values()))["key"] = "!!!"
        path.write_text(json.dumps(doc))
    elif damage == "world_readable":
        path.write_bytes(good)
        path.chmod(0o644)
    elif damage == "foreign":  # another deployment's keyring: every token would stop matching
        foreign = Keyring.generate(path.with_name("foreign.json"))
        assert foreign.path is not None
        path.write_bytes(foreign.path.read_bytes())
    caplog.set_level(logging.ERROR, logger="credgate.gateway.protection")
    for _ in range(3):
        clock.pass_check()
        assert live.current().primary_key_id == primary
        assert cipher.decrypt(blob, context=CONTEXT) == b"kept"
        assert FieldCipher.key_id_of(cipher.encrypt(b"x", context=CONTEXT)) == primary
    refusals = [r for r in caplog.records if "was NOT loaded" in r.getMessage()]
    assert len(refusals) == 1, caplog.text  # loudly, but once per bad content
    assert refusals[0].levelno == logging.ERROR

    # Once the file is whole and valid again, it is taken up.
    path.chmod(0o600)
    write_secret(path, good, exclusive=False)
    clock.pass_check()
    assert live.current().primary_key_id != primary
    assert cipher.decrypt(blob, context=CONTEXT) == b"kept"


def test_a_vanished_keyring_file_keeps_the_loaded_keys(path: Path, clock: Clock) -> None:
    live = _live(path, clock)
    cipher = FieldCipher(live)
    blob = cipher.encrypt(b"kept", context=CONTEXT)
    os.unlink(path)
    clock.pass_check()
    assert cipher.decrypt(blob, context=CONTEXT) == b"kept"


def test_a_keyring_that_drops_a_key_is_taken_up_and_says_which(
    path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Retiring a key after `keys reencrypt` is the operator's call; it is logged loudly."""
    caplog.set_level(logging.WARNING, logger="credgate.gateway.protection")
    live = _live(path, clock)
    cipher = FieldCipher(live)
    old = live.current().primary_key_id
    old_blob = cipher.encrypt(b"old", context=CONTEXT)
    operator = _operator_copy(path)
    operator.add_key(primary=True)
    retired = Keyring(
        subject_token_key=operator.subject_token_key,
        data_keys={k: v for k, v in operator._data_keys.items() if k != old},
        primary_key_id=operator.primary_key_id,
    )
    write_secret(path, retired._to_json(), exclusive=False)
    clock.pass_check()
    assert live.current().primary_key_id == operator.primary_key_id
    with pytest.raises(UnknownKeyError):
        cipher.decrypt(old_blob, context=CONTEXT)
    assert f"without data keys {old}" in caplog.text


def _report() -> report_pb2.RepairStatusReport:
    return report_pb2.RepairStatusReport(report_id="r-1", subject_token="st_x")


def test_report_signing_takes_up_a_rotated_key_without_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="credgate.gateway.report_signing_keys")
    path = tmp_path / FILE_NAME
    signer = ReportSigner(path, check_seconds=0.01)
    digest = b"\x01" * 32
    before = signer.sign(_report(), digest)
    new = rotate_signing_key(path)
    # Polled with a generous bound: the interval is 10 ms of the real monotonic clock.
    for _ in range(500):
        signed = signer.sign(_report(), digest)
        if signed.key_id == new:
            break
        time.sleep(0.01)
    assert signed.key_id == new != before.key_id
    published = index_public_keys(k.public_key for k in load_signing_keys(path).published)
    for item in (before, signed):  # both verify against what ListSigningKeys serves
        assert verify_signed_report(item, published, expected_request_digest=digest)
    assert f"reports are now signed with {new}" in caplog.text

    # A torn signing-key file: signing goes on with the key it had.
    good = path.read_bytes()
    path.write_bytes(good[:40])
    caplog.set_level(logging.ERROR, logger="credgate.gateway.protection")
    time.sleep(0.05)
    assert signer.sign(_report(), digest).key_id == new
    assert "was NOT loaded" in caplog.text


@pytest.mark.parametrize("value", [0, -1.0, 7200.0])
def test_reload_seconds_must_be_a_sensible_interval(tmp_path: Path, value: float) -> None:
    with pytest.raises(ConfigError, match=r"keys\.reload_seconds"):
        config_from_mapping({"keys": {"reload_seconds": value}}, base_dir=tmp_path, environ={})


def test_reload_seconds_defaults_to_one_second(tmp_path: Path) -> None:
    config = config_from_mapping({}, base_dir=tmp_path, environ={})
    assert config.keys.reload_seconds == 1.0
    assert config.keys.keyring == tmp_path / "data" / "keyring"
