"""The console's browser phone in headless Chromium: the rig of ``tests/webrtc/test_console_*``.

A test serves Baton on the SIP switch with a ``ws:`` listener (:func:`sip_config`), starts
baresip phones (``_rigs.sip.Baresip``) and a Chromium whose fake microphone plays a tone of its
own (:func:`chromium`), logs a dispatcher in (:func:`login`) and turns the page's phone on
(:func:`phone_on`) — :func:`console` does all of it for a test. What the page hears is read from its WebAudio analyser
(``BatonPhone.levels`` / ``heard`` / ``peaks``); what a phone heard is its recording, cut in
windows (:func:`windows`). Waits are bounded; the only sleeps are the polling of a real browser
and the short stretches in which real phones must hear something.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import wave
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from _rigs.audio import write_tone
from _rigs.sip import Baresip, free_port, rtp_range
from baton.switch.media import analysis
from service.helpers import PASSWORDS
from service.server import Server, serve

CHROMIUM = "/usr/bin/chromium"
#: What a page waits for (an action, and each ``expect``, whose own default is 5 s): the page
#: reacts to a server, phones and a browser sharing a loaded 2-core box. Generous, bounded.
WAIT_MS = 30_000
expect.set_options(timeout=WAIT_MS)
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection",  # Baton's candidate is 127.0.0.1
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
PAGE, PHONE, PHONE2 = 500.0, 780.0, 1170.0  # the page's microphone tone, the phones'
HOLD = 600.0  # Baton's hold tone (docs/sip.md: tones)
CANDIDATES = [PAGE, PHONE, PHONE2]
TONES = {"unit1": PHONE, "unit2": PHONE2}  # what each phone's microphone plays


def sip_config(
    udp: int,
    ws: int,
    groups: list[Any] | None = None,
    role: str = "dispatcher",
    keep: bool = False,
) -> dict[str, Any]:
    """A centre on the SIP switch: disp1 (2001) at a position (with an always-on line if
    ``keep``), unit1 (1001), unit2 (1002)."""
    return {
        "switch": "sip",
        "sip": {"listen": [f"udp:127.0.0.1:{udp}", f"ws:127.0.0.1:{ws}"],
                "rtp_ports": rtp_range(), "rtp_timeout": 0},
        "users": [
            {"id": "disp1", "numbers": ["2001"], "password": PASSWORDS["disp1"],
             "role": role, "keep": keep},
            {"id": "unit1", "numbers": ["1001"], "password": PASSWORDS["unit1"]},
            {"id": "unit2", "numbers": ["1002"], "password": PASSWORDS["unit2"]},
        ],
        "groups": groups or [], "meetings": [],
    }  # fmt: skip


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path, *, microphone: bool = True) -> AsyncIterator[Browser]:
    """Headless Chromium whose microphone plays :data:`PAGE` Hz (or, without ``microphone``,
    one that refuses the microphone as a user would)."""
    args = list(ARGS)
    if microphone:
        mic = write_tone(tmp_path / "mic.wav", PAGE, seconds=30, rate=48000)
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={mic}"]  # fmt: skip
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            await browser.close()


async def login(
    browser: Browser, base: str, errors: list[str] | None = None, refused: list[str] | None = None
) -> Page:
    """A new page with disp1 logged in, in dispatcher mode; page errors go to ``errors``, and
    the URLs of requests answered 4xx or 5xx to ``refused``."""
    page = await browser.new_page()
    page.set_default_timeout(WAIT_MS)
    if errors is not None:
        page.on("pageerror", lambda e: errors.append(str(e)))
    if refused is not None:
        page.on("response", lambda r: refused.append(r.url) if r.status >= 400 else None)
    await page.goto(f"{base}/console/")
    await page.fill("#login-user", "disp1")
    await page.fill("#login-password", PASSWORDS["disp1"])
    await page.click("#login-submit")
    await expect(page.locator("#app")).to_be_visible()
    await page.click("#mode-dispatcher")
    await expect(page.locator("#browser-phone")).to_be_visible()
    return page


async def phone_on(page: Page) -> Locator:
    """Use this browser as disp1's phone; returns the phone's state line, once registered."""
    state = page.locator("#bp-state")
    await page.click("#bp-start")
    await expect(state).to_have_attribute("data-state", "ready")
    return state


@dataclass
class Console:
    """A dispatcher's console in a page, its phone on, beside baresip phones (:func:`console`)."""

    server: Server
    udp: int  # Baton's SIP port
    browser: Browser
    page: Page
    state: Locator  # the page phone's state line
    units: list[Baresip]  # the phones, in the order asked for
    errors: list[str] = field(default_factory=list)  # the page's script errors
    refused: list[str] = field(default_factory=list)  # URLs the page got a 4xx/5xx for

    def unit(self, user: str) -> Baresip:
        return next(u for u in self.units if u.user == user)


@contextlib.asynccontextmanager
async def console(
    tmp_path: Path,
    phones: Sequence[str] = ("unit1",),
    *,
    groups: list[Any] | None = None,
    role: str = "dispatcher",
    ringing: Collection[str] = (),
    keep: bool = False,
) -> AsyncIterator[Console]:
    """``baton serve`` on the SIP switch (:func:`sip_config`), a baresip phone for each of
    ``phones`` playing its tone from :data:`TONES` (answering by itself unless in ``ringing``),
    and a Chromium with disp1 logged in and the page's phone ready. The phones are stopped on
    the way out and keep what they heard (``Baresip.heard``)."""
    udp, ws = free_port(), free_port()
    with serve(tmp_path, **sip_config(udp, ws, groups, role, keep)) as server:
        units = [
            Baresip(tmp_path / u, u, PASSWORDS[u], udp,
                    tone=write_tone(tmp_path / f"{u}.wav", TONES[u]),
                    auto_answer=u not in ringing)
            for u in phones
        ]  # fmt: skip
        async with chromium(tmp_path) as browser:
            try:
                for unit in units:
                    await unit.start()
                errors: list[str] = []
                refused: list[str] = []
                page = await login(browser, server.base, errors, refused)
                state = await phone_on(page)
                yield Console(server, udp, browser, page, state, units, errors, refused)
            finally:
                for unit in units:
                    await unit.aclose()


async def answer(page: Page) -> None:
    state = page.locator("#bp-state")
    await expect(state).to_have_attribute("data-state", "ringing")
    await page.click("#bp-answer")
    await expect(state).to_have_attribute("data-state", "talking")


async def hears(page: Page, freqs: list[float], *, above: float = -50.0) -> None:
    """Wait (10 s at most) until the page hears every one of ``freqs`` above ``above`` dB."""
    await page.wait_for_function(
        f"(() => {{ const l = BatonPhone.levels({freqs!r});"
        f" return l !== null && l.every((v) => v > {above}); }})()",
        timeout=10_000,
    )


async def silent(page: Page, freqs: list[float], *, below: float = -70.0) -> None:
    """Wait (10 s at most) until the page hears none of ``freqs`` above ``below`` dB."""
    await page.wait_for_function(
        f"(() => {{ const l = BatonPhone.levels({freqs!r});"
        f" return l !== null && l.every((v) => v < {below}); }})()",
        timeout=10_000,
    )


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


def recording(path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def windows(
    path: Path, seconds: float = 0.5, candidates: list[float] | None = None
) -> list[set[float]]:
    """The candidate tones heard in each ``seconds`` of a phone's recording (8 kHz)."""
    pcm = recording(path)
    step = int(8000 * seconds)
    return [analysis.tones_heard(pcm[i : i + step], candidates or CANDIDATES)
            for i in range(0, len(pcm) - step, step)]  # fmt: skip
