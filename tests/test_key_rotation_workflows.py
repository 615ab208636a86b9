"""Key rotation covers the workflow tables: objections, repair applications and their steps.

Rows are written the way the workflows write them (``Sealer.seal`` with ``details_context``,
``add_steps`` sealing a creditor's words with ``step_context``), the keys are rotated, the old
key is then *removed*, and every row must still read through the stores' normal read paths —
the proof that the associated data was reproduced exactly and nothing was left behind.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import select

from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.config import config_from_mapping
from credgate.gateway.data_key_rotation import reencrypt_records, rotate_keys
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import DataKey, Keyring, UnknownKeyError
from credgate.gateway.storage.reencrypt import EncryptedColumn, reencrypt_column
from credgate.gateway.workflows import messages
from credgate.gateway.workflows.applications import ApplicationWorkflow
from credgate.gateway.workflows.common import Changes, Sealer, add_steps, new_id, request_digest
from credgate.gateway.workflows.models import (
    ObjectionRow,
    RepairApplicationRow,
    WorkflowStepRow,
    details_context,
    step_context,
)
from credgate.gateway.workflows.objection_store import ObjectionStore
from credgate.gateway.workflows.outbox import Outbox
from tests.fixtures.storage import make_identity_number

IDENTITY = make_identity_number("11010519491231002")
NOW = dt.datetime(2026, 11, 2, 2, 0, tzinfo=dt.UTC)
SUBJECT = wf.RESPONSIBLE_PARTY_SUBJECT
GATEWAY = wf.RESPONSIBLE_PARTY_GATEWAY


@dataclass(frozen=True)
class Seeded:
    objection_id: str
    objection_details: dict[str, str]
    application_id: str
    application_details: dict[str, str]
    notes: dict[str, list[str]]
    """Each workflow's step notes as its readers see them (sealed words opened)."""


async def _seed(database: Database, cipher: FieldCipher, token: str) -> Seeded:
    sealer = Sealer(cipher)
    objection_id, application_id = new_id("obj"), new_id("app")
    objection_details = {
        "identity_number": IDENTITY,
        "record_id": "case-7",
        "requested_correction": "the case stage shown is not the court's",
        "report_id": "",
    }
    application_details = {"identity_number": IDENTITY, "case_number": "(2024)京0105破12号"}
    objection = ObjectionRow(
        objection_id=objection_id,
        subject_token=token,
        filed_by="subject-a",
        request_id="req-1",
        request_digest=request_digest(token, "case-7"),
        source_id="disclosure-platform",
        category=1,
        aspect=1,
        state=1,
        filed_at=NOW,
        version=1,
        updated_at=NOW,
    )
    objection.details_ciphertext, objection.key_id = sealer.seal(
        objection_details, details_context("objections", objection_id)
    )
    application = RepairApplicationRow(
        application_id=application_id,
        subject_token=token,
        filed_by="subject-a",
        request_id="req-2",
        request_digest=request_digest(token, 1),
        kind=1,
        stage=1,
        outcome=0,
        eligibility=b"",
        filed_at=NOW,
        objection_count=1,
        version=1,
        updated_at=NOW,
    )
    application.details_ciphertext, application.key_id = sealer.seal(
        application_details, details_context("repair_applications", application_id)
    )
    async with database.write() as session:
        session.add_all([objection, application])
        await session.flush()
        # Plain steps (no sealed words: NULL ciphertexts the walker must skip) ...
        await add_steps(
            session,
            objection_id,
            NOW,
            [("OBJECTION_FILED", SUBJECT, "subject-a", "objection filed")],
        )
        await add_steps(
            session,
            application_id,
            NOW,
            [
                ("APPLICATION_FILED", SUBJECT, "subject-a", "application filed"),
                ("ELIGIBILITY_CONFIRMED", GATEWAY, "credgate", "sent for review"),
            ],
        )
        # ... and steps carrying a third party's own words, sealed at a non-zero index.
        await add_steps(
            session,
            objection_id,
            NOW,
            [("SOURCE_REPLIED", GATEWAY, "credgate", "the source replied")],
            detail="our records show the case closed",
            sealer=sealer,
        )
        await add_steps(
            session,
            application_id,
            NOW,
            [
                ("OBJECTION_LODGED", GATEWAY, "bank-x", "a creditor objected"),
                ("ANNOUNCED", GATEWAY, "credgate", "announcement running"),
            ],
            detail="the debt is still unpaid",
            sealer=sealer,
        )
    return Seeded(
        objection_id,
        objection_details,
        application_id,
        application_details,
        {
            objection_id: [
                "objection filed",
                "the source replied: our records show the case closed",
            ],
            application_id: [
                "application filed",
                "sent for review",
                "a creditor objected: the debt is still unpaid",
                "announcement running",
            ],
        },
    )


SEALED_ROWS = 4
"""Ciphertexts ``_seed`` writes: two sets of details and two steps' words."""


def _only(keyring: Keyring, key_id: str) -> Keyring:
    """A keyring holding just ``key_id`` (the old keys retired)."""
    return Keyring(
        subject_token_key=keyring.subject_token_key,
        data_keys={key_id: DataKey(key_id, keyring.data_key(key_id), NOW)},
        primary_key_id=key_id,
    )


