"""SDP (RFC 4566) and the offer/answer model (RFC 3264) for Baton's audio legs.

Rules
-----
* Parse leniently, negotiate strictly. :func:`parse_sdp` accepts any well-formed ``x=value``
  lines (unknown ones are kept and written back); only what negotiation needs is judged there,
  and a body that cannot be read at all raises :class:`SdpParseError` (a 400).
* Audio only: PCMU (payload type 0), PCMA (8), G.722 (9), Opus (RFC 7587, dynamic,
  ``opus/48000/2``) and telephone-event (RFC 4733, a dynamic payload type). The codec is **the
  first one in the offer's order that we support**; the answer names it and, if offered,
  telephone-event with the offerer's payload type. Our own offers list G.711 first (any phone
  takes them), then G.722 and Opus (docs/sip.md, "Codecs").
* Nothing acceptable is a value, not an exception: :class:`NotAcceptable` (answer 488 Not
  Acceptable Here), with a reason for the log.
* Direction follows RFC 3264 §6.1: an answer may only narrow the offer (``sendonly`` is answered
  ``recvonly``, ``inactive`` with ``inactive``); a connection address of ``0.0.0.0`` is the old
  RFC 2543 hold (the offerer will not receive) and is answered as ``sendonly`` would be.
* Rejected or extra streams are answered with port 0 and the same media type (RFC 3264 §6).
* **SDES-SRTP** (RFC 4568) with :data:`~baton.switch.media.srtp.SUITE`, by the leg's policy
  (``LocalMedia.srtp``): ``off`` answers only RTP/AVP and ignores ``a=crypto``; ``optional``
  takes an offered key (on RTP/SAVP, or best-effort on RTP/AVP) and offers RTP/AVP with a key;
  ``required`` accepts only offers with a usable key and offers RTP/SAVP.
* **WebRTC** (RFC 8829's media profile, a browser's leg): when ``LocalMedia.webrtc`` is set, an
  offer of ``UDP/TLS/RTP/SAVPF`` is answered with ICE-lite (``a=ice-lite``, our ICE credentials
  and one host candidate), DTLS-SRTP (our ``a=fingerprint``, ``a=setup:passive``) and
  ``a=rtcp-mux``; ``LocalMedia.offer_webrtc`` makes our offers that profile too (``actpass``,
  Opus first). The offer must carry ``a=fingerprint``, ICE credentials and ``a=rtcp-mux``;
  an answer that asks Baton to be the DTLS client (``setup:passive``) is refused.
* Our ``o=`` line belongs to a :class:`SdpSession`: the same session id for the whole dialog,
  the version incremented whenever our SDP changes and kept when it does not (RFC 3264 §8).

Theory of operation
-------------------
A :class:`SdpSession` is our half of one leg's media session. As answerer, :meth:`answer`
takes the remote offer and returns :class:`Accepted` (our answer SDP plus the
:class:`NegotiatedAudio` the media engine needs: remote RTP address, codec, DTMF payload type,
ptime and direction) or :class:`NotAcceptable`. As offerer, :meth:`offer` builds our SDP and
:meth:`accept_answer` reads the peer's answer into the same :class:`NegotiatedAudio`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from baton.switch.media.opus import AVAILABLE as OPUS_AVAILABLE
from baton.switch.media.srtp import crypto_attribute, parse_crypto

from .errors import SipParseError
from .message import random_int

__all__ = [
    "CODECS",
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "WEBRTC_PROTO",
    "Accepted",
    "Codec",
    "Connection",
    "Direction",
    "LocalMedia",
    "MediaDescription",
    "NegotiatedAudio",
    "NotAcceptable",
    "Origin",
    "SdpParseError",
    "SdpSession",
    "SessionDescription",
    "WebRtcLocal",
    "parse_sdp",
]


class SdpParseError(SipParseError):
    """A body that is not SDP. Answer the INVITE (or re-INVITE) with 400."""


class Direction(enum.Enum):
    """A stream's direction attribute (RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def reverse(self) -> Direction:
        """The same stream seen from the other end (sendonly ↔ recvonly)."""
        return Direction.of(sends=self.receives, receives=self.sends)


