"""The console's browser phone in headless Chromium against a real ``baton serve`` on the SIP
switch: the dispatcher logs in, lets the page use the (fake) microphone, the position
registers over SIP/WebSocket; a baresip phone calls the dispatcher's number, the call rings in
the page, the dispatcher answers, and each side hears exactly the other — the page's
WebAudio analyser finds the phone's tone, baresip's recording holds the page's. Then the
dispatcher calls the phone from the console (tile, Call) and the same holds. A browser
whose microphone is refused says so. In a push-to-talk group the dispatcher holds the space bar:
the console shows them as the talker and both phones hear the page's tone, and only it. A
browser dispatcher barging into a call between two phones hears both, and both hear them."""

from __future__ import annotations

import asyncio
import statistics
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Page, async_playwright, expect

from _rigs.audio import write_tone
from _rigs.sip import Baresip, free_port, rtp_range, wait_until
from baton.switch.media import analysis
from service.helpers import PASSWORDS
from service.server import serve

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection",  # Baton's candidate is 127.0.0.1
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
PAGE, PHONE = 500.0, 780.0  # the page's microphone tone, the phone's
CANDIDATES = [PAGE, PHONE, 1170.0]


def sip_config(
    tmp_path: Path, udp: int, ws: int, groups: list[Any] | None = None, role: str = "dispatcher"
) -> dict[str, Any]:
    return {
        "switch": "sip",
        "sip": {"listen": [f"udp:127.0.0.1:{udp}", f"ws:127.0.0.1:{ws}"],
                "rtp_ports": rtp_range(), "rtp_timeout": 0},
        "users": [
            {"id": "disp1", "numbers": ["2001"], "password": PASSWORDS["disp1"],
             "role": role},
            {"id": "unit1", "numbers": ["1001"], "password": PASSWORDS["unit1"]},
            {"id": "unit2", "numbers": ["1002"], "password": PASSWORDS["unit2"]},
        ],
        "groups": groups or [], "meetings": [],
    }  # fmt: skip


async def login(page: Page, base: str) -> None:
    await page.goto(f"{base}/console/")
    await page.fill("#login-user", "disp1")
    await page.fill("#login-password", PASSWORDS["disp1"])
    await page.click("#login-submit")
    await expect(page.locator("#app")).to_be_visible()
    await page.click("#mode-dispatcher")
    await expect(page.locator("#browser-phone")).to_be_visible()


async def wait_until_page(page: Page, condition: str) -> None:
    await page.wait_for_function(condition, timeout=10_000)


async def heard_tone(page: Page) -> float:
    """The strongest frequency the page hears (its AnalyserNode), the median over ~2 s."""
    peaks = []
    for _ in range(40):
        h = await page.evaluate("BatonPhone.heard()")
        if h is not None and h["db"] > -60:
            peaks.append(h["hz"])
        await asyncio.sleep(0.05)
    assert len(peaks) > 20, peaks
    return float(statistics.median(peaks))


