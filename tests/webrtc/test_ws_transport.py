"""SIP over WebSocket (RFC 7118) in the transport: one SIP message per WebSocket message, the
``sip`` subprotocol required, answers on the same connection, no WebSocket opened by Baton."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from baton.switch.sip.message import Request, Response, make_response, parse_message
from baton.switch.sip.transaction import Peer, RequestReceived, TransactionFailed
from baton.switch.sip.transport import ListenAddress, SipTransport, TransportEvent

pytestmark = pytest.mark.realtime

OPTIONS = (
    "OPTIONS sip:baton@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKabc123\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:baton@127.0.0.1>\r\n"
    "Call-ID: ws-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def test_ws_and_wss_listen_addresses_parse() -> None:
    assert ListenAddress.parse("ws:127.0.0.1:8080") == ListenAddress("ws", "127.0.0.1", 8080)
    assert str(ListenAddress.parse("WSS:[::1]:443")) == "wss:[::1]:443"
    with pytest.raises(ValueError, match="ws: or wss:"):
        ListenAddress.parse("http:127.0.0.1:80")
    with pytest.raises(ValueError, match="wss: listen address needs a TLS"):
        SipTransport(["wss:127.0.0.1:0"], lambda e: None)


async def test_a_sip_message_over_websocket_is_answered_on_the_connection() -> None:
    events: list[TransportEvent] = []
    transport = SipTransport(["ws:127.0.0.1:0"], events.append)
    await transport.start()
    try:
        url = f"ws://127.0.0.1:{transport.address('ws').port}"
        with pytest.raises(InvalidStatus, match="400"):
            async with connect(url):  # no "sip" subprotocol
                pass
        async with connect(url, subprotocols=[Subprotocol("sip")]) as ws:
            assert ws.subprotocol == "sip"
            await ws.send(OPTIONS)
            async with asyncio.timeout(5):
                while not any(isinstance(e, RequestReceived) for e in events):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            event = next(e for e in events if isinstance(e, RequestReceived))
            assert isinstance(event.request, Request) and event.peer.transport == "ws"
            transport.send_response(event.key, make_response(event.request, 200))
            reply = parse_message((await asyncio.wait_for(ws.recv(), 5)).encode())
            assert isinstance(reply, Response) and reply.status == 200
        # Baton opens no WebSocket: a request to a browser without a connection fails at once.
        request = parse_message(OPTIONS.encode())
        assert isinstance(request, Request)
        request.headers.remove("Via")
        transport.send_request(request, Peer("ws", "127.0.0.1", 9))
        async with asyncio.timeout(5):
            while not any(isinstance(e, TransactionFailed) for e in events):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await transport.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    cert, key = tmp_path / "sip.crt", tmp_path / "sip.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_wss_speaks_sip_over_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    events: list[TransportEvent] = []
    transport = SipTransport(["wss:127.0.0.1:0"], events.append, tls=server)
    await transport.start()
    try:
        url = f"wss://127.0.0.1:{transport.address('wss').port}"
        async with connect(url, subprotocols=[Subprotocol("sip")], ssl=client) as ws:
            await ws.send(OPTIONS.replace("SIP/2.0/WS ", "SIP/2.0/WSS "))
            async with asyncio.timeout(5):
                while not any(isinstance(e, RequestReceived) for e in events):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            event = next(e for e in events if isinstance(e, RequestReceived))
            assert event.peer.transport == "wss"
            transport.send_response(event.key, make_response(event.request, 200))
            reply = parse_message((await asyncio.wait_for(ws.recv(), 5)).encode())
            assert isinstance(reply, Response) and reply.status == 200
    finally:
        await transport.close()
