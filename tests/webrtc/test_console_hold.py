"""Hold from the browser, in headless Chromium against ``baton serve`` on the SIP switch: a
phone calls the dispatcher, who answers in the page and presses **Hold** beside Hang up. The
phone hears Baton's hold tone instead of the dispatcher, the page hears the phone no more;
**Resume** puts them back together and each hears the other again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import expect

from _rigs.browser import (
    HOLD,
    PAGE,
    PHONE,
    answer,
    console,
    hears,
    silent,
    windows,
)
from _rigs.sip import wait_until

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
    async with console(tmp_path) as c:
        page, state, errors, unit1, udp = c.page, c.state, c.errors, c.unit("unit1"), c.udp
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
    (path,) = unit1.heard()
    heard = windows(path, 0.25, [PAGE, PHONE, HOLD])
    print("unit1 heard", heard)
    assert in_order(heard, {PAGE}, {HOLD}, {PAGE}), "unit1: dispatcher, hold tone, dispatcher"
    assert not any(PHONE in w for w in heard)  # never itself
