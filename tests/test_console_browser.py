"""The console in a real headless Chromium through a real gateway with the mock sources
(docs/console.md). Screenshots go to ``$CREDGATE_TEST_ARTIFACTS`` (``build/test-artifacts/``).

Accesses are seeded with real queries first: a court's allowed judicial queries and a bank's
queries without consent, which the gateway denies — both land in the audit log the regulator
then reads through the console.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.client import CredgateError
from tests.fixtures.console import open_console, running_console, screenshot
from tests.fixtures.mocks import RunningGateway

CASE = "(2026)粤03执监1号"
SUBJECTS = ("observation", "restored_reorganization")


def _text(path: Path | str) -> str:
    return Path(path).read_text(encoding="utf-8")


async def _seed(gateway: RunningGateway, population: Population) -> int:
    """Two allowed court queries and two denied bank queries; the bank's denials."""
    people = [population.scenarios[name].person.identity_number for name in SUBJECTS]
    async with gateway.client("court-demo") as court:
        for number in people:
            await court.get_repair_status(
                number, purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION, case_reference=CASE
            )
    denied = 0
    async with gateway.client("bank-demo") as bank:
        for number in people:
            with pytest.raises(CredgateError):
                await bank.get_repair_status(
                    number, purpose=vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
                )
            denied += 1
    return denied


async def test_the_browser_opens_the_console_once_and_sees_the_reader(
    gateway: RunningGateway, browser: Any, tmp_path: Path
) -> None:
    async with running_console(
        gateway, "regulator-demo", log_key=tmp_path / "audit-log.pub"
    ) as console:
        page = await open_console(browser, console)
        assert page.url == console.base + "/"  # the token left the address bar
        assert "regulator-demo" in await page.text_content("body")
        await screenshot(page, "console-home")
        other = await (await browser.new_context()).new_page()
        response = await other.goto(console.url)  # the link, opened a second time
        assert response.status == 403


async def test_a_regulator_filters_the_log_and_sees_an_entry_verified(
    gateway: RunningGateway, population: Population, browser: Any, tmp_path: Path
) -> None:
    denied = await _seed(gateway, population)
    async with running_console(
        gateway, "regulator-demo", log_key=tmp_path / "audit-log.pub"
    ) as console:
        page = await open_console(browser, console)
        await page.click("nav >> text=Audit log")
        await page.fill("#audit-filter input[name=institution]", "bank-demo")
        await page.select_option("#audit-filter select[name=outcome]", "denied")
        await page.click("#audit-filter button[type=submit]")
        await page.wait_for_selector("#audit-entries")
        assert "institution=bank-demo" in page.url
        rows = page.locator("#audit-entries tbody tr")
        assert await rows.count() == denied
        for i in range(denied):
            cells = await rows.nth(i).locator("td").all_text_contents()
            assert cells[2] == "bank-demo"
            assert cells[5] == "denied"
        await screenshot(page, "console-audit-filtered")

        await rows.first.locator("a").click()
        await page.wait_for_selector("#inclusion")
        assert "✓ inclusion verified" in (await page.text_content("#inclusion") or "")
        assert await page.locator("#inclusion.verified").count() == 1
        assert "bank-demo" in (await page.text_content("#entry") or "")
        await screenshot(page, "console-audit-entry-verified")


async def test_an_entry_is_not_shown_verified_against_another_log_key(
    gateway: RunningGateway, population: Population, browser: Any, tmp_path: Path
) -> None:
    """The check is real: pinning some other log's key turns the same entry red."""
    from credgate.audit.note import NoteSigner

    await _seed(gateway, population)
    own = _text(tmp_path / "audit-log.pub").strip()
    stranger = NoteSigner.generate(own.split("+")[0]).verifier.to_vkey()
    async with running_console(gateway, "regulator-demo", log_key=stranger) as console:
        page = await open_console(browser, console)
        await page.goto(console.base + "/regulator/audit/0")
        assert await page.locator("#inclusion.failed").count() == 1
        assert "does not verify" in (await page.text_content("#inclusion-problem") or "")


