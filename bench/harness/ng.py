"""rtpengine's "ng" control protocol: a cookie, a space, a bencoded dictionary, over UDP."""

from __future__ import annotations

import os
import select
import socket
import time
from typing import Any

from harness.net import HOST

__all__ = ["NgClient", "bdecode", "bencode"]


def bencode(value: object) -> bytes:
    """Encode str/bytes/int/list/dict as bencode (dict keys sorted, as the format requires)."""
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, str):
        return bencode(value.encode())
    if isinstance(value, bool | int):
        return b"i%de" % int(value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value (dict keys become str, strings stay bytes)."""

    def parse(i: int) -> tuple[Any, int]:
        c = data[i : i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if c == b"l":
            out: list[Any] = []
            i += 1
            while data[i : i + 1] != b"e":
                v, i = parse(i)
                out.append(v)
            return out, i + 1
        if c == b"d":
            d: dict[str, Any] = {}
            i += 1
            while data[i : i + 1] != b"e":
                k, i = parse(i)
                v, i = parse(i)
                d[k.decode()] = v
            return d, i + 1
        colon = data.index(b":", i)
        n = int(data[i:colon])
        return data[colon + 1 : colon + 1 + n], colon + 1 + n

    value, end = parse(0)
    if end != len(data):
        raise ValueError("trailing data after bencoded value")
    return value


class NgClient:
    """A tiny rtpengine "ng" client: ``cookie <space> bencoded-dict`` over UDP, with retries."""

    def __init__(self, port: int, host: str = HOST) -> None:
        self.addr = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self._n = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, command: dict[str, Any], *, timeout: float = 1.0, tries: int = 3) -> Any:
        self._n += 1
        cookie = b"b%d_%d" % (os.getpid(), self._n)
        message = cookie + b" " + bencode(command)
        for _ in range(tries):
            self.sock.sendto(message, self.addr)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    break
                try:
                    data = self.sock.recv(65536)
                except ConnectionRefusedError:  # nothing listening (yet): ICMP came back
                    break
                got, _, body = data.partition(b" ")
                if got == cookie:  # a retry's late answer to an earlier cookie is skipped
                    reply = bdecode(body)
                    if reply.get("result") == b"error":
                        raise RuntimeError(f"rtpengine: {reply.get('error-reason')!r}")
                    return reply
            time.sleep(0.05)
        raise TimeoutError(f"rtpengine did not answer {command.get('command')!r}")
