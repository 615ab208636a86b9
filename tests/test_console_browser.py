"""The console in a real headless Chromium through a real gateway with the mock sources
(docs/console.md). Screenshots go to ``$CREDGATE_TEST_ARTIFACTS`` (``build/test-artifacts/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.console import open_console, running_console, screenshot
from tests.fixtures.mocks import RunningGateway


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
