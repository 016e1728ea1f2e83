"""SRTP/SRTCP (RFC 3711) with AES_CM_128_HMAC_SHA1_80: the RFC's test vectors, round trips
across the rollover counter, tampering and replay, and SDES key lines (RFC 4568)."""

from __future__ import annotations

import base64
import struct

import pytest

from baton.switch.media import srtp

MASTER = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139") + bytes.fromhex(
    "0EC675AD498AFEEBB6960B3AABE6"
)


def test_aes_cm_keystream_vector() -> None:  # RFC 3711 B.2
    stream = srtp._aes_cm(bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C"),
                          int("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000", 16), 32)  # fmt: skip
    assert stream.hex().upper() == (
        "E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB"
    )


def test_key_derivation_vectors() -> None:  # RFC 3711 B.3
    assert srtp.derive(MASTER, 0, 16).hex().upper() == "C61E7A93744F39EE10734AFE3FF7A087"
    assert srtp.derive(MASTER, 2, 14).hex().upper() == "30CBBC08863D8C85D49DB34A9AE1"
    assert srtp.derive(MASTER, 1, 20).hex().upper() == "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"


def rtp_packet(seq: int, payload: bytes = b"\x55" * 160) -> bytes:
    return struct.pack(">BBHII", 0x80, 0, seq, seq * 160, 0x1234) + payload


def test_round_trip_across_the_rollover_and_replay_refused() -> None:
    sender, receiver = srtp.SrtpContext(MASTER), srtp.SrtpContext(MASTER)
    for seq in (65533, 65534, 65535, 0, 1, 2):
        packet = rtp_packet(seq)
        protected = sender.protect(packet)
        assert protected[12:172] != packet[12:]  # encrypted
        assert len(protected) == len(packet) + 10  # the 80-bit tag
        assert receiver.unprotect(protected) == packet
    with pytest.raises(srtp.SrtpError):
        receiver.unprotect(protected)  # a replay
    tampered = bytearray(sender.protect(rtp_packet(3)))
    tampered[20] ^= 1
    with pytest.raises(srtp.SrtpError):
        receiver.unprotect(bytes(tampered))
    with pytest.raises(srtp.SrtpError):  # another key: does not authenticate
        receiver.unprotect(srtp.SrtpContext(srtp.new_key()).protect(rtp_packet(4)))


def test_srtcp_round_trip() -> None:
    sender, receiver = srtp.SrtpContext(MASTER), srtp.SrtpContext(MASTER)
    report = bytes.fromhex("80c90001") + struct.pack(">I", 0x1234)
    for _ in range(3):
        assert receiver.unprotect_rtcp(sender.protect_rtcp(report)) == report


def test_sdes_crypto_lines() -> None:
    key = srtp.new_key()
    line = srtp.crypto_attribute(1, key)
    assert line == f"1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}"
    parsed = srtp.parse_crypto(line + "|2^20")
    assert parsed is not None and (parsed.tag, parsed.key) == (1, key)
    assert srtp.parse_crypto(line.replace("_80", "_32")) is None  # another suite
    assert srtp.parse_crypto(line + "|2^20|1:4") is None  # an MKI
    assert srtp.parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=") is None
