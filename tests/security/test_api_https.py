"""HTTPS for the API and the console (issue 14, encryption): ``[api.tls]`` serves them over TLS
with the operator's certificate, the session cookie is then ``Secure``, and the event stream
runs over ``wss://``. The certificate is a self-signed one made by the test with ``openssl``."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import websockets
from api_probe import PASSWORDS, listening, running

from baton.service.cli import tls_options
from baton.service.config import ConfigError, load_config

pytestmark = pytest.mark.realtime

ROOT = Path(__file__).resolve().parents[2]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the command examples/secure.toml documents)."""
    cert, key = folder / "api.crt", folder / "api.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_the_tls_table_is_read_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    self_signed(tmp_path / "tls")
    cfg = tmp_path / "baton.toml"
    head = 'database = "var/baton.db"\n[api]\nlisten = "127.0.0.1:8443"\n'
    users = '[[users]]\nid = "disp1"\npassword = "x"\nrole = "dispatcher"\n'
    cfg.write_text(head + '[api.tls]\ncertificate = "tls/api.crt"\nkey = "tls/api.key"\n' + users)
    config = load_config(cfg)
    assert config.api.tls is not None and config.api.tls.key == tmp_path / "tls" / "api.key"
    assert config.api.scheme == "https" and config.api.secure_cookies
    cfg.write_text(head + '[api.tls]\ncertificate = "tls/api.crt"\nkey = "nope.key"\n' + users)
    with pytest.raises(ConfigError, match=r"api.tls.key: cannot read .*nope.key"):
        load_config(cfg)


def test_a_certificate_and_key_that_cannot_serve_are_refused_at_check(tmp_path: Path) -> None:
    """``--check`` must not say ok to what would stop the server at start with a traceback: a
    key from another pair, or a file that is no PEM."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    self_signed(tmp_path / "a")
    self_signed(tmp_path / "b")
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    cfg = tmp_path / "baton.toml"
    users = '[[users]]\nid = "disp1"\npassword = "x"\nrole = "dispatcher"\n'
    cfg.write_text('[api.tls]\ncertificate = "a/api.crt"\nkey = "b/api.key"\n' + users)
    with pytest.raises(ConfigError) as bad:
        load_config(cfg)
    assert bad.value.problems == [
        f"api.tls: cannot use certificate {tmp_path / 'a' / 'api.crt'} with key "
        f"{tmp_path / 'b' / 'api.key'}: the key does not belong to the certificate "
        "(a key from another pair)"
    ]
    cfg.write_text('[api.tls]\ncertificate = "a/api.crt"\nkey = "notes.txt"\n' + users)
    with pytest.raises(ConfigError, match="not a PEM certificate and private key"):
        load_config(cfg)


def test_an_https_console_with_a_plain_ws_phone_listener_fails_the_check(tmp_path: Path) -> None:
    """The console's browser phone connects from the page: over HTTPS a browser refuses a
    ws: connection (mixed content), so that phone could never register."""
    (tmp_path / "tls").mkdir()
    self_signed(tmp_path / "tls")
    cfg = tmp_path / "baton.toml"
    head = 'switch = "sip"\n[api]\nlisten = "127.0.0.1:8443"\n'
    tls = '[api.tls]\ncertificate = "tls/api.crt"\nkey = "tls/api.key"\n'
    users = '[[users]]\nid = "disp1"\npassword = "x"\nrole = "dispatcher"\n'
    sip = '[sip]\nlisten = ["udp:127.0.0.1:5060", "ws:127.0.0.1:5062"]\n'
    cfg.write_text(head + tls + users + sip)
    with pytest.raises(ConfigError) as bad:
        load_config(cfg)
    assert bad.value.problems == [
        "sip.listen[1]: ws:127.0.0.1:5062 is plain, and the console is served over HTTPS "
        "([api.tls]): browsers refuse a ws: connection from it; use wss: (with [sip.tls])"
    ]
    cfg.write_text(head + users + sip)  # a plain console may use it
    assert load_config(cfg).api.tls is None


async def test_the_api_the_console_and_the_stream_are_served_over_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    tls = {"certificate": str(cert), "key": str(key)}
    trust = ssl.create_default_context(cafile=str(cert))
    async with (
        running(tmp_path, api={"tls": tls}) as svc,
        listening(svc, **tls_options(svc.config.api)) as address,
    ):
        async with httpx.AsyncClient(base_url=f"https://{address}", verify=trust) as c:
            body = {"user": "disp1", "password": PASSWORDS["disp1"]}
            r = await c.post("/api/login", json=body)
            assert r.status_code == 200, r.text
            cookie = r.headers["set-cookie"]
            assert "baton_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
            assert (await c.get("/api/me")).json()["user"] == "disp1"  # the cookie works
            assert (await c.get("/console/")).status_code == 200
            token = r.json()["token"]
        # Plain HTTP to the TLS port gets nothing.
        async with httpx.AsyncClient(base_url=f"http://{address}") as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/api/health")
        url = f"wss://{address}/api/events/stream?token={token}"
        async with websockets.connect(url, ssl=trust) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"


def test_examples_secure_toml_with_its_documented_certificate_command(tmp_path: Path) -> None:
    example = ROOT / "examples" / "secure.toml"
    text = example.read_text()
    (command,) = [x.strip("# ").strip() for x in text.splitlines() if "openssl req" in x]
    # Run as documented, from a copy of the repository's layout.
    (tmp_path / "examples").mkdir()
    copy = tmp_path / "examples" / "secure.toml"
    copy.write_text(text)
    subprocess.run(["sh", "-c", command], cwd=tmp_path, check=True, capture_output=True)
    config = load_config(copy)
    assert config.api.tls is not None and config.api.tls.certificate.is_file()
    assert config.api.scheme == "https" and config.api.secure_cookies
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.api.tls.certificate, config.api.tls.key)  # a usable pair
