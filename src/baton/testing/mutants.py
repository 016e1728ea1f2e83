"""The mutation run: proof that the tests and ``baton check`` catch real bugs (docs/mutants.md).

``python -m baton.testing.mutants`` applies seeded faults — *mutants* — to the core and the flow
library, one at a time, each in a private copy of the checkout (the real tree is never touched),
and runs the *killer* (:data:`KILLER`: the core, flow, PTT and property tests, then
``baton check`` on the library flows) in each copy, in a subprocess whose ``PYTHONPATH`` points at
the copy's ``src``, within a fixed time budget.

* **killed** — the killer failed (a test or a check went red), or it exceeded the budget (a hang:
  invariant 10, liveness, exists to turn a stuck claim into a failure; timeouts are reported
  separately as well);
* **survived** — the killer passed: the fault went unnoticed. A survivor is either a gap in the
  net (write the test that kills it) or an *equivalent* mutant (no behaviour changed).

Each mutant is data: a name, the fault it models, and one or more exact source edits — a file, a
snippet that must occur in it exactly once, and its replacement. A mutant whose snippet no longer
occurs exactly once (the code moved on) is **stale**: the run refuses to start and names it, so a
fault never silently drops out of the catalogue. ``--list --check`` verifies that every mutant
applies without running anything (the test suite does this on every run).

The run first checks that the unmutated tree passes the killer (else the scores mean nothing and
it stops). Its last line of output is one JSON object: ``mutants``, ``killed``, ``survived``
(names), ``timeouts`` (names), ``mutation_score`` (killed / mutants), ``seconds``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CATALOGUE",
    "CHECKED_FLOWS",
    "EXPLORE_KILLER",
    "KILLER",
    "Edit",
    "KillerResult",
    "Mutant",
    "MutantResult",
    "StaleMutant",
    "apply_mutant",
    "main",
    "mutated_sources",
    "private_checkout",
    "run_killer",
    "run_mutant",
    "stale_reason",
]

#: The library flows ``baton check`` explores in the killer: every one (each passes it on the
#: unmutated tree; a flow that does not is left out, named in docs/mutants.md, until it does).
CHECKED_FLOWS: tuple[str, ...] = (
    "call",
    "inbound_call",
    "queued_call",
    "take_call",
    "group_call",
    "conference",
    "broadcast",
    "barge_in",
    "force_release",
    "monitor",
    "whisper",
    "blind_transfer",
    "attended_transfer",
    "hold",
    "pickup",
    "roll_call",
    "polling",
    "emergency_call",
    "emergency_inbound",
    "ptt_group",
)

#: The killer: commands run in order from the repository root, stopping at the first failure.
#: ``{python}`` is the interpreter running the mutation run. Chosen to kill fast: the unit and
#: race tests of the core and the library first (``-x`` stops at the first red test), then the
#: property tests, then ``baton check`` exploring the library flows.
_PYTEST = (
    "{python}",
    "-m",
    "pytest",
    "-x",
    "-q",
    "-p",
    "no:cacheprovider",
    "-p",
    "baton.testing._killer_plugin",
)
_CHECK = ("{python}", "-m", "baton.cli", "check", *CHECKED_FLOWS)
KILLER: tuple[tuple[str, ...], ...] = (
    (*_PYTEST, "tests/core", "tests/flows", "tests/ptt", "tests/property"),
    _CHECK,
)

#: The exploration alone: the property tests, the seeded random mixes and ``baton check``,
#: without the hand-written tests — how much of the catalogue the explorers catch by
#: themselves (``--killer explore``).
EXPLORE_KILLER: tuple[tuple[str, ...], ...] = (
    (
        *_PYTEST,
        "tests/property",
        "tests/flows/test_random_mix.py",
        "tests/flows/test_random_mix_wide.py",
        "tests/flows/test_random_mix_storm.py",
    ),
    _CHECK,
)

KILLERS = {"full": KILLER, "explore": EXPLORE_KILLER}

#: Seconds one mutant may run the whole killer before it is stopped (and counted as killed):
#: unless ``--budget`` fixes it, the larger of this and BUDGET_FACTOR times the unmutated tree's
#: run, so that a loaded machine does not turn slow survivors into timeouts.
DEFAULT_BUDGET = 120.0
BUDGET_FACTOR = 3.0
#: The unmutated tree's run is allowed this long when the budget is automatic.
BASELINE_LIMIT = 900.0


# ---------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Edit:
    """Replace ``old`` (which must occur exactly once in ``path``) by ``new``.

    ``path`` is relative to the ``baton`` package folder (``core/ledger.py``).
    """

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    """One seeded fault: ``name``, the ``area`` it hits (``core`` or ``library``), what it
    models (``fault``), and the edits that make it."""

    name: str
    area: str
    fault: str
    edits: tuple[Edit, ...]


class StaleMutant(Exception):
    """A mutant's snippet does not occur exactly once: the code changed under the catalogue."""


def _m(name: str, area: str, fault: str, *edits: tuple[str, str, str]) -> Mutant:
    return Mutant(name, area, fault, tuple(Edit(p, o, n) for p, o, n in edits))


