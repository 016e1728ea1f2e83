"""Broadcast: members listen only — to a recorded message, or to the dispatcher's voice.

Members are rung in parallel and join in *listen* mode. With a ``message`` (a WAV prompt), the
message is played to everyone who answered within ``gather`` seconds, ``repeat`` times, and the
broadcast ends. Without one, the dispatcher speaks until they hang up or send ``end``. Members
are hung up at the end. Returns each member's fate as for a group call.
"""

from __future__ import annotations

import contextlib

from baton.core import (
    BatonError,
    CallFailed,
    FlowInterrupted,
    InvalidArgument,
    MeetingMode,
    Priority,
    Prompt,
    Session,
    User,
    flow,
)


@flow(priority=Priority.PRIORITY, permission="broadcast", commands={"end": "end the broadcast"})
async def broadcast(
    s: Session,
    members: list[User],
    dispatcher: User | None = None,
    message: Prompt | None = None,
    repeat: int = 1,
    gather: float = 15.0,
    ring: float = 30.0,
) -> dict[str, str]:
    """Broadcast ``message`` (or ``dispatcher``'s voice) to ``members``."""
    if dispatcher is None and message is None:
        raise InvalidArgument("a broadcast needs a message or a dispatcher to speak", "message")
    fate: dict[str, str] = {}
    speakers = [dispatcher] if dispatcher is not None else []
    for d in speakers:
        await s.claim(d)
        await s.dial(d)
    room = await s.meeting(*speakers)
    for d in speakers:  # members only listen: the speaker hears nobody, on purpose
        s.quiet(d, "speaking to the broadcast")

    async def ring_member(m: User) -> None:
        try:
            await s.claim(m, reason="broadcast")
            await s.dial(m, timeout=ring)
            await s.join(room, m, MeetingMode.LISTEN)
            s.quiet(m, "listening to the broadcast")
            fate[m.id] = "joined"
        except CallFailed as exc:
            fate[m.id] = exc.cause.value
            s.release(m)
        except FlowInterrupted:
            fate[m.id] = "left"
        except BatonError:
            fate[m.id] = "busy"
            if s.owns(m) and s.leg_of(m) is not None:  # answered, but could not be put in
                with contextlib.suppress(BatonError):
                    await s.hangup(m)

    async def hang_up_all() -> None:
        for m in members:
            if s.owns(m) and s.leg_of(m) is not None:
                await s.hangup(m)

    s.compensate(hang_up_all, label="hang_up_members")
    for m in members:
        fate[m.id] = "ringing"
        s.spawn(ring_member(m), f"{s.name}:ring:{m.id}")
    if message is not None:
        await s.sleep(gather)
        for _ in range(max(1, repeat)):
            await s.play(room, message)
        return fate
    assert dispatcher is not None
    while True:
        try:
            cmd = await s.command()
        except FlowInterrupted as exc:
            if dispatcher in exc.users:
                return fate
            continue
        if cmd is not None and cmd.name == "end":
            cmd.reply("ended")
            return fate
