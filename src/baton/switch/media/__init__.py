"""Baton's RTP media engine: every leg's media is anchored here, so flows move users between
calls and meetings by changing the media graph alone.

Layout (sans-IO core, thin asyncio shell):

* :mod:`.g711` — µ-law/A-law tables; :mod:`.rtp` — RTP/RTCP packets and receiver statistics;
  :mod:`.dtmf` — RFC 4733 events; :mod:`.jitter` — the adaptive jitter buffer;
  :mod:`.tones` — generated tones; :mod:`.wav` — WAV in and out;
  :mod:`.mixer` — the media graph and its 20 ms mix;
* :mod:`.engine` — sockets, latching, the relay fast path and the clock: the API the ``sip``
  switch adapter calls;
* :mod:`.analysis` — what did a leg hear (tests and debugging).
"""

from baton.switch.media.engine import PCMA as PCMA
from baton.switch.media.engine import PCMU as PCMU
from baton.switch.media.engine import Codec as Codec
from baton.switch.media.engine import LegStats as LegStats
from baton.switch.media.engine import MediaEngine as MediaEngine
from baton.switch.media.engine import MediaEvent as MediaEvent
from baton.switch.media.engine import MediaMetrics as MediaMetrics
from baton.switch.media.engine import MediaTimeout as MediaTimeout
from baton.switch.media.mixer import MediaError as MediaError
from baton.switch.media.mixer import Mixer as Mixer

__all__ = [
    "PCMA",
    "PCMU",
    "Codec",
    "LegStats",
    "MediaEngine",
    "MediaError",
    "MediaEvent",
    "MediaMetrics",
    "MediaTimeout",
    "Mixer",
]
