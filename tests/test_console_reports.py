"""The console's Reports page in a real headless Chromium, through a real gateway with the mock
sources and the scripted providers (docs/console.md, "Reports").

Decisions are seeded with real queries (a bank refused for want of consent and for a purpose
its role may not use, a court under its investigation exemption), restorations with real
provider pushes (the registry lagging behind the platform's RESTORED for one subject, nobody
disagreeing for another). The page is then read with JavaScript switched off — the charts are
server-drawn SVG — and every drawn bar is checked against the seeded numbers through its
``data-*`` attributes and its title. A screenshot is saved as a test artifact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population, State
from credgate.adapters.mocks.providers import PLATFORM, REGISTRY
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as rec_pb
from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as rec_grpc
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.client import CredgateError
from credgate.gateway.console.charts import (
    Bar,
    Group,
    Segment,
    bar_chart,
    nice_ceiling,
    row_chart,
    tick_values,
)
from credgate.gateway.protection.keyring import Keyring
from tests.fixtures.console import running_console, screenshot
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import DevPki, mtls_channel
from tests.test_restoration_times import push
from tests.watch_support import (
    AS_OF,
    CASE,
    JUDICIAL,
    LIVE,
    REVIEW,
    Pusher,
    feed_document,
    running_gateway,
)

WAIT = 30.0
DECIDED = ("no_record", "gb18030_name", "procedure_pending")


async def seed_decisions(gateway: RunningGateway, population: Population) -> None:
    """bank-demo: 4 CONSENT_MISSING on 3 subjects, 1 ROLE_NOT_PERMITTED; court-demo: 2 allowed
    judicial queries (exempt) on 2 subjects."""
    # Not the subjects the providers push below: a live query indexes the court's own view,
    # which outranks the platform's.
    people = [population.scenarios[n].person.identity_number for n in DECIDED]
    async with gateway.client("bank-demo") as bank:
        for number in [*people, people[0]]:
            with pytest.raises(CredgateError):
                await bank.get_repair_status(number, purpose=REVIEW, consistency=LIVE)
        with pytest.raises(CredgateError) as refused:
            await bank.get_repair_status(
                people[1], purpose=JUDICIAL, case_reference=CASE, consistency=LIVE
            )
        assert refused.value.reason == "ROLE_NOT_PERMITTED"
    async with gateway.client("court-demo") as court:
        for number in people[:2]:
            await court.get_repair_status(
                number, purpose=JUDICIAL, case_reference=CASE, consistency=LIVE
            )


async def wait_for_restorations(gateway: RunningGateway, tokens: set[str]) -> int:
    """Poll (as the regulator) until both restorations are listed as expected; how many calls
    it took (each is a regulator read the statistics then count)."""
    calls = 0
    async with mtls_channel(gateway.pki, gateway.port, "regulator-demo") as channel:
        stub = rec_grpc.ReconciliationServiceStub(channel)
        async with asyncio.timeout(WAIT):
            while True:
                answer = await stub.ListRestorationTimes(rec_pb.ListRestorationTimesRequest())
                calls += 1
                found = {r.subject_token: r for r in answer.restorations}
                if set(found) == tokens and answer.summary.open_count == 1:
                    return calls
                await asyncio.sleep(0.1)


async def rects(page: Any, chart: str) -> list[dict[str, str]]:
    """Every drawn bar of the chart(s) ``chart`` selects: its data-* attributes and title."""
    found: list[dict[str, str]] = await page.eval_on_selector_all(
        f"{chart} rect.bar",
        """els => els.map(e => Object.assign({title: e.querySelector('title').textContent},
                                              e.dataset))""",
    )
    return found


async def test_the_reports_page_draws_the_seeded_numbers(
    dev_pki: DevPki,
    tmp_path: Path,
    mock_fleet: MockFleet,
    population: Population,
    browser: Any,
) -> None:
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    document = feed_document(dev_pki, tmp_path, url, fleet=mock_fleet)
    tokenizer = SubjectTokenizer(Keyring.load(tmp_path / "keyring.json").subject_token_key)
    lagging = population.scenarios["observation"]
    agreed = population.scenarios["restored_reorganization"]
    open_token, agreed_token = (
        tokenizer.token(s.person.identity_number) for s in (lagging, agreed)
    )
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        day = dt.datetime.now(dt.UTC).date()
        await seed_decisions(gateway, population)
        registry = Pusher(REGISTRY, dev_pki, gateway.port)
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        await push(registry, (lagging, State.OBSERVATION, AS_OF - dt.timedelta(days=1)))
        await push(
            platform,
            (lagging, State.RESTORED, AS_OF),
            (agreed, State.RESTORED, AS_OF + dt.timedelta(hours=1)),
        )
        reads = await wait_for_restorations(gateway, {open_token, agreed_token})
        if dt.datetime.now(dt.UTC).date() != day:
            pytest.skip("the seeding straddled a UTC midnight")

        async with running_console(gateway, "regulator-demo") as console:
            # JavaScript off: the page, its charts included, needs none.
            context = await browser.new_context(java_script_enabled=False, locale="en-US")
            page = await context.new_page()
            await page.goto(console.url)
            response = await page.goto(f"{console.base}/regulator/reports?since={day}&until={day}")
            assert response.status == 200
            await screenshot(page, "console-reports")

            # Reading attributes needs a script of the test's own, not of the page: a
            # second context with JavaScript on reads the very same server-rendered HTML.
            html = await page.content()
            reader = await (await browser.new_context()).new_page()
            await reader.set_content(html)

            accesses = await rects(reader, "svg.accesses")
            drawn = {(r["institution"], r["outcome"]): int(r["value"]) for r in accesses}
            assert drawn == {
                ("bank-demo", "denied"): 5,
                ("court-demo", "allowed"): 2,
                ("regulator-demo", "allowed"): reads,
            }
            assert {r["day"] for r in accesses} == {day.isoformat()}
            charts = await reader.eval_on_selector_all(
                "div.chart-box.accesses", "els => els.map(e => e.dataset.institution)"
            )
            assert charts == ["bank-demo", "court-demo", "regulator-demo"]  # one per institution
            assert "bank-demo " + day.isoformat() + ": 5 denied" in {r["title"] for r in accesses}

            denials = await rects(reader, "svg#chart-denials")
            assert {(r["reason"], int(r["value"])) for r in denials} == {
                ("CONSENT_MISSING", 4),
                ("ROLE_NOT_PERMITTED", 1),
            }
            consentless = await rects(reader, "svg#chart-consentless")
            assert {(r["institution"], r["series"], int(r["value"])) for r in consentless} == {
                ("bank-demo", "refused", 3),
                ("court-demo", "exempt", 2),
            }
            histogram = await rects(reader, "svg#chart-restorations")
            assert [(r["bucket"], int(r["value"])) for r in histogram] == [("< 365d", 1)]

            rows = await reader.eval_on_selector_all(
                "#restorations tr.restoration",
                "els => els.map(e => [e.dataset.subject, e.classList.contains('open'),"
                " e.lastElementChild.textContent])",
            )
            assert sorted(rows) == sorted(
                [[open_token, True, REGISTRY.source_id], [agreed_token, False, "-"]]
            )
            figures = await reader.eval_on_selector_all(
                "#restoration-summary dd", "els => els.map(e => [e.dataset.figure, e.textContent])"
            )
            assert dict(figures)["reports.agreed_count"] == "1"
            assert dict(figures)["reports.open_count"] == "1"

            # The exports carry the same numbers (fetched with the page's own session).
            listed = await page.get_attribute("#reports-export-csv", "href")
            exported = await page.request.get(console.base + listed)
            assert exported.status == 200
            lines = (await exported.text()).splitlines()
            assert lines[0] == "day,institution_id,allowed,denied"
            assert f"{day},bank-demo,0,5" in lines
            as_json = await (
                await page.request.get(
                    console.base + await page.get_attribute("#reports-export-json", "href")
                )
            ).json()
            assert {(r["reason"], int(r["denied"])) for r in as_json["denial_reasons"]} == {
                ("CONSENT_MISSING", 4),
                ("ROLE_NOT_PERMITTED", 1),
            }
            assert (as_json["since"], as_json["until"]) == (day.isoformat(), day.isoformat())

            # The window form is a GET: the chosen days are in the address.
            for query in ("since=not-a-day", "until=9999-12-31", "until=0001-01-01"):
                bad = await page.goto(f"{console.base}/regulator/reports?{query}")
                assert bad.status == 400, query
            await page.goto(f"{console.base}/regulator/reports")
            await page.fill("#reports-window input[name=since]", day.isoformat())
            await page.click("#reports-window button[type=submit]")
            await page.wait_for_url("**/regulator/reports?since=*")
            assert f"since={day}" in page.url


def test_charts_escape_their_text_and_scale_to_round_numbers() -> None:
    hostile = '<script>alert("x")</script>'
    drawn = str(
        bar_chart(
            [Group(hostile, (Bar(hostile, (Segment(7, "a", hostile, {"who": hostile}),)),))],
            chart_id="c",
            title=hostile,
            series=("a",),
        )
        + row_chart(
            [Bar(hostile, (Segment(0, "a", "zero"),))], chart_id="r", title="t", series=("a",)
        )
    )
    assert "<script>" not in drawn
    assert drawn.count('class="bar"') == 1  # the zero segment is not drawn
    assert 'data-value="7"' in drawn
    assert [tick_values(p) for p in (1, 2, 5, 20)] == [
        [0, 1], [0, 1, 2], [0, 1, 2, 3, 4, 5], [0, 4, 8, 12, 16, 20]]  # fmt: skip
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 10, 11, 180, 5000)] == [
        1,
        1,
        5,
        10,
        10,
        20,
        200,
        5000,
    ]


async def test_the_reports_page_lists_the_unusual_access_the_gateway_found(
    gateway: RunningGateway, population: Population, browser: Any, tmp_path: Path
) -> None:
    """A bank refused for want of consent on ten distinct subjects in the window is a
    SUBJECTS_WITHOUT_CONSENT finding (docs/audit.md, "Unusual access"): listed with its
    explanation and the entries behind it, each a link to its inclusion proof."""
    numbers = [subject.person.identity_number for subject in list(population)[:10]]
    async with gateway.client("bank-demo") as bank:
        for number in numbers:
            with pytest.raises(CredgateError) as refused:
                await bank.get_repair_status(number, purpose=REVIEW)
            assert refused.value.reason == "CONSENT_MISSING"
    day = dt.datetime.now(dt.UTC).date()
    log_key = tmp_path / "audit-log.pub"  # the gateway's, as the operator publishes it
    async with running_console(gateway, "regulator-demo", log_key=log_key) as console:
        context = await browser.new_context(java_script_enabled=False, locale="en-US")
        page = await context.new_page()
        await page.goto(console.url)
        await page.goto(f"{console.base}/regulator/reports?since={day}&until={day}")
        row = page.locator(
            "tr.finding[data-kind='UNUSUAL_ACCESS_KIND_SUBJECTS_WITHOUT_CONSENT']"
            "[data-institution='bank-demo']"
        )
        assert await row.count() == 1
        assert "subjects without consent" in await row.inner_text()
        links = row.locator("a")
        assert await links.count() == 10  # one sample entry per refused subject
        await screenshot(page, "console-unusual")
        await links.first.click()
        assert "✓ inclusion verified" in (await page.text_content("#inclusion") or "")
