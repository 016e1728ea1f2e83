"""The console's *Hang up*: end a user's call from the screen, whatever phone they have.

A settled call (a P2P, a conference) belongs to no flow a dispatcher could cancel, and on a SIP
phone the console cannot press the phone's own button. :func:`hang_up` takes the user — and, in a
two-party call, the other party — from whatever holds them (the service starts it one level above
that holder's priority), hangs the other party up normally and lets the user go: a position's
always-on line stays up, connected and idle; any other user is hung up too. In a meeting only the
user leaves.
"""

from __future__ import annotations

from baton.core import Priority, Session, User, flow

__all__ = ["hang_up"]


@flow(priority=Priority.ROUTINE, name="hang_up")
async def hang_up(s: Session, user: User) -> str:
    """End ``user``'s call as if they had put their phone down."""
    partner = s.partner_of(user)
    await s.claim(*([user] if partner is None else [user, partner]), reason="hang up")
    if partner is not None and s.leg_of(partner) is not None:
        await s.hangup(partner)
        s.note(f"{user.id} hung up on {partner.id}")
    if not user.keep and s.leg_of(user) is not None:
        await s.hangup(user)
    return "hung up"
