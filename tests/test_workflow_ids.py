"""Objection and application ids cannot be computed by anyone without the server's key.

They used to be ``sha256("objection|<filer>|<request id>")``: anyone knowing a filer's id and
guessing its request ids (``req-1``, ``req-2``...) could name its objections. Now they are an
HMAC under a keyring-derived key — still the same id for a retry of the same request (the
source receives the id as its reference before the row commits, and is idempotent per
reference), but 128 bits no outsider can compute.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from pathlib import Path

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent.register import new_consent_id
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.workflows.common import new_id, request_bound_id, workflow_id_key
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.subjects import Subject
from tests.test_audit_wiring import CASE
from tests.test_objections import _facts, _filing, _report, observed
from tests.workflow_support import WorkflowGateway, workflow_gateway

__all__ = ["observed", "workflow_gateway"]  # the fixtures, used by name

SHAPE = re.compile(r"(obj|app)_[a-z2-7]{26}")


def _unkeyed(kind: str, prefix: str, filer: str, request_id: str) -> str:
    """The old, public formula."""
    digest = hashlib.sha256(f"{kind}|{filer}|{request_id}".encode()).digest()
    return prefix + "_" + base64.b32encode(digest[:16]).decode().rstrip("=").lower()


def test_ids_are_128_bits_under_the_key_and_stable_for_a_retry() -> None:
    key = workflow_id_key(secrets.token_bytes(32))
    first = request_bound_id(key, "obj", "agency-demo", "req-1")
    assert SHAPE.fullmatch(first)
    assert request_bound_id(key, "obj", "agency-demo", "req-1") == first
    assert first != _unkeyed("objection", "obj", "agency-demo", "req-1")
    others = {
        request_bound_id(key, "obj", "agency-demo", "req-2"),
        request_bound_id(key, "obj", "lessor-demo", "req-1"),
        request_bound_id(key, "app", "agency-demo", "req-1")[4:],
        request_bound_id(workflow_id_key(secrets.token_bytes(32)), "obj", "agency-demo", "req-1"),
    }
    assert first not in others
    assert first[4:] not in others
    assert len(others) == 4


def test_fields_cannot_be_shifted_between_filer_and_request_id() -> None:
    key = workflow_id_key(secrets.token_bytes(32))
    assert request_bound_id(key, "obj", "a|b", "c") != request_bound_id(key, "obj", "a", "b|c")


async def test_a_filed_objection_id_is_not_the_public_formula_but_the_keyed_one(
    workflow_gateway: WorkflowGateway, observed: Subject, tmp_path: Path
) -> None:
    gw = workflow_gateway
    record_id = _facts(await _report(gw, observed), "credit-registry").cases[0]
    async with gw.subject_channel(observed) as channel:
        filed = (
            await gw.objections(channel).FileObjection(
                _filing(observed, "credit-registry", record_id.provenance.source_record_id)
            )
        ).objection
    assert SHAPE.fullmatch(filed.objection_id)
    filer = observed.institution_id
    assert filed.objection_id != _unkeyed("objection", "obj", filer, "req-1")
    # The gateway's keyring (tests.fixtures.mocks.gateway_document keeps it in tmp_path).
    key = workflow_id_key(Keyring.load(tmp_path / "keyring.json").subject_token_key)
    assert filed.objection_id == request_bound_id(key, "obj", filer, "req-1")


def test_the_other_ids_the_gateway_mints_are_random() -> None:
    """Consent ids and workflow step ids: 128 random bits each, never derived from anything."""
    consent_ids = {new_consent_id() for _ in range(1000)}
    assert len(consent_ids) == 1000
    assert all(re.fullmatch(r"cg_[a-z2-7]{26}", c) for c in consent_ids)
    step_ids = {new_id("step") for _ in range(1000)}
    assert len(step_ids) == 1000
    assert all(re.fullmatch(r"step_[a-z2-7]{26}", s) for s in step_ids)


async def test_report_ids_are_random_uuids(gateway: RunningGateway, population: Population) -> None:
    """Report ids (the engine) are uuid4, 122 random bits, like request ids (interceptor)."""
    number = population.scenarios["observation"].person.identity_number
    async with gateway.client("court-demo") as court:
        reports = [
            await court.get_repair_status(
                number, purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION, case_reference=CASE
            )
            for _ in range(2)
        ]
    ids = [uuid.UUID(r.report_id) for r in reports]
    assert [i.version for i in ids] == [4, 4]
    assert ids[0] != ids[1]