async def test_the_console_is_the_dispatchers_phone(tmp_path: Path) -> None:
    udp, ws = free_port(), free_port()
    mic = write_tone(tmp_path / "mic.wav", PAGE, seconds=30, rate=48000)
    with serve(tmp_path, **sip_config(tmp_path, udp, ws)) as server:
        unit1 = Baresip(tmp_path / "unit1", "unit1", PASSWORDS["unit1"], udp,
                        tone=write_tone(tmp_path / "unit1.wav", PHONE))  # fmt: skip
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
                *ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
            ])  # fmt: skip
            try:
                await unit1.start()
                page = await browser.new_page()
                page.set_default_timeout(15_000)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await login(page, server.base)
                state = page.locator("#bp-state")
                await page.click("#bp-start")
                await expect(state).to_have_attribute("data-state", "ready")
                # The headset: a microphone to choose, and its level moves with the fake tone.
                await expect(page.locator("#bp-device option")).not_to_have_count(0)
                await wait_until_page(page, "document.querySelector('#bp-level').value > 0.05")
                unit1.command("dial", f"sip:2001@127.0.0.1:{udp}")
                await expect(state).to_have_attribute("data-state", "ringing")
                await expect(state).to_contain_text("unit1")
                await page.click("#bp-answer")
                await expect(state).to_have_attribute("data-state", "talking")
                await wait_until(lambda: unit1.saw("CALL_ESTABLISHED"), 10)
                assert await heard_tone(page) == pytest.approx(PHONE, abs=15)
                await page.click("#bp-hangup")
                await expect(state).to_have_attribute("data-state", "ready")
                await wait_until(lambda: unit1.saw("CALL_CLOSED"), 10)
                # The other way: the dispatcher calls unit1 from the console (click the tile,
                # Call). Baton rings the position first — in the page — then the phone.
                await page.click('.tile[data-user="unit1"]')
                await page.click('#quick button[data-quick="call"]')
                await expect(state).to_have_attribute("data-state", "ringing")
                await page.click("#bp-answer")
                await expect(state).to_have_attribute("data-state", "talking")
                await wait_until(lambda: unit1.count("CALL_ESTABLISHED") == 2, 15)
                assert await heard_tone(page) == pytest.approx(PHONE, abs=15)
                await page.click("#bp-hangup")
                await wait_until(lambda: unit1.count("CALL_CLOSED") == 2, 15)
                assert errors == []
            finally:
                await browser.close()
                await unit1.aclose()
            # Refused: without the fake consent, headless Chromium denies the microphone.
            denied = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await denied.new_page()
                await login(page, server.base)
                await page.click("#bp-start")
                state = page.locator("#bp-state")
                await expect(state).to_have_attribute("data-state", "no-mic")
                await expect(state).to_contain_text("microphone refused")
                await expect(page.locator("#bp-start")).to_be_visible()  # try again
            finally:
                await denied.close()
    calls = unit1.heard()
    assert len(calls) == 2  # the phone's call in, and the dispatcher's call out
    for path in calls:
        with wave.open(str(path), "rb") as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        tail = pcm[len(pcm) // 3 : len(pcm) - 2000]
        print("unit1 heard", analysis.sine_amplitudes(tail, CANDIDATES))
        assert analysis.tones_heard(tail, CANDIDATES) == {PAGE}


def windows(path: Path, seconds: float = 0.5) -> list[set[float]]:
    """The candidate tones heard in each ``seconds`` of a phone's recording."""
    with wave.open(str(path), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    step = int(8000 * seconds)
    return [analysis.tones_heard(pcm[i : i + step], CANDIDATES)
            for i in range(0, len(pcm) - step, step)]  # fmt: skip


async def test_a_browser_dispatcher_talks_in_a_ptt_group(tmp_path: Path) -> None:
    udp, ws = free_port(), free_port()
    mic = write_tone(tmp_path / "mic.wav", PAGE, seconds=30, rate=48000)
    north = {"id": "north", "members": ["disp1", "unit1", "unit2"], "number": "802", "mode": "ptt"}
    with serve(tmp_path, **sip_config(tmp_path, udp, ws, [north])) as server:
        units = [
            Baresip(tmp_path / u, u, PASSWORDS[u], udp, tone=write_tone(tmp_path / f"{u}.wav", f))
            for u, f in (("unit1", PHONE), ("unit2", 1170.0))
        ]
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
                *ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
            ])  # fmt: skip
            try:
                for unit in units:
                    await unit.start()
                page = await browser.new_page()
                page.set_default_timeout(15_000)
                await login(page, server.base)
                state = page.locator("#bp-state")
                await page.click("#bp-start")
                await expect(state).to_have_attribute("data-state", "ready")
                units[0].command("dial", f"sip:802@127.0.0.1:{udp}")  # unit1 opens the group
                await expect(state).to_have_attribute("data-state", "ringing")
                await page.click("#bp-answer")
                await expect(state).to_have_attribute("data-state", "talking")
                group = page.locator("#ptt .ptt")
                await expect(group.locator(".talker")).to_be_visible()
                units[0].command("sndcode", "#")  # unit1 lets go of the floor if it has it
                await expect(group.locator(".talker")).to_contain_text("floor idle")
                await page.locator("body").click(position={"x": 5, "y": 5})  # focus off buttons
                await page.keyboard.down("Space")  # the dispatcher holds the space bar
                await expect(group.locator("button")).to_have_attribute("data-action", "release")
                await expect(group.locator(".talker")).to_contain_text("disp1 talks")
                await asyncio.sleep(2.5)  # real phones hear the page for a while
                await page.keyboard.up("Space")
                await expect(group.locator(".talker")).to_contain_text("floor idle")
                await page.click("#bp-hangup")
                for unit in units:
                    await wait_until(lambda unit=unit: unit.saw("CALL_CLOSED"), 15)
            finally:
                await browser.close()
                for unit in units:
                    await unit.aclose()
    for unit in units:
        (path,) = unit.heard()
        heard = windows(path)
        print(unit.user, heard)
        assert {PAGE} in heard, f"{unit.user} never heard the dispatcher alone"


