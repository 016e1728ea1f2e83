"""Hold from the browser, in headless Chromium against ``baton serve`` on the SIP switch: a
phone calls the dispatcher, who answers in the page and presses **Hold** beside Hang up. The
phone hears Baton's hold tone instead of the dispatcher, the page hears the phone no more;
**Resume** puts them back together and each hears the other again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import expect

from _rigs.audio import write_tone
from _rigs.browser import (
    HOLD,
    PAGE,
    PHONE,
    answer,
    chromium,
    hears,
    login,
    phone_on,
    silent,
    sip_config,
    windows,
)
from _rigs.sip import Baresip, free_port, wait_until
from service.helpers import PASSWORDS
from service.server import serve

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]


def in_order(heard: list[set[float]], *steps: set[float]) -> bool:
    """Whether windows heard exactly ``steps[0]``, later exactly ``steps[1]``, and so on."""
    at = 0
    for step in steps:
        at = next((i for i in range(at, len(heard)) if heard[i] == step), -1) + 1
        if at == 0:
            return False
    return True


async def test_the_dispatcher_holds_and_resumes_from_the_page(tmp_path: Path) -> None:
    udp, ws = free_port(), free_port()
    with serve(tmp_path, **sip_config(udp, ws)) as server:
        unit1 = Baresip(tmp_path / "unit1", "unit1", PASSWORDS["unit1"], udp,
                        tone=write_tone(tmp_path / "unit1.wav", PHONE))  # fmt: skip
        async with chromium(tmp_path) as browser:
            try:
                await unit1.start()
                errors: list[str] = []
                page = await login(browser, server.base, errors)
                state = await phone_on(page)
                await expect(page.locator("#bp-hold")).to_be_hidden()  # no call, no hold
                unit1.command("dial", f"sip:2001@127.0.0.1:{udp}")
                await answer(page)
                await wait_until(lambda: unit1.saw("CALL_ESTABLISHED"), 10)
                await hears(page, [PHONE])
                await asyncio.sleep(1.0)  # unit1 hears the dispatcher
                await page.click("#bp-hold")
                await expect(page.locator("#bp-resume")).to_be_visible()
                await expect(page.locator("#bp-hold")).to_be_hidden()
                await expect(state).to_contain_text("on hold")
                await silent(page, [PHONE])  # the holder hears the held party no more
                await asyncio.sleep(1.5)  # unit1 hears the hold tone
                await page.click("#bp-resume")
                await expect(page.locator("#bp-hold")).to_be_visible()
                await expect(state).not_to_contain_text("on hold")
                await hears(page, [PHONE])  # together again
                await asyncio.sleep(1.5)
                await page.click("#bp-hangup")
                await expect(state).to_have_attribute("data-state", "ready")
                await wait_until(lambda: unit1.saw("CALL_CLOSED"), 10)
                assert errors == []
            finally:
                await unit1.aclose()
    (path,) = unit1.heard()
    heard = windows(path, 0.25, [PAGE, PHONE, HOLD])
    print("unit1 heard", heard)
    assert in_order(heard, {PAGE}, {HOLD}, {PAGE}), "unit1: dispatcher, hold tone, dispatcher"
    assert not any(PHONE in w for w in heard)  # never itself
