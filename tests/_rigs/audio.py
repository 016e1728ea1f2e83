"""What real phones heard: the rig of the end-to-end audio suites (``tests/e2e_audio``,
``tests/e2e_ptt``, and the baresip cases of ``tests/sip_switch``).

The phones
----------
Every phone that must *hear* is a **baresip** softphone (a real SIP user agent with its own RTP
stack, G.711 codec and jitter buffer) registered to Baton with digest and answering Baton's
calls by itself. It sends a tone from a WAV file made here with numpy (module ``aufile``) and
writes what it decodes to a WAV file (module ``sndfile``): that recording is what the phone
heard, decoded by the phone itself, and it is what the tests take apart with an FFT. baresip
sends DTMF as RFC 4733 events (``sndcode``). SIPp is used where its RFC 4733 pcaps are the point
(``dtmf_2833_*.pcap``): it signals and plays the pcaps, and does not need to hear.

Why baresip and not a raw-RTP phone of our own: the point of these suites is that a phone that
is not Baton's hears the right thing; baresip decodes, buffers and records independently of
Baton's media code. The cost is timing: a recording has no timestamps. It has, however, exactly
one frame per audio packet it decoded, in order, so a moment of the scenario maps to a sample
offset by **counting packets**: :class:`Timeline` notes, at each moment, how many packets the
engine had sent to each phone, and a window of the scenario is the samples between two such
counts (minus the phone's jitter-buffer depth, measured per recording, and with margins).

Checks
------
:func:`assert_hears` asserts on a window: the expected tones are present at about the level
they were sent (each phone's tone has amplitude :data:`AMPLITUDE`), every other candidate
tone is at least 30 dB down, the dominant spectral peaks are the expected tones, and the RMS
tells sound from silence. :func:`tone_burst` finds a short Baton tone (a PTT tone, 100–160 ms)
anywhere in a window by sliding 100 ms FFTs over it.

The tones are chosen so that no sum or difference of two of them, nor a harmonic, lands on
another candidate (G.711 is not linear: a mix of 500 and 800 Hz would put a weak product at
2·800−500 = 1100 Hz), and away from Baton's own tones (440/480/620/350/600/660/880/1320 Hz).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import wave
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from _rigs.sip import Baresip, Rig, U, wait_until
from baton.core.events import Event
from baton.switch.media import analysis, g711

__all__ = [
    "ALICE",
    "AMPLITUDE",
    "BATON_TONES",
    "BOB",
    "BOSS",
    "CANDIDATES",
    "DISP",
    "RATE",
    "TONES",
    "Heard",
    "Moment",
    "Phones",
    "Timeline",
    "assert_hears",
    "baresip_phones",
    "read_wav",
    "sine",
    "tone_burst",
    "tones_heard_late",
    "write_rtp_pcap",
    "write_tone",
]

RATE = 8000
FRAME = 160

#: The phones' users (each has a tone in :data:`TONES`).
ALICE = U("alice", ("1001",), password="alice-pw")
BOB = U("bob", ("1002",), password="bob-pw")
DISP = U("disp", ("1003",), password="disp-pw")
BOSS = U("boss", ("1004",), password="boss-pw")
AMPLITUDE = 6000.0  # each phone's tone, peak, 16-bit linear (about −11.6 dBm0)

#: Each phone's tone (Hz), by user id.
TONES: dict[str, float] = {
    "alice": 500.0,
    "bob": 780.0,
    "disp": 1170.0,
    "boss": 1730.0,
    "carol": 1930.0,
}
#: Baton's tones that may reach a phone in these scenarios (preemption 440+620; PTT tones).
BATON_TONES = (440.0, 620.0, 660.0, 880.0, 1320.0)
CANDIDATES = (*sorted(TONES.values()), *BATON_TONES)

#: baresip decodes a packet when the ones behind it push it out of its jitter buffer (default
#: depth 5 frames): packet n sent to a phone is frame n - 5 of its recording.
BARESIP_JITTER_FRAMES = 5
SILENCE_RMS = 60.0  # below: silence (G.711 silence decodes to 0; a phone's noise is small)
ABSENT = 0.03  # an absent tone: under 3 % of the sent amplitude (−30 dB)
PRESENT = (0.85, 1.15)  # a present tone: its amplitude within these factors of the sent one


def write_tone(path: Path, freq: float, seconds: float = 60.0, *, rate: int = RATE) -> Path:
    """A mono 16-bit WAV of a steady sine (what a phone sends, or a prompt Baton plays)."""
    pcm = sine(freq, seconds, rate=rate).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def write_rtp_pcap(path: Path, pcm: npt.NDArray[np.int16], *, port: int = 6000) -> Path:
    """A pcap (Ethernet, IPv4, UDP, as SIPp's ``play_pcap_audio`` reads) of ``pcm`` as PCMU RTP,
    one 20 ms packet every 20 ms: how a SIPp phone sends a tone of our choosing."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
    payload = g711.ulaw_encode(pcm)
    for i in range(len(payload) // FRAME):
        rtp = struct.pack("!BBHII", 0x80, 0x80 if i == 0 else 0, (seq + i) & 0xFFFF,
                          (ts + i * FRAME) & 0xFFFFFFFF, ssrc)  # fmt: skip
        udp_payload = rtp + payload[i * FRAME : (i + 1) * FRAME]
        udp = struct.pack("!HHHH", port, port, 8 + len(udp_payload), 0) + udp_payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))  # fmt: skip
        words = struct.unpack("!10H", ip)
        total = sum(words)
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
        frame = bytes(12) + b"\x08\x00" + ip + udp
        usec = i * 20_000
        out += struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path