CATALOGUE: tuple[Mutant, ...] = (
    # ---- the ledger (invariants 1, 2)
    _m(
        "fence_always_passes",
        "core",
        "drop the fence check: an owner that lost a user still operates on it (inv. 2)",
        (
            "core/ledger.py",
            "            raise NotOwner(rec.user, owner.name, holder, lost)\n",
            "            return rec.epoch  # MUTANT\n",
        ),
    ),
    _m(
        "fence_admits_claimer_in_progress",
        "core",
        "a claimer whose preemption is still clearing the user may already operate on it",
        (
            "core/ledger.py",
            "or (rec.preemption is not None and rec.preemption.claimer is owner)",
            "or False  # MUTANT",
        ),
    ),
    _m(
        "hand_over_no_epoch_bump",
        "core",
        "no epoch bump in hand_over: a stale owner's epoch still matches (inv. 2, 5)",
        ("core/ledger.py", "        rec.epoch += 1\n", "        rec.epoch += 0  # MUTANT\n"),
    ),
    _m(
        "hand_over_skips_manager",
        "core",
        "hand_over does not tell the manager: no queued claim served, no collector armed",
        ("core/ledger.py", "        self._on_change(rec)\n", "        pass  # MUTANT\n"),
    ),
    # ---- claims (invariant 3, steps 1-2)
    _m(
        "preempt_at_equal_priority",
        "core",
        "preempt at equal priority (>= instead of >)",
        (
            "core/claims.py",
            "return Decision.PREEMPT if claimer.priority > owner.priority else Decision.WAIT",
            "return Decision.PREEMPT if claimer.priority >= owner.priority else Decision.WAIT  # MUTANT",
        ),
    ),
    _m(
        "claim_fails_on_cleanup_clear",
        "core",
        "a claim whose clean-up clear fails raises while the claimer holds the user",
        (
            "core/claims.py",
            '                    self._events.publish(Problem(source=f"claim:{rec.user.id}", message=str(exc)))\n',
            "                    raise  # MUTANT\n",
        ),
    ),
    _m(
        "supersede_regardless_of_priority",
        "core",
        "a newer claim supersedes a preemption in progress whatever its priority",
        (
            "core/claims.py",
            "return Decision.SUPERSEDE if claimer.priority >= p.priority else Decision.WAIT",
            "return Decision.SUPERSEDE  # MUTANT",
        ),
    ),
    _m(
        "supersede_only_when_higher",
        "core",
        "an equal-priority newer claim waits instead of superseding (> instead of >=)",
        (
            "core/claims.py",
            "return Decision.SUPERSEDE if claimer.priority >= p.priority else Decision.WAIT",
            "return Decision.SUPERSEDE if claimer.priority > p.priority else Decision.WAIT  # MUTANT",
        ),
    ),
    _m(
        "claim_queue_fifo",
        "core",
        "a user's claim queue serves first-come instead of by priority",
        (
            "core/claims.py",
            "entry = (-claimer.priority, next(self._ids), claimer, fut)",
            "entry = (0, next(self._ids), claimer, fut)  # MUTANT",
        ),
    ),
    _m(
        "queued_claims_not_served",
        "core",
        "a released user is not handed to the claims queued for it (they time out)",
        (
            "core/manager.py",
            "        if rec.preemption is None and rec.waiters:\n            self.claims.serve_waiters(rec)\n",
            "        pass  # MUTANT\n",
        ),
    ),
    _m(
        "failed_claim_keeps_users",
        "core",
        "a claim that fails half-way (superseded, denied) keeps the users it took",
        (
            "core/claims.py",
            "            for rec in taken:\n                self._abandon(claimer, rec)\n",
            "            pass  # MUTANT\n",
        ),
    ),
    _m(
        "superseded_claimer_not_told",
        "core",
        "a superseded claimer is never told: its claim waits forever (inv. 10)",
        (
            "core/claims.py",
            "            old_fut.set_exception(Superseded(rec.user, old.name, claimer.name))\n",
            "            pass  # MUTANT\n",
        ),
    ),
    _m(
        "claimed_user_not_cleaned",
        "core",
        "a user released with media on it reaches its next claimer unclean",
        (
            "core/claims.py",
            "            if rec.dirty and rec.live_leg is not None:\n                try:\n",
            "            if False:  # MUTANT\n                try:\n",
        ),
    ),
    # ---- the preemption protocol (invariant 3, steps 3-7)
    _m(
        "swap_stop_and_clear",
        "core",
        "swap 'stop the coroutine' and 'clear the media': the loser's operations are stopped (step 4) only after its media is cleared (step 5)",
        (
            "core/claims.py",
            "        for op in ops:  # step 4 begins: stop the loser's coroutines\n            if not self._ops.interrupt(op, notice, hold=True):\n",
            "        for op in []:  # MUTANT: the loser is stopped after the clear\n            if not self._ops.interrupt(op, notice, hold=True):\n",
        ),
        (
            "core/claims.py",
            "            ops = [op for t in items for op in t.ops]\n            if ops:\n",
            "            ops = [op for t in items for op in t.ops]\n            if False:  # MUTANT\n",
        ),
        (
            "core/claims.py",
            "            for op in ops:  # step 6, all at once\n",
            "            for t in items:  # MUTANT: step 4 after step 5\n"
            "                for op in t.ops:\n"
            "                    self._ops.interrupt(op, t.notice, hold=True)\n"
            "            waits = [op.unwound for op in ops if op.unwound is not None]\n"
            "            if waits:\n"
            "                await asyncio.wait(waits, timeout=self._m.unwind_timeout)\n"
            "            for op in ops:\n"
            '                self._events.publish(OpInterrupted(flow=op.owner.name, op=op.name, users=tuple(r.user.id for r in op.recs), notice="preempted"))\n'
            "            for op in ops:  # step 6, all at once\n",
        ),
    ),
    _m(
        "victim_never_told",
        "core",
        "skip a notice: the preempted owner is never told it lost the user (step 6)",
        (
            "core/claims.py",
            "                t.p.victim.user_lost(t.rec.user, t.notice, told=bool(t.ops) or t.p.told)\n",
            "                pass  # MUTANT\n",
        ),
    ),
    _m(
        "victim_ops_never_released",
        "core",
        "the loser's interrupted operations are never let go (step 6 never reached)",
        (
            "core/claims.py",
            "            for op in ops:  # step 6, all at once\n                self._ops.release(op)\n",
            "            pass  # MUTANT\n",
        ),
    ),
    _m(
        "notice_before_clear",
        "core",
        "an interrupted operation raises its notice at once, before the media is cleared",
        (
            "core/ops.py",
            "        if hold:\n            op.released = loop.create_future()\n",
            "        pass  # MUTANT\n",
        ),
    ),
    _m(
        "ringing_call_dropped_on_preemption",
        "core",
        "a call still ringing is dropped when its user changes owner (inv. 4)",
        (
            "core/claims.py",
            "            for t in items:  # step 5\n                rec = t.rec\n",
            "            for t in items:  # step 5\n                rec = t.rec\n"
            "                if rec.live_leg is not None and not rec.live_leg.connected:  # MUTANT\n"
            "                    self._m.end_leg(rec, rec.live_leg, Cause.FAILURE)\n",
        ),
        (
            "core/claims.py",
            "from baton.core.ops import MANAGER, Op, notice_error\n",
            "from baton.core.ops import MANAGER, Op, notice_error\n"
            "from baton.core.port import Cause  # MUTANT\n",
        ),
    ),
    _m(
        "new_owner_patience_ignored",
        "core",
        "the ring deadline is not inherited: a new owner's dial keeps the old owner's timeout",
        (
            "core/manager.py",
            "                self._ring_until(rec, leg, self.loop.time() + timeout)  # the new owner's patience\n",
            "                pass  # MUTANT\n",
        ),
    ),
    # ---- hang-ups (invariant 7)
    _m(
        "hangup_ignored",
        "core",
        "a user's hang-up is not an event: the owner keeps the user and is never told",
        (
            "core/translate.py",
            "                m.end_leg(rec, leg, ev.cause)\n                self.user_gone(rec, ev.cause)\n",
            "                m.end_leg(rec, leg, ev.cause)  # MUTANT\n",
        ),
    ),
    _m(
        "hangup_owner_not_told",
        "core",
        "skip a notice: the owner of a user who hangs up is never told",
        (
            "core/translate.py",
            "        owner.user_lost(user, notice, told)\n",
            "        pass  # MUTANT\n",
        ),
    ),
    _m(
        "hangup_keeps_ownership",
        "core",
        "the owner of a user who hung up keeps holding it",
        (
            "core/translate.py",
            '        m.ledger.hand_over(rec, None, "hung_up")\n',
            "        pass  # MUTANT\n",
        ),
    ),
    _m(
        "hangup_claim_not_resolved",
        "core",
        "forget to resolve a claim on hang-up: a claimer whose user hangs up mid-preemption is left waiting",
        (
            "core/claims.py",
            "                p.fut.set_exception(notice_error(owner, notice))\n                return True\n",
            "                pass  # MUTANT\n",
        ),
    ),
    _m(
        "leg_end_not_published",
        "core",
        "a leg's end is not published (LegStateChanged ended missing)",
        (
            "core/manager.py",
            "        leg.resolve()\n        self.publish_leg(leg)\n        self.collector.arm(rec)\n",
            "        leg.resolve()\n        self.collector.arm(rec)  # MUTANT\n",
        ),
    ),
    _m(
        "digits_kept_across_hand_over",
        "core",
        "keep digits across a hand-over: a digit pressed for one owner is read by the next",
        (
            "core/ledger.py",
            "            rec.digits.clear()\n",
            "            pass  # MUTANT\n",
        ),
        (
            "core/claims.py",
            "                else:\n                    rec.digits.clear()\n",
            "                else:\n                    pass  # MUTANT\n",
        ),
    ),
    # ---- release, collection (invariant 8)
    _m(
        "release_forgets_preemption_claimer",
        "core",
        "release does not forget the preemption claimer: a user released mid-preemption is granted anyway",
        (
            "core/claims.py",
            "            if p is not None and p.claimer is owner:\n                p.claimer = None\n            self._ledger.hand_over(rec, None, reason)\n",
            "            self._ledger.hand_over(rec, None, reason)  # MUTANT\n",
        ),
    ),
    _m(
        "collector_never_armed",
        "core",
        "the leak collector is never armed: an ownerless live leg stays up forever",
        (
            "core/collector.py",
            "        if want and rec.gc is None and not self._m.closing:\n",
            "        if False:  # MUTANT\n",
        ),
    ),
    _m(
        "keep_users_collected",
        "core",
        "an always-on (keep) user's leg is collected like any other",
        (
            "core/collector.py",
            "        want = rec.owner is None and leg is not None and not (rec.user.keep and leg.connected)\n",
            "        want = rec.owner is None and leg is not None  # MUTANT\n",
        ),
        (
            "core/collector.py",
            "        if rec.owner is not None or leg is None or (rec.user.keep and leg.connected):\n",
            "        if rec.owner is not None or leg is None:  # MUTANT\n",
        ),
    ),
    # ---- supervision, flow life cycle (invariants 5, 6)
    _m(
        "crash_cancels_other_flows",
        "core",
        "a flow's crash cancels every other task the manager supervises",
        (
            "core/manager.py",
            "            self.events.publish(Problem(source=task.get_name(), message=repr(exc)))\n",
            "            self.events.publish(Problem(source=task.get_name(), message=repr(exc)))\n"
            "            for other in list(self._tasks):  # MUTANT\n"
            "                other.cancel()\n",
        ),
    ),
    _m(
        "compensation_without_owner_check",
        "core",
        "compensation runs without the owner check (inv. 5)",
        (
            "core/flow.py",
            "            lost = [u for u, epoch in step.users.items() if self.users.get(u) != epoch]\n",
            "            lost = []  # MUTANT\n",
        ),
    ),
    _m(
        "compensation_not_shielded",
        "core",
        "compensation is not shielded: stopping a flow twice cuts it short",
        (
            "core/flow.py",
            "                    await asyncio.shield(finisher)\n",
            "                    await finisher  # MUTANT\n",
        ),
    ),
    _m(
        "cancel_not_idempotent",
        "core",
        "cancel is not idempotent: a second cancel cancels the flow's task again",
        (
            "core/flow.py",
            "        if self._cancel_requested:\n            return CancelResult.ALREADY_CANCELLING\n",
            "        pass  # MUTANT\n",
        ),
    ),
    _m(
        "ended_flow_leaves_media",
        "core",
        "a flow that ends leaves its users' media playing (a ringback heard forever)",
        (
            "core/flow.py",
            "                    await self.manager.clear(self, user)\n",
            "                    pass  # MUTANT\n",
        ),
    ),
    _m(
        "pending_notice_dropped",
        "core",
        "skip a notice: a flow told at its next operation never is",
        (
            "core/flow.py",
            "                raise notice_error(self, self._pending.pop(0))\n",
            "                pass  # MUTANT\n",
        ),
    ),
    _m(
        "child_crash_ignored",
        "core",
        "a crashed child task does not fail its flow",
        (
            "core/flow.py",
            '            self.task.cancel(f"child task {task.get_name()} failed")\n',
            "            pass  # MUTANT\n",
        ),
    ),
    _m(
        "children_cancelled_after_body",
        "core",
        "a flow's children are cancelled one step after its body returns: a child not started yet (a member's ringing task) still rings a phone",
        (
            "core/flow.py",
            "        for child in self._children:\n            child.cancel()\n        steps = self.session._steps\n",
            "        steps = self.session._steps  # MUTANT\n",
        ),
    ),
    _m(
        "handlers_survive_hand_over",
        "core",
        "a flow's hang-up/preemption handlers and DTMF callback for a user it gave away stay registered",
        (
            "core/flow.py",
            "            self._forget_user(user)\n",
            "            pass  # MUTANT\n",
        ),
    ),
    _m(
        "meeting_members_not_fenced_first",
        "core",
        "a refused operation still acts: a meeting is created and members joined before a member's fence fails",
        (
            "core/manager.py",
            'return await self.operations.run(owner, "meeting", recs, run)',
            'return await self.operations.run(owner, "meeting", (), run)  # MUTANT',
        ),
    ),
    _m(
        "originating_call_dropped_when_taken",
        "core",
        "a call still being placed is dropped when another flow takes the user (inv. 4)",
        (
            "core/manager.py",
            "                except SwitchFailed:\n",
            "                except BaseException:  # MUTANT\n",
        ),
    ),
    _m(
        "preempted_names_superseded_claimer",
        "core",
        "a victim's Preempted names the claimer that was superseded, not the one that took the user",
        (
            "core/claims.py",
            "            p.notice.by = claimer.name\n",
            "            pass  # MUTANT\n",
        ),
    ),
    _m(
        "preemption_clear_unbounded",
        "core",
        "a preemption waits for the switch's media clear without a deadline (a dead switch holds the claim)",
        (
            "core/claims.py",
            "                        async with asyncio.timeout(self._m.command_timeout):\n                            await self._m.clear(MANAGER, rec.user)\n",
            "                        async with asyncio.timeout(None):  # MUTANT\n                            await self._m.clear(MANAGER, rec.user)\n",
        ),
    ),
    _m(
        "released_waits_outlive_hand_over",
        "core",
        "a flow gives a user away while another of its tasks waits on it: the wait goes on under the next owner",
        (
            "core/ops.py",
            "                self.interrupt(op, notice, hold=False)\n",
            "                pass  # MUTANT\n",
        ),
    ),
    _m(
        "quiet_survives_hand_over",
        "core",
        "a declared wait in silence (hold, PTT) survives the hand-over: the next owner's dead air goes unseen",
        ("core/ledger.py", "            rec.quiet = None\n", "            pass  # MUTANT\n"),
    ),
    _m(
        "end_deadline_unbounded",
        "core",
        "a flow asked to end has no deadline: a compensation that hangs keeps it forever (inv. 10)",
        (
            "core/flow.py",
            "            async with asyncio.timeout_at(end_by):\n",
            "            async with asyncio.timeout_at(None):  # MUTANT\n",
        ),
    ),
    # ---- CallInfos
    _m(
        "p2p_partner_policy_skipped",
        "core",
        "skip a CallInfo's partner policy: the partner of a preempted party stays in a dead P2P",
        (
            "core/callinfo.py",
            '            self._run_policy("preempted", partner, Cause.PREEMPTED, tone, self.tone_seconds, reason)\n',
            "            pass  # MUTANT\n",
        ),
    ),
    _m(
        "p2p_partner_kept_on_hangup",
        "core",
        "P2P: the partner is not hung up when the other party hangs up",
        (
            "core/callinfo.py",
            '            self._run_policy("clearing", partner, Cause.NORMAL, None, 0.0, None)\n',
            "            pass  # MUTANT\n",
        ),
    ),
    _m(
        "meetingcall_no_attrition",
        "core",
        "a MeetingCall never ends by attrition: the last member stays in an empty meeting",
        (
            "core/callinfo.py",
            "        if len(self.users) < self.min_members:\n",
            "        if False:  # MUTANT\n",
        ),
    ),
    # ---- the library
    _m(
        "barge_in_no_restore",
        "library",
        "barge_in does not restore the call when the dispatcher leaves",
        (
            "flows/barge_in.py",
            "    restore_on_exit(s, target, peer, original)\n",
            "    pass  # MUTANT\n",
        ),
    ),
    _m(
        "monitor_speaks",
        "library",
        "monitor joins the dispatcher in SPEAK mode: the parties hear the listener",
        (
            "flows/monitor.py",
            "    await _listen_in(s, dispatcher, target, MeetingMode.LISTEN)\n",
            "    await _listen_in(s, dispatcher, target, MeetingMode.SPEAK)  # MUTANT\n",
        ),
    ),
    _m(
        "emergency_no_preempt",
        "library",
        "emergency_call claims at routine priority: it cannot take a busy target",
        (
            "flows/emergency.py",
            '@flow(priority=Priority.EMERGENCY, permission="emergency", commands=COMMANDS)\nasync def emergency_call(',
            '@flow(priority=Priority.ROUTINE, permission="emergency", commands=COMMANDS)  # MUTANT\nasync def emergency_call(',
        ),
    ),
    _m(
        "emergency_ends_on_hangup",
        "library",
        "the emergency state ends when a party hangs up (it must hold until 'end')",
        (
            "flows/emergency.py",
            '            s.note(f"{exc.user.id} hung up; the emergency stays declared until ended")\n',
            "            break  # MUTANT\n",
        ),
    ),
    _m(
        "until_leave_ignores_dispatcher",
        "library",
        "monitor/barge-in never end when the dispatcher hangs up (inv. 10)",
        (
            "flows/_common.py",
            "if dispatcher in exc.users or",
            "if False and dispatcher in exc.users or",
        ),
    ),
    _m(
        "notify_and_release_no_hangup",
        "library",
        "the preemption notice plays the tone but never hangs the user up",
        (
            "flows/_common.py",
            "        await s.hangup(user, Cause.PREEMPTED, EndReason.preempted(by))\n",
            "        pass  # MUTANT\n",
        ),
    ),
    _m(
        "queue_ignores_priority",
        "library",
        "the dispatcher queue serves callers first-come, ignoring priority",
        (
            "flows/queue.py",
            "(-priority, next(self._seq)), caller, priority",
            "(0, next(self._seq)), caller, priority",
        ),
    ),
    _m(
        "queue_offer_failure_drops_caller",
        "library",
        "queue loses the caller when the offered position does not answer, is busy or rejects",
        (
            "flows/queue.py",
            "        return _failed(s, caller, dispatcher, queue, entry, exc.cause, why)\n",
            "        raise  # MUTANT\n",
        ),
    ),
    _m(
        "queue_music_stops_while_offering",
        "library",
        "dead air: the queue music stops before the position is rung",
        (
            "flows/queue.py",
            "            if await _offer(s, caller, dispatcher, queue, entry, music):\n",
            "            await s.stop(music)  # MUTANT\n            if await _offer(s, caller, dispatcher, queue, entry, music):\n",
        ),
    ),
    _m(
        "ringback_skipped",
        "library",
        "dead air: a party waits in silence while another phone rings for it",
        (
            "flows/_common.py",
            '    ringback = await s.play(listener, Tone("ringback"), loop=True)\n',
            "    ringback = None  # MUTANT\n",
        ),
    ),
    _m(
        "claim_call_leaves_parties_silent",
        "library",
        "a claim of a call that fails half-way leaves the parties it pulled out in silence",
        (
            "flows/_common.py",
            "        for u in users:\n            leg = s.leg_of(u)\n            if leg is None or not leg.connected:\n",
            "        for u in ():  # MUTANT\n            leg = s.leg_of(u)\n            if leg is None or not leg.connected:\n",
        ),
    ),
    _m(
        "monitor_ignores_lost_party",
        "library",
        "dead air: a monitored call that loses a party keeps the other in the monitor's meeting",
        (
            "flows/monitor.py",
            "    await until_leave(s, dispatcher, needs=(target, peer))\n",
            "    await until_leave(s, dispatcher)  # MUTANT\n",
        ),
    ),
    _m(
        "blind_transfer_target_hangup_drops_party",
        "library",
        "blind transfer whose target hangs up while ringing fails and leaves the party in silence",
        (
            "flows/transfer.py",
            '            how = "was taken by " + exc.by if isinstance(exc, Preempted) else "hung up"\n',
            "            if not isinstance(exc, Preempted):  # MUTANT\n"
            "                raise\n"
            '            how = "was taken by " + exc.by\n',
        ),
    ),
    _m(
        "pickup_caller_in_silence",
        "library",
        "dead air: the pickup caller hears nothing while the picker's phone rings",
        (
            "flows/pickup.py",
            "    if caller_leg is not None and caller_leg.connected:  # a dispatcher's line: not in silence\n",
            "    if False:  # MUTANT\n",
        ),
    ),
    _m(
        "group_call_dispatcher_in_silence",
        "library",
        "dead air: the group call's dispatcher hears nothing while the members ring",
        (
            "flows/group_call.py",
            '                self.ringback = await s.play(d, Tone("ringback"), loop=True)\n',
            "                pass  # MUTANT\n",
        ),
    ),
    _m(
        "blind_transfer_no_recall",
        "library",
        "transfer drops the party on failure: no recall of the transferor",
        (
            "flows/transfer.py",
            "    if on_fail is OnFail.RECALL and s.owns(transferor):\n",
            "    if False:  # MUTANT\n",
        ),
    ),
    _m(
        "call_not_settled",
        "library",
        "call never settles a P2P: the two parties are dropped when the flow ends",
        (
            "flows/call.py",
            "    s.settle(P2P(caller, callee))\n    s.note(",
            "    s.note(",
        ),
    ),
    _m(
        "hold_resume_loses_priority",
        "library",
        "resume puts the parties back at the hold flow's priority, not their call's",
        (
            "flows/hold.py",
            "    s.settle(P2P(holder, held, priority=original, on_line_lost=requeue))\n",
            "    s.settle(P2P(holder, held, on_line_lost=requeue))  # MUTANT\n",
        ),
    ),
    _m(
        "group_call_members_left_up",
        "library",
        "a group call that ends leaves its members in the call",
        (
            "flows/group_call.py",
            '    s.compensate(group.hang_up_members, label="hang_up_members")\n'
            "    await group.invite(list(members), busy)\n",
            "    await group.invite(list(members), busy)  # MUTANT\n",
        ),
    ),
    _m(
        "abandoned_parties_left_silent",
        "library",
        "a flow that fails half-way releases the parties it took out of a call into silence",
        (
            "flows/_common.py",
            "        if s.flow.outcome is FlowOutcome.COMPLETED:\n",
            "        if True:  # MUTANT\n",
        ),
    ),
    _m(
        "group_member_task_crashes_on_dispatcher_loss",
        "library",
        "a member's ringing task learning the dispatcher was taken crashes the conference",
        (
            "flows/group_call.py",
            "            self.s.post(DISPATCHER_LOST)\n",
            "            raise  # MUTANT\n",
        ),
    ),
    _m(
        "blind_transfer_stops_on_transferor_loss",
        "library",
        "a blind transfer whose transferor is taken as it leaves drops the party",
        (
            "flows/transfer.py",
            '        s.note(f"{transferor.id} {exc.code} as it left: the transfer goes on")\n',
            "        raise  # MUTANT\n",
        ),
    ),
    _m(
        "pickup_ignores_answer_race",
        "library",
        "pickup cancels a call the called user has just answered",
        (
            "flows/pickup.py",
            "    if leg is not None and leg.connected:\n",
            "    if False:  # MUTANT\n",
        ),
    ),
    _m(
        "force_release_no_notice",
        "library",
        "force_release drops the other party without the preemption notice",
        (
            "flows/force_release.py",
            '    s.note(f"{target.id} force-released")\n',
            '    s.note(f"{target.id} force-released")\n    s.release(*parties)  # MUTANT\n',
        ),
    ),
    _m(
        "refused_bridge_kept",
        "core",
        "a bridge the switch refuses stays in the records: two users believed talking hear nobody",
        (
            "core/manager.py",
            "                if ra.bridge is b and rb.bridge is a:\n",
            "                if False:  # MUTANT\n",
        ),
    ),
    _m(
        "redial_failure_in_silence",
        "library",
        "an emergency redial broken by a hang-up leaves the party still there in silence",
        (
            "flows/emergency.py",
            "        if not redialled:\n",
            "        if redialled and False:  # MUTANT\n",
        ),
    ),
    _m(
        "conference_command_leaves_dispatcher_silent",
        "library",
        "a conference kick or mute of the last member heard leaves the dispatcher in silence",
        (
            "flows/group_call.py",
            "        # who spoke): the declared wait for ``add`` or the end, never silence (docs/flows.md)\n"
            "        await group.refresh()\n",
            "        pass  # MUTANT\n",
        ),
    ),
    _m(
        "force_release_fails_on_party_hangup",
        "library",
        "a force release whose other party hangs up as the call is taken leaves the target silent",
        (
            "flows/force_release.py",
            "        except UserHungUp as exc:\n",
            "        except UserHungUp as exc:  # MUTANT\n            raise\n",
        ),
    ),
    _m(
        "op_raises_first_loss_only",
        "core",
        "an operation on two users both taken by one claim raises the loss of the first only",
        (
            "core/claims.py",
            "                    first.also.append(user)\n",
            "                    pass  # MUTANT\n",
        ),
    ),
    _m(
        "claim_returns_for_lost_user",
        "core",
        "a claim returns granted though one of its users was taken while it cleared another",
        (
            "core/flow.py",
            "            if user not in self.flow.users:\n                self.flow.raise_loss(user)\n",
            "            if False:  # MUTANT\n                self.flow.raise_loss(user)\n",
        ),
    ),
    _m(
        "sync_call_mid_preemption_not_owner",
        "core",
        "a settle or compensate on a user being taken from the flow raises a bare NotOwner",
        (
            "core/flow.py",
            "            if p is not None and p.victim is self and p.notice is not None and not p.told:\n",
            "            if False:  # MUTANT\n",
        ),
    ),
    _m(
        "conference_rings_member_twice",
        "library",
        "a conference 'add' for a member already ringing rings them a second time",
        (
            "flows/group_call.py",
            '            if owner is s.flow and self.fate.get(m.id) in ("ringing", "joined"):\n',
            "            if False:  # MUTANT\n",
        ),
    ),
    _m(
        "transfer_hangs_up_a_party_gone",
        "library",
        "a transfer hangs up a party that hung up during its busy tone (NotOwner)",
        (
            "flows/_common.py",
            "    await tell_failure(s, user, error)\n    if s.owns(user) and s.leg_of(user) is not None:\n",
            "    await tell_failure(s, user, error)\n    if True:  # MUTANT\n",
        ),
    ),
    _m(
        "failed_claim_tells_parties_in_turn",
        "library",
        "a claim failing half-way tells the parties it pulled out one after the other (dead air)",
        (
            "flows/_common.py",
            '            await s.play(u, Tone("preemption", seconds), wait=False)\n',
            '            await s.play(u, Tone("preemption", seconds))  # MUTANT\n',
        ),
    ),
    _m(
        "abandoned_parties_hung_up_in_turn",
        "library",
        "an abandoned flow hangs up its parties one after the other: a slow hang-up strands the next",
        (
            "flows/_common.py",
            "        await asyncio.gather(*(hang_up(u) for u in abandoned()))\n",
            "        for u in abandoned():  # MUTANT\n            await hang_up(u)\n",
        ),
    ),
    _m(
        "command_waits_for_the_answer",
        "core",
        "a dial that gives way to commands waits for the answer all the same (a cancel pressed "
        "while a phone rings is read once it is answered or gives up)",
        (
            "core/manager.py",
            "                if until is None:\n                    await leg.outcome()\n",
            "                if True:  # MUTANT\n                    await leg.outcome()\n",
        ),
    ),
    _m(
        "ptt_two_talkers",
        "library",
        "PTT: the floor is granted to a second talker without revoking the first",
        (
            "flows/ptt/floor.py",
            "        if self.holder is None:\n            return self._grant(member, priority, base)\n",
            "        if True:  # MUTANT\n            return self._grant(member, priority, base)\n",
        ),
    ),
    _m(
        "ptt_stale_burst_timer",
        "library",
        "PTT: a burst timer firing after its burst ended revokes the next talker",
        (
            "flows/ptt/floor.py",
            "        if self.holder is None or burst != self.burst:\n",
            "        if self.holder is None:  # MUTANT\n",
        ),
    ),
)


