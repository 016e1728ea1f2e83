"""SRTP and SRTCP with the AES_CM_128_HMAC_SHA1_80 suite (RFC 3711), keyed by SDES (RFC 4568).

Rules
-----
* Sans-IO: :class:`SrtpContext` turns RTP/RTCP packets into SRTP/SRTCP and back; it never
  touches a socket or a clock. One context per direction of a leg (ours to send, the phone's to
  receive), from a master key and salt (:func:`new_key`, :func:`parse_crypto`).
* Only AES_CM_128_HMAC_SHA1_80 (the suite every SDES phone offers first), key derivation rate
  0, no MKI. A packet that fails authentication is dropped (:class:`SrtpError`), never
  decrypted.
* The rollover counter is estimated per RFC 3711 §3.3.1 and moves only on an authenticated
  packet; replays are refused within a 64-packet window (§3.3.2).

Theory of operation
-------------------
Session keys are derived from the master key with the AES-CM PRF (§4.3): encryption key,
authentication key and salt, for SRTP (labels 0–2) and SRTCP (3–5). A packet's keystream is
AES in counter mode from IV = salt·2¹⁶ ⊕ SSRC·2⁶⁴ ⊕ index·2¹⁶ (§4.1.1); its tag is the first
80 bits of HMAC-SHA1 over the packet and the rollover counter (RTP) or the E-flag and index
(RTCP).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["SUITE", "SrtpContext", "SrtpError", "crypto_attribute", "new_key", "parse_crypto"]

SUITE = "AES_CM_128_HMAC_SHA1_80"
_TAG = 10
_KEY, _SALT = 16, 14
_WINDOW = 64


class SrtpError(Exception):
    """A packet that is not valid SRTP/SRTCP for this context (bad tag, too short, replayed)."""


def new_key() -> bytes:
    """A fresh master key and salt (30 random bytes)."""
    return os.urandom(_KEY + _SALT)


def crypto_attribute(tag: int, key: bytes) -> str:
    """The SDP ``a=crypto`` value (RFC 4568) offering ``key`` (master key ‖ salt)."""
    return f"{tag} {SUITE} inline:{base64.b64encode(key).decode()}"


@dataclass(frozen=True, slots=True)
class Crypto:
    tag: int
    key: bytes  # master key ‖ master salt


def parse_crypto(value: str) -> Crypto | None:
    """An ``a=crypto`` value with our suite and a usable inline key, or ``None``."""
    parts = value.split()
    if len(parts) < 3 or parts[1].upper() != SUITE or not parts[0].isdigit():
        return None
    params = parts[2]
    if not params.startswith("inline:"):
        return None
    key_text = params[len("inline:") :].split("|")[0]
    if "|" in params[len("inline:") :]:
        extra = params[len("inline:") :].split("|")[1:]
        if any(":" in e for e in extra):  # an MKI: not supported
            return None
    try:
        key = base64.b64decode(key_text + "=" * (-len(key_text) % 4), validate=True)
    except ValueError:
        return None
    if len(key) != _KEY + _SALT:
        return None
    return Crypto(int(parts[0]), key)


def _aes_cm(key: bytes, iv: int, length: int) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def derive(master: bytes, label: int, length: int) -> bytes:
    """A session key (RFC 3711 §4.3.1, key derivation rate 0)."""
    master_key, master_salt = master[:_KEY], master[_KEY:]
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return _aes_cm(master_key, x << 16, length)


def _xor(data: bytes, keystream: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(keystream[: len(data)], "big")).to_bytes(
        len(data), "big"
    )


def _header_length(packet: bytes) -> int:
    cc = packet[0] & 0x0F
    length = 12 + 4 * cc
    if packet[0] & 0x10:  # a header extension
        if len(packet) < length + 4:
            raise SrtpError("truncated header extension")
        (words,) = struct.unpack_from(">H", packet, length + 2)
        length += 4 + 4 * words
    if len(packet) < length:
        raise SrtpError("truncated header")
    return length


class SrtpContext:
    """One direction of one leg's SRTP (and SRTCP). See the module docstring."""

    def __init__(self, master: bytes) -> None:
        if len(master) != _KEY + _SALT:
            raise ValueError("an SRTP master key and salt are 30 bytes")
        self._rtp_key = derive(master, 0, _KEY)
        self._rtp_auth = derive(master, 1, 20)
        self._rtp_salt = int.from_bytes(derive(master, 2, _SALT), "big")
        self._rtcp_key = derive(master, 3, _KEY)
        self._rtcp_auth = derive(master, 4, 20)
        self._rtcp_salt = int.from_bytes(derive(master, 5, _SALT), "big")
        self._rtp_cipher = algorithms.AES(self._rtp_key)
        self._rtcp_cipher = algorithms.AES(self._rtcp_key)
        # Sending: the rollover counter follows our own sequence numbers.
        self._out_roc = 0
        self._out_last: int | None = None
        self._rtcp_index = 0
        # Receiving: RFC 3711 §3.3.1 state and a replay window, per SSRC.
        self._in: dict[int, tuple[int, int, int]] = {}  # ssrc → (roc, highest seq, window)
        self._rtcp_seen: dict[int, tuple[int, int]] = {}  # ssrc → (highest index, window)

    def _keystream(self, cipher: algorithms.AES, salt: int, ssrc: int, index: int,
                   length: int) -> bytes:  # fmt: skip
        iv = (salt << 16) ^ (ssrc << 64) ^ (index << 16)
        encryptor = Cipher(cipher, modes.CTR(iv.to_bytes(16, "big"))).encryptor()
        return encryptor.update(bytes(length))

    # ---- RTP
    def protect(self, packet: bytes) -> bytes:
        """RTP → SRTP."""
        header = _header_length(packet)
        (seq,) = struct.unpack_from(">H", packet, 2)
        (ssrc,) = struct.unpack_from(">I", packet, 8)
        last = self._out_last
        if last is not None and seq < last and last - seq > 0x8000:
            self._out_roc = (self._out_roc + 1) & 0xFFFFFFFF
        if last is None or ((seq - last) & 0xFFFF) < 0x8000:
            self._out_last = seq
        index = (self._out_roc << 16) | seq
        payload = packet[header:]
        body = packet[:header] + _xor(
            payload, self._keystream(self._rtp_cipher, self._rtp_salt, ssrc, index, len(payload))
        )
        tag = hmac.new(self._rtp_auth, body + self._out_roc.to_bytes(4, "big"), hashlib.sha1)
        return body + tag.digest()[:_TAG]

    def unprotect(self, packet: bytes) -> bytes:
        """SRTP → RTP. Raises :class:`SrtpError` for a packet that does not authenticate or
        was seen already."""
        if len(packet) < 12 + _TAG:
            raise SrtpError("too short")
        body, tag = packet[:-_TAG], packet[-_TAG:]
        header = _header_length(body)
        (seq,) = struct.unpack_from(">H", body, 2)
        (ssrc,) = struct.unpack_from(">I", body, 8)
        state = self._in.get(ssrc)
        if state is None:
            roc, highest, window = 0, seq, 0
            guess = 0
        else:
            roc, highest, window = state
            if highest < 0x8000:
                guess = roc - 1 if seq - highest > 0x8000 else roc
            else:
                guess = roc + 1 if highest - 0x8000 > seq else roc
            guess &= 0xFFFFFFFF
        index = (guess << 16) | seq
        if state is not None:
            top = (roc << 16) | highest
            delta = index - top
            if delta <= 0 and (-delta >= _WINDOW or window >> (-delta) & 1):
                raise SrtpError("replayed or too old")
        expected = hmac.new(self._rtp_auth, body + guess.to_bytes(4, "big"), hashlib.sha1)
        if not hmac.compare_digest(expected.digest()[:_TAG], tag):
            raise SrtpError("authentication failed")
        if state is None:
            self._in[ssrc] = (guess, seq, 1)
        else:
            top = (roc << 16) | highest
            delta = index - top
            if delta > 0:
                window = ((window << delta) | 1) & ((1 << _WINDOW) - 1)
                self._in[ssrc] = (guess, seq, window)
            else:
                self._in[ssrc] = (roc, highest, window | (1 << -delta))
        payload = body[header:]
        return body[:header] + _xor(
            payload, self._keystream(self._rtp_cipher, self._rtp_salt, ssrc, index, len(payload))
        )

    # ---- RTCP
    def protect_rtcp(self, packet: bytes) -> bytes:
        """RTCP → SRTCP (encrypted, E flag set)."""
        if len(packet) < 8:
            raise SrtpError("too short")
        (ssrc,) = struct.unpack_from(">I", packet, 4)
        index = self._rtcp_index
        self._rtcp_index = (index + 1) & 0x7FFFFFFF
        payload = packet[8:]
        body = packet[:8] + _xor(
            payload,
            self._keystream(self._rtcp_cipher, self._rtcp_salt, ssrc, index, len(payload)),
        )
        body += struct.pack(">I", 0x80000000 | index)
        tag = hmac.new(self._rtcp_auth, body, hashlib.sha1).digest()[:_TAG]
        return body + tag

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """SRTCP → RTCP. Raises :class:`SrtpError` for a packet that does not authenticate."""
        if len(packet) < 8 + 4 + _TAG:
            raise SrtpError("too short")
        body, tag = packet[:-_TAG], packet[-_TAG:]
        expected = hmac.new(self._rtcp_auth, body, hashlib.sha1).digest()[:_TAG]
        if not hmac.compare_digest(expected, tag):
            raise SrtpError("authentication failed")
        (trailer,) = struct.unpack_from(">I", body, len(body) - 4)
        index = trailer & 0x7FFFFFFF
        (ssrc,) = struct.unpack_from(">I", body, 4)
        highest, window = self._rtcp_seen.get(ssrc, (-1, 0))
        delta = index - highest
        if highest >= 0 and delta <= 0 and (-delta >= _WINDOW or window >> (-delta) & 1):
            raise SrtpError("replayed or too old")
        if delta > 0:
            self._rtcp_seen[ssrc] = (index, ((window << delta) | 1) & ((1 << _WINDOW) - 1))
        else:
            self._rtcp_seen[ssrc] = (highest, window | (1 << -delta))
        encrypted = body[8:-4]
        if not trailer & 0x80000000:
            return body[:-4]
        return body[:8] + _xor(
            encrypted,
            self._keystream(self._rtcp_cipher, self._rtcp_salt, ssrc, index, len(encrypted)),
        )
