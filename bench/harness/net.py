"""UDP on loopback for benchmarks: free ports, and ``sendmmsg``/``recvmmsg`` through ctypes.

A load generator that sends 200,000 packets a second cannot afford a system call per packet:
:class:`MsgVector` lays out many message headers over the rows of one numpy buffer, and
:func:`sendmmsg` / :func:`recvmmsg` move them in one call. Received messages carry the kernel's
arrival time (``SO_TIMESTAMPNS``), so reading in batches costs no accuracy.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from harness.procs import libc

HOST: Final = "127.0.0.1"

__all__ = [
    "HOST",
    "SO_TIMESTAMPNS",
    "MsgVector",
    "discard_pending",
    "free_port",
    "open_rtp_pairs",
    "port_bound",
    "recvmmsg",
    "sendmmsg",
    "sockaddr_in",
    "wait_bound",
]


def free_port() -> int:
    """A UDP port on loopback that was free a moment ago (below 65000)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
            if port < 65000:
                return port
    raise RuntimeError("no free port")


def port_bound(port: int) -> bool:
    """Whether some process has bound UDP ``port`` on loopback (it is ready to receive)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


async def wait_bound(port: int) -> None:
    """Wait (up to 10 s) until a process we started has bound ``port``."""
    async with asyncio.timeout(10):
        while True:
            if port_bound(port):
                return
            await asyncio.sleep(0.02)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_MMSG_SIZE: Final = ctypes.sizeof(_MMsgHdr)


libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
libc.sendmmsg.restype = ctypes.c_int
libc.recvmmsg.argtypes = [
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_uint,
    ctypes.c_int,
    ctypes.c_void_p,
]
libc.recvmmsg.restype = ctypes.c_int


def sockaddr_in(host: str, port: int) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_aton(host)
        + bytes(8)
    )


_CTRL: Final = 64  # control bytes per received message: one SCM_TIMESTAMPNS (16 + 16)


SO_TIMESTAMPNS: Final = 35


class MsgVector:
    """``n`` message headers over the rows of ``buf`` (one iovec each), with ``names`` (the
    destinations to send to, or room for the sources received from) and, for receiving, room
    for one control message each (the kernel's receive timestamp)."""

    def __init__(
        self, buf: npt.NDArray[Any], row: int, names: bytes | None, *, control: bool = False
    ) -> None:
        n = len(buf)
        self.n = n
        self.buf = buf  # kept alive: the headers point into it
        self.names = ctypes.create_string_buffer(names if names else bytes(16 * n), 16 * n)
        self.ctrl = ctypes.create_string_buffer(_CTRL * n if control else 1)
        self.iovs = (_IoVec * n)()
        self.msgs = (_MMsgHdr * n)()
        base = buf.ctypes.data
        names_at = ctypes.addressof(self.names)
        ctrl_at = ctypes.addressof(self.ctrl)
        for i in range(n):
            self.iovs[i].base = base + i * row
            self.iovs[i].len = row
            hdr = self.msgs[i].hdr  # a view into msgs: assignments land in the array
            hdr.name = names_at + 16 * i
            hdr.namelen = 16
            hdr.iov = ctypes.addressof(self.iovs) + i * ctypes.sizeof(_IoVec)
            hdr.iovlen = 1
            if control:
                hdr.control = ctrl_at + _CTRL * i
                hdr.controllen = _CTRL
        self.addr = ctypes.addressof(self.msgs)
        raw = (ctypes.c_char * ctypes.sizeof(self.msgs)).from_address(self.addr)
        # uint32 words of each mmsghdr: [2] msg_namelen, [10:12] msg_controllen (size_t).
        self.view = np.frombuffer(memoryview(raw), dtype=np.uint32).reshape(n, _MMSG_SIZE // 4)
        self.names_view = np.frombuffer(memoryview(self.names), dtype=np.uint8).reshape(n, 16)
        if control:
            words = np.frombuffer(memoryview(self.ctrl), dtype=np.int64)[: n * _CTRL // 8]
            self.ctrl_view = words.reshape(n, _CTRL // 8)

    def reset_for_recv(self) -> None:
        """The kernel writes back name and control lengths: give the full room again."""
        self.view[:, 2] = 16
        self.view[:, 10] = _CTRL
        self.view[:, 11] = 0

    def rx_times(self, count: int) -> npt.NDArray[np.int64]:
        """Kernel receive timestamps (CLOCK_REALTIME ns) of the first ``count`` messages."""
        c = self.ctrl_view[:count]
        # cmsghdr: len (8 bytes), level (4), type (4); then struct timespec.
        level_type = c[:, 1]
        ok = level_type == (socket.SOL_SOCKET | (SO_TIMESTAMPNS << 32))
        t = c[:, 2] * 1_000_000_000 + c[:, 3]
        return np.where(ok, t, time.time_ns())


def sendmmsg(fd: int, vec: MsgVector) -> int:
    """Send every message of ``vec``; return how many failed (each is skipped)."""
    sent = failed = 0
    while sent < vec.n:
        r = libc.sendmmsg(fd, vec.addr + sent * _MMSG_SIZE, vec.n - sent, 0)
        if r < 0:
            err = ctypes.get_errno()
            if err in (errno.EINTR, errno.EAGAIN):
                continue
            failed += 1  # e.g. a late ICMP error: skip that one message
            sent += 1
        else:
            sent += r
    return failed


def recvmmsg(fd: int, vec: MsgVector) -> int:
    """Receive up to ``vec.n`` waiting messages without blocking; return how many (≤ 0: none).
    Call ``vec.reset_for_recv()`` first."""
    return int(libc.recvmmsg(fd, vec.addr, vec.n, socket.MSG_DONTWAIT, None))


def discard_pending(socks: Sequence[socket.socket]) -> int:
    """Read and drop every datagram waiting in ``socks``; return how many."""
    dropped = 0
    for sock in socks:
        while True:
            try:
                sock.recv(2048, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            dropped += 1
    return dropped


def open_rtp_pairs(count: int, base: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``count`` RTP sockets on even ports, each with its RTCP sibling bound (so the engines'
    RTCP lands on a socket of ours, never on someone else's port)."""
    rtp: list[socket.socket] = []
    rtcp: list[socket.socket] = []
    port = base
    while len(rtp) < count:
        if port > base + 2000:
            raise RuntimeError("no free port pair for the generator")
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            a.bind((HOST, port))
            b.bind((HOST, port + 1))
        except OSError:
            a.close()
            b.close()
            port += 2
            continue
        for opt, size in ((socket.SO_RCVBUF, 16 << 20), (socket.SO_SNDBUF, 4 << 20)):
            force = 33 if opt == socket.SO_RCVBUF else 32  # SO_RCVBUFFORCE / SO_SNDBUFFORCE
            try:
                a.setsockopt(socket.SOL_SOCKET, force, size)  # root: beyond rmem_max
            except OSError:
                a.setsockopt(socket.SOL_SOCKET, opt, size)
        a.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # kernel arrival times
        rtp.append(a)
        rtcp.append(b)
        port += 2
    return rtp, rtcp