def mutated_sources(mutant: Mutant, package: Path) -> dict[Path, str]:
    """The text of each file ``mutant`` edits, edited, for the ``baton`` package at
    ``package``. Raises :class:`StaleMutant` if a snippet does not occur exactly once or the
    result does not compile (a broken mutant would be "killed" by a syntax error, proving
    nothing)."""
    texts: dict[Path, str] = {}
    for edit in mutant.edits:
        path = package / edit.path
        if not path.is_file():
            raise StaleMutant(f"{mutant.name}: {edit.path} does not exist")
        text = texts.get(path)
        if text is None:
            text = path.read_text()
        count = text.count(edit.old)
        if count != 1:
            first = edit.old.strip().splitlines()[0] if edit.old.strip() else repr(edit.old)
            raise StaleMutant(
                f"{mutant.name}: {edit.path}: snippet {first!r} occurs {count} times "
                "(expected once)"
            )
        texts[path] = text.replace(edit.old, edit.new)
    for path, text in texts.items():
        try:
            compile(text, str(path), "exec")
        except SyntaxError as exc:
            raise StaleMutant(
                f"{mutant.name}: the mutated {path.name} does not compile: {exc}"
            ) from None
    return texts


def stale_reason(mutant: Mutant, package: Path) -> str | None:
    """Why ``mutant`` does not apply to the ``baton`` package at ``package`` (None: it does)."""
    try:
        mutated_sources(mutant, package)
    except StaleMutant as exc:
        return str(exc).removeprefix(f"{mutant.name}: ")
    return None


