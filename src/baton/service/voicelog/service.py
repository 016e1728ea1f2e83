"""The voice logger: records what the ``[recording]`` policy asks, whoever owns the call.

Theory of operation
-------------------
A dispatch centre's voice logger is a tap on the line, not a party to the call: it must not
depend on which flow holds a user, and no flow must be able to switch it off. So the logger is
not a flow and takes no ownership: it watches the core's event stream and asks the switch
itself to record a leg (``Switch.record``). What it records:

* **calls** — a leg of a user the policy names (:class:`~baton.service.voicelog.policy.Policy`)
  from the moment it is connected until it ends: one recording per leg, of what the phone says
  and hears. A user taken into an emergency is recorded from that moment (or the running
  recording is marked ``emergency``).
* **talk bursts** — in a PTT group, from each floor grant to the release (or revoke, or idle):
  the talker's leg, with the talker and the group stored beside it.

A media *clear* (docs/design.md, invariant 3: a preemption returns the leg to connected-idle)
stops every recording of the leg at the switch. The logger then closes that recording and, if
the leg is still up, starts the next *segment* at once: a call handed from flow to flow is a
run of segments, each with its own file and checksum, never a silent gap.

Every start and stop goes through one worker task, in the order the events came, so a stop
never overtakes its start. A recording's row is written through the journal (ordered with the
events): ``status`` ``recording`` at the start, then ``ok`` with the file's SHA-256, size and
length — or ``failed`` with the reason. **A recording that fails is an alarm**: the switch
refused to open the file, the file is missing, not a WAV or much shorter than the call when it
is closed. Each such failure is a ``recording.failed`` event (in the journal), a fault alarm on
the supervisors' consoles (:meth:`~baton.service.positions.alarms.Alarms.raise_fault`, audited),
an error log line and ``baton_recordings_failed_total``.

**Flows' own recordings** (``s.record``: a queued caller's message, a plug-in's) are not the
logger's, but their files are sealed the same way: when the switch has closed one (the core's
``media`` ``record.done``), the worker stores its SHA-256, size and length (``ok``) — or
``failed``, with the same alarm, if the file is missing or no WAV — so playback and export
check every recording alike.

Retention (:meth:`VoiceLogger.sweep`, every ``sweep_every`` seconds): recordings that ended
more than ``retention_days`` ago lose their file; their rows stay, ``status = "expired"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa

from baton.core import BatonError, Priority, UserManager
from baton.core.events import (
    Event,
    FlowEnded,
    FlowStarted,
    LegStateChanged,
    MediaChanged,
    OwnerChanged,
)
from baton.core.model import LegState
from baton.core.port import Switch, SwitchError, Target
from baton.flows.ptt.events import (
    FloorGranted,
    FloorIdle,
    FloorReleased,
    FloorRevoked,
    GroupEmergency,
)
from baton.service.errors import Conflict, NotFound
from baton.service.metrics import count, gauge
from baton.service.positions.alarms import Alarms
from baton.service.positions.service import iso
from baton.service.store.db import StoreUnavailable
from baton.service.store.tables import recordings
from baton.service.voicelog.files import Digest, digest, inside, is_wav
from baton.service.voicelog.policy import Policy

__all__ = [
    "RecordingDropped",
    "RecordingEnded",
    "RecordingFailed",
    "RecordingStarted",
    "RecordingsExpired",
    "VoiceLogger",
]

log = logging.getLogger("baton.service.voicelog")

EMERGENCY = int(Priority.EMERGENCY)

#: A closed recording holding less than this share of the time it ran (less a second of
#: slack for the switch's start-up) lost audio: an alarm, not a silent gap.
SHORT = 0.5
#: A segment that ran, and holds, less than this many seconds is dropped (see ``_do_stop``).
EMPTY = 0.1


def _seconds(d: Digest) -> float:
    """The audio a recording holds: 8 kHz, 16-bit mono after a 44-byte WAV header."""
    return max(0, d.size - 44) / 16000


class Writer(Protocol):
    """What the logger writes through: the journal (ordered with the events)."""

    def execute(self, statement: sa.Executable, label: str = ...) -> asyncio.Future[Any]: ...

    def audit(
        self,
        *,
        principal: str | None,
        role: str | None,
        action: str,
        target: str | None,
        outcome: str,
        details: dict[str, Any] | None = None,
        remote: str | None = None,
    ) -> asyncio.Future[Any]: ...


class Reader(Protocol):
    """What the retention sweep reads from: the store."""

    def read(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


@dataclass(slots=True, kw_only=True)
class RecordingStarted(Event):
    kind: ClassVar[str] = "recording.started"
    user: str
    what: str  # call | ptt
    path: str
    reasons: tuple[str, ...] = ()
    talker: str | None = None
    group: str | None = None


@dataclass(slots=True, kw_only=True)
class RecordingEnded(Event):
    kind: ClassVar[str] = "recording.ended"
    user: str
    what: str
    path: str
    seconds: float
    sha256: str


@dataclass(slots=True, kw_only=True)
class RecordingDropped(Event):
    """A segment cut the moment it began (a clear, a hand-over): it held nothing to hear, so it
    has no row and no file. Every ``recording.started`` ends in ``recording.ended``, this, or
    ``recording.failed``."""

    kind: ClassVar[str] = "recording.dropped"
    user: str
    what: str
    path: str


@dataclass(slots=True, kw_only=True)
class RecordingFailed(Event):
    kind: ClassVar[str] = "recording.failed"
    user: str
    what: str
    path: str
    reason: str


@dataclass(slots=True, kw_only=True)
class RecordingsExpired(Event):
    kind: ClassVar[str] = "recording.expired"
    count: int
    before: str  # ISO 8601: recordings that ended before this lost their files


@dataclass(slots=True, eq=False)
class _Tap:
    what: str  # call | ptt | flow (a flow's own recording, sealed only)
    user: str
    leg: str
    path: Path
    reasons: list[str]
    talker: str | None = None
    group: str | None = None
    rid: str | None = None  # the switch's recording id, once started
    wall: float = 0.0  # wall-clock start
    t0: float = 0.0  # loop-clock start
    written: bool = False  # its row exists
    failed: bool = False


@dataclass
class _Counts:
    started: int = 0
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    expired: int = 0
    integrity: int = 0


class VoiceLogger:
    """Records by policy (see the module docstring). Start :meth:`run` and, for retention,
    :meth:`sweep_forever` as tasks of the service; :meth:`close` stops listening."""

    def __init__(
        self,
        manager: UserManager,
        switch: Switch,
        policy: Policy,
        *,
        folder: Path,
        store: Reader,
        journal: Writer,
        alarms: Alarms,
        run_id: int,
        wallclock: Callable[[], float],
    ) -> None:
        self.manager = manager
        self.switch = switch
        self.policy = policy
        self.folder = folder
        self.store = store
        self.journal = journal
        self.alarms = alarms
        self.run_id = run_id
        self.wallclock = wallclock
        self.counts = _Counts()
        self._calls: dict[str, _Tap] = {}  # user -> the recording of their leg now
        self._bursts: dict[str, _Tap] = {}  # PTT flow -> the talk burst recorded now
        self._ptt_groups: dict[str, str] = {}  # PTT flow -> its configured group
        self._ptt_emergency: set[str] = set()  # PTT flows whose emergency state is on
        self._active: set[_Tap] = set()
        self._flow_recordings: dict[str, _Tap] = {}  # path -> a flow's recording, until sealed
        self._work: asyncio.Queue[tuple[str, _Tap, str]] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._unsubscribe = manager.events.subscribe(self._on_event)

    def close(self) -> None:
        self._unsubscribe()

    # ---- what the events ask for (synchronous, inside the core's publish)

    def _on_event(self, ev: Event) -> None:
        # The bus drops a subscriber that raises: for a voice logger that would be a silent
        # gap from then on. A failure here is logged and alarmed, and the logger stays on.
        try:
            self._follow(ev)
        except Exception as exc:
            log.exception("voice logger: event %s", ev.kind)
            self.counts.failed["start"] += 1
            self.alarms.raise_fault(
                "recording",
                f"The voice logger could not follow an event ({ev.kind}): {exc!r}; "
                "a recording may be missing",
                details={"event": ev.kind},
            )

    def _follow(self, ev: Event) -> None:
        if isinstance(ev, LegStateChanged):
            if ev.state == LegState.CONNECTED.value:
                self._connected(ev.user, ev.leg)
            elif ev.state == LegState.ENDED.value:
                self._ended(ev.user, ev.leg)
        elif isinstance(ev, OwnerChanged):
            if ev.new is None:
                self._released(ev.user)
            else:
                self._held(ev.user, ev.priority is not None and ev.priority >= EMERGENCY)
        elif isinstance(ev, MediaChanged):
            if ev.command == "clear":
                for user in ev.users:
                    self._cleared(user)
            elif ev.command == "record" and ev.detail:  # a flow's own (the logger's go direct)
                who = ev.users[0] if ev.users else ""
                tap = _Tap("flow", who, "", Path(ev.detail), [], group=ev.meeting)
                tap.t0, tap.written = self.manager.now(), True  # its row: the projection's
                self._flow_recordings[ev.detail] = tap
            elif ev.command == "record.done" and ev.detail in self._flow_recordings:
                self._work.put_nowait(("seal", self._flow_recordings.pop(ev.detail), ""))
        elif isinstance(ev, FlowStarted):
            group = ev.args.get("group")
            if group is not None:
                self._ptt_groups[ev.flow] = group
        elif isinstance(ev, FloorGranted):
            self._burst_start(ev.group, ev.user)
        elif isinstance(ev, FloorReleased | FloorRevoked):
            self._burst_stop(
                ev.group, ev.user, "released" if isinstance(ev, FloorReleased) else "revoked"
            )
        elif isinstance(ev, FloorIdle):
            self._burst_stop(ev.group, None, "idle")
        elif isinstance(ev, GroupEmergency):
            if ev.on:
                self._ptt_emergency.add(ev.group)
            else:
                self._ptt_emergency.discard(ev.group)
        elif isinstance(ev, FlowEnded):
            self._burst_stop(ev.flow, None, "group ended")
            self._ptt_groups.pop(ev.flow, None)
            self._ptt_emergency.discard(ev.flow)

    def _live_leg(self, user: str) -> str | None:
        try:
            leg = self.manager.leg_of(self.manager.user(user))
        except BatonError:  # the user was removed (provisioning): no leg of theirs is live
            return None
        return leg.id if leg is not None and leg.state is LegState.CONNECTED else None

    def _owner_priority(self, user: str) -> int | None:
        """The priority the user is held at now; ``None`` if nobody holds the user."""
        try:
            owner = self.manager.owner_of(self.manager.user(user))
        except BatonError:
            return None
        return None if owner is None else owner.priority

    def _reasons_now(self, user: str) -> list[str]:
        """Why the user's line is recorded now: only while someone holds it (a position's
        always-on line between calls is not), for the policy's reasons or an emergency."""
        priority = self._owner_priority(user)
        if priority is None:
            return []
        reasons = self.policy.reasons(user)
        if self.policy.rules.emergencies and priority >= EMERGENCY:
            reasons.append("emergency")
        return reasons

    def _connected(self, user: str, leg: str) -> None:
        reasons = self._reasons_now(user)
        if reasons and user not in self._calls:
            self._start(_Tap("call", user, leg, self._path(user, "call"), reasons))

    def _held(self, user: str, emergency: bool) -> None:
        """A new owner (a flow or a call) holds the user: a call starts, or goes on with the
        recording it has — marked ``emergency`` if it became one, ended if it was recorded only
        for an emergency that let the user go."""
        tap = self._calls.get(user)
        if tap is None:
            leg = self._live_leg(user)
            reasons = self._reasons_now(user)
            if leg is not None and reasons:
                self._start(_Tap("call", user, leg, self._path(user, "call"), reasons))
        elif emergency and self.policy.rules.emergencies:
            if "emergency" not in tap.reasons:
                tap.reasons.append("emergency")
                self._work.put_nowait(("reasons", tap, ""))
        elif tap.reasons == ["emergency"]:
            del self._calls[user]
            self._work.put_nowait(("stop", tap, "emergency ended"))

    def _released(self, user: str) -> None:
        """Nobody holds the user any more: the call is over (the line may stay up)."""
        tap = self._calls.pop(user, None)
        if tap is not None:
            self._work.put_nowait(("stop", tap, "released"))

    def _ended(self, user: str, leg: str) -> None:
        tap = self._calls.get(user)
        if tap is not None and tap.leg == leg:
            del self._calls[user]
            self._work.put_nowait(("stop", tap, "leg ended"))
        for flow, burst in list(self._bursts.items()):
            if burst.leg == leg:
                del self._bursts[flow]
                self._work.put_nowait(("stop", burst, "leg ended"))

    def _cleared(self, user: str) -> None:
        """The switch stopped every recording of the user's leg: close them; a call goes on
        in a new segment while the leg is up."""
        tap = self._calls.pop(user, None)
        if tap is not None:
            self._work.put_nowait(("stop", tap, "cleared"))
            leg = self._live_leg(user)
            reasons = self._reasons_now(user)
            if leg is not None and leg == tap.leg and reasons:
                self._start(_Tap("call", user, leg, self._path(user, "call"), reasons))
        for flow, burst in list(self._bursts.items()):
            if burst.user == user:
                del self._bursts[flow]
                self._work.put_nowait(("stop", burst, "cleared"))

    def _burst_start(self, flow: str, talker: str) -> None:
        group = self._ptt_groups.get(flow)
        reasons = self.policy.ptt(group, emergency=flow in self._ptt_emergency)
        if not reasons:
            return
        self._burst_stop(flow, None, "next talker")
        leg = self._live_leg(talker)
        if leg is None:
            return
        tap = _Tap("ptt", talker, leg, self._path(talker, "ptt"), reasons, talker, group or flow)
        self._bursts[flow] = tap
        self._work.put_nowait(("start", tap, ""))

    def _burst_stop(self, flow: str, talker: str | None, why: str) -> None:
        tap = self._bursts.get(flow)
        if tap is not None and (talker is None or tap.talker == talker):
            del self._bursts[flow]
            self._work.put_nowait(("stop", tap, why))

    def _start(self, tap: _Tap) -> None:
        self._calls[tap.user] = tap
        self._work.put_nowait(("start", tap, ""))

    def _path(self, user: str, what: str) -> Path:
        day = datetime.datetime.fromtimestamp(self.wallclock(), datetime.UTC).date().isoformat()
        n = next(self._ids)
        return self.folder / "voicelog" / day / f"r{self.run_id}-{n:05d}-{user}-{what}.wav"

    # ---- doing it (the worker, in event order)

    async def run(self) -> None:
        """The worker: start and stop recordings in the order the events asked."""
        while True:
            action, tap, why = await self._work.get()
            try:
                await self._do(action, tap, why)
            except Exception as exc:  # the logger must outlive any one recording's trouble
                log.exception("voice logger: %s of %s failed", action, tap.path)
                self._fail(tap, f"the voice logger failed: {exc!r}")
            finally:
                self._work.task_done()

    async def _do(self, action: str, tap: _Tap, why: str) -> None:
        if action == "start":
            await self._do_start(tap)
        elif action == "stop":
            await self._do_stop(tap, why)
        elif action == "seal":
            await self._do_seal(tap)
        elif tap.written:
            self._update(tap, reasons=list(tap.reasons))

    async def idle(self) -> None:
        """Wait until every start and stop asked so far is done."""
        await self._work.join()

    async def finish(self) -> None:
        """At shutdown, after the worker was stopped and the switch closed (which closed the
        files): do what is still queued, then close every recording still running."""
        while not self._work.empty():
            action, tap, why = self._work.get_nowait()
            self._work.task_done()
            if action == "stop":
                await self._do_stop(tap, why, switch_open=False)
            elif action == "seal":
                await self._do_seal(tap)
        for tap in list(self._active):
            await self._do_stop(tap, "shutdown", switch_open=False)

    async def _do_start(self, tap: _Tap) -> None:
        if self._live_leg(tap.user) != tap.leg:
            return  # the leg ended before the recording could start: nothing to record
        tap.wall, tap.t0 = self.wallclock(), self.manager.now()
        try:
            tap.path.parent.mkdir(parents=True, exist_ok=True)
            tap.rid = await self.switch.record(Target(leg=tap.leg), str(tap.path))
        except (OSError, SwitchError) as exc:
            if self._live_leg(tap.user) != tap.leg:
                return  # the leg went away meanwhile: not a failure of the recording
            self._fail(tap, f"it could not start: {exc}")
            return
        self._active.add(tap)
        self.counts.started += 1
        tap.written = True
        self.journal.execute(
            sa.insert(recordings).values(
                run_id=self.run_id,
                path=str(tap.path),
                user_id=tap.user,
                by="voicelog",
                started_at=tap.wall,
                kind=tap.what,
                leg=tap.leg,
                talker=tap.talker,
                ptt_group=tap.group,
                reasons=list(tap.reasons),
                status="recording",
            ),
            "recording.start",
        )
        self.manager.events.publish(
            RecordingStarted(
                user=tap.user,
                what=tap.what,
                path=str(tap.path),
                reasons=tuple(tap.reasons),
                talker=tap.talker,
                group=tap.group,
            )
        )

    async def _do_stop(self, tap: _Tap, why: str, *, switch_open: bool = True) -> None:
        if tap.rid is None:
            return  # never started (or failed to)
        self._active.discard(tap)
        if switch_open:
            try:
                await self.switch.stop_record(tap.rid)  # idempotent: a clear or hang-up may have
            except SwitchError:
                pass  # the switch has already let it go
        ran = self.manager.now() - tap.t0
        d = await self._digest(tap)
        if d is None:
            return
        seconds = _seconds(d)
        if seconds < SHORT * ran - 1.0:
            self._fail(tap, f"its file holds {seconds:.1f} s of a {ran:.1f} s call")
            return
        if seconds < EMPTY and ran < EMPTY:
            # A segment cut the moment it began (a clear, a hand-over) holds next to nothing:
            # no row, no file.
            with contextlib.suppress(OSError):
                tap.path.unlink()
            t = recordings
            self.journal.execute(
                sa.delete(t).where(t.c.run_id == self.run_id, t.c.path == str(tap.path)),
                "recording.empty",
            )
            self.manager.events.publish(
                RecordingDropped(user=tap.user, what=tap.what, path=str(tap.path))
            )
            return
        self.counts.completed += 1
        self._update(
            tap,
            ended_at=self.wallclock(),
            end_reason=why,
            status="ok",
            sha256=d.sha256,
            size_bytes=d.size,
            seconds=round(seconds, 3),
        )
        self.manager.events.publish(
            RecordingEnded(
                user=tap.user, what=tap.what, path=str(tap.path), seconds=seconds, sha256=d.sha256
            )
        )

    async def _do_seal(self, tap: _Tap) -> None:
        """A flow's recording whose file the switch has closed: its checksum, size and length
        go on its row (``ok``), or it failed."""
        d = await self._digest(tap)
        if d is None:
            return
        self._update(
            tap, status="ok", sha256=d.sha256, size_bytes=d.size, seconds=round(_seconds(d), 3)
        )

    async def _digest(self, tap: _Tap) -> Digest | None:
        """The closed file's checksum and size, or None once the recording is marked failed (no
        WAV file there, or one that cannot be read)."""
        if not is_wav(tap.path):
            self._fail(tap, "its file is missing or is not a WAV file")
            return None
        try:
            return await digest(tap.path)
        except OSError as exc:
            self._fail(tap, f"its file cannot be read: {exc}")
            return None

    def _update(self, tap: _Tap, **values: Any) -> None:
        t = recordings
        self.journal.execute(
            sa.update(t)
            .where(t.c.run_id == self.run_id, t.c.path == str(tap.path))
            .values(**values),
            "recording.update",
        )

    def _fail(self, tap: _Tap, reason: str) -> None:
        """A recording the policy asked for is not (or not wholly) there: say so everywhere."""
        if tap.failed:
            return
        tap.failed = True
        self._active.discard(tap)
        flows = tap.what == "flow"  # a flow's own: started by the flow, closed by the projection
        stage = "start" if tap.rid is None and not flows else "file"
        self.counts.failed[stage] += 1
        now = self.wallclock()
        if flows:
            self._update(tap, status="failed", error=reason)
        elif tap.written:
            self._update(tap, ended_at=now, end_reason="failed", status="failed", error=reason)
        else:
            tap.written = True
            self.journal.execute(
                sa.insert(recordings).values(
                    run_id=self.run_id,
                    path=str(tap.path),
                    user_id=tap.user,
                    by="voicelog",
                    started_at=tap.wall or now,
                    ended_at=now,
                    end_reason="failed",
                    kind=tap.what,
                    leg=tap.leg,
                    talker=tap.talker,
                    ptt_group=tap.group,
                    reasons=list(tap.reasons),
                    status="failed",
                    error=reason,
                ),
                "recording.failed",
            )
        self.manager.events.publish(
            RecordingFailed(user=tap.user, what=tap.what, path=str(tap.path), reason=reason)
        )
        name = self._name(tap.user) if tap.user else f"meeting {tap.group}"
        what = {"ptt": "talk burst", "flow": f"line ({tap.path.name})"}.get(tap.what, "call")
        self.alarms.raise_fault(
            "recording",
            f"Recording of {name}'s {what} failed: {reason}",
            user=tap.user or None,
            details={"leg": tap.leg, "path": str(tap.path), "stage": stage},
        )
        log.error("recording failed: %s", reason, extra={"user": tap.user, "path": str(tap.path)})

    def _name(self, user: str) -> str:
        """The user's display name (the id if the user was removed meanwhile)."""
        try:
            return self.manager.user(user).name
        except BatonError:
            return user

    # ---- after a crash

    async def recover(self) -> int:
        """Close the recordings an earlier run left running (it crashed, or stopped without
        finishing them): the start-up already closed their rows (``crash``, ``shutdown``); the
        files — the WAV writer keeps them readable up to the last second — get their checksum
        now, or, if gone, the row says ``failed`` and an alarm is raised. Returns how many."""
        t = recordings
        async with self.store.read() as conn:
            rows = [
                dict(r._mapping)
                for r in await conn.execute(
                    sa.select(t).where(t.c.status == "recording", t.c.run_id != self.run_id)
                )
            ]
        folder = self.folder.resolve()
        for row in rows:
            where = (t.c.id == row["id"],)
            path = inside(Path(row["path"]), folder)
            d = None
            if path is not None and is_wav(path):
                try:
                    d = await digest(path)
                except OSError:
                    d = None
            if d is None:
                reason = "the service stopped while recording and the file is missing"
                self.counts.failed["file"] += 1
                self.journal.execute(
                    sa.update(t).where(*where).values(status="failed", error=reason),
                    "recording.recover",
                )
                self.alarms.raise_fault(
                    "recording",
                    f"Recording {row['id']} failed: {reason}",
                    user=row["user_id"],
                    details={"recording": row["id"], "path": row["path"], "stage": "file"},
                )
                continue
            self.journal.execute(
                sa.update(t)
                .where(*where)
                .values(
                    status="ok",
                    sha256=d.sha256,
                    size_bytes=d.size,
                    seconds=round(_seconds(d), 3),
                ),
                "recording.recover",
            )
        return len(rows)

    # ---- integrity

    async def verified(self, row: dict[str, Any]) -> Path:
        """The recording's file, checked against the digest stored with it. Raises
        :class:`NotFound` (``recording-expired``, ``recording-missing``) or :class:`Conflict`
        (``recording-tampered``: the file changed since it was closed — an alarm too)."""
        rid = row["id"]
        if row.get("status") == "expired":
            raise NotFound(
                f"recording {rid} was removed by the retention policy",
                id="recording-expired",
                details={"recording": rid},
            )
        path = inside(Path(row["path"]), self.folder.resolve())
        if path is None:
            if row.get("sha256"):
                self._integrity(row, "its file is gone")
            raise NotFound(
                f"recording {rid}'s file is not available",
                id="recording-missing",
                details={"recording": rid},
            )
        expected = row.get("sha256")
        if expected:
            d = await digest(path)
            if d.sha256 != expected:
                self._integrity(row, "its file no longer matches its checksum")
                raise Conflict(
                    f"recording {rid}'s file does not match the checksum stored with it: "
                    "it was changed after it was recorded",
                    id="recording-tampered",
                    details={"recording": rid, "sha256": expected, "found": d.sha256},
                )
        return path

    def _integrity(self, row: dict[str, Any], reason: str) -> None:
        self.counts.integrity += 1
        user = row.get("user_id")
        self.alarms.raise_fault(
            "recording",
            f"Recording {row['id']} failed its integrity check: {reason}",
            user=user,
            details={"recording": row["id"], "path": row["path"]},
        )

    # ---- retention

    async def sweep_forever(self) -> None:
        every = self.policy.rules.sweep_every
        while True:
            await asyncio.sleep(every)
            try:
                await self.sweep()
            except StoreUnavailable:
                log.warning("retention sweep skipped: the store is unavailable")

    async def sweep(self) -> int:
        """Remove the files of recordings older than ``retention_days``; keep their rows,
        marked ``expired``. Return how many expired."""
        days = self.policy.rules.retention_days
        if not days:
            return 0
        now = self.wallclock()
        before = now - days * 86400
        t = recordings
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(t.c.id, t.c.path).where(
                        t.c.ended_at < before,
                        sa.or_(t.c.status.is_(None), t.c.status != "expired"),
                    )
                )
            ).all()
        folder = self.folder.resolve()
        ids = []
        for rid, path in rows:
            p = inside(Path(path), folder)
            if p is not None:
                try:
                    p.unlink()
                except OSError as exc:
                    log.error("retention could not remove %s: %s", p, exc)
                    continue
            ids.append(rid)
        if not ids:
            return 0
        self.journal.execute(
            sa.update(t).where(t.c.id.in_(ids)).values(status="expired", expired_at=now),
            "recording.expire",
        )
        self.counts.expired += len(ids)
        self.manager.events.publish(RecordingsExpired(count=len(ids), before=iso(before)))
        self.journal.audit(
            principal=None,
            role=None,
            action="recording.expire",
            target=None,
            outcome="ok",
            details={"recordings": ids, "before": iso(before)},
        )
        return len(ids)

    # ---- metrics

    def gauges(self) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
        c = self.counts
        out = [
            gauge("baton_recordings_active", "voice-log recordings running now", len(self._active)),
            count("baton_recordings_started_total", "voice-log recordings started", c.started),
            count(
                "baton_recordings_completed_total",
                "voice-log recordings closed with a checksum",
                c.completed,
            ),
            count(
                "baton_recordings_expired_total",
                "recordings removed by the retention policy",
                c.expired,
            ),
            count(
                "baton_recordings_integrity_failures_total",
                "recordings whose file no longer matched its checksum (or was gone)",
                c.integrity,
            ),
        ]
        for stage in ("start", "file"):
            out.append(
                count(
                    "baton_recordings_failed_total",
                    "voice-log recordings that failed: could not start, or a bad file",
                    c.failed[stage],
                    stage=stage,
                )
            )
        return out
