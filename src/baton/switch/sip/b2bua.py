"""The B2BUA's decisions as data and pure functions: SIP status ↔ :class:`Cause`, the RFC 4411
``Reason`` of a preemption, RFC 4412 ``Resource-Priority``, DTMF over INFO, forked outcomes.

Sans-IO like the rest of the package: :mod:`.switch` calls these and does the sending.

Rules
-----
* **A failed outbound call** (:func:`cause_for_status`): 486 and 600 are *busy*; 480, 408 and a
  transaction timeout are *no answer*; 603 and 403 are *rejected*; 488 and 606 (the phone
  accepts none of the offered media: no common codec, SRTP required on one side and refused on
  the other) are *incompatible*; 404, 410, 484, 604, a transport failure and "no registered
  contact" are *unreachable*; anything else is a *failure*.
* **Ending an unanswered inbound call** (:func:`status_for_cause`): busy → 486, rejected → 603,
  incompatible → 488, no answer → 480, unreachable → 404, anything else → 480 (temporarily
  unavailable). So a caller's phone learns why its call failed when the callee's did.
* **A forked call** fails with the most telling cause among its branches
  (:func:`merge_causes`): busy, then rejected, then incompatible, then no answer, then failure,
  then unreachable —
  one phone of a user that says "busy" means the user is busy. A 6xx ends the fork at once
  (RFC 3261 §16.7: a global failure).
* **Preemption** (RFC 4411, :func:`hangup_reason`): a leg ended with ``Cause.PREEMPTED`` (or
  with an :class:`~baton.core.port.EndReason` naming a preemption) carries
  ``Reason: preemption ;cause=<code> ;text="…"`` — the code of the reason's
  :class:`~baton.core.port.PreemptionCause` (1, "UA Preemption", when none is given) and the
  reason's text (else the cause's RFC 4411 name). This package is the only place that writes a
  ``Reason`` header; the core hands it a structured value.
* **Precedence** (RFC 4412): the highest mapped ``namespace.value`` of ``Resource-Priority``
  wins; unknown values are ignored (RFC 4412 §4.6.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from baton.core.port import Cause, EndReason, PreemptionCause

__all__ = [
    "CAUSE_ORDER",
    "RequestedPriority",
    "cause_for_status",
    "dtmf_from_info",
    "hangup_reason",
    "merge_causes",
    "parse_resource_priority",
    "status_for_cause",
]

_BUSY = frozenset({486, 600})
_NO_ANSWER = frozenset({408, 480, 487})
_REJECTED = frozenset({403, 603})
_INCOMPATIBLE = frozenset({488, 606})
_UNREACHABLE = frozenset({404, 410, 484, 503, 604})

#: The most telling cause first (see the module docstring).
CAUSE_ORDER: tuple[Cause, ...] = (
    Cause.BUSY,
    Cause.REJECTED,
    Cause.INCOMPATIBLE,
    Cause.NO_ANSWER,
    Cause.FAILURE,
    Cause.UNREACHABLE,
)

_STATUS_FOR_CAUSE: dict[Cause, int] = {
    Cause.BUSY: 486,
    Cause.REJECTED: 603,
    Cause.INCOMPATIBLE: 488,
    Cause.NO_ANSWER: 480,
    Cause.UNREACHABLE: 404,
}


def cause_for_status(status: int) -> Cause:
    """The cause of an outbound branch's final failure ``status`` (408 stands for a timeout,
    503 for a transport failure, as RFC 3261 §8.1.3.1 has the TU treat them)."""
    if status in _BUSY:
        return Cause.BUSY
    if status in _NO_ANSWER:
        return Cause.NO_ANSWER
    if status in _REJECTED:
        return Cause.REJECTED
    if status in _UNREACHABLE:
        return Cause.UNREACHABLE
    if status in _INCOMPATIBLE:
        return Cause.INCOMPATIBLE
    return Cause.FAILURE


def is_global_failure(status: int) -> bool:
    """A 6xx: no other branch of the fork can succeed (RFC 3261 §16.7 step 5)."""
    return 600 <= status < 700


def status_for_cause(cause: Cause) -> int:
    """The final response that ends an unanswered inbound call for ``cause``."""
    return _STATUS_FOR_CAUSE.get(cause, 480)


def merge_causes(causes: Iterable[Cause]) -> Cause:
    """The cause a fork reports once every branch has failed."""
    seen = set(causes)
    for cause in CAUSE_ORDER:
        if cause in seen:
            return cause
    return Cause.UNREACHABLE  # no branch at all: nobody to call


#: RFC 4411's name of each preemption cause: the text when the core gave none
PREEMPTION_TEXT = {
    PreemptionCause.UA: "UA Preemption",
    PreemptionCause.RESERVED_RESOURCES: "Reserved Resources Preempted",
    PreemptionCause.GENERIC: "Generic Preemption",
    PreemptionCause.NON_IP: "Non-IP Preemption",
}


def hangup_reason(cause: Cause, reason: EndReason | None) -> str | None:
    """The ``Reason`` header value for a BYE, CANCEL or final response ending a leg, if any.

    A preemption — ``Cause.PREEMPTED``, or a reason naming a :class:`PreemptionCause` — gets
    ``preemption ;cause=<code> ;text="…"`` (RFC 4411); other causes get none (their text is for
    Baton's own records). The text is a quoted string inside a header: line breaks are folded to
    spaces, backslashes and quotes escaped, so no text can add a header.
    """
    kind = reason.preemption if reason is not None else None
    if kind is None:
        if cause is not Cause.PREEMPTED:
            return None
        kind = PreemptionCause.UA
    text = reason.text if reason is not None and reason.text else PREEMPTION_TEXT[kind]
    text = " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"')
    return f'preemption ;cause={kind.value} ;text="{text}"'


@dataclass(frozen=True, slots=True)
class RequestedPriority:
    """What an INVITE's ``Resource-Priority`` asked for."""

    priority: int | None  # the highest mapped level, or None if no value was known
    known: tuple[str, ...]  # the values we understood, lower-cased
    unknown: tuple[str, ...]  # the values we ignored


def parse_resource_priority(values: Iterable[str], mapping: Mapping[str, int]) -> RequestedPriority:
    """Read every ``Resource-Priority`` header value (comma-separated ``namespace.value``)."""
    best: int | None = None
    known: list[str] = []
    unknown: list[str] = []
    for value in values:
        for item in value.split(","):
            token = item.strip().lower()
            if not token:
                continue
            level = mapping.get(token)
            if level is None:
                unknown.append(token)
                continue
            known.append(token)
            best = level if best is None else max(best, level)
    return RequestedPriority(best, tuple(known), tuple(unknown))


def resource_priority_for(priority: int, mapping: Mapping[str, int]) -> str | None:
    """The ``Resource-Priority`` value to put on an outbound INVITE for ``priority``: the
    highest mapped value not above it, preferring the first namespace of the mapping. ``None``
    for the lowest level (a routine call carries no precedence)."""
    key = (priority, tuple(mapping.items()))
    if key in _PRECEDENCE:
        return _PRECEDENCE[key]
    value = _resource_priority_for(priority, mapping)
    if len(_PRECEDENCE) < 1024:
        _PRECEDENCE[key] = value
    return value


# (priority, the mapping's items) → the value: computed for every outbound INVITE, from a
# mapping that is the switch's configuration (bounded all the same).
_PRECEDENCE: dict[tuple[int, tuple[tuple[str, int], ...]], str | None] = {}


def _resource_priority_for(priority: int, mapping: Mapping[str, int]) -> str | None:
    namespaces: list[str] = []
    for name in mapping:
        ns = name.partition(".")[0]
        if ns not in namespaces:
            namespaces.append(ns)
    if not namespaces:
        return None
    ns = namespaces[0]
    candidates = [(level, name) for name, level in mapping.items()
                  if name.startswith(ns + ".") and level <= priority]  # fmt: skip
    if not candidates:
        return None
    lowest = min(level for name, level in mapping.items() if name.startswith(ns + "."))
    level, name = max(candidates)
    return None if level <= lowest else name


_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_EVENT_DIGITS = {10: "*", 11: "#", 12: "A", 13: "B", 14: "C", 15: "D"}


def dtmf_from_info(content_type: str | None, body: bytes) -> str | None:
    """The digit an INFO carries: ``application/dtmf-relay`` (``Signal=5``) or
    ``application/dtmf`` (the digit or its RFC 4733 event number). ``None`` if none."""
    if content_type not in ("application/dtmf-relay", "application/dtmf"):
        return None
    text = body.decode("utf-8", "replace").strip()
    if content_type == "application/dtmf-relay":
        signal = None
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.strip().lower() == "signal":
                signal = value.strip()
                break
        if signal is None:
            return None
        text = signal
    if text.isdigit() and len(text) <= 2 and int(text) in _EVENT_DIGITS:
        return _EVENT_DIGITS[int(text)]
    text = text.upper()
    return text if len(text) == 1 and text in _DTMF_DIGITS else None
