"""The media graph: ports, bridges, meetings, playbacks and recordings, mixed on a 20 ms tick.

Sans-IO: no sockets, no clock. The engine feeds each tick's decoded input frames and sends what
comes out; tests do the same with generated frames.

Vocabulary
----------
* **Port** — one leg's media endpoint, named by the leg id. A port with no edges is
  *connected-idle*: it hears silence.
* **Room** — a set of ports that hear each other. A **bridge** is a two-port room (each hears
  the other); a **meeting** is an N-port room where each member hears the mix of the others minus
  itself, by mode (:class:`~baton.core.port.MeetingMode`): SPEAK is heard by all; LISTEN and
  MUTED hear but are heard by none; WHISPER is heard only by its ``whisper_to`` member.
* **Playback** — a PCM source (tone or prompt) played once or looped to a port, or to a meeting
  (every member hears it).
* **Recording** — a sink written every tick: of a port, what the phone says plus what it hears;
  of a meeting, the full mix (speakers, whisperers and the meeting's playbacks — everything said
  in the room; listeners and muted members are not in it, since nobody hears them).

Direct relay
------------
A straight two-party bridge — both ports in that bridge only, no playback, no recording — needs no
mixing: what A hears is exactly what B says. Such ports are *direct*: :meth:`Mixer.direct_peer`
names the peer, the engine relays their packets on arrival without decoding, and the tick skips
them. Every graph change recomputes this; :meth:`Mixer.take_direct_changes` tells the engine which
ports switched, so it can start or stop feeding their jitter buffers.

Fan-out (``Mixer(fanout=True)``, what the engine uses): in a meeting with exactly one speaker —
a push-to-talk group while someone holds the floor, a broadcast by one dispatcher — what a
listener hears is exactly what the speaker says. Such a listener (mode LISTEN or MUTED, in that
one meeting only, no bridge, no playback or recording of its own; the meeting has no playback,
recording or whisper) is *fanned out*: :meth:`Mixer.fanout_source` names the speaker, the engine
forwards the speaker's packets to it as they arrive (as for a bridge), and the tick skips it.
Graph changes mark the rooms and ports they touch; :meth:`Mixer.take_fanout_changes` re-examines
those and tells the engine which listeners switched (leg → speaker, or None: back to the mix).
So a granted talker is heard at once — its first packet goes out when it arrives, not at the
next tick after a jitter buffer filled — and the mix does no work for the listeners.

Mixing
------
Per tick, inputs are stacked into one int32 matrix; per room, the sum of its speakers is added to
every member's row and each speaker's own input subtracted again (N-1 mixing in O(N), not O(N²));
whispers and playbacks are added on top; one clip to int16 at the end (saturation, never wrap).

What a tick needs (rows, bridge pairs, rooms) is a *plan*, kept across graph changes that concern
only direct or connected-idle ports — most of a busy switch's churn: a call's legs are added
idle and bridged direct — and rebuilt when a mixed port or a room changes. Connected-idle ports
are outside the plan (an index of them is kept as the graph changes): they hear silence and
nobody hears them, so :meth:`Mixer.tick` gives them rows of zeros without mixing, or leaves them
out (``idle=False``, what the engine does: it sends them a cached silence frame).

Wideband
--------
A port has a *format* (:meth:`Mixer.set_format`): its codec family and whether it is wideband
(G.722, Opus). While a wideband port hears another wideband port (a bridge of two, or a meeting
with a wideband talker and another wideband member) the whole tick runs at 16 kHz (320 samples a
frame): the engine converts narrowband inputs up and outputs down per leg, playbacks (8 kHz
sources) are converted up here, and recordings stay 8 kHz (converted down). Otherwise the tick
is the 8 kHz mix it always was, and wideband legs are coded at 8 kHz (:mod:`.wideband`): a
browser talking to a desk phone gets nothing from 16 kHz the phone cannot send or hear. Ports of different codec families are never
direct peers or fanned out to each other: their packets cannot be forwarded as they are.

Events (:meth:`Mixer.take_events`): :class:`~baton.core.port.PlaybackFinished` (``completed``
False when stopped or cut short by a clear or a destroy) and
:class:`~baton.core.port.RecordingFinished`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol, cast

import numpy as np
import numpy.typing as npt

from baton.core.port import (
    MeetingMode,
    Member,
    PlaybackFinished,
    RecordingFinished,
    SwitchError,
    Target,
)
from baton.switch.media.wideband import WIDE_FRAME, Resampler

__all__ = [
    "FRAME",
    "MediaError",
    "MixOutput",
    "Mixer",
    "Playback",
    "RecordingSink",
]

FRAME: Final = 160  # 20 ms at 8 kHz
Pcm = npt.NDArray[np.int16]
MixerEvent = PlaybackFinished | RecordingFinished


class MediaError(SwitchError):
    """A media command named something that does not exist (a port, a meeting) or is invalid."""

    code = "media-error"


class RecordingSink(Protocol):
    """Where a recording goes (a :class:`~baton.switch.media.wav.WavWriter` is one)."""

    path: str

    def write(self, pcm: Pcm) -> None: ...

    def close(self) -> float:
        """Finish; return the seconds recorded. Idempotent."""
        ...


class Playback:
    """A PCM source read one frame per tick, once or looped."""

    __slots__ = ("_up", "id", "loop", "pcm", "pos", "target")

    def __init__(self, playback_id: str, target: Target, pcm: Pcm, *, loop: bool) -> None:
        if loop and len(pcm) == 0:
            raise MediaError("cannot loop an empty source")
        self.id = playback_id
        self.target = target
        self.pcm = pcm
        self.loop = loop
        self.pos = 0
        self._up: Resampler | None = None

    def read_wide(self) -> Pcm:
        """The next frame at 16 kHz (the source is 8 kHz): for a wideband tick."""
        if self._up is None:
            self._up = Resampler(up=2)
        return self._up(self.read())

    @property
    def finished(self) -> bool:
        return not self.loop and self.pos >= len(self.pcm)

    def read(self) -> Pcm:
        """The next frame (zero-padded past the end of a one-shot source)."""
        pcm, pos = self.pcm, self.pos
        end = pos + FRAME
        if end <= len(pcm):
            self.pos = end if end < len(pcm) or not self.loop else 0
            return pcm[pos:end]
        if self.loop:
            n = len(pcm)
            idx = (np.arange(pos, end)) % n
            self.pos = end % n
            return pcm[idx]
        out = np.zeros(FRAME, dtype=np.int16)
        out[: len(pcm) - pos] = pcm[pos:]
        self.pos = len(pcm)
        return out


@dataclass(slots=True)
class _Recording:
    id: str
    target: Target
    sink: RecordingSink
    down: Resampler | None = None

    def write(self, pcm: Pcm) -> None:
        """Write one frame; a 16 kHz one (a wideband tick) is converted to the 8 kHz file."""
        if len(pcm) == WIDE_FRAME:
            if self.down is None:
                self.down = Resampler(down=2)
            pcm = self.down(pcm)
        self.sink.write(pcm)


class _Room:
    __slots__ = ("id", "is_bridge", "members", "playbacks", "recordings")

    def __init__(self, room_id: str, *, is_bridge: bool) -> None:
        self.id = room_id
        self.is_bridge = is_bridge
        self.members: dict[str, Member] = {}
        self.playbacks: dict[str, Playback] = {}
        self.recordings: dict[str, _Recording] = {}


class _Port:
    __slots__ = (
        "bridge",
        "direct_peer",
        "fanout_source",
        "id",
        "kind",
        "meetings",
        "playbacks",
        "recordings",
        "wide",
    )

    def __init__(self, port_id: str) -> None:
        self.id = port_id
        self.kind = "g711"  # the codec family: packets forward as they are only within one
        self.wide = False
        self.bridge: _Room | None = None
        self.meetings: dict[str, _Room] = {}
        self.playbacks: dict[str, Playback] = {}
        self.recordings: dict[str, _Recording] = {}
        self.direct_peer: str | None = None
        self.fanout_source: str | None = None


@dataclass(slots=True)
class MixOutput:
    """One tick's output: ``pcm[i]`` is what ``legs[i]`` hears; ``active[i]`` is False when that
    row is all zeros (the engine sends a cached silence payload instead of encoding)."""

    legs: list[str]
    pcm: Pcm
    active: npt.NDArray[np.bool_]
    wide: bool = False  # 16 kHz rows (320 samples), else 8 kHz (160)


class _RoomPlan:
    __slots__ = ("room", "rows", "speak_rows", "whispers")

    def __init__(
        self,
        room: _Room,
        rows: npt.NDArray[np.intp],
        speak_rows: npt.NDArray[np.intp],
        whispers: list[tuple[int, int]],
    ) -> None:
        self.room = room
        self.rows = rows
        self.speak_rows = speak_rows
        self.whispers = whispers


class _Plan:
    """What a tick needs, rebuilt only when the graph changes.

    Bridges are mixed all at once: in a bridge each port hears exactly the other, and a port is
    in at most one bridge, so ``out[bridge_dst] += x[bridge_src]`` does every bridge in one
    vectorised step. Meetings go room by room (fewer, larger). Port recordings are clipped in
    one batch too.
    """

    __slots__ = (
        "bridge_dst",
        "bridge_src",
        "legs",
        "media_ports",
        "rec_rows",
        "rooms",
        "rows",
        "wide",
    )

    def __init__(
        self,
        legs: list[str],
        rows: dict[str, int],
        bridge_pairs: list[tuple[int, int]],
        rooms: list[_RoomPlan],
        media_ports: list[_Port],
        wide: bool = False,
    ) -> None:
        self.wide = wide
        self.legs = legs
        self.rows = rows
        self.bridge_dst = np.array([d for d, _ in bridge_pairs], dtype=np.intp)
        self.bridge_src = np.array([s for _, s in bridge_pairs], dtype=np.intp)
        self.rooms = rooms
        self.media_ports = media_ports
        self.rec_rows = np.array(
            [rows[p.id] for p in media_ports if p.recordings and p.id in rows], dtype=np.intp
        )


class Mixer:
    """The media graph and its 20 ms mix. See the module docstring for the model.

    Every command raises :class:`MediaError` for an unknown port or meeting, except the
    idempotent ones (``leave``, ``destroy_meeting``, ``clear``, ``stop_play``, ``stop_record``,
    ``remove_port``), which do nothing when there is nothing to do.
    """

    def __init__(self, *, fanout: bool = False) -> None:
        self._ports: dict[str, _Port] = {}
        self._meetings: dict[str, _Room] = {}
        self._playbacks: dict[str, Playback] = {}
        self._recordings: dict[str, _Recording] = {}
        self._events: list[MixerEvent] = []
        self._direct_changes: dict[str, str | None] = {}
        self._ids = itertools.count(1)
        self._plan: _Plan | None = None
        self.fanout = fanout
        self._fanout_changes: dict[str, str | None] = {}
        self._fanout_dirty: set[str] = set()  # ports whose fan-out status may have changed
        # Connected-idle ports (no bridge, meeting, playback or recording), kept as the graph
        # changes: they hear silence and are heard by nobody, so the plan leaves them out.
        self._idle: dict[str, None] = {}

    # ---- queries -----------------------------------------------------------------------------

    def has_port(self, leg: str) -> bool:
        return leg in self._ports

    @property
    def wide(self) -> bool:
        """Whether the next tick mixes at 16 kHz (a wideband port is mixed)."""
        return self._current_plan().wide

    def set_format(self, leg: str, kind: str, *, wide: bool) -> None:
        """A port's codec family (``"g711"``, ``"G722"``, ``"opus"``) and whether it is
        wideband; direct relay and fan-out only join ports of one family."""
        port = self._port(leg)
        if (port.kind, port.wide) == (kind, wide):
            return
        port.kind = kind
        port.wide = wide
        self._changed_if_mixed(leg)  # the plan's rate depends on its ports' formats
        self._update_direct({leg})
        self._touch(leg)
        room_ids = list(port.meetings)
        for room_id in room_ids:
            self._touch(*self._meetings[room_id].members)

    def direct_peer(self, leg: str) -> str | None:
        """The peer whose packets this port may receive relayed as they are, or ``None``."""
        port = self._ports.get(leg)
        return port.direct_peer if port else None

    def take_direct_changes(self) -> dict[str, str | None]:
        """Ports whose direct status changed since the last call: leg → new peer (or None)."""
        changes, self._direct_changes = self._direct_changes, {}
        return changes

    def fanout_source(self, leg: str) -> str | None:
        """The speaker whose packets this listening port may receive as they are, or ``None``
        (see "Fan-out" in the module docstring)."""
        self._refresh_fanout()
        port = self._ports.get(leg)
        return port.fanout_source if port else None

    def take_fanout_changes(self) -> dict[str, str | None]:
        """Listening ports whose fan-out source changed since the last call: leg → the speaker
        it now hears directly (or None: back to the mix)."""
        self._refresh_fanout()
        changes, self._fanout_changes = self._fanout_changes, {}
        return changes

    def take_events(self) -> list[MixerEvent]:
        """Events produced since the last call, in order."""
        events, self._events = self._events, []
        return events

    def meeting_members(self, meeting: str) -> dict[str, Member]:
        return dict(self._room(meeting).members)

    def bridged_to(self, leg: str) -> str | None:
        port = self._port(leg)
        if port.bridge is None:
            return None
        return next((m for m in port.bridge.members if m != leg), None)

    @property
    def playbacks(self) -> Mapping[str, Playback]:
        return self._playbacks

    # ---- ports -------------------------------------------------------------------------------

    def add_port(self, leg: str) -> None:
        if leg in self._ports:
            raise MediaError(f"port {leg!r} exists")
        self._ports[leg] = _Port(leg)
        self._idle[leg] = None  # connected-idle: outside the plan (see :meth:`tick`)

    def remove_port(self, leg: str) -> None:
        """Clear the port and forget it (idempotent)."""
        if leg not in self._ports:
            return
        self.clear(leg)
        self._changed_if_mixed(leg)
        port = self._ports.pop(leg)
        self._idle.pop(leg, None)
        if port.direct_peer is not None:
            self._direct_changes[leg] = None
        if port.fanout_source is not None:
            self._fanout_changes[leg] = None
        self._fanout_dirty.discard(leg)

    def clear(self, leg: str) -> None:
        """Back to connected-idle: out of its bridge and every meeting; its playbacks stopped and
        its recordings finished. Idempotent; unknown ports are ignored."""
        port = self._ports.get(leg)
        if port is None:
            return
        touched = {leg, *(port.bridge.members if port.bridge else ())}
        self._unbridge(port)
        for room in list(port.meetings.values()):
            self._leave(room, leg)
        for pid in list(port.playbacks):
            self.stop_play(pid)
        for rid in list(port.recordings):
            self.stop_record(rid)
        self._touch(leg)
        self._update_direct(touched)

    # ---- bridges -----------------------------------------------------------------------------

    def bridge(self, leg_a: str, leg_b: str) -> None:
        """Make ``leg_a`` and ``leg_b`` hear each other. A port is in at most one bridge: an
        earlier bridge of either is dissolved (its other port is left idle)."""
        if leg_a == leg_b:
            raise MediaError("cannot bridge a port to itself")
        a, b = self._port(leg_a), self._port(leg_b)
        touched = {leg_a, leg_b}
        for port in (a, b):
            if port.bridge is not None:
                touched.update(port.bridge.members)
                self._unbridge(port)
        room = _Room(f"bridge:{leg_a}:{leg_b}", is_bridge=True)
        room.members = {leg_a: Member(leg_a), leg_b: Member(leg_b)}
        a.bridge = b.bridge = room
        self._touch(*touched)
        self._update_direct(touched)
        self._changed_if_mixed(leg_a, leg_b)  # two direct ports leave the plan as it was

    def unbridge(self, leg: str) -> None:
        """Dissolve the port's bridge, if any (idempotent)."""
        port = self._port(leg)
        if port.bridge is not None:
            touched = set(port.bridge.members)
            self._unbridge(port)
            self._update_direct(touched)

    def _unbridge(self, port: _Port) -> None:
        room = port.bridge
        if room is None:
            return
        for member in room.members:
            other = self._ports.get(member)
            if other is not None and other.bridge is room:
                other.bridge = None
        self._touch(*room.members)
        self._changed_if_mixed(*room.members)  # a direct pair was not in the plan

    # ---- meetings ----------------------------------------------------------------------------

    def create_meeting(self, meeting: str) -> None:
        if meeting in self._meetings:
            raise MediaError(f"meeting {meeting!r} exists")
        self._meetings[meeting] = _Room(meeting, is_bridge=False)
        self._changed()

    def join(self, meeting: str, member: Member) -> None:
        """Add a port to a meeting, or change its mode if it is a member already."""
        room = self._room(meeting)
        port = self._port(member.leg)
        room.members[member.leg] = member
        port.meetings[meeting] = room
        self._touch(*room.members)
        self._changed()
        self._update_direct({member.leg})

    def leave(self, meeting: str, leg: str) -> None:
        """Remove a port from a meeting (idempotent)."""
        room = self._meetings.get(meeting)
        if room is not None and leg in room.members:
            self._leave(room, leg)
            self._update_direct({leg})

    def _leave(self, room: _Room, leg: str) -> None:
        room.members.pop(leg, None)
        port = self._ports.get(leg)
        if port is not None:
            port.meetings.pop(room.id, None)
        self._touch(leg, *room.members)
        self._changed()

    def destroy_meeting(self, meeting: str) -> None:
        """Remove every member, stop the meeting's playbacks and recordings (idempotent)."""
        room = self._meetings.get(meeting)
        if room is None:
            return
        members = set(room.members)
        for leg in members:
            self._leave(room, leg)
        for pid in list(room.playbacks):
            self.stop_play(pid)
        for rid in list(room.recordings):
            self.stop_record(rid)
        del self._meetings[meeting]
        self._changed()
        self._update_direct(members)

    # ---- playback and recording --------------------------------------------------------------

    def play(self, target: Target, pcm: Pcm, *, loop: bool = False) -> str:
        """Start playing ``pcm`` (8 kHz int16) to a port or a meeting; return the playback id."""
        owner = self._owner(target)
        pid = f"pb-{next(self._ids)}"
        playback = Playback(pid, target, pcm, loop=loop)
        owner.playbacks[pid] = playback
        self._playbacks[pid] = playback
        self._touch_target(target)
        self._changed()
        if target.leg is not None:
            self._update_direct({target.leg})
        return pid

    def stop_play(self, playback: str) -> None:
        """Stop a playback; emits ``PlaybackFinished(completed=False)`` (idempotent)."""
        self._end_playback(playback, completed=False)

    def _end_playback(self, playback: str, *, completed: bool) -> None:
        pb = self._playbacks.pop(playback, None)
        if pb is None:
            return
        owner = self._owner_or_none(pb.target)
        if owner is not None:
            owner.playbacks.pop(playback, None)
        self._events.append(PlaybackFinished(playback, completed))
        self._touch_target(pb.target)
        self._changed()
        if pb.target.leg is not None:
            self._update_direct({pb.target.leg})

    def record(self, target: Target, sink: RecordingSink) -> str:
        """Start recording a port or a meeting into ``sink``; return the recording id."""
        owner = self._owner(target)
        rid = f"rec-{next(self._ids)}"
        rec = _Recording(rid, target, sink)
        owner.recordings[rid] = rec
        self._recordings[rid] = rec
        self._touch_target(target)
        self._changed()
        if target.leg is not None:
            self._update_direct({target.leg})
        return rid

    def stop_record(self, recording: str) -> None:
        """Finish a recording; emits ``RecordingFinished`` (idempotent)."""
        rec = self._recordings.pop(recording, None)
        if rec is None:
            return
        owner = self._owner_or_none(rec.target)
        if owner is not None:
            owner.recordings.pop(recording, None)
        try:
            seconds = rec.sink.close()
        finally:
            self._events.append(RecordingFinished(recording, rec.sink.path, seconds))
            self._touch_target(rec.target)
            self._changed()
            if rec.target.leg is not None:
                self._update_direct({rec.target.leg})

    def close(self) -> None:
        """Stop every playback and finish every recording (the engine is shutting down)."""
        for pid in list(self._playbacks):
            self.stop_play(pid)
        for rid in list(self._recordings):
            self.stop_record(rid)

    # ---- the tick ----------------------------------------------------------------------------

    def mixed_legs(self, *, idle: bool = True) -> list[str]:
        """The ports the tick mixes for (every port that is not direct or fanned out), in row
        order; with ``idle=False`` without the connected-idle ports (see :meth:`tick`)."""
        legs = self._current_plan().legs
        return legs + list(self._idle) if idle and self._idle else legs

    def idle_legs(self) -> list[str]:
        """The connected-idle ports: no bridge, meeting, playback or recording."""
        return list(self._idle)

    def tick(self, inputs: Mapping[str, Pcm | None], *, idle: bool = True) -> MixOutput:
        """Mix one 20 ms frame. ``inputs`` maps a leg to what its phone said this tick (absent or
        ``None`` for silence). Returns what each mixed port hears; advances playbacks and
        writes recordings.

        A connected-idle port hears silence and nobody hears it: its rows come last, all
        zeros, and with ``idle=False`` they are left out (the engine sends such a leg a
        cached silence frame without mixing anything, :meth:`idle_legs`)."""
        plan = self._current_plan()
        legs = list(self._idle) if idle else []  # before a playback's end can make one idle
        out = self._mix(plan, inputs)
        if legs:
            zeros = np.zeros((len(legs), out.pcm.shape[1]), dtype=np.int16)
            return MixOutput(
                plan.legs + legs,
                np.concatenate((out.pcm, zeros)),
                np.concatenate((out.active, np.zeros(len(legs), dtype=np.bool_))),
                out.wide,
            )
        return out

    def _mix(self, plan: _Plan, inputs: Mapping[str, Pcm | None]) -> MixOutput:
        rows = plan.rows
        n = len(plan.legs)
        wide = plan.wide
        size = WIDE_FRAME if wide else FRAME
        if not n and not plan.rooms and not plan.media_ports:
            return MixOutput([], _EMPTY[:, :size], _NONE_ACTIVE, wide)  # nothing to mix
        x = np.zeros((n, size), dtype=np.int32)
        in_rows = [rows[leg] for leg, frame in inputs.items() if frame is not None and leg in rows]
        if in_rows:
            x[in_rows] = [f for leg, f in inputs.items() if f is not None and leg in rows]
        out = np.zeros((n, size), dtype=np.int32)
        if len(plan.bridge_dst):
            out[plan.bridge_dst] += x[plan.bridge_src]
        finished: list[str] = []

        for room_plan in plan.rooms:
            room = room_plan.room
            speak = room_plan.speak_rows
            mix: npt.NDArray[np.int32] | None = None
            if len(speak):
                total = x[speak].sum(axis=0, dtype=np.int32)
                if len(room_plan.rows):
                    out[room_plan.rows] += total
                out[speak] -= x[speak]  # N-1: nobody hears themselves
                mix = total
            for w, t in room_plan.whispers:
                out[t] += x[w]
                if room.recordings:
                    mix = x[w].copy() if mix is None else mix + x[w]
            for pb in room.playbacks.values():
                frame16 = pb.read_wide() if wide else pb.read()
                if len(room_plan.rows):
                    out[room_plan.rows] += frame16
                if room.recordings:
                    mix = frame16.astype(np.int32) if mix is None else mix + frame16
                if pb.finished:
                    finished.append(pb.id)
            for rec in room.recordings.values():
                rec.write(_clip(mix) if mix is not None else _SILENCE[:size])

        for port in plan.media_ports:
            row = rows.get(port.id)
            for pb in port.playbacks.values():
                frame16 = pb.read_wide() if wide else pb.read()
                if row is not None:
                    out[row] += frame16
                if pb.finished:
                    finished.append(pb.id)
        if len(plan.rec_rows):
            # What each recorded phone says plus what it hears, saturated, in one step.
            recorded = _clip(out[plan.rec_rows] + x[plan.rec_rows])
            i = 0
            for port in plan.media_ports:
                if port.recordings and port.id in rows:
                    for rec in port.recordings.values():
                        rec.write(recorded[i])
                    i += 1

        pcm = _clip(out)
        # The method, not np.any: no Python wrapper (an array, given an axis).
        active = cast(npt.NDArray[np.bool_], out.any(axis=1))
        for pid in finished:
            self._end_playback(pid, completed=True)
        return MixOutput(plan.legs, pcm, active, wide)

    # ---- internals ---------------------------------------------------------------------------

    def _changed(self) -> None:
        self._plan = None

    def _changed_if_mixed(self, *legs: str) -> None:
        """The plan is stale if one of these ports is in it (a change that concerns only
        direct or idle ports, the bulk of a busy switch's churn, leaves it as it is)."""
        plan = self._plan
        if plan is not None and any(leg in plan.rows for leg in legs):
            self._plan = None

    def _reclassify(self, port: _Port) -> None:
        """Keep the idle index, and the plan's validity, after a change of ``port``: the plan
        holds exactly the mixed ports (busy, neither direct nor fanned out)."""
        leg = port.id
        busy = _busy(port)
        if busy:
            self._idle.pop(leg, None)
        else:
            self._idle[leg] = None
        plan = self._plan
        if plan is not None:
            mixed = busy and port.direct_peer is None and port.fanout_source is None
            if mixed != (leg in plan.rows):
                self._plan = None

    def _current_plan(self) -> _Plan:
        if self._fanout_dirty:
            self._refresh_fanout()  # may make the plan stale
        if self._plan is None:
            self._plan = self._build_plan()
        return self._plan

    def _build_plan(self) -> _Plan:
        self._refresh_fanout()
        legs = [
            leg
            for leg, port in self._ports.items()
            if port.direct_peer is None and port.fanout_source is None and _busy(port)
        ]
        rows = {leg: i for i, leg in enumerate(legs)}
        pairs: list[tuple[int, int]] = []
        seen: set[int] = set()
        for port in self._ports.values():
            room = port.bridge
            if room is None or port.direct_peer is not None or id(room) in seen:
                continue
            seen.add(id(room))
            a, b = (rows.get(m) for m in room.members)
            if a is not None and b is not None:
                pairs += [(a, b), (b, a)]
        rooms: list[_RoomPlan] = []
        for room in self._meetings.values():
            member_rows = [rows[m] for m in room.members if m in rows]
            speak = [
                rows[m]
                for m, member in room.members.items()
                if m in rows and member.mode is MeetingMode.SPEAK
            ]
            whispers = [
                (rows[m], rows[member.whisper_to])
                for m, member in room.members.items()
                if member.mode is MeetingMode.WHISPER
                and member.whisper_to in room.members
                and m in rows
                and member.whisper_to in rows
            ]
            if member_rows or room.playbacks or room.recordings:
                rooms.append(
                    _RoomPlan(
                        room,
                        np.array(member_rows, dtype=np.intp),
                        np.array(speak, dtype=np.intp),
                        whispers,
                    )
                )
        media_ports = [p for p in self._ports.values() if p.playbacks or p.recordings]
        return _Plan(legs, rows, pairs, rooms, media_ports, self._wide(legs, pairs, rooms))

    def _wide(self, legs: list[str], pairs: list[tuple[int, int]], rooms: list[_RoomPlan]) -> bool:
        """Whether some wideband port hears another wideband port: only then is 16 kHz worth
        its cost (converters, a wider encode); a browser bridged to a desk phone, or one
        wideband member among phones, mixes at 8 kHz, as the phones can neither send nor
        hear more. Playbacks and recordings are 8 kHz and do not count."""
        wide = [self._ports[leg].wide for leg in legs]
        if any(wide[a] and wide[b] for a, b in pairs):
            return True
        for plan in rooms:
            # Two wideband members, one of whom talks (or whispers to the other): every member
            # hears the meeting's talkers.
            if sum(wide[r] for r in plan.rows.tolist()) < 2:
                continue
            if any(wide[r] for r in plan.speak_rows.tolist()) or any(
                wide[src] and wide[dst] for src, dst in plan.whispers
            ):
                return True
        return False

    def _update_direct(self, legs: set[str]) -> None:
        """Recompute the direct status of these ports and of their bridge peers."""
        todo = set(legs)
        for leg in legs:
            port = self._ports.get(leg)
            if port is not None and port.bridge is not None:
                todo.update(port.bridge.members)
        for leg in todo:
            port = self._ports.get(leg)
            if port is None:
                continue
            peer = self._direct_candidate(port)
            if peer != port.direct_peer:
                port.direct_peer = peer
                self._direct_changes[leg] = peer
            self._reclassify(port)

    def _direct_candidate(self, port: _Port) -> str | None:
        room = port.bridge
        if room is None or not _plain(port):
            return None
        other = next((m for m in room.members if m != port.id), None)
        peer = self._ports.get(other) if other is not None else None
        if peer is None or peer.bridge is not room or not _plain(peer) or peer.kind != port.kind:
            return None
        return peer.id

    # ---- fan-out ------------------------------------------------------------------------------

    def _touch(self, *legs: str) -> None:
        """These ports' fan-out status may have changed (re-examined when next asked)."""
        if self.fanout:
            self._fanout_dirty.update(legs)

    def _touch_target(self, target: Target) -> None:
        if target.leg is not None:
            self._touch(target.leg)
        elif target.meeting is not None:
            room = self._meetings.get(target.meeting)
            if room is not None:
                self._touch(*room.members)

    def _refresh_fanout(self) -> None:
        if not self._fanout_dirty:
            return
        dirty, self._fanout_dirty = self._fanout_dirty, set()
        speakers: dict[str, str | None] = {}  # room -> its only speaker (None: not fan-out)
        for leg in dirty:
            port = self._ports.get(leg)
            if port is None:
                continue
            source = self._fanout_candidate(port, speakers)
            if source != port.fanout_source:
                port.fanout_source = source
                self._fanout_changes[leg] = source
                self._reclassify(port)

    def _fanout_candidate(self, port: _Port, speakers: dict[str, str | None]) -> str | None:
        if port.bridge is not None or port.playbacks or port.recordings or len(port.meetings) != 1:
            return None
        (room,) = port.meetings.values()
        member = room.members.get(port.id)
        if member is None or member.mode not in (MeetingMode.LISTEN, MeetingMode.MUTED):
            return None
        if room.id not in speakers:
            speakers[room.id] = _sole_speaker(room)
        source = speakers[room.id]
        speaker = self._ports.get(source) if source is not None else None
        if speaker is None or speaker.kind != port.kind:
            return None  # another codec family: its packets cannot be forwarded as they are
        return source

    def _port(self, leg: str) -> _Port:
        port = self._ports.get(leg)
        if port is None:
            raise MediaError(f"no port {leg!r}")
        return port

    def _room(self, meeting: str) -> _Room:
        room = self._meetings.get(meeting)
        if room is None:
            raise MediaError(f"no meeting {meeting!r}")
        return room

    def _owner(self, target: Target) -> _Port | _Room:
        if target.leg is not None:
            return self._port(target.leg)
        assert target.meeting is not None
        return self._room(target.meeting)

    def _owner_or_none(self, target: Target) -> _Port | _Room | None:
        if target.leg is not None:
            return self._ports.get(target.leg)
        assert target.meeting is not None
        return self._meetings.get(target.meeting)