# An attribute name → the direction it states (a dictionary: this runs for every SDP read).
_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True, slots=True)
class Codec:
    """An RTP payload format: encoding name, payload type, clock rate."""

    name: str
    payload_type: int
    clock_rate: int = 8000
    channels: int = 1  # in the rtpmap when not 1 (Opus is always "/2", RFC 7587)
    fmtp: str | None = None  # the a=fmtp parameters we send with it

    def matches(self, name: str, clock_rate: int) -> bool:
        return self.name.lower() == name.lower() and self.clock_rate == clock_rate

    @property
    def rtpmap(self) -> str:
        channels = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.name}/{self.clock_rate}{channels}"

    def attributes(self) -> list[tuple[str, str | None]]:
        """Its ``a=rtpmap`` and, if any, ``a=fmtp``."""
        lines: list[tuple[str, str | None]] = [("rtpmap", self.rtpmap)]
        if self.fmtp is not None:
            lines.append(("fmtp", f"{self.payload_type} {self.fmtp}"))
        return lines


PCMU = Codec("PCMU", 0)
PCMA = Codec("PCMA", 8)
G722 = Codec("G722", 9)  # 16 kHz audio; its RTP clock is 8000 (RFC 3551 §4.5.2)
# The media engine mixes at 16 kHz: ask senders for wideband Opus, not full band (RFC 7587 §6.1).
OPUS = Codec("opus", 111, 48000, 2, "maxplaybackrate=16000;sprop-maxcapturerate=16000")
TELEPHONE_EVENT = Codec("telephone-event", 101)
# Opus is offered only where libopus is installed (docs/sip.md, "Codecs").
CODECS = (PCMU, PCMA, G722, OPUS) if OPUS_AVAILABLE else (PCMU, PCMA, G722)

_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000)}
_HOLD_ADDRESSES = ("0.0.0.0", "::")

# ---- the SDP data model ------------------------------------------------------------------


@dataclass(slots=True)
class Origin:
    username: str = "-"
    session_id: str = "0"
    version: int = 0
    net_type: str = "IN"
    addr_type: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} {self.net_type} "
            f"{self.addr_type} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    address: str
    net_type: str = "IN"
    addr_type: str = "IP4"

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address, "IN", "IP6" if ":" in address else "IP4")

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"

    @property
    def is_hold(self) -> bool:
        """The RFC 2543 hold address (``0.0.0.0``): send nothing here."""
        return self.address in _HOLD_ADDRESSES