def apply_mutant(mutant: Mutant, package: Path) -> None:
    """Apply ``mutant`` to the ``baton`` package copy at ``package``; :class:`StaleMutant` if it
    does not apply (nothing is written then)."""
    for path, text in mutated_sources(mutant, package).items():
        path.write_text(text)


# ---------------------------------------------------------------------------- running


@dataclass(frozen=True)
class KillerResult:
    """How the killer ended on one tree: ``passed``, ``failed`` or ``timeout``."""

    status: str
    seconds: float
    command: str  # the command that failed or ran out of time ("" when all passed)
    tail: str  # the last lines of its output


@dataclass(frozen=True)
class MutantResult:
    mutant: Mutant
    killer: KillerResult

    @property
    def killed(self) -> bool:
        return self.killer.status != "passed"


def repo_root() -> Path:
    """The checkout this module runs from (it holds ``src/baton`` and ``tests``)."""
    here = Path(__file__).resolve()
    root = here.parents[3]
    if (root / "tests").is_dir() and (root / "src" / "baton").is_dir():
        return root
    return Path.cwd()


#: The killers running now (one per job), so that stopping the run stops them all.
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def _stop_killers() -> None:
    with _LIVE_LOCK:
        _STOPPING.set()
        for proc in list(_LIVE):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_killer(
    src: Path,
    root: Path,
    budget: float,
    killer: Sequence[Sequence[str]] = KILLER,
) -> KillerResult:
    """Run ``killer`` from ``root`` with ``PYTHONPATH=src`` (the folder holding ``baton``),
    all commands within ``budget`` seconds; the process group of a command that runs out of
    time is killed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    env.pop("BATON_PROPERTY_RANDOM", None)  # the same examples on every tree
    started = time.monotonic()
    for template in killer:
        cmd = [sys.executable if part == "{python}" else part for part in template]
        shown = " ".join(template)
        left = budget - (time.monotonic() - started)
        if left <= 0:
            return KillerResult("timeout", time.monotonic() - started, shown, "")
        with tempfile.TemporaryFile() as out:
            with _LIVE_LOCK:
                if _STOPPING.is_set():
                    raise KeyboardInterrupt("the mutation run is stopping")
                proc = subprocess.Popen(
                    cmd,
                    cwd=root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed whole on timeout
                )
                _LIVE.add(proc)
            try:
                code = proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code = None
            except BaseException:  # interrupted or stopped: leave no killer running
                _kill_group(proc)
                raise
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
            out.seek(0)
            lines = out.read().decode(errors="replace").splitlines()
        tail = "\n".join(lines[-15:])
        if code is None:
            return KillerResult("timeout", time.monotonic() - started, shown, tail)
        if code != 0:
            return KillerResult("failed", time.monotonic() - started, shown, tail)
    return KillerResult("passed", time.monotonic() - started, "", "")


#: What a private checkout leaves out: version control, environments, caches, run output.
_NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "node_modules",
    "var",
)


def private_checkout(root: Path, into: Path) -> Path:
    """Copy the checkout at ``root`` (sources, tests, settings) to ``into``; return it. The
    killer runs in such a copy, so that edits to the tree while it runs cannot mix in."""
    shutil.copytree(root, into, ignore=_NOT_COPIED, symlinks=True)
    return into


def run_mutant(
    mutant: Mutant | None,
    root: Path,
    budget: float,
    killer: Sequence[Sequence[str]] = KILLER,
) -> KillerResult:
    """Run the killer in a private copy of the checkout at ``root`` with ``mutant`` applied to
    its ``src/baton`` (``None``: unmutated), ``PYTHONPATH`` pointing at the copy's ``src``."""
    with tempfile.TemporaryDirectory(prefix="baton-mutant-") as tmp:
        checkout = private_checkout(root, Path(tmp) / "repo")
        if mutant is not None:
            apply_mutant(mutant, checkout / "src" / "baton")
        return run_killer(checkout / "src", checkout, budget, killer)


