"""What the page's phone says it is connected to follows the position, not the SIP call: on an
always-on line the browser's one call stays up while Baton puts other parties on it, so after
a transfer it says the line is open with nobody on it, and when the dispatcher calls a unit
over that line it names the unit — never the party who is gone."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from _rigs.browser import PHONE2, answer, console, hears
from _rigs.sip import wait_until

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


async def test_the_page_names_who_is_on_an_always_on_line_now(tmp_path: Path) -> None:
    async with console(tmp_path, ("unit1", "unit2"), keep=True) as c:
        page, state, unit1, unit2 = c.page, c.state, c.unit("unit1"), c.unit("unit2")
        unit1.command("dial", f"sip:2001@127.0.0.1:{c.udp}")
        await answer(page)
        await expect(state).to_have_text("talking with unit1")
        # Transfer unit1 to unit2 from the selected unit's tile: the page's call stays up.
        await page.locator('.tile[data-user="unit2"]').click()
        await page.locator("#quick button", has_text="Transfer my call here").click()
        await wait_until(lambda: unit2.saw("CALL_ESTABLISHED"), 15)
        await expect(state).to_have_text("your line is open: nobody on it")
        assert await state.get_attribute("data-state") == "talking"
        unit1.command("hangup")
        await wait_until(lambda: unit2.saw("CALL_CLOSED"), 10)
        # A call to unit2 over the open line: the page names unit2 and hears it.
        await page.locator("#quick button", has_text="Call").first.click()
        await expect(state).to_have_text("talking with unit2", timeout=15_000)
        await hears(page, [PHONE2])
        assert c.errors == []
        # Nothing the console asked for was refused (the page's login probe of /api/me aside).
        assert [r for r in c.refused if not r.endswith("/api/me")] == []
