"""Offline export verification checks what people read, not only the hashed bytes.

An export line carries an entry twice: ``entry_bytes`` (hashed into the signed root) and
``entry`` (decoded, for people and spreadsheets). Before, only the bytes were checked, so an
edited readable ``entry`` still verified OK. Every field of the readable form is attacked here —
edited, removed, added, duplicated — and each must fail and name the entry. The entry used sets
*every* ``AuditEntry`` field, generically from the descriptor, so a field added to the proto
later is attacked too without touching this file.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.audit.checkpoint import Checkpoint, sign_checkpoint
from credgate.audit.entry import entry_bytes
from credgate.audit.hashing import leaf_hash
from credgate.audit.note import NoteSigner
from credgate.audit.offline import check_export, decoded_form, export_lines
from credgate.audit.tree import merkle_root
from tests.test_audit_log import BASE_TIME, ORIGIN, make_entry

SIGNER = NoteSigner.generate(ORIGIN)
TARGET = 2
"""The index of the fully populated entry the tests edit."""


def every_field_set(index: int) -> audit_pb2.AuditEntry:
    """An entry with every field of ``AuditEntry`` set to a non-default value."""
    entry = audit_pb2.AuditEntry()
    for field in entry.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(entry, field.name).FromDatetime(BASE_TIME + dt.timedelta(seconds=index))
        elif field.type == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None
            values = [v.number for v in field.enum_type.values if v.number != 0][:2]
            if repeated:
                getattr(entry, field.name).extend(values)
            else:
                setattr(entry, field.name, values[-1])
        elif field.type == FieldDescriptor.TYPE_BOOL:
            setattr(entry, field.name, True)
        elif field.type == FieldDescriptor.TYPE_STRING:
            if repeated:
                getattr(entry, field.name).extend([f"{field.name}-a", f"{field.name}-b"])
            else:
                setattr(entry, field.name, f"{field.name}-value")
        elif field.name != "index":
            setattr(entry, field.name, 7)
    entry.index = index
    return entry


def make_records() -> list[audit_pb2.AuditRecord]:
    entries = [make_entry(i) for i in range(5)]
    entries[TARGET] = every_field_set(TARGET)
    records = []
    for i, entry in enumerate(entries):
        entry.index = i
        records.append(audit_pb2.AuditRecord(entry=entry, entry_bytes=entry_bytes(entry)))
    return records


def export() -> list[str]:
    records = make_records()
    root = merkle_root([leaf_hash(r.entry_bytes) for r in records])
    signed = sign_checkpoint(Checkpoint(ORIGIN, len(records), root, 1_770_000_000), SIGNER)
    return list(export_lines(signed, records))


def edited(lines: list[str], line: int, change: Callable[[dict[str, Any]], None]) -> list[str]:
    copy = list(lines)
    item = json.loads(copy[line])
    change(item)
    copy[line] = json.dumps(item, ensure_ascii=False)
    return copy


def assert_fails_naming_target(lines: list[str], what: str = "") -> None:
    check = check_export(lines, [SIGNER.verifier])
    assert not check.ok, what
    named = [p for p in check.problems if p.startswith(f"entry {TARGET} (line {TARGET + 2})")]
    assert named, (what, check.problems)


def other_value(value: Any) -> Any:
    """A different JSON value of the same kind (what an editor would type in)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return value[::-1] if value[::-1] != value else value + "0"
    if isinstance(value, list):
        return value[::-1] if value[::-1] != value else value[:-1]
    if isinstance(value, int | float):
        return value + 1
    raise AssertionError(f"unexpected JSON value {type(value).__name__}")


FIELDS = sorted(decoded_form(every_field_set(TARGET)))


def test_the_attacked_entry_shows_every_field() -> None:
    """Otherwise the per-field attacks below would skip a field silently."""
    assert sorted(f.name for f in audit_pb2.AuditEntry.DESCRIPTOR.fields) == FIELDS


def test_an_untouched_export_verifies() -> None:
    check = check_export(export(), [SIGNER.verifier])
    assert check.ok, check.problems
    assert check.entries == 5