def sine(freq: float, seconds: float, *, rate: int = RATE) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def read_wav(path: Path) -> npt.NDArray[np.int16]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2, path
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert rate == RATE, f"{path}: {rate} Hz, expected {RATE}"
    return pcm


# ---- phones --------------------------------------------------------------------------------


@dataclass
class Phones:
    """Started baresip phones by user id (the rig's users)."""

    rig: Rig
    by_user: dict[str, Baresip] = field(default_factory=dict)

    def __getitem__(self, user: str) -> Baresip:
        return self.by_user[user]

    def press(self, user: str, digits: str) -> None:
        """The phone sends ``digits`` as RFC 4733 telephone-events (baresip's ``sndcode``)."""
        self.by_user[user].command("sndcode", digits)


@contextlib.asynccontextmanager
async def baresip_phones(rig: Rig, users: Sequence[U], home: Path) -> AsyncIterator[Phones]:
    """One registered, auto-answering baresip per user, each sending its tone from :data:`TONES`;
    all stopped (by pid) on the way out."""
    phones = Phones(rig)
    try:
        for u in users:
            tone = write_tone(home / f"{u.id}-tone.wav", TONES[u.id])
            phones.by_user[u.id] = Baresip(home / u.id, u.id, u.password, rig.udp_port, tone=tone)
        await asyncio.gather(*(p.start() for p in phones.by_user.values()))
        await wait_until(
            lambda: all(rig.switch.registered(u.id) for u in users), 15
        )  # fmt: skip
        yield phones
    finally:
        for p in phones.by_user.values():
            await p.aclose()


# ---- the timeline: moments of the scenario → sample offsets in each phone's recording ------


@dataclass(frozen=True)
class Moment:
    name: str
    t: float  # loop time
    sent: dict[str, int]  # user → packets the engine had sent to the user's leg


