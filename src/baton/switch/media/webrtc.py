"""The WebRTC media profile of a leg: ICE-lite, DTLS-SRTP and rtcp-mux on one UDP port.

A browser's leg differs from a phone's only in how its RTP is set up; once keys exist it is an
SRTP leg like any other (:mod:`.srtp`), so the engine keeps a :class:`WebRtcLeg` beside the
leg and hands it what arrives on the leg's port that is not RTP (RFC 7983 demultiplexing by the
first byte: 0–3 STUN, 20–63 DTLS, 128–191 RTP/RTCP).

* **ICE-lite** (RFC 8445 §2.5): Baton has one host candidate per leg and never checks; it
  answers the browser's connectivity checks. A Binding request counts only with our
  ``ice-ufrag`` first in its USERNAME and a MESSAGE-INTEGRITY made with our ``ice-pwd``
  (both travel in our SDP, over the WebSocket's TLS); its source is then the address the leg
  sends to, and a check with USE-CANDIDATE moves it there. The answer carries
  XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT.
* **DTLS-SRTP** (RFC 5763, RFC 5764): Baton is the DTLS *server* (``a=setup:passive`` in its
  answers, ``actpass`` in its offers — browsers then take ``active``). The handshake runs in
  memory (pyOpenSSL with memory BIOs: what arrives goes in, what comes out is sent from the
  leg's socket). The browser's certificate must match the ``a=fingerprint`` of its SDP, and the
  SRTP profile must be ``SRTP_AES128_CM_SHA1_80``; then the keying material exported with the
  label ``EXTRACTOR-dtls_srtp`` gives the two SRTP master keys (client's for what we receive,
  server's for what we send).
* One self-signed ECDSA certificate per engine (:class:`DtlsIdentity`); its SHA-256
  fingerprint goes in every WebRTC SDP Baton writes.

Not supported: Baton as DTLS client (a browser answering ``setup:passive``), DTLS
retransmission timers of our own (on loss the browser repeats its flight and OpenSSL answers
it again), TURN. Trickle ICE is tolerated rather than used: Baton's one candidate is in its
SDP, and it needs none of the browser's, whose checks say where it is (docs/sip.md).
"""

from __future__ import annotations

import binascii
import datetime
import hashlib
import hmac
import ipaddress
import secrets
import struct
from dataclasses import dataclass
from typing import Final

import pylibsrtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from baton.switch.media.srtp import SrtpError

__all__ = [
    "DtlsIdentity",
    "LibSrtp",
    "SrtpKeys",
    "WebRtcError",
    "WebRtcLeg",
    "is_dtls",
    "is_stun",
    "new_ice_credentials",
]

_COOKIE: Final = 0x2112A442
_BINDING_REQUEST: Final = 0x0001
_BINDING_SUCCESS: Final = 0x0101
_USERNAME: Final = 0x0006
_MESSAGE_INTEGRITY: Final = 0x0008
_XOR_MAPPED_ADDRESS: Final = 0x0020
_USE_CANDIDATE: Final = 0x0025
_FINGERPRINT: Final = 0x8028
_FINGERPRINT_XOR: Final = 0x5354554E
_SRTP_PROFILE: Final = b"SRTP_AES128_CM_SHA1_80"
_KEY: Final = 16
_SALT: Final = 14


class WebRtcError(Exception):
    """A DTLS handshake that failed, or a peer certificate that is not the one signalled."""


def is_stun(data: bytes) -> bool:
    return len(data) >= 20 and data[0] < 4


def is_dtls(data: bytes) -> bool:
    return len(data) >= 13 and 20 <= data[0] <= 63


def new_ice_credentials() -> tuple[str, str]:
    """A fresh ``ice-ufrag`` (8 characters) and ``ice-pwd`` (24, RFC 8839 wants ≥ 22)."""
    return secrets.token_hex(4), secrets.token_hex(12)


