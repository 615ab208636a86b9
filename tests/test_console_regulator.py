"""Regulator mode beyond the audit log, in headless Chromium through a real gateway: the
checkpoints page with its witness alerts, overdue objections with their deadlines, open
contradictions with their age — and a certificate of another role kept out of all of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as rec_pb2
from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as rec_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.store_models import AuditWitnessStatusRow
from tests.fixtures.console import open_console, running_console, screenshot
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.subjects import enrol_subject, subject_client
from tests.workflow_support import WorkflowGateway, workflow_gateway

__all__ = ["workflow_gateway"]  # the fixture, used by name

CASE = "(2026)粤03执监1号"


async def test_the_checkpoints_page_alerts_on_a_refusing_and_a_lagging_witness(
    gateway: RunningGateway, browser: Any, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    async with gateway.gateway.database.write() as session:  # as the submitter records them
        session.add_all(
            [
                AuditWitnessStatusRow(
                    witness_name="witness.test/refuser",
                    url="https://refuser.test",
                    cosigned_size=1,
                    submitted_size=3,
                    outcome="refused",
                    detail="409: checkpoint is not consistent",
                    attempted_at=now,
                    cosigned_at=now - dt.timedelta(days=1),
                ),
                AuditWitnessStatusRow(
                    witness_name="witness.test/sleepy",
                    url="https://sleepy.test",
                    cosigned_size=0,
                    submitted_size=3,
                    outcome="cosigned",
                    detail="",
                    attempted_at=now,
                    cosigned_at=now - dt.timedelta(hours=2),
                ),
            ]
        )
    async with gateway.client("court-demo") as court:  # some entries to checkpoint
        await court.get_repair_status(
            "44030519780512031X", purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION, case_reference=CASE
        )
    async with running_console(
        gateway, "regulator-demo", log_key=tmp_path / "audit-log.pub"
    ) as console:
        page = await open_console(browser, console)
        await page.click("nav >> text=Checkpoints")
        await page.wait_for_selector("#checkpoint-signature.verified")
        alerts = await page.text_content("#witness-alerts") or ""
        assert "witness.test/refuser" in alerts
        assert "REFUSED" in alerts
        assert "witness.test/sleepy" in alerts
        assert "BEHIND" in alerts
        assert await page.locator("#witnesses tr.alerting").count() == 2
        await screenshot(page, "console-checkpoints-witness-alerts")


async def test_overdue_objections_show_with_their_deadlines(
    workflow_gateway: WorkflowGateway, population: Population, browser: Any
) -> None:
    gw = workflow_gateway
    subject = await enrol_subject(
        gw.running, population.scenarios["observation"].person.identity_number
    )
    gw.clock.set(2026, 9, 24)
    async with subject_client(gw.running, subject) as me:
        report = await me.get_repair_status(
            subject.identity_number, purpose=vocab.PURPOSE_SELF_INQUIRY
        )
    platform = next(s for s in report.sources if s.source_id == "disclosure-platform")
    async with gw.subject_channel(subject) as channel:
        objection = (
            await gw.objections(channel).FileObjection(
                obj_pb2.FileObjectionRequest(
                    request_id="console-1",
                    identity_number=subject.identity_number,
                    fact=obj_pb2.FactReference(
                        source_id="disclosure-platform",
                        source_record_id=platform.cases[0].provenance.source_record_id,
                    ),
                    aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
                    requested_correction="the case stage shown is not the court's",
                )
            )
        ).objection
    gw.clock.set(2026, 10, 16, 0)  # past the 10th working day (docs/workflows.md)
    async with running_console(gw.running, "regulator-demo") as console:
        page = await open_console(browser, console)
        await page.click("nav >> text=Overdue objections")
        row = page.locator(f"tr[data-objection='{objection.objection_id}']")
        await row.wait_for()
        cells = await row.locator("td").all_text_contents()
        assert cells[2] == "disclosure-platform"
        assert "2026-10-15" in cells[7]  # the deadline that ran out
        assert "10 working days" in cells[7]
        assert "(overdue)" in cells[9]
        await screenshot(page, "console-overdue-objections")


async def test_open_contradictions_show_with_their_age(
    gateway: RunningGateway, population: Population, browser: Any
) -> None:
    lagging = population.scenarios["contradicted_registry_lag"].person.identity_number
    async with gateway.client("court-demo") as court:
        await court.get_repair_status(
            lagging, purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION, case_reference=CASE
        )
    channel = gateway.client("regulator-demo")._channel
    for _ in range(200):  # the reconciler finds it in the background
        listed = await rec_grpc.ReconciliationServiceStub(channel).ListOpenContradictions(
            rec_pb2.ListOpenContradictionsRequest()
        )
        if listed.contradictions:
            break
        await asyncio.sleep(0.1)
    await channel.close()
    assert listed.contradictions, "the reconciler found no contradiction"
    async with running_console(gateway, "regulator-demo") as console:
        page = await open_console(browser, console)
        await page.click("nav >> text=Contradictions")
        rows = page.locator("#open-contradictions tbody tr")
        assert await rows.count() == len(listed.contradictions)
        cells = await rows.first.locator("td").all_text_contents()
        assert cells[0] == listed.contradictions[0].subject_token
        assert cells[6].strip()[-1] in "smhd"  # an age such as "3s" or "2m 5s"
        await screenshot(page, "console-open-contradictions")


async def test_a_certificate_of_another_role_gets_no_regulator_page(
    gateway: RunningGateway, browser: Any
) -> None:
    async with running_console(gateway, "bank-demo") as console:
        page = await open_console(browser, console)
        assert await page.locator("#other-role").count() == 1
        assert await page.locator("nav a").count() == 1  # home only
        for path in ("/regulator/audit", "/regulator/checkpoints", "/regulator/audit/export.csv"):
            response = await page.goto(console.base + path)
            assert response.status == 403, path
            assert "another kind of certificate" in (await page.text_content("#message") or "")
