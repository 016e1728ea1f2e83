"""The console's *Hang up*: end a user's call from the screen, whatever phone they have.

A settled call (a P2P, a conference) belongs to no flow a dispatcher could cancel, and on a SIP
phone the console cannot press the phone's own button. :func:`hang_up` takes the user — and, in a
two-party call, the other party — from whatever holds them (the service starts it one level above
that holder's priority), hangs the other party up normally and lets the user go: a position's
always-on line stays up, connected and idle; any other user is hung up too. In a meeting only the
user leaves.
"""

from __future__ import annotations

from baton.core import Priority, Session, User, UserHungUp, flow

__all__ = ["hang_up"]


@flow(priority=Priority.ROUTINE, name="hang_up")
async def hang_up(s: Session, user: User) -> str:
    """End ``user``'s call as if they had put their phone down."""
    partner = s.partner_of(user)
    users = [user] if partner is None else [user, partner]
    while users:
        try:
            await s.claim(*users, reason="hang up")
            break
        except UserHungUp as exc:
            # one of them put the phone down while the call was being taken: the other, pulled
            # out of the call by the failed claim, is not left on the line in silence — the
            # hang-up goes on with whoever is still there
            users = [u for u in users if u not in exc.users and s.leg_of(u) is not None]
    if partner is not None and partner in users and await _put_down(s, partner):
        s.note(f"{user.id} hung up on {partner.id}")
    if user in users and not user.keep:
        await _put_down(s, user)
    return "hung up"


async def _put_down(s: Session, u: User) -> bool:
    """Hang ``u`` up if it is still on the line; news that the other party hung up meanwhile
    (raised here, at the next operation) changes nothing. False if ``u`` was gone already."""
    while s.owns(u) and s.leg_of(u) is not None:
        try:
            await s.hangup(u)
            return True
        except UserHungUp as exc:
            if u in exc.users:
                return False
    return False