async def test_a_browser_dispatcher_barges_into_a_phone_call(tmp_path: Path) -> None:
    udp, ws = free_port(), free_port()
    mic = write_tone(tmp_path / "mic.wav", PAGE, seconds=30, rate=48000)
    # Barging in is a supervisor's right (the dispatcher role may not).
    with serve(tmp_path, **sip_config(tmp_path, udp, ws, role="supervisor")) as server:
        tones = {"unit1": PHONE, "unit2": 1170.0}
        units = [
            Baresip(tmp_path / u, u, PASSWORDS[u], udp, tone=write_tone(tmp_path / f"{u}.wav", f))
            for u, f in tones.items()
        ]
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
                *ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic}",
            ])  # fmt: skip
            try:
                for unit in units:
                    await unit.start()
                page = await browser.new_page()
                page.set_default_timeout(15_000)
                await login(page, server.base)
                state = page.locator("#bp-state")
                await page.click("#bp-start")
                await expect(state).to_have_attribute("data-state", "ready")
                units[0].command("dial", f"sip:1002@127.0.0.1:{udp}")  # unit1 calls unit2
                await wait_until(lambda: all(u.saw("CALL_ESTABLISHED") for u in units), 15)
                await page.click('.tile[data-user="unit1"]')
                await page.click('#quick button[data-quick="barge_in"]')
                await expect(state).to_have_attribute("data-state", "ringing")
                await page.click("#bp-answer")
                await expect(state).to_have_attribute("data-state", "talking")
                await page.wait_for_function(
                    "(() => { const l = BatonPhone.levels([780, 1170]);"
                    " return l !== null && l[0] > -50 && l[1] > -50; })()"
                )  # the page hears both units
                levels = await page.evaluate("BatonPhone.levels([500, 780, 1170])")
                assert levels[0] < min(levels[1:]) - 20, levels  # and not itself
                await asyncio.sleep(1.5)  # the phones hear the page for a while
                await page.click("#bp-hangup")
                await expect(state).to_have_attribute("data-state", "ready")
                units[0].command("hangup")  # their call goes on without the supervisor: end it
                for unit in units:
                    await wait_until(lambda unit=unit: unit.saw("CALL_CLOSED"), 15)
            finally:
                await browser.close()
                for unit in units:
                    await unit.aclose()
    for unit in units:
        (path,) = unit.heard()
        other = tones["unit2" if unit.user == "unit1" else "unit1"]
        heard = windows(path)
        print(unit.user, heard)
        assert {PAGE, other} in heard, f"{unit.user} never heard the dispatcher with {other:g} Hz"
