"""A browser supervisor barging into a call between two baresip phones, in headless Chromium
against ``baton serve`` on the SIP switch: the page hears both phones (and not itself), and
both phones hear the page."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import expect

from _rigs.browser import (
    PAGE,
    PHONE,
    PHONE2,
    TONES,
    answer,
    console,
    windows,
)
from _rigs.sip import wait_until

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


async def test_a_browser_dispatcher_barges_into_a_phone_call(tmp_path: Path) -> None:
    # Barging in is a supervisor's right (the dispatcher role may not).
    async with console(tmp_path, ["unit1", "unit2"], role="supervisor") as c:
        page, state, units, udp = c.page, c.state, c.units, c.udp
        units[0].command("dial", f"sip:1002@127.0.0.1:{udp}")  # unit1 calls unit2
        await wait_until(lambda: all(u.saw("CALL_ESTABLISHED") for u in units), 15)
        await page.click('.tile[data-user="unit1"]')
        await page.click('#quick button[data-quick="barge_in"]')
        await answer(page)
        await page.wait_for_function(
            f"(() => {{ const l = BatonPhone.levels([{PHONE}, {PHONE2}]);"
            " return l !== null && l[0] > -50 && l[1] > -50; })()"
        )  # the page hears both units
        levels = await page.evaluate(f"BatonPhone.levels([{PAGE}, {PHONE}, {PHONE2}])")
        assert levels[0] < min(levels[1:]) - 20, levels  # and not itself
        await asyncio.sleep(1.5)  # the phones hear the page for a while
        await page.click("#bp-hangup")
        await expect(state).to_have_attribute("data-state", "ready")
        units[0].command("hangup")  # their call goes on without the supervisor: end it
        for unit in units:
            await wait_until(lambda unit=unit: unit.saw("CALL_CLOSED"), 15)
    for unit in units:
        (path,) = unit.heard()
        other = TONES["unit2" if unit.user == "unit1" else "unit1"]
        heard = windows(path)
        print(unit.user, heard)
        assert {PAGE, other} in heard, f"{unit.user} never heard the dispatcher with {other:g} Hz"
