"""Key rotation for the workflow tables' ciphertexts.

An objection's and a repair application's personal details (``details_ciphertext``: the
identity number, the filer's own words) and a step's third-party words (``detail_ciphertext``,
NULL on most steps) are ``FieldCipher`` ciphertexts bound to their rows, like the fact index's.
They must move onto the new primary key before an old key can ever be retired, or every open
objection and application becomes unreadable — and with it the identity number the gateway
needs to ask the sources again. ``credgate keys rotate``/``reencrypt`` walk them with the same
walker as everything else (``gateway.storage.reencrypt``), reproducing the associated data the
writers used: ``details_context(table, workflow_id)`` (``Sealer.seal``) and
``step_context(workflow_id, step_index)`` (``add_steps``).
"""

from __future__ import annotations

from credgate.gateway.storage.reencrypt import EncryptedColumn
from credgate.gateway.workflows.models import (
    ObjectionRow,
    RepairApplicationRow,
    WorkflowStepRow,
    details_context,
    step_context,
)

WORKFLOW_COLUMNS = (
    EncryptedColumn(
        model=ObjectionRow,
        pk=(ObjectionRow.objection_id,),
        blob=ObjectionRow.details_ciphertext,
        key_id=ObjectionRow.key_id,
        context=lambda pk: details_context(ObjectionRow.__tablename__, pk[0]),
    ),
    EncryptedColumn(
        model=RepairApplicationRow,
        pk=(RepairApplicationRow.application_id,),
        blob=RepairApplicationRow.details_ciphertext,
        key_id=RepairApplicationRow.key_id,
        context=lambda pk: details_context(RepairApplicationRow.__tablename__, pk[0]),
    ),
    EncryptedColumn(
        model=WorkflowStepRow,
        pk=(WorkflowStepRow.workflow_id, WorkflowStepRow.step_index),
        blob=WorkflowStepRow.detail_ciphertext,
        key_id=WorkflowStepRow.key_id,
        context=lambda pk: step_context(pk[0], pk[1]),
    ),
)
"""The workflow tables' encrypted columns, as key rotation walks them."""
