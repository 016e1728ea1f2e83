"""Stale lines: is a user's quiet call still alive on their phone?

A phone that died mid-call (power cut, crash, lost network) leaves its leg connected until the
RTP timeout, and meanwhile its user is busy. So when a user's new INVITE or REGISTER arrives
while a call of theirs has been quiet (no RTP for :attr:`StaleLines.quiet_before_probe`
seconds), Baton first asks that call's phone with an in-dialog OPTIONS (docs/sip.md, "Stale
lines").

Rules
-----
* **481 or 408, or no answer** within :attr:`StaleLines.probe_wait`, means the phone no longer
  knows the call: it is ended (BYE with ``Reason: SIP ;cause=… ;text="stale call"``,
  ``LegEnded(FAILURE)``). Any other answer keeps it.
* **One probe per leg**: a second caller waiting on a leg already probed joins the first
  probe's waiters.
* **Whoever waits always goes on**: when the probe is answered, times out, cannot be sent, or
  its leg ends meanwhile (:meth:`.book.LegBook.drop`).

Theory of operation
-------------------
:meth:`StaleLines.probe_quiet_legs` probes every quiet connected leg of a user and calls its
continuation once all have settled (the held INVITE of :mod:`.inbound`; nothing for a
REGISTER, which is answered at once). A probe is a :class:`~.legs.Probe` on its leg, indexed by
its OPTIONS transaction in :attr:`.book.LegBook.probes`, with a loop handle for the deadline.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from baton.core.port import Cause

from .book import LegBook
from .legs import Leg, LegState, Probe
from .transaction import TransactionKey

__all__ = ["StaleLines"]

log = logging.getLogger("baton.switch.sip")

_STALE_STATUSES = frozenset({408, 481})  # a probed phone that answers these lost the call


class StaleLines:
    """Probes of quiet calls whose user is calling or registering again."""

    def __init__(self, book: LegBook) -> None:
        self._book = book
        #: Seconds without RTP before a user's call is probed, and how long the probe waits.
        self.quiet_before_probe = 1.0
        self.probe_wait = 1.5

    def probe_quiet_legs(self, user: str, then: Callable[[], None] | None) -> bool:
        """Probe every quiet connected leg of ``user``; call ``then`` once all have settled.
        Returns False (and calls nothing) if there is no quiet leg."""
        book = self._book
        media = book.media_or_none
        quiet = [
            leg
            for leg in book.legs_of(user)
            if leg.state is LegState.CONNECTED
            and leg.dialog is not None
            and (media is None or media.quiet_for(leg.id) >= self.quiet_before_probe)
        ]
        if not quiet:
            return False
        pending = set(quiet)

        def settled(leg: Leg) -> None:
            pending.discard(leg)
            if not pending and then is not None:
                then()

        for leg in quiet:
            self._probe(leg, functools.partial(settled, leg))
        return True

    def _probe(self, leg: Leg, done: Callable[[], None]) -> None:
        book = self._book
        if leg.probe is not None:
            leg.probe.waiting.append(done)
            return
        assert leg.dialog is not None and book.loop is not None
        probe = Probe(leg, [done])
        leg.probe = probe
        log.info("leg %s: %s is calling again while the call is quiet: probing it", leg.id,
                 leg.user)  # fmt: skip
        probe.key = book.send_in_dialog(leg, leg.dialog.create_request("OPTIONS"))
        if probe.key is None:
            self.settle(probe, 408)
            return
        book.probes[probe.key] = probe
        probe.handle = book.loop.call_later(self.probe_wait,
                                            lambda: self.settle(probe, 408))  # fmt: skip

    def on_final(self, key: TransactionKey, status: int) -> bool:
        """A probe's OPTIONS got its final answer (or 408 for a timeout or a transport
        failure); False if ``key`` is not a probe's."""
        probe = self._book.probes.get(key)
        if probe is None:
            return False
        self.settle(probe, status)
        return True

    def settle(self, probe: Probe, status: int) -> None:
        leg = probe.leg
        if leg.probe is not probe:
            return
        book = self._book
        book.detach_probe(probe)
        if status in _STALE_STATUSES and leg.state is LegState.CONNECTED:
            book.counters["stale_lines_freed_total"] += 1
            log.info("leg %s: the phone no longer knows the call (%d): ended", leg.id, status)
            book.fail_connected(leg, Cause.FAILURE,
                                f'SIP ;cause={status} ;text="stale call"')  # fmt: skip
        for done in probe.waiting:
            done()

    def close(self) -> None:
        """Cancel every probe's deadline and forget the probes (the switch is closing)."""
        for probe in list(self._book.probes.values()):
            if probe.handle is not None:
                probe.handle.cancel()
        self._book.probes.clear()
