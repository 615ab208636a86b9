"""The console's subject mode in a real headless Chromium, through a real gateway with the
mock sources (issue #17): the subject sees the access a bank made a moment earlier, withdraws
that bank's grant with a button (signed in the console with the subject's key file), after
which the bank's next query is refused; sees their objection with its deadline; reads the pages
in Chinese with ``?lang=zh``; downloads a certificate that ``credgate verify-certificate``
accepts. Screenshots go to ``$CREDGATE_TEST_ARTIFACTS`` (``build/test-artifacts/``)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import zxingcpp

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.client import CredgateError
from credgate.gateway.pki import institution_paths
from credgate.gateway.subject_key_file import write_subject_key
from tests.fixtures.console import RunningConsole, open_console, running_console, screenshot
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.subjects import (
    Subject,
    enrol_subject,
    issue_subject_certificate,
    record_grant,
)
from tests.png_pixels import grey_pixels
from tests.test_consent_cli import credgate
from tests.workflow_support import WorkflowGateway, workflow_gateway

__all__ = ["workflow_gateway"]  # the fixture, used by name

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR


def subject_console(
    gateway: RunningGateway, subject: Subject, key_file: Path | None
) -> AbstractAsyncContextManager[RunningConsole]:
    """A console with the subject's own certificate and (``--subject-key``) key file."""
    paths = institution_paths(gateway.pki.paths.directory, subject.institution_id)
    if not paths.cert.exists():
        issue_subject_certificate(gateway, subject)
    return running_console(gateway, "", certificate=paths, subject_key=key_file)


async def _bank_query(gateway: RunningGateway, number: str, consent_id: str) -> str:
    async with gateway.client("bank-demo") as bank:
        try:
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=consent_id)
        except CredgateError as error:
            refused = error
        else:
            return "ALLOWED"
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    return refused.reason


async def test_a_subject_sees_a_banks_access_withdraws_its_grant_and_the_bank_is_refused(
    workflow_gateway: WorkflowGateway, population: Population, browser: Any, tmp_path: Path
) -> None:
    gateway = workflow_gateway.running
    number = population.scenarios["restored_reorganization"].person.identity_number
    subject = await enrol_subject(gateway, number)
    key_file = tmp_path / "consent-key.pem"
    write_subject_key(key_file, subject.key)
    grant = await record_grant(
        gateway, subject, grantee="bank-demo", purposes=[REVIEW], categories=[REPAIR]
    )
    assert await _bank_query(gateway, number, grant.consent_id) == "ALLOWED"

    async with subject_console(gateway, subject, key_file) as console:
        page = await open_console(browser, console)
        await page.click("text=Accesses")
        assert page.url == console.base + "/subject/accesses"
        bank_rows = page.locator('tr.access[data-institution="bank-demo"][data-outcome="allowed"]')
        assert await bank_rows.count() >= 1
        first = page.locator("tr.access").first
        assert await first.locator("td.institution").text_content() == "bank-demo"
        assert await first.locator("td.purpose").text_content() == "Credit application review"
        await screenshot(page, "subject-accesses")

        await page.goto(console.base + "/subject/grants")
        row = page.locator(f"#grant-{grant.consent_id}")
        assert await row.get_attribute("data-state") == "CONSENT_STATE_ACTIVE"
        html = await page.content()
        assert "PRIVATE KEY" not in html  # the key is used, never shown
        async with page.expect_navigation():
            await row.locator("button.withdraw").click()
        assert page.url.startswith(console.base + "/subject/grants?done=withdraw")
        assert await page.locator("#done").get_attribute("data-grant") == grant.consent_id
        row = page.locator(f"#grant-{grant.consent_id}")
        assert await row.get_attribute("data-state") == "CONSENT_STATE_REVOKED"
        assert await row.locator("button").count() == 0  # a withdrawal is final
        await screenshot(page, "subject-grants-withdrawn")

        assert await _bank_query(gateway, number, grant.consent_id) == "CONSENT_REVOKED"

        await page.goto(console.base + "/subject/grants?lang=zh")
        assert await page.locator("html").get_attribute("lang") == "zh-CN"
        assert await page.locator("h1").text_content() == "我的授权"
        state = page.locator(f"#grant-{grant.consent_id} td.state")
        assert await state.text_content() == "已撤回"
        await page.goto(console.base + "/subject/accesses")  # the cookie keeps Chinese
        assert await page.locator("h1").text_content() == "谁查询了我的记录"
        assert "信贷审批" in await page.locator("#accesses").text_content()
        await screenshot(page, "subject-accesses-zh")


