"""Generated tones: int16 PCM at 8 kHz with their cadences.

Theory of operation
-------------------
A tone is a list of :class:`Segment` — frequencies (empty for a pause) and a length — making one
*cycle* of its cadence. :meth:`ToneSpec.render` gives the PCM to play:

* ``duration=None, loop=False`` — the natural cadence once: one cycle without its trailing pause
  (busy once is one 0.5 s burst; a steady tone plays its ``once_ms``);
* ``duration=None, loop=True`` — one full cycle, pause included, to be repeated;
* ``duration=d`` — cycles repeated and cut to ``d`` seconds (repeated again if looped).

Every burst gets 2 ms raised-cosine edges so that cadences do not click. Rendered PCM is cached
and read-only: tones are shared by every playback.

Sources
-------
* Ringback, busy, confirmation, call waiting: the North American Precise Tone Plan (Telcordia
  GR-506-CORE, LSSGR signalling): ringback 440+480 Hz 2 s on / 4 s off at −19 dBm0; busy 480+620
  Hz 0.5 s / 0.5 s at −24 dBm0; confirmation 350+440 Hz, three 100 ms bursts 100 ms apart; call
  waiting 440 Hz for 300 ms, repeated after about 10 s.
* Preemption (MLPP, as on the U.S. Defense Switched Network — DISA's Unified Capabilities
  Requirements and the DSN generic switching requirements, after ITU-T Q.735 §3 for the service):
  a *steady* 440+620 Hz tone, which the preempted parties hear for at least 3 s before release.
  That is how vendor MLPP documentation describes it too ("the other party receives a preemption
  tone for a minimum of 3 seconds"). The UCR text itself was not at hand when this was written;
  frequencies and the 3 s minimum are as widely cited.
* Hold: there is no one standard; Baton plays a soft double beep (600 Hz, 150 ms × 2) every 5 s,
  as many PBXs do for a held party.
* Push-to-talk (3GPP TS 24.379/24.380 leave the tones to the implementation; these are Baton's,
  chosen to be told apart by ear and by FFT, short so they do not delay speech):
  ``talk_permit`` a rising chirp 880 → 1320 Hz (60 + 100 ms): "go ahead";
  ``floor_denied`` three low 400 Hz pips (90 ms on, 60 ms off): "no";
  ``floor_idle`` one 660 Hz blip of 120 ms: "the channel is free";
  ``floor_revoked`` a falling sequence 1320 → 880 → 660 Hz (100, 100, 150 ms): "you lost it".
* DTMF ``dtmf:<digit>``: the row and column tones of ITU-T Q.23 (697/770/852/941 and
  1209/1336/1477/1633 Hz), 100 ms on (and 100 ms off when looped), −10 dBm0 each.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["RATE", "TONES", "Segment", "ToneSpec", "dtmf_frequencies", "tone_spec"]

RATE: Final = 8000
#: Peak amplitude (16-bit linear) of a 0 dBm0 sine in G.711 (µ-law full scale is +3.17 dBm0).
_DBM0_PEAK: Final = 22_680.0
_RAMP: Final = 16  # 2 ms edges


@dataclass(frozen=True, slots=True)
class Segment:
    """A burst of the sum of ``freqs`` (Hz) lasting ``ms``; no frequencies is a pause."""

    freqs: tuple[float, ...]
    ms: int


@dataclass(frozen=True, slots=True)
class ToneSpec:
    """A named tone: one cadence cycle, a level per component, and how long "once" is."""

    name: str
    cycle: tuple[Segment, ...]
    level_dbm0: float = -16.0
    once_ms: int | None = None  # for a steady tone: the natural length of "once"

    def render(self, duration: float | None = None, *, loop: bool = False) -> npt.NDArray[np.int16]:
        """The PCM to play once (see the module docstring); repeat it when ``loop``."""
        return _render(self, duration, loop)

    @property
    def steady(self) -> bool:
        return len(self.cycle) == 1 and bool(self.cycle[0].freqs)


def _burst(
    freqs: tuple[float, ...], n: int, amplitude: float, *, ramp: bool = True
) -> npt.NDArray[np.float64]:
    wave = np.zeros(n)
    if not freqs or n == 0:
        return wave
    t = np.arange(n) / RATE
    for f in freqs:
        wave += np.sin(2 * np.pi * f * t)
    wave *= amplitude
    edge_len = min(_RAMP, n // 2) if ramp else 0
    if edge_len:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge_len) / edge_len)
        wave[:edge_len] *= edge
        wave[n - edge_len :] *= edge[::-1]
    return wave


def _pcm(spec: ToneSpec, segments: tuple[Segment, ...]) -> npt.NDArray[np.float64]:
    amplitude = _DBM0_PEAK * 10 ** (spec.level_dbm0 / 20)
    parts = [_burst(seg.freqs, seg.ms * RATE // 1000, amplitude) for seg in segments]
    return np.concatenate(parts) if parts else np.zeros(0)


@functools.lru_cache(maxsize=128)
def _render(spec: ToneSpec, duration: float | None, loop: bool) -> npt.NDArray[np.int16]:
    if spec.steady:
        # No cadence: as long as asked, or its natural length; a loop repeats 1 s, a whole
        # number of periods of any integer frequency, without edges: no seam, no click.
        ms = spec.once_ms if spec.once_ms is not None else spec.cycle[0].ms
        if duration is not None:
            ms = round(duration * 1000)
        elif loop:
            ms = 1000
        amplitude = _DBM0_PEAK * 10 ** (spec.level_dbm0 / 20)
        out = _burst(spec.cycle[0].freqs, ms * RATE // 1000, amplitude, ramp=not loop)
    else:
        cycle = _pcm(spec, spec.cycle)
        if duration is not None:
            n = round(duration * RATE)
            reps = -(-n // max(1, len(cycle)))
            out = np.tile(cycle, reps)[:n]
        elif loop:
            out = cycle
        else:
            # Once: drop the trailing pause.
            segments = list(spec.cycle)
            while segments and not segments[-1].freqs:
                segments.pop()
            out = _pcm(spec, tuple(segments))
    pcm = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    pcm.flags.writeable = False
    return pcm


def _s(ms: int, *freqs: float) -> Segment:
    return Segment(tuple(freqs), ms)


TONES: Final[dict[str, ToneSpec]] = {
    spec.name: spec
    for spec in (
        ToneSpec("ringback", (_s(2000, 440, 480), _s(4000)), level_dbm0=-19),
        ToneSpec("busy", (_s(500, 480, 620), _s(500)), level_dbm0=-19),
        ToneSpec("call_waiting", (_s(300, 440), _s(9700)), level_dbm0=-13),
        ToneSpec("hold", (_s(150, 600), _s(150), _s(150, 600), _s(4550)), level_dbm0=-19),
        ToneSpec(
            "confirm",
            (_s(100, 350, 440), _s(100), _s(100, 350, 440), _s(100), _s(100, 350, 440), _s(500)),
        ),
        ToneSpec("preemption", (_s(3000, 440, 620),), level_dbm0=-16, once_ms=3000),
        ToneSpec("talk_permit", (_s(60, 880), _s(100, 1320)), level_dbm0=-13),
        ToneSpec(
            "floor_denied",
            (_s(90, 400), _s(60), _s(90, 400), _s(60), _s(90, 400), _s(600)),
            level_dbm0=-13,
        ),
        ToneSpec("floor_idle", (_s(120, 660), _s(880)), level_dbm0=-13),
        ToneSpec("floor_revoked", (_s(100, 1320), _s(100, 880), _s(150, 660)), level_dbm0=-13),
    )
}

_DTMF_ROWS: Final = (697.0, 770.0, 852.0, 941.0)
_DTMF_COLS: Final = (1209.0, 1336.0, 1477.0, 1633.0)
_DTMF_KEYS: Final = ("123A", "456B", "789C", "*0#D")


def dtmf_frequencies(digit: str) -> tuple[float, float]:
    """The (row, column) frequencies of a DTMF digit; ``ValueError`` for anything else."""
    key = digit.upper()
    for r, row in enumerate(_DTMF_KEYS):
        c = row.find(key) if len(key) == 1 else -1
        if c >= 0:
            return _DTMF_ROWS[r], _DTMF_COLS[c]
    raise ValueError(f"not a DTMF digit: {digit!r}")


def tone_spec(name: str) -> ToneSpec:
    """The spec of a tone by its :class:`~baton.core.port.Tone` name.

    Raises ``KeyError`` for an unknown name (the engine turns it into a ``SwitchError``).
    """
    if name.startswith("dtmf:"):
        try:
            row, col = dtmf_frequencies(name[5:])
        except ValueError:
            raise KeyError(name) from None
        return _dtmf_spec(name, row, col)
    return TONES[name]


@functools.lru_cache(maxsize=16)
def _dtmf_spec(name: str, row: float, col: float) -> ToneSpec:
    return ToneSpec(name, (_s(100, row, col), _s(100)), level_dbm0=-10)
