"""Escort call: a dispatcher stays on the line with a field user, records the call, and
conferences a supervisor in when the field user presses 9.

This is the worked example of docs/guide.md, in its final form.
"""

from __future__ import annotations

from baton.core import (
    BatonError,
    FlowInterrupted,
    Priority,
    Session,
    Tone,
    User,
    flow,
)


@flow(
    priority=Priority.IMMEDIATE,
    permission="escort",
    commands={"end": "end the escort call"},
)
async def escort_call(
    s: Session,
    dispatcher: User,
    field: User,
    supervisor: User,
    ring: float = 30.0,
) -> str:
    """Call ``field`` for ``dispatcher``, record the call, bring ``supervisor`` in on a 9."""
    try:
        # 1. Take the two users and call them.
        await s.claim(dispatcher, field)
        await s.dial(dispatcher)
        # The dispatcher hears ringback while the field user's phone rings: never silence.
        ringback = await s.play(dispatcher, Tone("ringback"), loop=True)
        await s.dial(field, timeout=ring, caller=dispatcher)
        await s.stop(ringback)

        # 2. Put them in a meeting (so a third party can join later) and record it.
        room = await s.meeting(dispatcher, field)
        recording = await s.record(room, f"var/recordings/escort-{field.id}.wav")
        s.note(f"recording to {recording.path}")
    except FlowInterrupted as exc:  # a party hung up, or was taken, before the escort began
        s.note(f"{exc.user.id} left before the escort began ({exc.code})")
        return "abandoned"

    # 3. The field user presses 9: hand it to the main loop below.
    def on_digit(user: User, digit: str) -> None:
        if digit == "9":
            s.post("help")

    s.on_dtmf(field, on_digit)

    # 4. Serve "help" and "end" until someone leaves.
    while True:
        try:
            cmd = await s.command()
        except FlowInterrupted as exc:  # a party hung up or was taken by a higher priority
            if exc.user is supervisor:
                s.note("the supervisor left; the escort goes on")
                continue
            s.note(f"{exc.user.id} left ({exc.code}): the escort call ends")
            break
        if cmd is None:
            continue
        if cmd.name == "end":
            cmd.reply("ended")
            break
        if cmd.name == "help" and not s.owns(supervisor):
            try:
                await s.claim(supervisor, reason=f"escort help for {field.id}")
                await s.dial(supervisor, timeout=ring)
                await s.join(room, supervisor)
                await s.play(room, Tone("confirm"), wait=False)
                s.note(f"{supervisor.id} joined the escort call")
            except BatonError as exc:  # busy, no answer, taken: the escort goes on
                s.note(f"{supervisor.id} could not join: {exc.code}")
    # 5. Hang up whoever is still ours; the recording stops with the meeting.
    for user in (field, supervisor):
        if s.owns(user) and s.leg_of(user) is not None:
            await s.hangup(user)
    return "ended"
