"""Shared test data for the SIP suites: the RFC 4475 torture messages and sample messages.

The torture messages live in ``rfc4475/NAME.sip`` in the notation RFC 4475 §2 defines: each
line ends in CRLF on the wire; ``<allOneLine>`` joins the lines it encloses into one;
``<hex>…</hex>`` stands for the octets written in hexadecimal; ``<repeat count=N>…</repeat>``
for N copies of its content. A first line starting with ``#:`` names the RFC section.
"""

from __future__ import annotations

import re
from pathlib import Path

TORTURE_DIR = Path(__file__).parent / "rfc4475"

_ALL_ONE_LINE = re.compile(r"<allOneLine>\n(.*?)\n</allOneLine>", re.DOTALL)
_REPEAT = re.compile(r"<repeat count=(\d+)>(.*?)</repeat>", re.DOTALL)
_HEX = re.compile(rb"<hex>(.*?)</hex>", re.DOTALL)


def decode_rfc4475(text: str) -> bytes:
    """Turn the RFC 4475 notation into the octets of the message."""
    lines = text.split("\n")
    if lines and lines[0].startswith("#:"):
        lines = lines[1:]
    text = "\n".join(lines)
    text = _ALL_ONE_LINE.sub(lambda m: m.group(1).replace("\n", ""), text)
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)
    data = text.replace("\n", "\r\n").encode("utf-8")
    return _HEX.sub(lambda m: bytes.fromhex(re.sub(rb"\s", b"", m.group(1)).decode()), data)


def torture(name: str) -> bytes:
    """The octets of RFC 4475 message ``name`` (e.g. ``"wsinv"``)."""
    return decode_rfc4475((TORTURE_DIR / f"{name}.sip").read_text(encoding="utf-8"))


def torture_names() -> list[str]:
    return sorted(p.stem for p in TORTURE_DIR.glob("*.sip"))


def sip(text: str, body: str = "") -> bytes:
    """A message from readable text: lines are stripped of indentation and joined by CRLF;
    Content-Length is computed when the text says ``Content-Length: auto``."""
    lines = [line.strip() for line in text.strip().splitlines()]
    head = "\r\n".join(lines)
    head = head.replace("Content-Length: auto", f"Content-Length: {len(body.encode())}")
    return (head + "\r\n\r\n" + body).encode()