class Timeline:
    """Notes, at named moments, how many packets the engine had sent to each user's phone.

    :meth:`mark` notes a moment now (after the test saw the condition it awaited);
    :meth:`mark_on` notes one the instant a matching event is published on the core's stream
    (the switch has just been told; the next mixer tick carries the change), which is what
    short tones need.
    """

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.moments: dict[str, Moment] = {}
        self._watch: list[tuple[str, Callable[[Event], bool]]] = []
        rig.manager.events.subscribe(self._on_event)

    def _counts(self) -> dict[str, int]:
        out = {}
        media = self.rig.switch.media
        for u in self.rig.users:
            leg = self.rig.switch.leg_of(u.id)
            if leg is not None:
                with contextlib.suppress(Exception):  # a leg being released
                    out[u.id] = media.leg_stats(leg).packets_out
        return out

    def mark(self, name: str) -> Moment:
        assert name not in self.moments, f"moment {name!r} noted twice"
        m = Moment(name, asyncio.get_running_loop().time(), self._counts())
        self.moments[name] = m
        return m

    def mark_on(self, name: str, match: Callable[[Event], bool]) -> None:
        """Note ``name`` when the first event matching ``match`` is published."""
        self._watch.append((name, match))

    def _on_event(self, event: Event) -> None:
        for item in list(self._watch):
            name, match = item
            if match(event):
                self._watch.remove(item)
                self.mark(name)

    async def wait(self, name: str, seconds: float = 10.0) -> Moment:
        await wait_until(lambda: name in self.moments, seconds)
        return self.moments[name]

    async def run_for(self, user: str, seconds: float) -> None:
        """Let the scenario run until ``seconds`` more of audio went to ``user``'s phone (a
        recording window of that length: this is what is measured, not a wait for
        something)."""
        media = self.rig.switch.media
        leg = self.rig.switch.leg_of(user)
        assert leg is not None, f"{user} has no call"
        start = media.leg_stats(leg).packets_out
        need = start + round(seconds * RATE / FRAME)

        def done() -> bool:
            current = self.rig.switch.leg_of(user)
            return current != leg or media.leg_stats(leg).packets_out >= need

        await wait_until(done, seconds + 10)


@dataclass
class Heard:
    """What one phone decoded over its call (its sndfile recording), addressable by moments."""

    user: str
    pcm: npt.NDArray[np.int16]
    lag: int = BARESIP_JITTER_FRAMES

    @classmethod
    def of(cls, phone: Baresip) -> Heard:
        files = phone.heard()
        assert len(files) == 1, f"{phone.user}: expected one call recording, got {files}"
        return cls(phone.user, read_wav(files[0]))

    def between(
        self, start: Moment, end: Moment | None, *, lead: float = 0.4, trail: float = 0.25
    ) -> npt.NDArray[np.int16]:
        """The samples heard from ``lead`` seconds after ``start`` to ``trail`` seconds before
        ``end`` (the end of the recording when ``end`` is None)."""
        first = (start.sent[self.user] - self.lag) * FRAME + round(lead * RATE)
        last = len(self.pcm) if end is None else (end.sent[self.user] - self.lag) * FRAME
        last -= round(trail * RATE)
        assert last - first >= RATE // 4, (
            f"{self.user}: window {start.name}→{end.name if end else 'end'} too short "
            f"({(last - first) / RATE:.2f} s)"
        )
        assert first >= 0 and last <= len(self.pcm), (
            f"{self.user}: window [{first}, {last}) outside the recording ({len(self.pcm)})"
        )
        return self.pcm[first:last]

    def around(self, moment: Moment, before: float, after: float) -> npt.NDArray[np.int16]:
        """The samples from ``before`` seconds before ``moment`` to ``after`` seconds after."""
        at = (moment.sent[self.user] - self.lag) * FRAME
        return self.pcm[max(0, at - round(before * RATE)) : at + round(after * RATE)]


# ---- assertions ---------------------------------------------------------------------------


def tones_heard_late(phone: Baresip, candidates: Iterable[float]) -> set[float]:
    """Which of ``candidates`` ``phone`` heard over the last 1.5 s of its one call recording,
    stopping 0.25 s short of the hang-up; silence fails."""
    (path,) = phone.heard()
    window = read_wav(path)[-12000:-2000]
    assert analysis.rms(window) > 300, f"{phone.user} heard silence"
    return analysis.tones_heard(window, list(candidates))


def describe(pcm: npt.NDArray[np.int16], candidates: Iterable[float] = CANDIDATES) -> str:
    amps = {f: amplitude_at(pcm, f) for f in candidates}
    peaks = analysis.dominant_frequencies(pcm, 4)
    shown = ", ".join(f"{f:g}: {a:.0f}" for f, a in amps.items())
    return (
        f"rms {analysis.rms(pcm):.0f}; peaks {[round(p) for p in peaks]} Hz; amplitudes {{{shown}}}"
    )


def amplitude_at(pcm: npt.NDArray[np.int16], freq: float) -> float:
    """The amplitude of ``freq`` in ``pcm`` (16-bit units): the Hann-windowed transform taken at
    exactly that frequency, so a tone between FFT bins is not under-read (the phones' tones are
    exact: every clock on the path is 8 kHz)."""
    x = np.asarray(pcm, dtype=np.float64)
    w = np.hanning(len(x))
    n = np.arange(len(x))
    return float(2 * abs(np.sum(w * x * np.exp(-2j * np.pi * freq * n / RATE))) / w.sum())


