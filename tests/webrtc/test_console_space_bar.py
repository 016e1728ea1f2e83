"""Push-to-talk from the keyboard, in headless Chromium against ``baton serve`` on the SIP
switch: in a PTT group with two baresip phones, the dispatcher holds the space bar; the
console shows them as the talker and both phones hear the page's tone, and only it. The dial
pad's ``*`` and ``#`` do the same as key presses on this call, which Baton offered. (The Talk
button: ``test_console_talk_button``.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import expect

from _rigs.browser import (
    PAGE,
    answer,
    console,
    windows,
)
from _rigs.sip import wait_until

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


async def test_a_browser_dispatcher_talks_in_a_ptt_group(tmp_path: Path) -> None:
    north = {"id": "north", "members": ["disp1", "unit1", "unit2"], "number": "802", "mode": "ptt"}
    async with console(tmp_path, ["unit1", "unit2"], groups=[north]) as c:
        page, units, udp = c.page, c.units, c.udp
        units[0].command("dial", f"sip:802@127.0.0.1:{udp}")  # unit1 opens the group
        await answer(page)
        group = page.locator("#ptt .ptt")
        await expect(group.locator(".talker")).to_contain_text("floor idle")
        await page.locator("body").click(position={"x": 5, "y": 5})  # focus off buttons
        await page.keyboard.down("Space")  # the dispatcher holds the space bar
        await expect(group.locator("button")).to_have_attribute("data-action", "release")
        await expect(group.locator(".talker")).to_contain_text("disp1 talks")
        await asyncio.sleep(2.5)  # real phones hear the page for a while
        await page.keyboard.up("Space")
        await expect(group.locator(".talker")).to_contain_text("floor idle")
        # The dial pad's keys work on a call Baton offered too (its telephone-event).
        await page.click('#bp-dial .keys button[data-key="*"]')
        await expect(group.locator(".talker")).to_contain_text("disp1 talks")
        await page.click('#bp-dial .keys button[data-key="#"]')
        await expect(group.locator(".talker")).to_contain_text("floor idle")
        await page.click("#bp-hangup")
        for unit in units:
            unit.command("hangup")  # (the group would wait out its hang time)
            await wait_until(lambda unit=unit: unit.saw("CALL_CLOSED"), 15)
    for unit in units:
        (path,) = unit.heard()
        heard = windows(path)
        print(unit.user, heard)
        assert {PAGE} in heard, f"{unit.user} never heard the dispatcher alone"
