"""The console's dial pad in headless Chromium against ``baton serve`` on the SIP switch: the
dispatcher types a number and calls it from the page — the browser offers WebRTC (Baton answers
as ICE-lite DTLS server), digest included — and each side hears exactly the other. A number
that is no number is refused in the page; a number nobody has fails with the reason in words;
Hang up while the number rings cancels the call. In a call, the dial pad's keys are RFC 4733
key presses: a desk phone in a call with the page receives them as its own key presses, and
Baton's flows read them — the dispatcher dials a push-to-talk group, takes the floor with ``*``
and gives it back with ``#``, and the phone in the group hears the dispatcher only while the
dispatcher holds the floor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import expect

from _rigs.browser import (
    PAGE,
    PHONE,
    console,
    hears,
    windows,
)
from _rigs.sip import wait_until

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


async def test_the_dispatcher_dials_from_the_page_and_presses_keys(tmp_path: Path) -> None:
    north = {"id": "north", "members": ["disp1", "unit1"], "number": "802", "mode": "ptt"}
    async with console(tmp_path, ["unit1", "unit2"], groups=[north], ringing=["unit2"]) as c:
        page, state, errors = c.page, c.state, c.errors
        unit1, unit2 = c.units
        number, error = page.locator("#bp-number"), page.locator("#bp-dial-error")
        # Not a number: refused in the page, nothing is sent.
        await number.fill("12a")
        await number.press("Enter")
        await expect(error).to_contain_text('"12a" is not a number')
        await expect(number).to_have_attribute("aria-invalid", "true")
        await expect(state).to_have_attribute("data-state", "ready")
        # A number nobody has: Baton refuses the call, the page says why.
        await number.fill("1999")
        await page.click("#bp-call")
        await expect(error).to_contain_text("1999: no such number (404")
        await expect(state).to_have_attribute("data-state", "ready")
        # A phone that rings and is not answered: Hang up cancels the call.
        await number.fill("1002")
        await page.click("#bp-call")
        await expect(state).to_have_attribute("data-state", "calling")
        await expect(error).to_have_text("")
        await wait_until(lambda: unit2.saw("CALL_INCOMING"), 10)
        await page.click("#bp-hangup")
        await expect(state).to_have_attribute("data-state", "ready")
        await expect(error).to_have_text("1002: cancelled")
        await wait_until(lambda: unit2.saw("CALL_CLOSED"), 10)
        # By keyboard alone: focus the number, type it, Enter. unit1 answers by itself.
        await number.focus()
        await page.keyboard.type("1001")
        await page.keyboard.press("Enter")
        await expect(state).to_have_attribute("data-state", "talking")
        await expect(error).to_have_text("")
        await wait_until(lambda: unit1.saw("CALL_ESTABLISHED"), 10)
        await hears(page, [PHONE])
        # A key pressed on the page reaches the desk phone as its own key press: the
        # call is mixed (the page's Opus, unit1's G.711), so Baton sends it again as an
        # RFC 4733 event of unit1's call (docs/sip.md: key presses from browsers).
        await page.click('#bp-dial .keys button[data-key="5"]')
        await expect(page.locator("#bp-sent")).to_have_text("sent: 5")
        await wait_until(lambda: unit1.keys() == "5", 10)
        await asyncio.sleep(1.0)  # the phone hears the page for a while
        await page.click("#bp-hangup")
        await expect(state).to_have_attribute("data-state", "ready")
        await wait_until(lambda: unit1.saw("CALL_CLOSED"), 10)
        # The dial pad's buttons: 8, 0, 2 and Call open the PTT group (unit1 is rung).
        for key in "802":
            await page.click(f'#bp-dial .keys button[data-key="{key}"]')
        await expect(number).to_have_value("802")
        await page.click("#bp-call")
        await expect(state).to_have_attribute("data-state", "talking")
        await wait_until(lambda: unit1.count("CALL_ESTABLISHED") == 2, 15)
        talker = page.locator("#ptt .ptt[data-flow] .talker")
        await expect(talker).to_contain_text("floor idle")
        # In the call the keys are key presses: * takes the floor, # gives it back.
        await expect(page.locator("#bp-number-label")).to_have_text("Keys (sent in the call)")
        await page.click('#bp-dial .keys button[data-key="*"]')
        await expect(talker).to_contain_text("disp1 talks")
        await expect(page.locator("#bp-sent")).to_have_text("sent: *")
        await asyncio.sleep(1.5)  # unit1 hears the dispatcher
        await number.focus()
        await page.keyboard.press("#")  # typed keys are sent too
        await expect(talker).to_contain_text("floor idle")
        await expect(page.locator("#bp-sent")).to_have_text("sent: *#")
        await asyncio.sleep(1.5)  # and no longer hears the dispatcher
        await page.click("#bp-hangup")
        await expect(state).to_have_attribute("data-state", "ready")
        unit1.command("hangup")  # the group would wait out its hang time for unit1
        await wait_until(lambda: unit1.count("CALL_CLOSED") == 2, 15)
        assert errors == []
    direct, group = unit1.heard()
    assert {PAGE} in windows(direct), "unit1 never heard the dispatcher's call"
    heard = windows(group)
    print("unit1 in the group heard", heard)
    assert {PAGE} in heard, "unit1 never heard the dispatcher talk in the group"
    assert heard[-1] == set(), "unit1 still heard the dispatcher after # gave the floor back"