@pytest.mark.parametrize("name", FIELDS)
def test_editing_a_readable_field_fails_and_names_the_entry(name: str) -> None:
    def change(item: dict[str, Any]) -> None:
        item["entry"][name] = other_value(item["entry"][name])

    lines = edited(export(), TARGET + 1, change)
    assert_fails_naming_target(lines, name)
    problem = next(p for p in check_export(lines, [SIGNER.verifier]).problems if "entry 2" in p)
    assert problem.endswith(f"in {name}")


@pytest.mark.parametrize("name", FIELDS)
def test_removing_a_readable_field_fails_and_names_the_entry(name: str) -> None:
    assert_fails_naming_target(
        edited(export(), TARGET + 1, lambda item: item["entry"].pop(name)), name
    )


def test_plausible_edits_fail_too() -> None:
    """The edits a forger would make: a denial shown as allowed, another institution or subject,
    an enum by number instead of name (same meaning, different text: still not what was hashed)."""
    lines = export()
    denied = json.loads(lines[1 + 1])  # make_entry(1) is allowed; flip it the other way
    assert denied["entry"]["outcome"] == "AUDIT_OUTCOME_ALLOWED"
    for target, key, value in (
        (1, "outcome", "AUDIT_OUTCOME_DENIED"),
        (1, "reason", "CONSENT_MISSING"),
        (1, "institution_id", "bank-other"),
        (1, "subject_token", make_entry(4).subject_token),
        (1, "outcome", 1),
        (1, "chargeable", True),  # a field the hashed entry leaves at its default
        (1, "index", "1"),  # unchanged value: must still verify (control)
    ):

        def change(item: dict[str, Any], key: str = key, value: Any = value) -> None:
            item["entry"][key] = value

        check = check_export(edited(lines, target + 1, change), [SIGNER.verifier])
        if key == "index":
            assert check.ok, check.problems
        else:
            assert not check.ok, key
            assert any(p.startswith(f"entry {target} ") for p in check.problems), key


def test_a_readable_entry_that_is_not_an_object_fails() -> None:
    def change(item: dict[str, Any]) -> None:
        item["entry"] = "see entry_bytes"

    assert_fails_naming_target(edited(export(), TARGET + 1, change))


def test_keys_beside_the_three_fail() -> None:
    def change(item: dict[str, Any]) -> None:
        item["note"] = "reviewed, nothing unusual"

    assert_fails_naming_target(edited(export(), TARGET + 1, change))


def test_a_key_given_twice_fails() -> None:
    """JSON readers disagree on which of two equal keys counts; a person may read the first,
    ``json.loads`` keeps the last. Either order, and inside the entry too, fails."""
    body = export()[TARGET + 1]
    forged = dict(json.loads(body)["entry"], reason="FORGED")
    forged_json = json.dumps(forged, ensure_ascii=False)
    true_json = json.dumps(json.loads(body)["entry"], ensure_ascii=False)
    for line in (
        '{"entry": ' + forged_json + ", " + body[1:],  # forged first, the true one last
        body[:-1] + ', "entry": ' + forged_json + "}",  # the true one first, forged last
        body.replace(true_json[:-1], true_json[:-1] + ', "reason": "FORGED"', 1)[:-1]
        + "}",  # a reason given twice inside the entry
    ):
        lines = export()
        lines[TARGET + 1] = line
        check = check_export(lines, [SIGNER.verifier])
        assert not check.ok, line[:60]


def test_more_than_the_note_on_the_checkpoint_line_fails() -> None:
    lines = export()
    header = json.loads(lines[0])
    header["tree_size"] = 99
    lines[0] = json.dumps(header)
    check = check_export(lines, [SIGNER.verifier])
    assert not check.ok
    assert check.problems[0].startswith("checkpoint:")


def test_the_hashed_bytes_are_still_checked() -> None:
    def change(item: dict[str, Any]) -> None:
        data = bytearray(base64.b64decode(item["entry_bytes"]))
        data[-1] ^= 1
        item["entry_bytes"] = base64.b64encode(bytes(data)).decode()

    check = check_export(edited(export(), TARGET + 1, change), [SIGNER.verifier])
    assert not check.ok
