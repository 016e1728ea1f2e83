"""A browser supervisor barging into a call between two baresip phones, in headless Chromium
against ``baton serve`` on the SIP switch: the page hears both phones (and not itself), and
both phones hear the page."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import expect

from _rigs.audio import write_tone
from _rigs.browser import (
    PAGE,
    PHONE,
    PHONE2,
    answer,
    chromium,
    login,
    phone_on,
    sip_config,
    windows,
)
from _rigs.sip import Baresip, free_port, wait_until
from service.helpers import PASSWORDS
from service.server import serve

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


async def test_a_browser_dispatcher_barges_into_a_phone_call(tmp_path: Path) -> None:
    udp, ws = free_port(), free_port()
    # Barging in is a supervisor's right (the dispatcher role may not).
    with serve(tmp_path, **sip_config(udp, ws, role="supervisor")) as server:
        tones = {"unit1": PHONE, "unit2": PHONE2}
        units = [
            Baresip(tmp_path / u, u, PASSWORDS[u], udp, tone=write_tone(tmp_path / f"{u}.wav", f))
            for u, f in tones.items()
        ]
        async with chromium(tmp_path) as browser:
            try:
                for unit in units:
                    await unit.start()
                page = await login(browser, server.base)
                state = await phone_on(page)
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
            finally:
                for unit in units:
                    await unit.aclose()
    for unit in units:
        (path,) = unit.heard()
        other = tones["unit2" if unit.user == "unit1" else "unit1"]
        heard = windows(path)
        print(unit.user, heard)
        assert {PAGE, other} in heard, f"{unit.user} never heard the dispatcher with {other:g} Hz"