async def test_exports_download_the_filtered_log_as_csv_and_json(
    gateway: RunningGateway, population: Population, browser: Any, tmp_path: Path
) -> None:
    denied = await _seed(gateway, population)
    async with running_console(
        gateway, "regulator-demo", log_key=tmp_path / "audit-log.pub"
    ) as console:
        page = await open_console(browser, console)
        await page.goto(console.base + "/regulator/audit?institution=bank-demo&outcome=denied")
        async with page.expect_download() as csv_download:
            await page.click("#export-csv")
        csv_path = await (await csv_download.value).path()
        async with page.expect_download() as json_download:
            await page.click("#export-json")
        json_path = await (await json_download.value).path()

    rows = list(csv.DictReader(io.StringIO(_text(csv_path))))
    assert len(rows) == denied
    assert {(r["institution_id"], r["outcome"]) for r in rows} == {("bank-demo", "denied")}
    exported = json.loads(_text(json_path))
    assert exported["filter"] == {"institution_id": "bank-demo", "outcome": "AUDIT_OUTCOME_DENIED"}
    assert [e["index"] for e in exported["entries"]] == [r["index"] for r in rows]
    assert {(e["institution_id"], e["outcome"]) for e in exported["entries"]} == {
        ("bank-demo", "AUDIT_OUTCOME_DENIED")
    }
    assert exported["checkpoint"]["tree_size"] > max(int(r["index"]) for r in rows)


async def test_the_log_pages_by_links_and_filters_by_subject_purpose_and_time(
    gateway: RunningGateway, population: Population, browser: Any, tmp_path: Path
) -> None:
    await _seed(gateway, population)
    async with running_console(
        gateway, "regulator-demo", log_key=tmp_path / "audit-log.pub"
    ) as console:
        page = await open_console(browser, console)
        await page.goto(console.base + "/regulator/audit?institution=court-demo&page_size=1")
        seen = []
        while True:
            rows = page.locator("#audit-entries tbody tr")
            assert await rows.count() == 1
            seen.append(await rows.first.get_attribute("data-index"))
            if not await page.locator("#next-page").count():
                break
            await page.click("#next-page")
        assert len(seen) == len(SUBJECTS) == len(set(seen))  # every court entry, once each

        assert await page.locator("#first-page").count() == 1
        await page.goto(console.base + "/regulator/audit?institution=court-demo")
        token = (await page.locator("#audit-entries tbody tr td").nth(7).text_content()) or ""
        await page.goto(console.base + "/regulator/audit")
        await page.fill("#audit-filter input[name=subject]", token)
        await page.select_option("#audit-filter select[name=purpose]", "judicial_investigation")
        await page.click("#audit-filter button[type=submit]")
        rows = page.locator("#audit-entries tbody tr")
        assert await rows.count() == 1
        cells = await rows.first.locator("td").all_text_contents()
        assert (cells[2], cells[4], cells[7]) == ("court-demo", "judicial_investigation", token)

        await page.fill("#audit-filter input[name=since]", "2099-01-01T00:00:00")
        await page.click("#audit-filter button[type=submit]")
        assert await page.locator("#no-entries").count() == 1


async def test_a_filter_the_gateway_refuses_shows_its_field_violations(
    gateway: RunningGateway, browser: Any, tmp_path: Path
) -> None:
    async with running_console(
        gateway, "regulator-demo", log_key=tmp_path / "audit-log.pub"
    ) as console:
        page = await open_console(browser, console)
        response = await page.goto(console.base + "/regulator/audit?subject=no%20spaces%21")
        assert response.status == 400
        error = await page.text_content("#error") or ""
        assert "INVALID_ARGUMENT" in error
        assert "subject_token" in error
        response = await page.goto(console.base + "/regulator/audit?since=yesterday")
        assert response.status == 400  # the console's own check: not even sent
        assert "not a date and time" in (await page.text_content("#message") or "")


async def test_the_labels_switch_to_chinese(
    gateway: RunningGateway, browser: Any, tmp_path: Path
) -> None:
    async with running_console(gateway, "regulator-demo") as console:
        page = await open_console(browser, console)
        await page.goto(console.base + "/regulator/checkpoints?lang=zh")
        assert await page.text_content("h1") == "检查点与见证人"
        await page.goto(console.base + "/regulator/audit")  # the choice is kept
        assert await page.text_content("h1") == "审计日志"
        await screenshot(page, "console-audit-zh")