def band_amplitude(pcm: npt.NDArray[np.int16], freq: float, tolerance: float = 10.0) -> float:
    """The amplitude of a tone at ``freq`` read from the power within ``tolerance`` Hz of it
    (Hann window, Parseval): a tone whose phase breaks now and then — a late packet on a busy
    machine, concealed or dropped — keeps its power but smears it over neighbouring bins,
    which a reading at exactly ``freq`` takes for a weaker tone. A tone missing for a while
    still reads lower (by the square root of the share of the window it was there)."""
    x = np.asarray(pcm, dtype=np.float64)
    w = np.hanning(len(x))
    spectrum = np.fft.rfft(w * x)
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    band = (f >= freq - tolerance) & (f <= freq + tolerance)
    power = float(np.sum(np.abs(spectrum[band]) ** 2))
    return float(np.sqrt(4 * power / (len(x) * np.sum(w**2))))


def tone_level(pcm: npt.NDArray[np.int16], freq: float, piece: float = 0.5) -> float:
    """The level of the tone at ``freq`` across ``pcm``: the median of its band amplitude in
    each ``piece``-second slice (the whole, if shorter than two). A starved phone's gap, or a
    packet lost on a busy machine, lowers a slice or two, not the level the mix gives the
    tone, which is what is checked; a tone at the wrong level is wrong in every slice."""
    n = round(piece * RATE)
    if len(pcm) < 2 * n:
        return band_amplitude(pcm, freq)
    return float(
        np.median([band_amplitude(pcm[i : i + n], freq) for i in range(0, len(pcm) - n + 1, n)])
    )


def assert_hears(
    who: str,
    pcm: npt.NDArray[np.int16],
    expected: Iterable[float],
    *,
    amplitude: float = AMPLITUDE,
    candidates: Iterable[float] = CANDIDATES,
) -> None:
    """``pcm`` holds exactly the ``expected`` tones (each at about ``amplitude``), none of the
    other ``candidates``; no tones at all means silence."""
    want = set(expected)
    others = [f for f in candidates if f not in want]
    # Absent: the strongest bin near the frequency (conservative); present: the exact level.
    near = analysis.sine_amplitudes(pcm, others, tolerance=8.0)
    level = analysis.rms(pcm)
    what = f"{who} heard {describe(pcm, [*sorted(want), *others])}; expected {sorted(want) or 'silence'}"
    print(what)  # shown with -s, and in the report of a failing test
    if not want:
        assert level < SILENCE_RMS, what
        return
    # A sum of k equal sines of amplitude A has an RMS of A·sqrt(k/2).
    assert level > 0.8 * amplitude * np.sqrt(len(want) / 2), what
    low, high = PRESENT
    for f in want:
        got = tone_level(pcm, f)
        assert low * amplitude <= got <= high * amplitude, f"{f:g} Hz at {got:.0f}: {what}"
    for f in others:
        assert near[f] < ABSENT * amplitude, f"{f:g} Hz should be absent: {what}"
    # The strongest peaks are the expected tones (within a few hertz: a tone whose phase broke
    # on a busy machine peaks a bin or two aside, 778 Hz for 780 — the same tone).
    peaks = analysis.dominant_frequencies(pcm, len(want), min_amplitude=0.5 * amplitude)
    matched = {f for f in want for p in peaks if abs(p - f) <= 5.0}
    assert len(peaks) == len(want) and matched == want, what


def tone_burst(
    pcm: npt.NDArray[np.int16], freq: float, *, hop: float = 0.02, span: float = 0.1
) -> float:
    """The strongest amplitude of ``freq`` in any ``span``-second slice of ``pcm`` (slid by
    ``hop``): finds a short tone wherever it fell in the window."""
    n, step = round(span * RATE), round(hop * RATE)
    best = 0.0
    for i in range(0, max(1, len(pcm) - n + 1), step):
        part = pcm[i : i + n]
        if len(part) == n:
            best = max(best, analysis.sine_amplitudes(part, [freq], tolerance=12.0)[freq])
    return best
