"""SIP over TLS (issue 14, encryption): ``listen = ["tls:HOST:PORT"]`` with ``[sip.tls]``.

Two baresip phones register to Baton over TLS (trusting Baton's self-signed certificate, made
by the command of examples/secure.toml) and call each other through the core; the signalling
never touches a plain socket, and each phone hears the other's tone (FFT of what it decoded).
A plain TCP client on the TLS port gets nothing, and a TLS client that does not trust the
certificate fails the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _rigs.audio import TONES, tones_heard_late, write_tone
from _rigs.sip import Baresip, U, free_port, rig, wait_until
from baton.service.cli import build_parser, serve_main, with_overrides
from baton.service.config import load_config
from baton.switch.sip import SipConfigError, parse_sip_config

pytestmark = [pytest.mark.realtime, pytest.mark.e2e]

USERS = [U("alice", ("1001",), password="alice-secret"), U("bob", ("1002",), password="bob-secret")]
A, B = TONES["alice"], TONES["bob"]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the command examples/secure.toml documents)."""
    cert, key = folder / "sip.crt", folder / "sip.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@contextlib.asynccontextmanager
async def tls_phones(
    r: object, home: Path, cert: Path, *, srtp: bool = False
) -> AsyncIterator[dict[str, Baresip]]:
    """One baresip per user, registered over TLS to Baton's tls: address (and with SRTP
    mandatory: ``mediaenc=srtp-mand``)."""
    port = r.switch.transport.address("tls").port  # type: ignore[attr-defined]
    phones: dict[str, Baresip] = {}
    try:
        for u in USERS:
            tone = write_tone(home / f"{u.id}-tone.wav", TONES[u.id])
            phone = Baresip(home / u.id, u.id, u.password, port, tone=tone)
            config = phone.home / "config"
            # baresip also binds its SIP port + 1 for TLS: give it a pair that is free.
            sip_port = _free_pair(avoid={q.ctrl_port for q in phones.values()} | {phone.ctrl_port})
            text = config.read_text().replace(f"127.0.0.1:{phone.sip_port}\n",
                                              f"127.0.0.1:{sip_port}\n")  # fmt: skip
            phone.sip_port = sip_port
            text += f"sip_cafile\t\t{cert}\n"
            if srtp:  # loaded before account.so, which reads the accounts' mediaenc
                text = text.replace(
                    "module\t\t\taccount.so", "module\t\t\tsrtp.so\nmodule\t\t\taccount.so"
                )
            config.write_text(text)
            accounts = phone.home / "accounts"
            account = accounts.read_text().replace(";transport=udp>", ";transport=tls>")
            if srtp:
                account = account.rstrip("\n") + ";mediaenc=srtp-mand\n"
            accounts.write_text(account)
            phones[u.id] = phone
        await asyncio.gather(*(p.start() for p in phones.values()))
        await wait_until(lambda: all(r.switch.registered(u.id) for u in USERS), 15)  # type: ignore[attr-defined]
        yield phones
    finally:
        for p in phones.values():
            await p.aclose()


def _free_pair(avoid: set[int]) -> int:
    """A port P with P and P + 1 free for TCP and UDP on 127.0.0.1, neither in ``avoid``, and
    not handed out before by this function (two phones must not get the same pair)."""
    for _ in range(200):
        port = free_port()
        if port % 2 or port + 1 > 65535 or {port, port + 1} & (avoid | _GIVEN):
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        _GIVEN.update({port, port + 1})
        return port
    raise RuntimeError("no free port pair")


_GIVEN: set[int] = set()


@pytest.mark.parametrize("srtp", [False, True], ids=["rtp", "srtp-required"])
async def test_baresip_phones_register_and_talk_over_tls(tmp_path: Path, srtp: bool) -> None:
    cert, key = self_signed(tmp_path)
    sip: dict[str, object] = {"tls": {"certificate": str(cert), "key": str(key)}}
    if srtp:
        sip["srtp"] = "required"
    async with rig(USERS, listen=["tls:127.0.0.1:0"], sip=sip) as r, \
            tls_phones(r, tmp_path, cert, srtp=srtp) as phones:  # fmt: skip
        alice, bob = phones["alice"], phones["bob"]
        (binding,) = r.switch.registered("alice")
        assert binding.flow is not None and binding.flow.transport == "tls"  # type: ignore[union-attr]
        port = r.switch.transport.address("tls").port
        alice.command("dial", f"sip:1002@127.0.0.1:{port};transport=tls")
        await wait_until(lambda: alice.saw("CALL_ESTABLISHED") and bob.saw("CALL_ESTABLISHED"),
                         15)  # fmt: skip
        a, b = r.switch.leg_of("alice"), r.switch.leg_of("bob")
        assert a is not None and b is not None
        await wait_until(lambda: r.switch.bridged_to(a) == b)
        engine = r.switch.media
        assert (engine._legs[a].srtp_in is not None) is srtp  # the phones' RTP is SRTP
        assert (engine._legs[b].srtp_out is not None) is srtp
        start = r.switch.media.leg_stats(a).packets_in
        await wait_until(lambda: r.switch.media.leg_stats(a).packets_in > start + 125
                         and r.switch.media.leg_stats(b).packets_in > 125)  # fmt: skip
        alice.command("hangup")
        await wait_until(lambda: bob.saw("CALL_CLOSED"), 15)
        await wait_until(lambda: not r.switch.legs)
    assert tones_heard_late(alice, [A, B]) == {B}
    assert tones_heard_late(bob, [A, B]) == {A}