@dataclass(slots=True)
class MediaDescription:
    """One ``m=`` section."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)  # i=, k= lines, as they came

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [value or "" for key, value in self.attributes if key == name]

    def rtpmap(self, payload_type: str) -> tuple[str, int] | None:
        """``(encoding name, clock rate)`` for a payload type, from a=rtpmap or the static
        table of RFC 3551."""
        for value in self.attribute_values("rtpmap"):
            pt, _, encoding = value.partition(" ")
            if pt == payload_type:
                name, _, rest = encoding.strip().partition("/")
                rate = rest.partition("/")[0]
                if rate.isdigit():
                    return name, int(rate)
                return None
        if payload_type.isdigit() and int(payload_type) in _STATIC:
            return _STATIC[int(payload_type)]
        return None

    def fmtp(self, payload_type: str) -> str | None:
        for value in self.attribute_values("fmtp"):
            pt, _, params = value.partition(" ")
            if pt == payload_type:
                return params.strip()
        return None

    @property
    def direction(self) -> Direction | None:
        for key, _ in self.attributes:
            direction = _DIRECTIONS.get(key)
            if direction is not None:
                return direction
        return None

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return int(value) if value is not None and value.isdigit() else None

    def lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        out = [f"m={self.media} {port} {self.proto} {' '.join(self.formats)}".rstrip()]
        out += [f"{k}={v}" for k, v in self.extra if k == "i"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"{k}={v}" for k, v in self.extra if k != "i"]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        return out


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP body."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[str] = field(default_factory=lambda: ["0 0"])
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)  # i u e p z k r, as they came
    version: int = 0

    def connection_for(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> Direction:
        """The media's direction, else the session's, else sendrecv (RFC 3264 §5.1)."""
        if media.direction is not None:
            return media.direction
        for key, _ in self.attributes:
            direction = _DIRECTIONS.get(key)
            if direction is not None:
                return direction
        return Direction.SENDRECV

    def to_bytes(self) -> bytes:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        out += [f"{k}={v}" for k, v in self.extra if k in "iuep"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out += [f"t={t}" for t in self.timing]
        out += [f"{k}={v}" for k, v in self.extra if k in "rzk"]
        out += [f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes]
        for media in self.media:
            out += media.lines()
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _bad(problem: str) -> SdpParseError:
    return SdpParseError(f"Malformed SDP: {problem}")


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise _bad("c= line")
    address = parts[2].split("/", 1)[0]  # drop a multicast TTL/count
    return Connection(address, parts[0], parts[1])


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse an SDP body. Raises :class:`SdpParseError` (400) if it is not SDP at all."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("not UTF-8") from None
    else:
        text = body
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise _bad("must start with v=")
    sdp = SessionDescription(timing=[])
    current: MediaDescription | None = None
    for line in lines:
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise _bad(f"bad line {line[:20]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "v":
            if value != "0" or current is not None or sdp.media:
                raise _bad("v= must be 0 and first")
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6 or not parts[2].isdigit():
                raise _bad("o= line")
            sdp.origin = Origin(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])
        elif kind == "s":
            sdp.session_name = value
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise _bad("m= line")
            port_text, slash, count = parts[1].partition("/")
            if not port_text.isdigit() or int(port_text) > 65535:
                raise _bad("m= port")
            if slash and not count.isdigit():
                raise _bad("m= port count")
            current = MediaDescription(
                media=parts[0],
                port=int(port_text),
                proto=parts[2],
                formats=parts[3:],
                port_count=int(count) if slash else None,
            )
            sdp.media.append(current)
        elif kind == "c":
            connection = _parse_connection(value)
            if current is None:
                sdp.connection = connection
            else:
                current.connection = connection
        elif kind == "b":
            (current.bandwidths if current is not None else sdp.bandwidths).append(value)
        elif kind == "t":
            if current is not None:
                raise _bad("t= inside a media section")
            sdp.timing.append(value)
        elif kind == "a":
            name, colon, attr_value = value.partition(":")
            item = (name, attr_value if colon else None)
            (current.attributes if current is not None else sdp.attributes).append(item)
        else:
            (current.extra if current is not None else sdp.extra).append((kind, value))
    return sdp


# ---- offer / answer ----------------------------------------------------------------------


WEBRTC_PROTO = "UDP/TLS/RTP/SAVPF"


@dataclass(frozen=True, slots=True)
class WebRtcLocal:
    """Our side of a WebRTC leg: ICE credentials and the DTLS certificate's fingerprint."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str  # "sha-256 AB:CD:…"


@dataclass(frozen=True, slots=True)
class LocalMedia:
    """What we offer or accept on one leg: our RTP address and port, and our codecs in order
    of preference (used when *we* offer; when answering, the offer's order wins)."""

    address: str
    port: int
    codecs: tuple[Codec, ...] = CODECS
    dtmf: bool = True
    dtmf_payload_type: int = TELEPHONE_EVENT.payload_type
    ptime: int = 20
    srtp: str = "off"  # "off" | "optional" | "required" (see the module docstring)
    srtp_key: bytes | None = None  # our master key ‖ salt, when srtp is not "off"
    webrtc: WebRtcLocal | None = None  # set: a browser's offer can be answered
    offer_webrtc: bool = False  # our offers use the WebRTC profile (the callee is a browser)


@dataclass(frozen=True, slots=True)
class NegotiatedAudio:
    """What the media engine needs to run the leg's RTP after an offer/answer exchange."""

    codec: Codec
    dtmf_payload_type: int | None
    remote_address: str | None  # None: the peer does not want media now (held, 0.0.0.0)
    remote_port: int
    local_direction: Direction  # what we may do: send and/or receive
    remote_direction: Direction  # what the peer said it does
    ptime: int = 20
    srtp_send: bytes | None = None  # SRTP master keys: ours and the peer's (None: plain RTP)
    srtp_receive: bytes | None = None
    # A WebRTC leg: our ICE ufrag and pwd, and the peer's DTLS fingerprint (keys from DTLS).
    webrtc: tuple[str, str, str | None] | None = None

    @property
    def held_by_remote(self) -> bool:
        """True when the peer put the call on hold (it no longer receives our media)."""
        return not self.remote_direction.receives


@dataclass(frozen=True, slots=True)
class Accepted:
    """The offer was acceptable: send ``answer``; run the media as ``media`` says."""

    answer: SessionDescription
    media: NegotiatedAudio


@dataclass(frozen=True, slots=True)
class NotAcceptable:
    """Nothing in the SDP is acceptable: answer the offer with 488 Not Acceptable Here."""

    reason: str
    status: int = 488


