"""Broadcast: members listen only — to a recorded message, or to the dispatcher's voice.

Members are rung in parallel and join in *listen* mode. With a ``message`` (a WAV prompt), the
message is played to everyone who answered within ``gather`` seconds, ``repeat`` times, and the
broadcast ends; ``end`` stops the gathering or the message when sent. Without one, the dispatcher speaks until they hang up or send ``end``. Members
are hung up at the end. Returns each member's fate as for a group call.
"""

from __future__ import annotations

import asyncio
import contextlib

from baton.core import (
    BatonError,
    CallFailed,
    Cause,
    Command,
    FlowInterrupted,
    InvalidArgument,
    Meeting,
    MeetingMode,
    Playback,
    Priority,
    Prompt,
    Session,
    User,
    flow,
)
from baton.flows._common import stop_quietly


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
        end = await s.dial_or_command(d)
        if isinstance(end, Command):  # ``end`` while the dispatcher's line rang: stop it now
            end.reply("ended")
            leg = s.leg_of(d)
            if leg is not None and not leg.connected:
                await s.hangup(d, Cause.CANCELLED)
            return {m.id: "cancelled" for m in members}
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
        await _play_message(s, room, message, repeat, gather)
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


#: Posted to the flow's own inbox when a play of the message ends, so that its command loop,
#: which waits for ``end``, also hears that the message was played.
_PLAYED = "message played"


async def _play_message(
    s: Session, room: Meeting, message: Prompt, repeat: int, gather: float
) -> None:
    """Gather the members for ``gather`` seconds, then play ``message`` ``repeat`` times — or
    stop at once when ``end`` is sent: the gathering or the message cut short (the members
    are hung up by the broadcast's compensation)."""
    deadline = s.now() + gather
    while (left := deadline - s.now()) > 0:
        cmd = await _next_command(s, left)
        if cmd is not None and cmd.name == "end":
            cmd.reply("ended")
            s.note("broadcast ended before the message played")
            return
    for _ in range(max(1, repeat)):
        playback = await s.play(room, message, wait=False)
        s.spawn(_tell_played(s, playback), f"{s.name}:played")
        while True:
            cmd = await _next_command(s, None)
            if cmd is None:
                continue
            if cmd.name == _PLAYED:
                cmd.reply(None)
                if cmd.args["playback"] is playback:
                    break
                continue
            if cmd.name == "end":
                cmd.reply("ended")
                s.note("broadcast ended while the message played")
                await stop_quietly(s, playback)
                return


async def _tell_played(s: Session, playback: Playback) -> None:
    await asyncio.wait((playback.done,))
    s.post(_PLAYED, playback=playback)


async def _next_command(s: Session, within: float | None) -> Command | None:
    """The next command, or ``None`` (the timeout, or a member who left: a broadcast goes on
    without it)."""
    try:
        return await s.command(within)
    except FlowInterrupted:
        return None