async def test_the_tls_port_speaks_only_tls_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sip = {"tls": {"certificate": str(cert), "key": str(key)}}
    async with rig(USERS, listen=["tls:127.0.0.1:0"], sip=sip) as r:
        port = r.switch.transport.address("tls").port
        # A client that trusts the certificate: a REGISTER is challenged, over TLS.
        trust = ssl.create_default_context(cafile=str(cert))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trust)
        register = (
            f"REGISTER sip:127.0.0.1:{port};transport=tls SIP/2.0\r\n"
            "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1;rport\r\n"
            "From: <sip:alice@127.0.0.1>;tag=t1\r\nTo: <sip:alice@127.0.0.1>\r\n"
            "Call-ID: tls-1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5999;transport=tls>\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        writer.write(register.encode())
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"SIP/2.0 401 ")
        writer.close()
        # A client that does not trust it fails the handshake.
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context())
        # Plain SIP on the TLS port gets no answer, and the connection is dropped.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(register.encode())
        async with asyncio.timeout(5):
            assert not (await reader.read()).startswith(b"SIP/2.0")
        writer.close()


def test_a_tls_listen_address_needs_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(SipConfigError) as bad:
        parse_sip_config({"listen": ["tls:127.0.0.1:5061"]})
    assert bad.value.problems == [
        "sip.tls: a tls: or wss: listen address needs [sip.tls] certificate and key"
    ]
    with pytest.raises(SipConfigError) as bad:
        parse_sip_config({"tls": {"certificate": str(tmp_path / "nope.crt"), "key": "x", "pin": 1}})
    assert "sip.tls.pin: unknown key (known: ca, certificate, key)" in bad.value.problems
    assert any(p.startswith("sip.tls.certificate: cannot read") for p in bad.value.problems)
    # Given but unreadable, with a tls: address: the unreadable file is the problem, said
    # once, not also "needs [sip.tls] certificate and key".
    with pytest.raises(SipConfigError) as bad:
        parse_sip_config({"listen": ["tls:127.0.0.1:5061"],
                          "tls": {"certificate": str(tmp_path / "nope.crt"),
                                  "key": str(tmp_path / "nope.key")}})  # fmt: skip
    assert bad.value.problems == [
        f"sip.tls.certificate: cannot read {tmp_path / 'nope.crt'}: No such file or directory",
        f"sip.tls.key: cannot read {tmp_path / 'nope.key'}: No such file or directory",
    ]


def test_a_certificate_and_key_that_do_not_match_are_named_in_words(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, _ = self_signed(tmp_path / "a")
    _, other = self_signed(tmp_path / "b")
    with pytest.raises(SipConfigError) as bad:
        parse_sip_config({"listen": ["tls:127.0.0.1:5061"],
                          "tls": {"certificate": str(cert), "key": str(other)}})  # fmt: skip
    assert bad.value.problems == [
        f"sip.tls: cannot use certificate {cert} with key {other}: the key does not belong "
        "to the certificate (a key from another pair)"
    ]


def test_every_relative_path_in_the_config_is_read_from_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One rule for a deployer (docs/service.md, Configuration): ``[sip.tls]``, like
    ``[api.tls]``, the database, the recordings and the prompts, is read from the config
    file's folder, whichever folder ``baton serve`` runs in. ``[sip.tls]`` used to be read from
    the working directory, so ``--check`` failed on a file that named ``tls/sip.crt`` beside
    it."""
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    self_signed(etc / "tls")
    cfg = etc / "site.toml"
    cfg.write_text(
        'database = "var/site.db"\nrecordings = "rec"\nprompts = "/srv/prompts"\n'
        f'[sip]\nlisten = ["tls:127.0.0.1:{free_port()}"]\n'
        '[sip.tls]\ncertificate = "tls/sip.crt"\nkey = "tls/sip.key"\nca = "tls/sip.crt"\n'
        '[[users]]\nid = "a"\npassword = "p"\nrole = "dispatcher"\n'
    )
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../etc/site.toml")
    assert config.sip["tls"] == {
        "certificate": str(etc / "tls" / "sip.crt"),
        "key": str(etc / "tls" / "sip.key"),
        "ca": str(etc / "tls" / "sip.crt"),
    }
    assert config.database == f"sqlite+aiosqlite:///{etc / 'var' / 'site.db'}"
    assert config.recordings == etc / "rec"
    assert str(config.prompts) == "/srv/prompts"  # absolute: as written
    left_out = load_config(_write(etc / "bare.toml", '[[users]]\nid = "a"\npassword = "p"\n'))
    assert (left_out.database, str(left_out.recordings)) == (
        "sqlite+aiosqlite:///var/baton.db",  # defaults: the folder baton serve runs in
        "var/recordings",
    )
    assert serve_main(["--config", str(cfg), "--check"]) == 0, capsys.readouterr().err
    # the command line's --database is the command line's: relative to where it runs
    args = build_parser().parse_args(["--config", str(cfg), "--database", "here.db"])
    assert with_overrides(config, args).database == "sqlite+aiosqlite:///here.db"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