def _effective_direction(sdp: SessionDescription, media: MediaDescription) -> Direction:
    direction = sdp.direction_of(media)
    connection = sdp.connection_for(media)
    if connection is not None and connection.is_hold:
        # RFC 2543 hold: the peer gave no address to send to, so it receives nothing.
        direction = Direction.of(sends=direction.sends, receives=False)
    return direction


def _is_audio_rtp(media: MediaDescription, srtp: str = "off") -> bool:
    protos = (
        ("RTP/AVP", "RTP/AVPF")
        if srtp == "off"
        else ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")
    )
    return media.media.lower() == "audio" and media.proto.upper() in protos


def _offered_key(media: MediaDescription) -> tuple[int, bytes] | None:
    """The first ``a=crypto`` of a stream with our suite and a usable key: (tag, key)."""
    for value in media.attribute_values("crypto"):
        crypto = parse_crypto(value)
        if crypto is not None:
            return crypto.tag, crypto.key
    return None


def _choose_codec(
    media: MediaDescription, supported: tuple[Codec, ...]
) -> tuple[Codec | None, int | None]:
    codec: Codec | None = None
    dtmf: int | None = None
    for fmt in media.formats:
        mapping = media.rtpmap(fmt)
        if mapping is None or not fmt.isdigit():
            continue
        name, rate = mapping
        if codec is None:
            for candidate in supported:
                if candidate.matches(name, rate):
                    codec = Codec(
                        candidate.name, int(fmt), rate, candidate.channels, candidate.fmtp
                    )
                    break
        if dtmf is None and TELEPHONE_EVENT.matches(name, 8000) and rate == 8000:
            dtmf = int(fmt)
    return codec, dtmf