def select(
    catalogue: Sequence[Mutant],
    only: Sequence[str] | None,
    sample: int | None,
    seed: int,
) -> list[Mutant]:
    """The mutants to run: those named by ``only``, else a seeded ``sample``, else all."""
    chosen = list(catalogue)
    if only:
        by_name = {m.name: m for m in catalogue}
        unknown = [n for n in only if n not in by_name]
        if unknown:
            raise SystemExit(f"mutants: no mutant named {', '.join(unknown)} (see --list)")
        chosen = [by_name[n] for n in only]
    if sample is not None and sample < len(chosen):
        chosen = random.Random(seed).sample(chosen, sample)
    return chosen


def _label(command: str) -> str:
    return "pytest" if "pytest" in command.split() else "baton check"


def _print_list(mutants: Sequence[Mutant], package: Path, check: bool) -> int:
    stale = 0
    for m in mutants:
        edits = ", ".join(sorted({e.path for e in m.edits}))
        status = ""
        if check:
            reason = stale_reason(m, package)
            status = "ok    " if reason is None else "STALE "
            if reason is not None:
                stale += 1
                status += f"({reason}) "
        print(f"{status}{m.name:<40} {m.area:<8} {edits}: {m.fault}")
    if check:
        print(f"{len(mutants) - stale} of {len(mutants)} mutants apply; {stale} stale")
    return 1 if stale else 0


