"""``/metrics`` in the Prometheus text exposition format (version 0.0.4), without a client library.

Counters are fed by the core's event bus (one synchronous subscriber, a few dictionary updates per
event); gauges are read at scrape time from the live objects. Label values are escaped as the
format requires; label sets are kept small (flow *names*, not instance names) so the series count
stays bounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from baton.core.events import (
    ClaimRefused,
    Event,
    EventBus,
    FlowEnded,
    FlowStarted,
    LegStateChanged,
    PreemptionCompleted,
    PreemptionStarted,
    PreemptionSuperseded,
    Problem,
)
from baton.core.priority import priority_name

__all__ = ["Histogram", "Metrics", "count", "from_mapping", "gauge", "render"]

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class Histogram:
    """A cumulative histogram with fixed buckets."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = sorted(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1

    def lines(self, name: str, labels: Labels = ()) -> list[str]:
        out = []
        for b, c in zip(self.buckets, self.counts, strict=True):
            out.append(f"{name}_bucket{_labels((*labels, ('le', _num(b))))} {c}")
        out.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {self.total}")
        out.append(f"{name}_sum{_labels(labels)} {_num(self.sum)}")
        out.append(f"{name}_count{_labels(labels)} {self.total}")
        return out


class _Family:
    def __init__(self, name: str, kind: str, help: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by


#: The counters fed by the event bus, and their help. Every one is exposed from the first
#: scrape (an unlabelled one at 0), so an alert on an increase finds its series before the
#: first event (docs/service.md, Operations, lists them).
_BUS_COUNTERS = {
    "baton_events_total": "core events published, by kind",
    "baton_legs_started_total": "legs started, by direction",
    "baton_legs_answered_total": "legs answered, by direction",
    "baton_legs_ended_total": "legs ended, by cause",
    "baton_flows_started_total": "flows started, by flow",
    "baton_flows_ended_total": "flows ended, by flow and outcome",
    "baton_preemptions_total": "preemptions started, by claimer priority",
    "baton_preemptions_superseded_total": "preemptions overtaken by a newer one",
    "baton_claims_refused_total": "claims refused, by reason",
    "baton_problems_total": "problems reported by the core",
}

#: The bus counters without labels: one series each, at 0 until the first event.
_UNLABELLED = ("baton_preemptions_superseded_total", "baton_problems_total")


class Metrics:
    """The service's counters and the scrape-time gauges."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self.preemption_seconds = Histogram((0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5))
        self.http_seconds = Histogram((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self._gauges: list[Callable[[], Iterable[tuple[str, str, Labels, float]]]] = []
        self._unsubscribe: Callable[[], None] | None = None
        for name, help in _BUS_COUNTERS.items():
            self.counter(name, help)
        for name in _UNLABELLED:
            self.counter(name, _BUS_COUNTERS[name]).inc(by=0.0)

    def counter(self, name: str, help: str) -> _Family:
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = _Family(name, "counter", help)
        return fam

    def gauges(self, fn: Callable[[], Iterable[tuple[str, str, Labels, float]]]) -> None:
        """Register a scrape-time source of ``(name, help, labels, value)``."""
        self._gauges.append(fn)

    # ---- the bus

    def _bus(self, name: str) -> _Family:
        return self.counter(name, _BUS_COUNTERS[name])

    def attach(self, bus: EventBus) -> None:
        self._unsubscribe = bus.subscribe(self.on_event)

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def on_event(self, ev: Event) -> None:
        self._bus("baton_events_total").inc((("kind", ev.kind),))
        if isinstance(ev, LegStateChanged):
            if (ev.direction == "outbound" and ev.state == "dialling") or (
                ev.direction == "inbound" and ev.state == "ringing"
            ):
                self._bus("baton_legs_started_total").inc((("direction", ev.direction),))
            elif ev.state == "connected":
                self._bus("baton_legs_answered_total").inc((("direction", ev.direction),))
            elif ev.state == "ended":
                self._bus("baton_legs_ended_total").inc((("cause", ev.cause or "normal"),))
        elif isinstance(ev, FlowStarted):
            self._bus("baton_flows_started_total").inc((("flow", ev.name),))
        elif isinstance(ev, FlowEnded):
            name = ev.flow.split("#", 1)[0]
            self._bus("baton_flows_ended_total").inc((("flow", name), ("outcome", ev.outcome)))
        elif isinstance(ev, PreemptionStarted):
            self._bus("baton_preemptions_total").inc((("priority", priority_name(ev.priority)),))
        elif isinstance(ev, PreemptionCompleted):
            self.preemption_seconds.observe(ev.seconds)
        elif isinstance(ev, PreemptionSuperseded):
            self._bus("baton_preemptions_superseded_total").inc()
        elif isinstance(ev, ClaimRefused):
            self._bus("baton_claims_refused_total").inc((("reason", ev.reason),))
        elif isinstance(ev, Problem):
            self._bus("baton_problems_total").inc()

    # ---- HTTP

    def http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.counter("baton_http_requests_total", "HTTP requests, by method, route and status").inc(
            (("method", method), ("route", route), ("status", str(status)))
        )
        self.http_seconds.observe(seconds)

    # ---- exposition

    def render(self) -> str:
        out: list[str] = []
        for fam in sorted(self._families.values(), key=lambda f: f.name):
            out.append(f"# HELP {fam.name} {fam.help}")
            out.append(f"# TYPE {fam.name} {fam.kind}")
            for labels, value in sorted(fam.values.items()):
                out.append(f"{fam.name}{_labels(labels)} {_num(value)}")
        out.append("# HELP baton_preemption_seconds time from a preemption's start to its grant")
        out.append("# TYPE baton_preemption_seconds histogram")
        out += self.preemption_seconds.lines("baton_preemption_seconds")
        out.append("# HELP baton_http_request_seconds HTTP request duration")
        out.append("# TYPE baton_http_request_seconds histogram")
        out += self.http_seconds.lines("baton_http_request_seconds")
        gauges: dict[str, tuple[str, list[tuple[Labels, float]]]] = {}
        for source in self._gauges:
            for name, help, labels, value in source():
                gauges.setdefault(name, (help, []))[1].append((labels, value))
        for name in sorted(gauges):
            help, samples = gauges[name]
            kind = "counter" if name.endswith("_total") else "gauge"
            out.append(f"# HELP {name} {help}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{_labels(labels)} {_num(value)}")
        return "\n".join(out) + "\n"


def render(metrics: Metrics) -> str:
    return metrics.render()


def gauge(name: str, help: str, value: float, **labels: Any) -> tuple[str, str, Labels, float]:
    """One gauge sample, for a :meth:`Metrics.gauges` source."""
    return name, help, tuple((k, str(v)) for k, v in labels.items()), float(value)


def count(name: str, help: str, value: float, **labels: Any) -> tuple[str, str, Labels, float]:
    """One counter sample read at scrape time (a running total kept elsewhere, such as the
    journal's); its name ends in ``_total``, which is what exports it as a counter."""
    if not name.endswith("_total"):
        raise ValueError(f"a counter's name ends in _total: {name!r}")
    return gauge(name, help, value, **labels)


def from_mapping(prefix: str, values: Mapping[str, float]) -> list[tuple[str, str, Labels, float]]:
    return [gauge(f"{prefix}{k}", f"reported by the switch: {k}", v) for k, v in values.items()]