class SdpSession:
    """Our side of one leg's SDP session: builds offers and answers, reads answers.

    ``session_id`` stays fixed; the ``o=`` version increments each time our SDP changes.
    """

    def __init__(
        self,
        local: LocalMedia,
        *,
        username: str = "baton",
        session_id: int | None = None,
        session_name: str = "baton",
    ) -> None:
        self.local = local
        self._username = username
        self._session_id = str(session_id if session_id is not None else random_int(5))
        self._session_name = session_name
        self._version = int(self._session_id) if session_id is not None else 1
        self._last: SessionDescription | None = None
        self._offer: SessionDescription | None = None
        # The media stream's mid once the session is WebRTC: our re-offers (hold, session
        # refresh) stay in that profile with the same mid, whoever offered first.
        self._webrtc_mid: str | None = None

    @property
    def version(self) -> int:
        return self._version

    @property
    def last_sdp(self) -> SessionDescription | None:
        """The SDP we sent last (offer or answer)."""
        return self._last

    # -- as offerer
    def offer(
        self, direction: Direction = Direction.SENDRECV, *, new_version: bool = False
    ) -> SessionDescription:
        """Our offer (initial or re-offer: hold is ``SENDONLY``, resume ``SENDRECV``)."""
        local = self.local
        if (local.offer_webrtc or self._webrtc_mid is not None) and local.webrtc is not None:
            return self._offer_webrtc(direction, new_version)
        formats = [str(c.payload_type) for c in local.codecs]
        attributes: list[tuple[str, str | None]] = [
            line for c in local.codecs for line in c.attributes()
        ]
        if local.dtmf:
            formats.append(str(local.dtmf_payload_type))
            attributes.append(("rtpmap", f"{local.dtmf_payload_type} telephone-event/8000"))
            attributes.append(("fmtp", f"{local.dtmf_payload_type} 0-16"))
        attributes += [("ptime", str(local.ptime)), (direction.value, None)]
        proto = "RTP/AVP"
        if local.srtp != "off" and local.srtp_key is not None:
            attributes.append(("crypto", crypto_attribute(1, local.srtp_key)))
            proto = "RTP/SAVP" if local.srtp == "required" else "RTP/AVP"
        media = MediaDescription("audio", local.port, proto, formats, attributes=attributes)
        sdp = self._stamp([media], force=new_version)
        self._offer = sdp
        return sdp

    def accept_answer(self, answer: SessionDescription | bytes) -> NegotiatedAudio | NotAcceptable:
        """Read the peer's answer to our last offer. Raises :class:`SdpParseError`."""
        if self._offer is None:
            return NotAcceptable("no offer outstanding")
        sdp = answer if isinstance(answer, SessionDescription) else parse_sdp(answer)
        if not sdp.media:
            return NotAcceptable("answer has no media")
        if self._offer.media and self._offer.media[0].proto == WEBRTC_PROTO:
            return self._accept_webrtc(sdp)
        media = sdp.media[0]  # our offer has one audio stream; the answer mirrors it
        if not _is_audio_rtp(media, self.local.srtp) or media.port == 0:
            return NotAcceptable("answer rejected the audio stream")
        key = _offered_key(media) if self.local.srtp != "off" else None
        if key is None and self.local.srtp == "required":
            return NotAcceptable("answer has no SRTP key, and SRTP is required")
        codec, dtmf = _choose_codec(media, self.local.codecs)
        if codec is None:
            return NotAcceptable("answer names no codec we offered")
        remote = _effective_direction(sdp, media)
        offered = self._offer.direction_of(self._offer.media[0])
        connection = sdp.connection_for(media)
        if connection is None:
            return NotAcceptable("answer has no connection address")
        return NegotiatedAudio(
            codec=codec,
            dtmf_payload_type=dtmf if self.local.dtmf else None,
            remote_address=None if connection.is_hold else connection.address,
            remote_port=media.port,
            local_direction=Direction.of(
                sends=offered.sends and remote.receives, receives=offered.receives and remote.sends
            ),
            remote_direction=remote,
            ptime=media.ptime or self.local.ptime,
            srtp_send=self.local.srtp_key if key is not None else None,
            srtp_receive=key[1] if key is not None else None,
        )

    # -- as answerer
    def answer(
        self, offer: SessionDescription | bytes, wish: Direction = Direction.SENDRECV
    ) -> Accepted | NotAcceptable:
        """Answer a remote offer. ``wish`` is what we want (``SENDONLY`` to hold the peer).

        Raises :class:`SdpParseError` if the offer is not SDP.
        """
        sdp = offer if isinstance(offer, SessionDescription) else parse_sdp(offer)
        if self.local.webrtc is not None and any(
            m.media.lower() == "audio" and m.proto.upper() == WEBRTC_PROTO and m.port
            for m in sdp.media
        ):
            return self._answer_webrtc(sdp, wish)
        chosen: tuple[int, Codec, int | None] | None = None
        key: tuple[int, bytes] | None = None
        reasons: list[str] = []
        srtp = self.local.srtp if self.local.srtp_key is not None else "off"
        for index, media in enumerate(sdp.media):
            if chosen is not None:
                break
            if not _is_audio_rtp(media, srtp):
                reasons.append(f"{media.media} {media.proto} not supported")
                continue
            key = _offered_key(media) if srtp != "off" else None
            if key is None and (srtp == "required" or "SAVP" in media.proto.upper()):
                reasons.append("no usable SRTP key (a=crypto " + "AES_CM_128_HMAC_SHA1_80)")
                continue
            if media.port == 0:
                reasons.append("audio stream disabled (port 0)")
                continue
            if sdp.connection_for(media) is None:
                reasons.append("no connection address")
                continue
            codec, dtmf = _choose_codec(media, self.local.codecs)
            if codec is None:
                reasons.append("no common codec")
                continue
            chosen = (index, codec, dtmf if self.local.dtmf else None)
        if chosen is None:
            return NotAcceptable("; ".join(reasons) or "no media stream offered")
        index, codec, dtmf = chosen
        offered = sdp.media[index]
        remote = _effective_direction(sdp, offered)
        ours = Direction.of(
            sends=remote.receives and wish.sends, receives=remote.sends and wish.receives
        )
        answer_media: list[MediaDescription] = []
        for i, media in enumerate(sdp.media):
            if i != index:
                answer_media.append(
                    MediaDescription(media.media, 0, media.proto, media.formats[:1] or ["0"])
                )
                continue
            formats = [str(codec.payload_type)]
            attributes: list[tuple[str, str | None]] = codec.attributes()
            if dtmf is not None:
                formats.append(str(dtmf))
                attributes.append(("rtpmap", f"{dtmf} telephone-event/8000"))
                attributes.append(("fmtp", f"{dtmf} 0-16"))
            attributes += [("ptime", str(self.local.ptime)), (ours.value, None)]
            if key is not None and self.local.srtp_key is not None:
                attributes.append(("crypto", crypto_attribute(key[0], self.local.srtp_key)))
            answer_media.append(
                MediaDescription(
                    "audio", self.local.port, media.proto, formats, attributes=attributes
                )
            )
        answer = self._stamp(answer_media)
        connection = sdp.connection_for(offered)
        assert connection is not None  # checked while choosing
        negotiated = NegotiatedAudio(
            codec=codec,
            dtmf_payload_type=dtmf,
            remote_address=None if connection.is_hold else connection.address,
            remote_port=offered.port,
            local_direction=ours,
            remote_direction=remote,
            ptime=offered.ptime or self.local.ptime,
            srtp_send=self.local.srtp_key if key is not None else None,
            srtp_receive=key[1] if key is not None else None,
        )
        self._offer = None
        return Accepted(answer, negotiated)

    # -- WebRTC
    def _webrtc_lines(self, setup: str, mid: str | None) -> list[tuple[str, str | None]]:
        web = self.local.webrtc
        assert web is not None
        lines: list[tuple[str, str | None]] = [
            ("rtcp-mux", None),
            ("ice-ufrag", web.ice_ufrag),
            ("ice-pwd", web.ice_pwd),
            ("fingerprint", web.fingerprint),
            ("setup", setup),
        ]
        if mid is not None:
            lines.append(("mid", mid))
        host = self.local.address
        lines += [
            ("candidate", f"1 1 udp 2130706431 {host} {self.local.port} typ host"),
            ("end-of-candidates", None),
        ]
        return lines

    def _offer_webrtc(self, direction: Direction, new_version: bool) -> SessionDescription:
        local = self.local
        codecs = sorted(local.codecs, key=lambda c: c.name != "opus")  # Opus first for browsers
        formats = [str(c.payload_type) for c in codecs]
        attributes = [line for c in codecs for line in c.attributes()]
        if local.dtmf:
            formats.append(str(local.dtmf_payload_type))
            attributes.append(("rtpmap", f"{local.dtmf_payload_type} telephone-event/8000"))
            attributes.append(("fmtp", f"{local.dtmf_payload_type} 0-16"))
        attributes += [("ptime", str(local.ptime)), (direction.value, None)]
        mid = self._webrtc_mid or "0"
        # Baton stays the DTLS server: actpass in a first offer, passive in a re-offer (RFC 5763
        # §5: a re-offer keeps the role, so the handshake is not redone).
        setup = "passive" if self._webrtc_mid is not None else "actpass"
        attributes += self._webrtc_lines(setup, mid)
        media = MediaDescription("audio", local.port, WEBRTC_PROTO, formats, attributes=attributes)
        sdp = self._stamp(
            [media], force=new_version, attributes=[("ice-lite", None), ("group", f"BUNDLE {mid}")]
        )
        self._offer = sdp
        return sdp

    def _accept_webrtc(self, sdp: SessionDescription) -> NegotiatedAudio | NotAcceptable:
        assert self._offer is not None
        media = sdp.media[0]
        if media.proto.upper() != WEBRTC_PROTO or media.port == 0:
            return NotAcceptable("answer rejected the audio stream")
        problem = _webrtc_problem(sdp, media)
        if problem is not None:
            return NotAcceptable(problem)
        if _attribute(sdp, media, "setup") == "passive":
            return NotAcceptable("Baton is the DTLS server: an answer of setup:passive is refused")
        codec, dtmf = _choose_codec(media, self.local.codecs)
        if codec is None:
            return NotAcceptable("answer names no codec we offered")
        remote = Direction.SENDRECV if media.direction is None else media.direction
        offered = self._offer.direction_of(self._offer.media[0])
        self._webrtc_mid = self._offer.media[0].attribute("mid") or "0"
        return self._negotiated_webrtc(
            sdp,
            media,
            codec,
            dtmf if self.local.dtmf else None,
            Direction.of(
                sends=offered.sends and remote.receives, receives=offered.receives and remote.sends
            ),
            remote,
        )

    def _answer_webrtc(self, sdp: SessionDescription, wish: Direction) -> Accepted | NotAcceptable:
        index = next(
            i
            for i, m in enumerate(sdp.media)
            if m.media.lower() == "audio" and m.proto.upper() == WEBRTC_PROTO and m.port
        )
        offered = sdp.media[index]
        problem = _webrtc_problem(sdp, offered)
        if problem is None and _attribute(sdp, offered, "setup") == "passive":
            problem = "Baton is the DTLS server: an offer of setup:passive is refused"
        if problem is not None:
            return NotAcceptable(problem)
        codec, dtmf = _choose_codec(offered, self.local.codecs)
        if codec is None:
            return NotAcceptable("no common codec")
        dtmf = dtmf if self.local.dtmf else None
        # The 0.0.0.0 of a browser's c= line is no hold: ICE says where media goes.
        remote = Direction.SENDRECV if offered.direction is None else offered.direction
        ours = Direction.of(
            sends=remote.receives and wish.sends, receives=remote.sends and wish.receives
        )
        answer_media: list[MediaDescription] = []
        mid = offered.attribute("mid")
        for i, media in enumerate(sdp.media):
            if i != index:
                answer_media.append(
                    MediaDescription(media.media, 0, media.proto, media.formats[:1] or ["0"])
                )
                continue
            formats = [str(codec.payload_type)]
            attributes = codec.attributes()
            if dtmf is not None:
                formats.append(str(dtmf))
                attributes.append(("rtpmap", f"{dtmf} telephone-event/8000"))
            attributes += [("ptime", str(self.local.ptime)), (ours.value, None)]
            attributes += self._webrtc_lines("passive", mid)
            answer_media.append(
                MediaDescription(
                    "audio", self.local.port, WEBRTC_PROTO, formats, attributes=attributes
                )
            )
        session: list[tuple[str, str | None]] = [("ice-lite", None)]
        if mid is not None:
            session.append(("group", f"BUNDLE {mid}"))
        answer = self._stamp(answer_media, attributes=session)
        negotiated = self._negotiated_webrtc(sdp, offered, codec, dtmf, ours, remote)
        self._webrtc_mid = mid or "0"
        self._offer = None
        return Accepted(answer, negotiated)

    def _negotiated_webrtc(
        self,
        sdp: SessionDescription,
        media: MediaDescription,
        codec: Codec,
        dtmf: int | None,
        ours: Direction,
        remote: Direction,
    ) -> NegotiatedAudio:
        web = self.local.webrtc
        assert web is not None
        connection = sdp.connection_for(media)
        address = connection.address if connection is not None else "0.0.0.0"
        return NegotiatedAudio(
            codec=codec,
            dtmf_payload_type=dtmf,
            remote_address=address,
            remote_port=media.port,
            local_direction=ours,
            remote_direction=remote,
            ptime=media.ptime or self.local.ptime,
            webrtc=(web.ice_ufrag, web.ice_pwd, _attribute(sdp, media, "fingerprint")),
        )

    # -- the o= line
    def _stamp(
        self,
        media: list[MediaDescription],
        *,
        force: bool = False,
        attributes: list[tuple[str, str | None]] | None = None,
    ) -> SessionDescription:
        sdp = SessionDescription(
            origin=Origin(self._username, self._session_id, self._version, "IN",
                          "IP6" if ":" in self.local.address else "IP4", self.local.address),
            session_name=self._session_name,
            connection=Connection.for_address(self.local.address),
            attributes=attributes or [],
            media=media,
        )  # fmt: skip
        # Same version for the same SDP; a new one for any change (RFC 3264 §8).
        if self._last is not None and (force or self._last.to_bytes() != sdp.to_bytes()):
            self._version += 1
            sdp.origin.version = self._version
        self._last = sdp
        return sdp


def _attribute(sdp: SessionDescription, media: MediaDescription, name: str) -> str | None:
    """A media attribute, else the session's (``a=fingerprint`` may be at either level)."""
    value = media.attribute(name)
    if value is None:
        for key, session_value in sdp.attributes:
            if key == name:
                return session_value
    return value


def _webrtc_problem(sdp: SessionDescription, media: MediaDescription) -> str | None:
    """Why a WebRTC stream cannot be used (what RFC 8829 makes mandatory), or None."""
    fingerprint = _attribute(sdp, media, "fingerprint")
    if fingerprint is None or not fingerprint.lower().startswith("sha-256 "):
        return "WebRTC needs a=fingerprint (sha-256)"
    if _attribute(sdp, media, "ice-ufrag") is None or _attribute(sdp, media, "ice-pwd") is None:
        return "WebRTC needs ICE credentials"
    if not any(key == "rtcp-mux" for key, _ in media.attributes):
        return "WebRTC needs a=rtcp-mux"
    return None