async def test_a_subject_sees_an_objection_and_downloads_a_certificate_that_verifies(
    workflow_gateway: WorkflowGateway, population: Population, browser: Any, tmp_path: Path
) -> None:
    gw = workflow_gateway
    gateway = gw.running
    number = population.scenarios["restored_reorganization"].person.identity_number
    subject = await enrol_subject(gateway, number)
    async with subject_console(gateway, subject, None) as console:
        async with gw.subject_channel(subject) as channel:
            async with gateway.client(subject.institution_id) as me:
                report = await me.get_repair_status(number, purpose=vocab.PURPOSE_SELF_INQUIRY)
            registry = next(s for s in report.sources if s.source_id == "credit-registry")
            await gw.objections(channel).FileObjection(
                obj_pb2.FileObjectionRequest(
                    request_id="req-1",
                    identity_number=number,
                    fact=obj_pb2.FactReference(
                        source_id="credit-registry",
                        source_record_id=registry.cases[0].provenance.source_record_id,
                    ),
                    aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
                    requested_correction="the case stage shown is not the court's",
                )
            )
        page = await open_console(browser, console, locale="zh-CN")
        await page.goto(console.base + "/subject/cases")
        objection = page.locator("tr.objection")
        assert await objection.get_attribute("data-state") == (
            "OBJECTION_STATE_AWAITING_SOURCE_REPLY"
        )
        deadlines = await objection.locator("li.deadline").all_text_contents()
        reply = next(d for d in deadlines if "信息提供方答复期限" in d)  # zh from Accept-Language
        assert "截止日期 20" in reply
        assert await page.locator("#no-applications").count() == 1
        await screenshot(page, "subject-cases-zh")

        await page.goto(console.base + "/subject/certificate?lang=en")
        await page.fill('input[name="identity_number"]', number)
        async with page.expect_navigation():
            await page.click("#issue-certificate button")
        assert await page.locator("#certificate").get_attribute("data-state") == "RESTORED"
        assert await page.locator("#certificate-verified").count() == 1
        shown = await page.locator("#certificate-qr svg").screenshot()  # as a phone sees it
        pixels, _, _ = grey_pixels(shown)
        [scanned] = zxingcpp.read_barcodes(pixels)
        (tmp_path / "scanned.txt").write_text(scanned.text + "\n")
        assert number not in await page.content()  # the number is not echoed back
        await screenshot(page, "subject-certificate")
        async with page.expect_download() as caught:
            await page.click("#download-certificate")
        saved = tmp_path / "certificate.txt"
        await (await caught.value).save_as(str(saved))

    assert saved.read_text().startswith("CGRC1.")
    where = ["--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory)]
    for read in (saved, tmp_path / "scanned.txt"):  # the file, and the QR as scanned
        code, out, err = await credgate(
            "verify-certificate", str(read), *where, "--identity-number", number
        )
        assert code == 0, err
        assert out.startswith("VALID RESTORED restored_on=")
    assert (tmp_path / "scanned.txt").read_text().startswith("CGRC1Z:")


def _session() -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar otherwise ignores cookies set by an IP-address host.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_a_change_without_a_usable_key_sends_nothing_and_says_why(
    workflow_gateway: WorkflowGateway, population: Population, tmp_path: Path
) -> None:
    """Plain HTTP (no browser): no --subject-key, a key file others may read, an unknown
    action, a certificate id never issued — each refused by the console, the grant untouched."""
    gateway = workflow_gateway.running
    number = population.scenarios["restored_reorganization"].person.identity_number
    subject = await enrol_subject(gateway, number)
    grant = await record_grant(
        gateway, subject, grantee="bank-demo", purposes=[REVIEW], categories=[REPAIR]
    )
    readable = tmp_path / "shared-key.pem"
    write_subject_key(readable, subject.key)
    readable.chmod(0o644)
    change = {"consent_id": grant.consent_id, "action": "withdraw"}
    for key_file, status, says in ((None, 409, "--subject-key"), (readable, 409, "subject key")):
        async with subject_console(gateway, subject, key_file) as console, _session() as http:
            async with http.get(console.url) as response:
                assert response.status == 200
            csrf = console.console.gate.sessions[next(iter(console.console.gate.sessions))]
            async with http.get(console.base + "/subject/grants") as response:
                page = await response.text()
                assert (key_file is None) == ('id="no-key"' in page)
                assert (key_file is None) == ("button" not in page)
            posted = {**change, "csrf": csrf}
            async with http.post(console.base + "/subject/grants", data=posted) as response:
                assert response.status == status
                assert says in await response.text()
            bad = {**posted, "action": "delete"}
            async with http.post(console.base + "/subject/grants", data=bad) as response:
                assert response.status == 400
            never = console.base + "/subject/certificate/no-such-id.txt"
            async with http.get(never) as response:
                assert response.status == 404
    assert await _bank_query(gateway, number, grant.consent_id) == "ALLOWED"
