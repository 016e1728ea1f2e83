"""The benchmarks' shared harness (``bench/harness``): the pieces with an exact answer."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

Loader = Callable[[str], ModuleType]
BENCH = Path(__file__).resolve().parents[2] / "bench"

#: A child in each style: an asyncio one (serve_commands) and a plain loop (commands).
CHILDREN = {
    "asyncio": """
        import asyncio
        from harness.procs import reply, serve_commands

        def handle(cmd):
            if cmd["op"] != "echo":
                raise ValueError(cmd["op"])
            reply({"echo": cmd["x"]})

        async def main():
            reply({"ready": True})
            await serve_commands(handle)

        asyncio.run(main())
    """,
    "loop": """
        from harness.procs import commands, reply

        reply({"ready": True})
        for cmd in commands():
            try:
                if cmd["op"] != "echo":
                    raise ValueError(cmd["op"])
                reply({"echo": cmd["x"]})
            except ValueError as exc:
                reply({"error": f"ValueError: {exc}"})
    """,
}


def test_bencode_round_trip(harness: Loader) -> None:
    ng = harness("ng")
    value = {"command": "offer", "sdp": b"v=0\r\n", "flags": [b"a", 1], "n": -3}
    encoded = ng.bencode(value)
    assert encoded.startswith(b"d7:command5:offer")  # keys sorted, as bencode requires
    assert ng.bdecode(encoded) == {
        "command": b"offer",
        "sdp": b"v=0\r\n",
        "flags": [b"a", 1],
        "n": -3,
    }


def test_free_port_is_free_and_port_bound_sees_a_bound_one(harness: Loader) -> None:
    net = harness("net")
    port = net.free_port()
    assert 0 < port < 65000
    assert not net.port_bound(port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((net.HOST, port))
        assert net.port_bound(port)


def test_sendmmsg_and_recvmmsg_move_a_batch_with_arrival_times(harness: Loader) -> None:
    net = harness("net")
    rtp, rtcp = net.open_rtp_pairs(1, net.free_port() & ~1)
    rx = rtp[0]
    port = rx.getsockname()[1]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.bind((net.HOST, 0))
            out = np.arange(3 * 8, dtype=np.uint8).reshape(3, 8)
            names = b"".join(net.sockaddr_in(net.HOST, port) for _ in range(3))
            assert net.sendmmsg(tx.fileno(), net.MsgVector(out, 8, names)) == 0
            buf = np.zeros((4, 16), dtype=np.uint8)
            vec = net.MsgVector(buf, 16, None, control=True)
            got = 0
            for _ in range(1000):  # loopback delivers at once; bounded, never a sleep
                vec.reset_for_recv()
                r = net.recvmmsg(rx.fileno(), vec)
                if r > 0:
                    assert (vec.rx_times(r) > 0).all()
                    got += r
                if got == 3:
                    break
            assert got == 3
            assert buf[:3, :8].tolist() == out.tolist()
    finally:
        for s in (*rtp, *rtcp):
            s.close()


def test_percentile_of_is_nearest_rank_and_none_for_no_samples(harness: Loader) -> None:
    stats = harness("stats")
    assert stats.percentile_of([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert stats.percentile_of([1.0, 2.0], 99) == 2.0
    assert stats.percentile_of([], 50) is None
    assert stats.rnd(1.23456, 3) == 1.235


def test_tone_frame_repeats_in_phase_and_decodes_to_its_amplitude(harness: Loader) -> None:
    g711 = harness("g711")
    frame = g711.tone_frame(1000.0, 8000.0)
    assert frame.shape == (g711.FRAME,)
    pcm = g711.ULAW_DECODE[frame].astype(np.float64)
    assert abs(pcm.max() - 8000.0) < 400  # µ-law's step near 8,000 is 256
    assert abs(pcm[0]) < 100  # a sine starts at zero: 20 ms of 1 kHz is whole cycles


@pytest.mark.parametrize("style", sorted(CHILDREN))
def test_a_child_serves_json_commands_until_quit(
    harness: Loader, tmp_path: Path, style: str
) -> None:
    procs = harness("procs")
    script = tmp_path / "child.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(BENCH)!r})\n" + textwrap.dedent(CHILDREN[style])
    )
    child = procs.Child([sys.executable, str(script)], "child")
    try:
        assert child.read(timeout=10) == {"ready": True}
        assert child.request({"op": "echo", "x": 3}, timeout=10) == {"echo": 3}
        with pytest.raises(RuntimeError, match="child: ValueError: nope"):
            child.request({"op": "nope"}, timeout=10)
        assert child.request({"op": "echo", "x": 4}, timeout=10) == {"echo": 4}  # still serving
    finally:
        child.stop()  # sends quit, waits for the exit (kills it by pid after 5 s)
    assert child.proc.returncode == 0  # it ended by itself, on quit
