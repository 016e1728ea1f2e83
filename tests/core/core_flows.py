"""Small flows the core tests drive (the real library lives in baton.flows).

They keep invariant 11 like library flows must: a party who has answered hears a ringback while
the next one rings, and a user held in silence on purpose is declared quiet.
"""

from __future__ import annotations

from baton.core import P2P, Preempted, Priority, Session, User, flow


@flow(priority=Priority.ROUTINE)
async def call(s: Session, caller: User, callee: User, ring: float = 30.0) -> None:
    """Dial both, bridge them, settle a P2P."""
    await s.claim(caller, callee)
    # A party on the line or ringing already (a call taken over) may answer before the other:
    # this small flow declares the wait (the library's call rings it back: dial_pair).
    for u in (caller, callee):
        if s.leg_of(u) is not None:
            s.quiet(u, "waiting for the other party")
    await s.dial(caller, timeout=ring)
    ringback = await s.play(caller, "ringback", loop=True)
    await s.dial(callee, timeout=ring)
    await s.stop(ringback)
    await s.connect(caller, callee)
    s.settle(P2P(caller, callee))


@flow(priority=Priority.ROUTINE)
async def hold(s: Session, *users: User) -> None:
    """Claim and connect users, then keep them until cancelled (a stand-in for a busy flow)."""
    await s.claim(*users)
    for u in users:  # (a ringing leg taken over may be answered before its turn)
        s.quiet(u, "held")  # until connected (two users), or for good (one, three…)
    for u in users:
        await s.dial(u)
    if len(users) == 2:
        await s.connect(*users)
    await s.sleep(10_000)


@flow(priority=Priority.ROUTINE)
async def grab(s: Session, *users: User) -> list[str]:
    """Claim users (no call) and return; used to test claims alone."""
    await s.claim(*users)
    return [u.id for u in s.users]


@flow(priority=Priority.EMERGENCY)
async def emergency(s: Session, dispatcher: User, target: User) -> None:
    """Take the target from whatever it is in and talk to it."""
    await s.claim(dispatcher, target)
    if s.leg_of(target) is not None:  # ringing already: may answer before the dispatcher
        s.quiet(target, "waiting for the dispatcher")
    await s.dial(dispatcher)
    ringback = await s.play(dispatcher, "ringback", loop=True)
    await s.dial(target)
    await s.stop(ringback)
    await s.connect(dispatcher, target)
    s.settle(P2P(dispatcher, target))


@flow(priority=Priority.ROUTINE)
async def transfer(s: Session, a: User, b: User, c: User) -> str:
    """a talks to b; b transfers a to c. If c is taken while ringing, restore a–b."""
    await s.claim(a, b, c)
    for u in (a, b):  # a call taken over may be answered before its turn
        if s.leg_of(u) is not None:
            s.quiet(u, "being connected")
    await s.dial(a)
    s.quiet(a, "being connected")
    await s.dial(b)
    await s.connect(a, b)
    ringback = await s.play(a, "ringback", loop=True)
    try:
        await s.dial(c, timeout=30)
    except Preempted:
        await s.stop(ringback)
        await s.connect(a, b)
        s.settle(P2P(a, b))
        return "restored"
    await s.stop(ringback)
    await s.connect(a, c)
    s.settle(P2P(a, c))
    await s.hangup(b)
    return "transferred"


@flow(priority=Priority.FLASH)
async def barge_in(s: Session, dispatcher: User, target: User) -> None:
    """Join the target's two-party call as a three-way; restore it afterwards."""
    p2p = s.callinfo_of(target)
    if not isinstance(p2p, P2P):
        return
    peer = p2p.peer_of(target)
    await s.claim(dispatcher, target, peer)
    await s.dial(dispatcher)
    await s.meeting(dispatcher, target, peer)

    async def restore() -> None:
        await s.connect(target, peer)
        s.settle(P2P(target, peer, priority=p2p.priority))

    s.compensate(restore, target, peer)
    await s.wait_hangup(dispatcher)


@flow(priority=Priority.IMMEDIATE)
async def conference(s: Session, *users: User) -> None:
    """Call everyone, put those who answer in a meeting, settle it."""
    from baton.core import MeetingCall

    await s.claim(*users)
    for u in users:  # a call taken over may be answered before its turn
        if s.leg_of(u) is not None:
            s.quiet(u, "waiting for the others to answer")
    answered = []
    for u in users:
        try:
            await s.dial(u, timeout=10)
            answered.append(u)
            s.quiet(u, "waiting for the others to answer")
        except Exception:
            s.release(u)
    if len(answered) >= 2:
        m = await s.meeting(*answered)
        s.settle(MeetingCall(m))


@flow(priority=Priority.ROUTINE)
async def patient(s: Session, a: User, wait: float) -> None:
    """Queue for a user, then keep it a while."""
    await s.claim(a, wait=wait)
    await s.dial(a)
    s.quiet(a, "kept a while")
    await s.sleep(5)


@flow(priority=Priority.ROUTINE)
async def crashy(s: Session, a: User) -> None:
    """Claim, dial, then fail with an unexpected error."""
    await s.claim(a)
    await s.dial(a)
    raise RuntimeError("crashy flow")
