"""The console's browser phone in headless Chromium against a real ``baton serve`` on the SIP
switch: the dispatcher logs in, lets the page use the (fake) microphone, the position
registers over SIP/WebSocket; a baresip phone calls the dispatcher's number, the call rings in
the page, the dispatcher answers, and each side hears exactly the other — the page's
WebAudio analyser finds the phone's tone, baresip's recording holds the page's. Then the
dispatcher calls the phone from the console (tile, Call) and the same holds. A browser
whose microphone is refused says so. (Dialling from the page: ``test_console_dialpad``; hold:
``test_console_hold``; push-to-talk: ``test_console_talk_button`` and
``test_console_space_bar``; barge-in: ``test_console_barge_in``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from _rigs.browser import (
    CANDIDATES,
    PAGE,
    PHONE,
    answer,
    chromium,
    console,
    heard_tone,
    login,
    recording,
)
from _rigs.sip import wait_until
from baton.switch.media import analysis

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


async def test_the_console_is_the_dispatchers_phone(tmp_path: Path) -> None:
    async with console(tmp_path) as c:
        page, state, errors, unit1, udp = c.page, c.state, c.errors, c.unit("unit1"), c.udp
        # The headset: a microphone to choose, and its level moves with the fake tone.
        await expect(page.locator("#bp-device option")).not_to_have_count(0)
        await page.wait_for_function(
            "document.querySelector('#bp-level').value > 0.05", timeout=10_000
        )
        unit1.command("dial", f"sip:2001@127.0.0.1:{udp}")
        await expect(state).to_contain_text("unit1")
        await answer(page)
        await wait_until(lambda: unit1.saw("CALL_ESTABLISHED"), 10)
        assert await heard_tone(page) == pytest.approx(PHONE, abs=15)
        await page.click("#bp-hangup")
        await expect(state).to_have_attribute("data-state", "ready")
        await wait_until(lambda: unit1.saw("CALL_CLOSED"), 10)
        # The other way: the dispatcher calls unit1 from the console (click the tile,
        # Call). Baton rings the position first — in the page — then the phone.
        await page.click('.tile[data-user="unit1"]')
        await page.click('#quick button[data-quick="call"]')
        await answer(page)
        await wait_until(lambda: unit1.count("CALL_ESTABLISHED") == 2, 15)
        assert await heard_tone(page) == pytest.approx(PHONE, abs=15)
        await page.click("#bp-hangup")
        await wait_until(lambda: unit1.count("CALL_CLOSED") == 2, 15)
        assert errors == []
        # Refused: without the fake consent, headless Chromium denies the microphone.
        async with chromium(tmp_path, microphone=False) as denied:
            page = await login(denied, c.server.base)
            await page.click("#bp-start")
            state = page.locator("#bp-state")
            await expect(state).to_have_attribute("data-state", "no-mic")
            await expect(state).to_contain_text("microphone refused")
            await expect(page.locator("#bp-start")).to_be_visible()  # try again
    calls = unit1.heard()
    assert len(calls) == 2  # the phone's call in, and the dispatcher's call out
    for path in calls:
        pcm = recording(path)
        tail = pcm[len(pcm) // 3 : len(pcm) - 2000]
        print("unit1 heard", analysis.sine_amplitudes(tail, CANDIDATES))
        assert analysis.tones_heard(tail, CANDIDATES) == {PAGE}
