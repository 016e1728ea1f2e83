"""The console's **Talk** button for a push-to-talk group, in headless Chromium against
``baton serve`` on the SIP switch, with two baresip phones in the group. Pressed and held
while a phone talks, it shows the floor busy and the dispatcher's place in line; let go, the
request is withdrawn. Pressed on a free floor, the page hears the talk-permit tone, the
console names the dispatcher as the talker and both phones hear the page; let go, the floor
is idle. A phone raising an emergency takes the floor from the dispatcher, and the card says
so."""

from __future__ import annotations

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

PERMIT = [880.0, 1320.0]  # the talk-permit chirp (docs/ptt.md)


async def test_the_dispatcher_holds_the_talk_button(tmp_path: Path) -> None:
    north = {"id": "north", "name": "North radio", "members": ["disp1", "unit1", "unit2"],
             "number": "802", "mode": "ptt"}  # fmt: skip
    async with console(tmp_path, ["unit1", "unit2"], groups=[north]) as c:
        page, units, udp, errors = c.page, c.units, c.udp, c.errors
        units[0].command("dial", f"sip:802@127.0.0.1:{udp}")  # unit1 opens the group
        await answer(page)
        card = page.locator("#ptt .ptt[data-flow]")
        talk, talker, mine = (
            card.locator("button"),
            card.locator(".talker"),
            card.locator(".mine"),
        )
        await expect(talker).to_contain_text("floor idle")
        await expect(card).to_have_attribute("data-floor", "idle")
        # The group goes by the name the centre gave it, on its card and on the page's phone.
        await expect(card.locator(".title")).to_have_text("North radio")
        await expect(c.state).to_have_text("in North radio (push-to-talk)")
        # A phone talks: the floor is busy, and a press waits in line.
        units[0].command("sndcode", "*")
        await expect(talker).to_contain_text("unit1 talks")
        await expect(card).to_have_attribute("data-floor", "busy")
        await expect(mine).to_have_text("Floor busy: unit1 talks")
        await talk.hover()
        await page.mouse.down()
        await expect(card).to_have_attribute("data-floor", "queued")
        await expect(mine).to_contain_text("you are 1st in line")
        await expect(talk).to_have_attribute("aria-pressed", "true")
        await page.mouse.up()  # let go: the request is withdrawn
        await expect(card).to_have_attribute("data-floor", "busy")
        await expect(talk).to_have_attribute("aria-pressed", "false")
        units[0].command("sndcode", "#")
        await expect(card).to_have_attribute("data-floor", "idle")
        before = await page.evaluate(f"BatonPhone.peaks({PERMIT!r}, 600)")
        # A free floor: press and hold; the talk-permit tone comes through the page.
        # (the page starts listening before the press, so no chirp can come first)
        await page.evaluate(f"() => {{ window.permit = BatonPhone.peaks({PERMIT!r}, 2500); }}")
        await page.mouse.down()
        await expect(card).to_have_attribute("data-floor", "talking")
        await expect(talker).to_contain_text("disp1 talks")
        await expect(mine).to_have_text("You have the floor: talk")
        await expect(talk).to_have_attribute("data-action", "release")
        heard = await page.evaluate("window.permit")  # (the phones hear the page)
        print("talk permit, dB before and during:", before, heard)
        assert all(h > -55 and h > b + 15 for b, h in zip(before, heard, strict=True))
        await page.mouse.up()
        await expect(talker).to_contain_text("floor idle")
        await expect(card).to_have_attribute("data-floor", "idle")
        # From the keyboard: Space held on the focused button talks, let go releases.
        await talk.focus()
        await page.keyboard.down("Space")
        await expect(card).to_have_attribute("data-floor", "talking")
        await page.keyboard.up("Space")
        await expect(card).to_have_attribute("data-floor", "idle")
        await expect(talk).to_be_focused()  # the card was updated, not redrawn
        # An emergency raised by unit2 takes the floor from the dispatcher.
        await page.mouse.down()
        await expect(card).to_have_attribute("data-floor", "talking")
        units[1].command("sndcode", "9")
        await expect(card).to_have_attribute("data-floor", "revoked")
        await expect(mine).to_contain_text("The floor was taken from you")
        await expect(talker).to_contain_text("unit2 talks")
        await page.mouse.up()
        await page.click("#bp-hangup")
        for unit in units:
            unit.command("hangup")
            await wait_until(lambda unit=unit: unit.saw("CALL_CLOSED"), 15)
        assert errors == []
    for unit in units:
        (path,) = unit.heard()
        heard_by = windows(path)
        print(unit.user, heard_by)
        assert {PAGE} in heard_by, f"{unit.user} never heard the dispatcher alone"