async def _read_all(database: Database, cipher: FieldCipher, seeded: Seeded) -> None:
    """Every workflow row, through the stores' read paths, equals what was written."""
    sealer = Sealer(cipher)
    objection = await ObjectionStore(database, sealer).get(seeded.objection_id)
    assert objection is not None
    assert objection.details == seeded.objection_details
    applications = ApplicationWorkflow(
        database,
        sealer,
        cast(Any, None),  # get() asks no source and counts no days
        {},
        cast(Any, None),
        Changes(),
        clock=lambda: NOW,
        id_key=b"k" * 32,
        outbox=Outbox(database),
    )
    application = await applications.get(seeded.application_id)
    assert application is not None
    assert application.details == seeded.application_details
    for view, workflow_id in (
        (objection, seeded.objection_id),
        (application, seeded.application_id),
    ):
        notes = [step.note for step in messages.steps(view.steps, sealer)]
        assert notes == seeded.notes[workflow_id]


async def _key_ids(database: Database) -> list[tuple[str | None, bytes | None]]:
    async with database.session() as session:
        rows = [
            *(await session.execute(select(ObjectionRow.key_id, ObjectionRow.details_ciphertext))),
            *(
                await session.execute(
                    select(RepairApplicationRow.key_id, RepairApplicationRow.details_ciphertext)
                )
            ),
            *(
                await session.execute(
                    select(WorkflowStepRow.key_id, WorkflowStepRow.detail_ciphertext)
                )
            ),
        ]
    return [(key_id, blob) for key_id, blob in rows]


async def test_rotation_moves_every_workflow_row_and_the_old_key_can_go(
    database: Database,
    migrated_database_url: str,
    keyring: Keyring,
    subject_tokenizer: SubjectTokenizer,
    tmp_path: Path,
) -> None:
    seeded = await _seed(database, FieldCipher(keyring), subject_tokenizer.token(IDENTITY))
    old_key = keyring.primary_key_id
    assert keyring.path is not None
    config = config_from_mapping(
        {
            "storage": {"url": migrated_database_url, "data_dir": str(tmp_path)},
            "keys": {"keyring": str(keyring.path)},
        },
        base_dir=tmp_path,
        environ={},
    )

    seen: list[tuple[int, int]] = []
    new_key, moved = await rotate_keys(
        config, progress=lambda done, total: seen.append((done, total))
    )
    assert moved == SEALED_ROWS
    assert seen[-1] == (SEALED_ROWS, SEALED_ROWS)  # the progress total counts workflow rows
    assert new_key != old_key
    assert await reencrypt_records(config) == 0  # nothing left under an old key

    rows = await _key_ids(database)
    assert len(rows) == 2 + 6  # two sets of details, six steps
    sealed = [(key_id, blob) for key_id, blob in rows if blob is not None]
    assert len(sealed) == SEALED_ROWS
    for key_id, blob in sealed:
        assert key_id == new_key == FieldCipher.key_id_of(blob)
    assert all(key_id is None for key_id, blob in rows if blob is None)
    assert old_key not in {key_id for key_id, _ in rows}

    # The old key retired: every row still reads, through the normal read paths.
    await _read_all(database, FieldCipher(_only(Keyring.load(keyring.path), new_key)), seeded)


async def test_without_rotation_the_old_key_is_still_needed(
    database: Database, keyring: Keyring, subject_tokenizer: SubjectTokenizer
) -> None:
    """The check above is not vacuous: before re-encryption, the new key alone cannot read."""
    seeded = await _seed(database, FieldCipher(keyring), subject_tokenizer.token(IDENTITY))
    new_key = keyring.add_key()
    await _read_all(database, FieldCipher(keyring), seeded)  # both keys: fine
    with pytest.raises(UnknownKeyError):
        await _read_all(database, FieldCipher(_only(keyring, new_key)), seeded)


async def test_the_walker_finds_old_ciphertexts_by_envelope_without_a_key_id_column(
    database: Database, keyring: Keyring, subject_tokenizer: SubjectTokenizer
) -> None:
    """A table without a key-id column is scanned in primary-key order and each envelope's
    key id read; NULL ciphertexts are skipped, batches of one page correctly."""
    seeded = await _seed(database, FieldCipher(keyring), subject_tokenizer.token(IDENTITY))
    new_key = keyring.add_key()
    cipher = FieldCipher(keyring)
    steps = EncryptedColumn(
        model=WorkflowStepRow,
        pk=(WorkflowStepRow.workflow_id, WorkflowStepRow.step_index),
        blob=WorkflowStepRow.detail_ciphertext,
        context=lambda pk: step_context(pk[0], pk[1]),
    )
    examined: list[int] = []
    assert await reencrypt_column(database, cipher, steps, batch_size=1, progress=examined.append)
    assert sum(examined) == 2  # the two sealed steps; the NULL ones are not even selected
    assert await reencrypt_column(database, cipher, steps, batch_size=1) == 0

    async with database.session() as session:
        blobs = (
            await session.scalars(
                select(WorkflowStepRow.detail_ciphertext).where(
                    WorkflowStepRow.detail_ciphertext.is_not(None)
                )
            )
        ).all()
    assert [FieldCipher.key_id_of(blob) for blob in blobs if blob] == [new_key, new_key]
    sealer = Sealer(FieldCipher(_only(keyring, new_key)))
    async with database.session() as session:
        rows = (await session.scalars(select(WorkflowStepRow))).all()
    words = [messages.steps([row], sealer)[0].note for row in rows if row.detail_ciphertext]
    assert sorted(words) == sorted(
        note for notes in seeded.notes.values() for note in notes if ": " in note
    )
