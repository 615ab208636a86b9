"""Reconciliation: contradictions recorded when they arise, cleared when resolved, listed by role.

The scripted providers push exactly what ``credgate mocks --push`` pushes: the registry keeps
the population's lagging view of the "contradicted_registry_lag" subject (the platform says
RESTORED, the registry still OBSERVATION), so the contradiction arises on ingest; pushing again
with ``--resolve-lag`` sends the registry's catch-up and it clears. A live query that finds a
contradiction records it the same way (its fresh facts change the index, and every change is
evaluated). Real gateways, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from credgate.adapters.mocks.population import Population
from credgate.adapters.mocks.providers import PLATFORM, REGISTRY, push
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as pb
from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as pb_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.cli import main as credgate
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import DevPki, mtls_channel
from tests.sync_process import toml_document
from tests.sync_support import ROGUE_PROVIDER, provider_channel
from tests.watch_support import CASE, JUDICIAL, feed_document, running_gateway

WAIT = 20.0
LAG = "contradicted_registry_lag"


async def list_open(
    gateway: RunningGateway, institution: str, *, source_id: str = "", page_size: int = 0
) -> list[pb.OpenContradiction]:
    """Every page of the listing, as ``institution``."""
    if institution.startswith("provider-"):
        channel = provider_channel(gateway.pki, gateway.port, institution)
    else:
        channel = mtls_channel(gateway.pki, gateway.port, institution)
    found: list[pb.OpenContradiction] = []
    async with channel:
        stub = pb_grpc.ReconciliationServiceStub(channel)
        token = ""
        while True:
            page = await stub.ListOpenContradictions(
                pb.ListOpenContradictionsRequest(
                    page_size=page_size, page_token=token, source_id=source_id
                ),
                timeout=10,
            )
            found += page.contradictions
            token = page.next_page_token
            if not token:
                return found


async def refused(gateway: RunningGateway, institution: str, **fields: object) -> tuple[str, str]:
    """The (code, reason) a listing by ``institution`` is refused with."""
    channel = (
        provider_channel(gateway.pki, gateway.port, institution)
        if institution.startswith("provider-")
        else mtls_channel(gateway.pki, gateway.port, institution)
    )
    request = pb.ListOpenContradictionsRequest(**fields)  # type: ignore[arg-type]
    async with channel:
        stub = pb_grpc.ReconciliationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListOpenContradictions(request, timeout=10)
    info = parse_error(caught.value).error_info
    return caught.value.code().name, info.reason if info else ""


async def eventually(
    gateway: RunningGateway, check: Callable[[list[pb.OpenContradiction]], bool]
) -> list[pb.OpenContradiction]:
    """The regulator's listing once ``check`` holds (the reconciler runs in the background)."""
    async with asyncio.timeout(WAIT):
        while True:
            listed = await list_open(gateway, "regulator-demo")
            if check(listed):
                return listed
            await asyncio.sleep(0.1)