class DtlsIdentity:
    """The engine's self-signed certificate for DTLS, and its ``a=fingerprint`` value."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baton")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        self.cert = cert
        self.key = key
        der = cert.public_bytes(serialization.Encoding.DER)
        self.fingerprint = "sha-256 " + _colon_hex(hashlib.sha256(der).digest())
        ctx = SSL.Context(SSL.DTLS_METHOD)
        # Any certificate is accepted by OpenSSL; WebRtcLeg compares it with the SDP's.
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
        ctx.set_tlsext_use_srtp(_SRTP_PROFILE)
        self.context = ctx


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """SRTP master keys (key ‖ salt, 30 bytes) from the handshake."""

    send: bytes
    receive: bytes


class WebRtcLeg:
    """ICE-lite and the DTLS server of one leg (sans-IO: bytes in, bytes out)."""

    __slots__ = ("_conn", "_pwd", "_ufrag", "keys", "nominated", "remote_fingerprint", "selected")

    def __init__(
        self, identity: DtlsIdentity, ufrag: str, pwd: str, remote_fingerprint: str | None
    ) -> None:
        self._ufrag = ufrag
        self._pwd = pwd.encode()
        self.remote_fingerprint = remote_fingerprint
        self._conn = SSL.Connection(identity.context, None)
        self._conn.set_accept_state()
        self.keys: SrtpKeys | None = None
        self.selected: tuple[str, int] | None = None  # where the browser's checks come from
        self.nominated = False

    @property
    def credentials(self) -> tuple[str, str]:
        return self._ufrag, self._pwd.decode()

    # ---- ICE-lite ------------------------------------------------------------------------

    def on_stun(self, data: bytes, addr: tuple[str, int]) -> bytes | None:
        """Answer a connectivity check; ``None`` if it is not a valid one of this leg."""
        kind, length, cookie = struct.unpack_from("!HHI", data)
        if kind != _BINDING_REQUEST or cookie != _COOKIE or 20 + length > len(data):
            return None
        tid = data[8:20]
        attrs: dict[int, tuple[int, bytes]] = {}
        pos = 20
        while pos + 4 <= 20 + length:
            atype, alen = struct.unpack_from("!HH", data, pos)
            if atype not in attrs:
                attrs[atype] = (pos, data[pos + 4 : pos + 4 + alen])
            if atype == _MESSAGE_INTEGRITY:
                break  # only FINGERPRINT may follow it
            pos += 4 + alen + (-alen % 4)
        username = attrs.get(_USERNAME)
        integrity = attrs.get(_MESSAGE_INTEGRITY)
        if username is None or integrity is None:
            return None
        if username[1].split(b":", 1)[0] != self._ufrag.encode():
            return None
        at, mac = integrity
        signed = bytearray(data[:at])
        struct.pack_into("!H", signed, 2, at - 20 + 24)  # length as if MI ended the message
        if not hmac.compare_digest(hmac.new(self._pwd, bytes(signed), "sha1").digest(), mac):
            return None
        if self.selected is None or _USE_CANDIDATE in attrs:
            self.selected = addr
        if _USE_CANDIDATE in attrs:
            self.nominated = True
        return self._success(tid, addr)

    def _success(self, tid: bytes, addr: tuple[str, int]) -> bytes:
        host, port = addr[0], addr[1]
        ip = ipaddress.ip_address(host)
        packed = ip.packed
        xor = struct.pack("!I", _COOKIE) + (tid if ip.version == 6 else b"")
        xaddr = bytes(a ^ b for a, b in zip(packed, xor, strict=False))
        family = 1 if ip.version == 4 else 2
        value = struct.pack("!BBH", 0, family, port ^ (_COOKIE >> 16)) + xaddr
        body = struct.pack("!HH", _XOR_MAPPED_ADDRESS, len(value)) + value
        # MESSAGE-INTEGRITY over the header (length counting it) and the body.
        head = struct.pack("!HHI", _BINDING_SUCCESS, len(body) + 24, _COOKIE) + tid
        mac = hmac.new(self._pwd, head + body, "sha1").digest()
        body += struct.pack("!HH", _MESSAGE_INTEGRITY, 20) + mac
        head = struct.pack("!HHI", _BINDING_SUCCESS, len(body) + 8, _COOKIE) + tid
        crc = (binascii.crc32(head + body) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
        return head + body + struct.pack("!HHI", _FINGERPRINT, 4, crc)

    # ---- DTLS ----------------------------------------------------------------------------

    def on_dtls(self, data: bytes) -> list[bytes]:
        """Feed a DTLS datagram; return the datagrams to send back. Sets :attr:`keys` when the
        handshake completes. Raises :class:`WebRtcError` if it fails."""
        conn = self._conn
        conn.bio_write(data)
        if self.keys is None:
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error as exc:
                raise WebRtcError(f"DTLS handshake failed: {exc}") from exc
            else:
                self.keys = self._export()
        else:
            try:  # after the handshake: alerts, or a repeated final flight
                conn.recv(1500)
            except (SSL.WantReadError, SSL.ZeroReturnError, SSL.Error):
                pass
        out = []
        while True:
            try:
                out.append(conn.bio_read(1500))
            except SSL.WantReadError:
                break
        return out

    def _export(self) -> SrtpKeys:
        conn = self._conn
        cert = conn.get_peer_certificate()
        if cert is None:
            raise WebRtcError("the peer sent no certificate")
        got = "sha-256 " + _colon_hex(
            hashlib.sha256(cert.to_cryptography().public_bytes(serialization.Encoding.DER)).digest()
        )
        if self.remote_fingerprint is None or got.lower() != self.remote_fingerprint.lower():
            raise WebRtcError("the peer's certificate is not the one its SDP announced")
        if conn.get_selected_srtp_profile() != _SRTP_PROFILE:
            raise WebRtcError("no SRTP profile was negotiated")
        material = conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (_KEY + _SALT))
        client_key, server_key = material[:_KEY], material[_KEY : 2 * _KEY]
        client_salt = material[2 * _KEY : 2 * _KEY + _SALT]
        server_salt = material[2 * _KEY + _SALT :]
        return SrtpKeys(send=server_key + server_salt, receive=client_key + client_salt)


class LibSrtp:
    """SRTP and SRTCP of one direction through libsrtp (pylibsrtp, as aiortc uses), with the
    interface of :class:`~baton.switch.media.srtp.SrtpContext`. A browser leg protects and
    unprotects 100 packets a second: in libsrtp that costs ~2 µs each, in the engine's own
    Python SRTP (kept for SDES legs) ~50 µs — a third of a browser call's CPU
    (docs/benchmarks.md, "Browser legs")."""

    __slots__ = ("_session",)

    def __init__(self, master: bytes, *, outbound: bool) -> None:
        kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
        policy = pylibsrtp.Policy(key=master, ssrc_type=kind)
        policy.allow_repeat_tx = True  # a stream resent after a hold: not an error
        self._session = pylibsrtp.Session(policy)

    def protect(self, packet: bytes) -> bytes:
        try:
            return self._session.protect(packet)
        except pylibsrtp.Error as exc:
            # An OSError, as a failed send is: the engine's send paths count it and go on.
            raise OSError(f"SRTP protect failed: {exc}") from exc

    def unprotect(self, packet: bytes) -> bytes:
        try:
            return self._session.unprotect(packet)
        except pylibsrtp.Error as exc:
            raise SrtpError(str(exc)) from exc

    def protect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._session.protect_rtcp(packet)
        except pylibsrtp.Error as exc:
            raise OSError(f"SRTCP protect failed: {exc}") from exc

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._session.unprotect_rtcp(packet)
        except pylibsrtp.Error as exc:
            raise SrtpError(str(exc)) from exc


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)
