"""Session probes (issue 14, findings 5 and 6): an event stream ends with its token, and the
login throttle neither locks an account out for everyone nor tells which users exist."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Literal

import pytest
import websockets
from api_probe import PASSWORDS, api, listening, make_config, running
from argon2 import PasswordHasher

from baton.service.auth.service import FREE_FAILURES, MAX_THROTTLE_KEYS
from baton.service.errors import TooManyRequests, Unauthenticated
from baton.service.runtime import Service

pytestmark = pytest.mark.realtime


async def _stream(address: str, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(f"ws://{address}/api/events/stream?token={token}")
    hello = json.loads(await ws.recv())
    assert hello["type"] == "hello"
    return ws


async def _closed(ws: websockets.ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes; its close code and reason."""
    async with asyncio.timeout(5):
        await ws.wait_closed()
    assert ws.close_code is not None, "the server did not close the stream"
    return ws.close_code, ws.close_reason


async def test_a_revoked_token_ends_its_event_stream(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1", "sup1") as (svc, a), listening(svc) as address:
        ws = await _stream(address, a.tokens["disp1"])
        other = await _stream(address, a.tokens["sup1"])
        # disp1 logs out: its session is revoked, and its stream must stop delivering.
        async with a.client("disp1") as c:
            assert (await c.post("/api/logout")).status_code == 204
        assert await _closed(ws) == (4401, "token-revoked")
        # Another user's stream is untouched.
        await other.send(json.dumps({"type": "ping"}))
        async with asyncio.timeout(5):
            while json.loads(await other.recv())["type"] != "pong":
                pass
        await other.close()


async def test_an_expired_token_ends_its_event_stream(tmp_path: Path) -> None:
    async with api(tmp_path, "disp1") as (svc, _a), listening(svc) as address:
        # Controlled clocks, no real waiting: the token is issued and checked at t0 (an hour
        # to go), and the stream's guard reads the service's clock, set to the hour's end.
        t0 = 1_000_000.0
        svc.auth.wallclock = lambda: t0
        token, info = await svc.auth.create_token("disp1", "api", "short", 3600)
        assert info.expires_at == t0 + 3600
        svc.wallclock = lambda: t0 + 3600
        ws = await websockets.connect(f"ws://{address}/api/events/stream?token={token}")
        assert await _closed(ws) == (4401, "token-expired")


async def test_failed_logins_from_a_stranger_do_not_lock_the_owner_out(tmp_path: Path) -> None:
    async with running(tmp_path) as svc:
        auth = svc.auth
        now = [1000.0]
        auth.wallclock = lambda: now[0]
        # An attacker at 10.6.6.6 guesses sup1's password: five free tries, then a backoff.
        for _ in range(FREE_FAILURES):
            with pytest.raises(Unauthenticated):
                await auth.login("sup1", "guess", "10.6.6.6")
        with pytest.raises(TooManyRequests) as refused:
            await auth.login("sup1", "sup1-pw", "10.6.6.6")  # not even checked
        assert refused.value.details == {"retry_after": 1}
        # The supervisor, from the console's address, is not locked out.
        principal, _ = await auth.login("sup1", PASSWORDS["sup1"], "127.0.0.1")
        assert principal.user_id == "sup1"
        # The attacker's waits double after each further failure.
        waits = [1]
        for _ in range(4):
            now[0] += waits[-1]
            with pytest.raises(Unauthenticated):
                await auth.login("sup1", "guess", "10.6.6.6")
            with pytest.raises(TooManyRequests) as refused:
                await auth.login("sup1", "guess", "10.6.6.6")
            waits.append(refused.value.details["retry_after"])
        assert waits == [1, 2, 4, 8, 16]
        # Forgotten after a quiet quarter of an hour.
        now[0] += 901
        with pytest.raises(Unauthenticated):
            await auth.login("sup1", "guess", "10.6.6.6")


async def test_the_throttles_memory_is_bounded(tmp_path: Path) -> None:
    async with running(tmp_path) as svc:
        auth = svc.auth
        for i in range(MAX_THROTTLE_KEYS // 2 + 10):
            auth._failed(auth._keys(f"ghost{i}", f"10.0.{i // 256}.{i % 256}"))
        assert len(auth._failures) == MAX_THROTTLE_KEYS


async def test_unknown_users_cost_the_same_verification_as_known_ones(tmp_path: Path) -> None:
    # Costlier than the tests' usual hasher, so the time a verification takes shows.
    hasher = CountingHasher(time_cost=2, memory_cost=16384, parallelism=1)
    svc = Service(make_config(tmp_path), hasher=hasher, grace=1.0)
    await svc.start()
    try:
        auth = svc.auth
        # The unknown users' hash is a configured user's, taken at start: no extra hashing.
        assert auth._dummy_hash is not None and auth._dummy_hash.startswith("$argon2id$")

        async def refusal(user: str, remote: str) -> float:
            before, started = hasher.verified, time.perf_counter()
            with pytest.raises(Unauthenticated):
                await auth.login(user, "wrong", remote)
            assert hasher.verified == before + 1, "one password verification per attempt"
            return time.perf_counter() - started

        known = sorted([await refusal("disp1", f"10.1.0.{i}") for i in range(3)])[1]
        unknown = sorted([await refusal("nobody", f"10.2.0.{i}") for i in range(3)])[1]
        # Before: 6 ms for an unknown user, 160 ms for a known one.
        assert unknown > 0.5 * known, (unknown, known)
        # A configured user's password under an unknown name does not let anyone in.
        with pytest.raises(Unauthenticated):
            await auth.login("nobody", PASSWORDS["disp1"], "10.3.0.1")
        with pytest.raises(Unauthenticated):
            await auth.login("nobody", PASSWORDS["unit1"], "10.3.0.2")
    finally:
        await svc.stop()


class CountingHasher(PasswordHasher):
    verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        type(self).verified += 1
        return super().verify(hash, password)