async def reconcile_cli(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``credgate reconcile --config CONFIG ARGS`` (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    assert await asyncio.to_thread(credgate, ["reconcile", "--config", str(config), *args]) == 0
    return capsys.readouterr().out


async def test_the_registry_lag_appears_on_push_and_clears_with_the_catch_up(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    population: Population,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lagging = population.scenarios[LAG]
    number, name = lagging.person.identity_number, lagging.person.name
    document = feed_document(dev_pki, tmp_path, database_url)
    config = tmp_path / "gateway.toml"
    config.write_text(toml_document(document), encoding="utf-8")
    keyring = Keyring.load(tmp_path / "keyring.json")
    token = SubjectTokenizer(keyring.subject_token_key).token(number)
    pki_dir = dev_pki.paths.directory
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        await push(gateway.target, pki_dir, size=200, seed=population.seed, resolve_lag=False)
        # While the two providers' pushes interleave, other subjects may disagree for a moment
        # (one source already updated, the other not yet); once all is evaluated, only the
        # lagging subject's contradictions remain.
        listed = await eventually(
            gateway,
            lambda found: len(found) == 3 and {c.subject_token for c in found} == {token},
        )
        kinds = {c.contradiction.subject_matter for c in listed}
        assert kinds == {"repair_state", "case_stage", "default_after_exemption"}
        for item in listed:
            c = item.contradiction
            assert (c.dissenting_source_id, c.prevailing_source_id) == (
                REGISTRY.source_id, PLATFORM.source_id)  # fmt: skip
            assert REGISTRY.source_id in c.explanation
            assert item.first_seen_time.ToDatetime() <= item.last_seen_time.ToDatetime()
            assert item.age.ToTimedelta().total_seconds() >= 0
            raw = item.SerializeToString()
            assert number.encode() not in raw
            assert name.encode() not in raw
        repair = next(c for c in listed if c.contradiction.subject_matter == "repair_state")
        assert (repair.contradiction.dissenting_value, repair.contradiction.prevailing_value) == (
            "OBSERVATION", "RESTORED")  # fmt: skip

        # Who sees what: each provider its own source's (both are part of these), the
        # regulator all; pages of one are the same list.
        key = {_identity(c) for c in listed}
        for provider in (REGISTRY.institution_id, PLATFORM.institution_id):
            assert {_identity(c) for c in await list_open(gateway, provider)} == key
        paged = await list_open(gateway, "regulator-demo", page_size=1)
        assert [_identity(c) for c in paged] == [_identity(c) for c in listed]
        assert await list_open(gateway, "regulator-demo", source_id="bank-qianhai") == []
        assert await refused(gateway, REGISTRY.institution_id, source_id=PLATFORM.source_id) == (
            "PERMISSION_DENIED", "SOURCE_NOT_PERMITTED")  # fmt: skip
        assert await refused(gateway, ROGUE_PROVIDER) == (
            "PERMISSION_DENIED", "PROVIDER_NOT_REGISTERED")  # fmt: skip
        assert await refused(gateway, "bank-demo") == ("PERMISSION_DENIED", "ROLE_NOT_PERMITTED")
        assert await refused(gateway, "regulator-demo", page_token="forged") == (
            "INVALID_ARGUMENT", "INVALID_REQUEST")  # fmt: skip

        table = await reconcile_cli(config, capsys=capsys)
        assert token in table
        assert f"{REGISTRY.source_id} (OBSERVATION)" in table
        assert "3 open contradiction(s); to fix at: credit-registry 3" in table
        as_json = json.loads(await reconcile_cli(config, "--json", capsys=capsys))
        assert {c["subject_token"] for c in as_json["open_contradictions"]} == {token}
        assert number not in json.dumps(as_json, ensure_ascii=False)

        # credgate mocks --push --resolve-lag: the registry catches up; all three clear.
        await push(gateway.target, pki_dir, size=200, seed=population.seed, resolve_lag=True)
        await eventually(gateway, lambda found: found == [])
        assert "no open contradictions" in await reconcile_cli(config, capsys=capsys)


async def test_a_live_query_records_the_contradiction_it_finds(
    gateway: RunningGateway, population: Population
) -> None:
    """The fleet's registry lags too: the court's live query shows the contradiction, and
    the same query's fresh facts get it recorded for the operators."""
    number = population.scenarios[LAG].person.identity_number
    async with gateway.client("court-demo") as court:
        report = await court.get_repair_status(number, purpose=JUDICIAL, case_reference=CASE)
    assert vocab.STATUS_FLAG_CONTRADICTED in report.flags
    shown = {(c.subject_matter, c.dissenting_source_id) for c in report.contradictions}
    assert shown

    def recorded(found: list[pb.OpenContradiction]) -> set[tuple[str, str]]:
        return {(c.contradiction.subject_matter, c.contradiction.dissenting_source_id)
                for c in found if c.subject_token == report.subject_token}  # fmt: skip

    # The query stores each source's fresh facts in turn; once all are evaluated, the
    # recorded contradictions are the report's.
    await eventually(gateway, lambda found: recorded(found) == shown)


def _identity(item: pb.OpenContradiction) -> bytes:
    """What identifies a listed contradiction (its age and last sighting move on)."""
    copy = pb.OpenContradiction()
    copy.CopyFrom(item)
    copy.ClearField("age")
    copy.ClearField("last_seen_time")
    return copy.SerializeToString(deterministic=True)