_SILENCE: Final[Pcm] = np.zeros(WIDE_FRAME, dtype=np.int16)
_SILENCE.flags.writeable = False
_EMPTY: Final[Pcm] = np.zeros((0, WIDE_FRAME), dtype=np.int16)
_EMPTY.flags.writeable = False
_NONE_ACTIVE: Final[npt.NDArray[np.bool_]] = np.zeros(0, dtype=np.bool_)
_NONE_ACTIVE.flags.writeable = False


def _busy(port: _Port) -> bool:
    """In a bridge or a meeting, or with a playback or a recording: not connected-idle."""
    return (
        port.bridge is not None
        or bool(port.meetings)
        or bool(port.playbacks)
        or bool(port.recordings)
    )


def _sole_speaker(room: _Room) -> str | None:
    """The one SPEAK member of a meeting with no playback, recording or whisper; else None."""
    if room.playbacks or room.recordings:
        return None
    speaker = None
    for leg, member in room.members.items():
        if member.mode is MeetingMode.SPEAK:
            if speaker is not None:
                return None
            speaker = leg
        elif member.mode is MeetingMode.WHISPER:
            return None
    return speaker


def _plain(port: _Port) -> bool:
    """In nothing but its bridge: no meeting, playback or recording."""
    return not port.meetings and not port.playbacks and not port.recordings


def _clip(x: npt.NDArray[np.int32]) -> Pcm:
    """Saturate int32 to int16 (never wrap). Two ufuncs: ``np.clip``'s Python wrapper costs
    several microseconds a call, which adds up over hundreds of rows a tick."""
    out: Pcm = np.maximum(np.minimum(x, 32767), -32768).astype(np.int16)
    return out