def run(
    mutants: Sequence[Mutant],
    root: Path,
    budget: float | None,
    jobs: int,
    killer: Sequence[Sequence[str]] = KILLER,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Run every mutant (after the baseline); return the summary. The checkout is copied once
    first, so that edits to the tree during the run do not mix into it."""
    started = time.monotonic()
    _STOPPING.clear()
    with tempfile.TemporaryDirectory(prefix="baton-pristine-") as pristine:
        snapshot = private_checkout(root, Path(pristine) / "repo")
        return _run(mutants, snapshot, budget, jobs, killer, log, started)


def _run(
    mutants: Sequence[Mutant],
    snapshot: Path,
    budget: float | None,
    jobs: int,
    killer: Sequence[Sequence[str]],
    log: Callable[[str], None],
    started: float,
) -> dict[str, object]:
    package = snapshot / "src" / "baton"
    stale = [(m.name, why) for m in mutants if (why := stale_reason(m, package)) is not None]
    if stale:
        for name, reason in stale:
            log(f"STALE {name}: {reason}")
        raise SystemExit(
            f"mutants: {len(stale)} stale mutant(s): the code changed under the catalogue; "
            "update their snippets in baton/testing/mutants.py"
        )
    base = run_mutant(None, snapshot, BASELINE_LIMIT if budget is None else budget, killer)
    if base.status != "passed":
        log(base.tail)
        raise SystemExit(
            f"mutants: the unmutated tree does not pass the killer ({base.status} in "
            f"{base.seconds:.1f} s at `{base.command}`): fix the tree first"
        )
    if budget is None:
        budget = round(max(DEFAULT_BUDGET, BUDGET_FACTOR * base.seconds))
    log(
        f"baseline: the unmutated tree passes the killer in {base.seconds:.1f} s; "
        f"budget {budget:g} s per mutant"
    )
    fixed_budget = budget
    results: list[MutantResult] = []

    def one(m: Mutant) -> MutantResult:
        return MutantResult(m, run_mutant(m, snapshot, fixed_budget, killer))

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        for r in pool.map(one, mutants):
            results.append(r)
            k = r.killer
            if k.status == "passed":
                verdict = "SURVIVED"
            elif k.status == "timeout":
                verdict = "KILLED (timeout)"
            else:
                verdict = "KILLED"
            where = f" by {_label(k.command)}" if k.command else ""
            log(f"{verdict:<17} {r.mutant.name:<40} {k.seconds:6.1f} s{where}")
    except BaseException:
        _stop_killers()  # interrupted: the workers' killers go now, the queued mutants never run
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    killed = [r for r in results if r.killed]
    return {
        "mutants": len(results),
        "killed": len(killed),
        "survived": [r.mutant.name for r in results if not r.killed],
        "timeouts": [r.mutant.name for r in results if r.killer.status == "timeout"],
        "mutation_score": round(len(killed) / len(results), 3) if results else 0.0,
        "seconds": round(time.monotonic() - started, 1),
        "baseline_seconds": round(base.seconds, 1),
        "budget": budget,
        "jobs": jobs,
    }


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m baton.testing.mutants",
        description="Apply seeded faults to the core and the flow library, one at a time in a "
        "private copy, and check that the tests and baton check catch each (docs/mutants.md).",
    )
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="run these")
    parser.add_argument("--sample", type=int, metavar="N", help="run N mutants drawn at random")
    parser.add_argument("--seed", type=int, default=1, help="the seed of --sample (1)")
    parser.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help=f"time allowed to the killer per mutant (default: the larger of "
        f"{DEFAULT_BUDGET:g} s and {BUDGET_FACTOR:g} times the unmutated tree's run)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (1)")
    parser.add_argument(
        "--killer",
        choices=sorted(KILLERS),
        default="full",
        help="full: every core, flow, PTT and property test, then baton check (default); "
        "explore: the property tests and baton check only",
    )
    parser.add_argument("--list", action="store_true", help="print the catalogue and stop")
    parser.add_argument(
        "--check", action="store_true", help="with --list: verify that each mutant applies"
    )
    args = parser.parse_args(argv)
    # Stopped with SIGTERM: unwind (the running killer's process group is killed, the private
    # copies are removed) as on Ctrl-C.
    signal.signal(signal.SIGTERM, _stop)
    root = repo_root()
    mutants = select(CATALOGUE, args.only, args.sample, args.seed)
    if args.list or args.check:
        return _print_list(mutants, root / "src" / "baton", args.check)
    try:
        summary = run(mutants, root, args.budget, args.jobs, KILLERS[args.killer])
    except KeyboardInterrupt:
        print("mutants: stopped", file=sys.stderr)
        return 130
    summary["killer"] = args.killer
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
