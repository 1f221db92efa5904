"""The metrics of DESIGN.md 6 on meter ``otel_resilience``.

The hot path pays nothing for them: breakers keep cumulative counts, and observable
instruments read those counts (and the registry's fallback counts) at collection time.
Only transitions and config reloads, which are rare, are counted as they happen:
transitions in the context of the call that caused them, so that trace-based exemplars
(``OTEL_METRICS_EXEMPLAR_FILTER=trace_based``) link the counter to that call's trace.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ._breaker import CircuitBreaker, State
from ._events import OperatorEvent
from ._trace_links import call_context
from ._version import __version__

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = [
    "BREAKER_FAILURE_RATE",
    "BREAKER_STATE",
    "BREAKER_TRANSITIONS",
    "CHAOS_INJECTED",
    "CONCURRENCY_INFLIGHT",
    "CONCURRENCY_LIMIT",
    "CONFIG_RELOADS",
    "DEPENDENCY_CALLS",
    "DEPENDENCY_FALLBACKS",
    "DEPENDENCY_RETRIES",
    "FALLBACK_REPLAYED",
    "HEALTH_STATUS",
    "METER_NAME",
    "METRICS",
    "SPECS",
    "TELEMETRY_DROPPED",
    "MetricSpec",
    "ResilienceMetrics",
    "install_metrics",
]

_log = logging.getLogger(__name__)

METER_NAME = "otel_resilience"
BREAKER_STATE = "resilience.breaker.state"
BREAKER_TRANSITIONS = "resilience.breaker.transitions"
BREAKER_FAILURE_RATE = "resilience.breaker.failure_rate"
DEPENDENCY_CALLS = "resilience.dependency.calls"
DEPENDENCY_FALLBACKS = "resilience.dependency.fallbacks"
FALLBACK_REPLAYED = "resilience.fallback.replayed"
HEALTH_STATUS = "resilience.health.status"
TELEMETRY_DROPPED = "resilience.telemetry.dropped"
DEPENDENCY_RETRIES = "resilience.dependency.retries"
CONCURRENCY_LIMIT = "resilience.dependency.concurrency.limit"
CONCURRENCY_INFLIGHT = "resilience.dependency.concurrency.inflight"
CHAOS_INJECTED = "resilience.chaos.injected"
CONFIG_RELOADS = "resilience.config.reloads"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One instrument of DESIGN.md 6, with the name Prometheus gives it on both paths."""

    name: str
    kind: str
    unit: str
    attributes: tuple[str, ...]
    prometheus: str
    description: str


# Gauges carry the unit "" rather than "1": the collector's Prometheus exporter turns a
# gauge of unit "1" into "<name>_ratio", the Python exporter does not. With "" both paths
# give the names of DESIGN.md 6; annotation units such as "{call}" add nothing on either.
METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        BREAKER_STATE,
        "observable_gauge",
        "",
        ("dependency.name", "dependency.criticality", "breaker.state"),
        "resilience_breaker_state",
        "Circuit breaker state: 1 for the current state, 0 for the others.",
    ),
    MetricSpec(
        BREAKER_TRANSITIONS,
        "counter",
        "{transition}",
        ("dependency.name", "breaker.from_state", "breaker.state"),
        "resilience_breaker_transitions_total",
        "Circuit breaker state transitions, recorded in the tripping call's context.",
    ),
    MetricSpec(
        BREAKER_FAILURE_RATE,
        "observable_gauge",
        "",
        ("dependency.name",),
        "resilience_breaker_failure_rate",
        "Failures over calls in the breaker's window (0 to 1).",
    ),
    MetricSpec(
        DEPENDENCY_CALLS,
        "counter",
        "{call}",
        ("dependency.name", "outcome", "reject.reason"),
        "resilience_dependency_calls_total",
        "Calls to a dependency by outcome: success, failure, slow, rejected (reject.reason: "
        "open, limit).",
    ),
    MetricSpec(
        DEPENDENCY_FALLBACKS,
        "counter",
        "{call}",
        ("dependency.name", "reason", "fallback.operation"),
        "resilience_dependency_fallbacks_total",
        "Calls answered by a fallback, by reason (open, error, timeout, limit) and "
        "operation (read, write).",
    ),
    MetricSpec(
        FALLBACK_REPLAYED,
        "counter",
        "{write}",
        ("dependency.name", "outcome"),
        "resilience_fallback_replayed_total",
        "Writes made while a memory fallback answered, by outcome: replayed to the "
        "dependency once it recovered, or dropped.",
    ),
    MetricSpec(
        HEALTH_STATUS,
        "observable_gauge",
        "",
        ("health.status",),
        "resilience_health_status",
        "Service health, one-hot: healthy, degraded, unhealthy.",
    ),
    MetricSpec(
        TELEMETRY_DROPPED,
        "counter",
        "{item}",
        ("signal",),
        "resilience_telemetry_dropped_total",
        "Telemetry items dropped because export was failing.",
    ),
    MetricSpec(
        DEPENDENCY_RETRIES,
        "counter",
        "{retry}",
        ("dependency.name", "outcome"),
        "resilience_dependency_retries_total",
        "Retries asked of a dependency's retry budget, by outcome: allowed, denied.",
    ),
    MetricSpec(
        CONCURRENCY_LIMIT,
        "observable_gauge",
        "",
        ("dependency.name",),
        "resilience_dependency_concurrency_limit",
        "A dependency's concurrency limit: calls allowed in flight at once.",
    ),
    MetricSpec(
        CONCURRENCY_INFLIGHT,
        "observable_gauge",
        "",
        ("dependency.name",),
        "resilience_dependency_concurrency_inflight",
        "Calls in flight to a dependency with a concurrency limit.",
    ),
    MetricSpec(
        CHAOS_INJECTED,
        "counter",
        "{fault}",
        ("dependency.name", "fault"),
        "resilience_chaos_injected_total",
        "Faults injected by a chaos drill, by kind: error, latency.",
    ),
    MetricSpec(
        CONFIG_RELOADS,
        "counter",
        "{reload}",
        ("outcome",),
        "resilience_config_reloads_total",
        "Config reloads by outcome: applied, failed (the old config stays).",
    ),
)
SPECS = {spec.name: spec for spec in METRICS}

_STATES = tuple(State)
# Reported from the start (at 0) so that increase() sees the first real transition.
_WATCHED_TRANSITIONS = (
    (State.CLOSED, State.OPEN),
    (State.OPEN, State.HALF_OPEN),
    (State.HALF_OPEN, State.OPEN),
    (State.HALF_OPEN, State.CLOSED),
)
_HEALTH_STATUSES = ("healthy", "degraded", "unhealthy")
_RELOAD_OUTCOMES = ("applied", "failed")


class ResilienceMetrics:
    """The instruments for one meter provider, reporting on whichever registry is current.

    ``configure()`` called again points the same instruments at the new registry instead
    of creating a second set (OTel has no way to remove an instrument).
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(METER_NAME, __version__)
        self._registry_ref: weakref.ref[Registry] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

        def spec(name: str) -> dict[str, str]:
            return {"unit": SPECS[name].unit, "description": SPECS[name].description}

        meter.create_observable_gauge(
            BREAKER_STATE, callbacks=[self._observe_state], **spec(BREAKER_STATE)
        )
        # Synchronous, so each transition is recorded in the context of the call that
        # caused it and can carry that call's exemplar.
        self._transitions = meter.create_counter(BREAKER_TRANSITIONS, **spec(BREAKER_TRANSITIONS))
        self._reloads = meter.create_counter(CONFIG_RELOADS, **spec(CONFIG_RELOADS))
        meter.create_observable_gauge(
            BREAKER_FAILURE_RATE,
            callbacks=[self._observe_failure_rate],
            **spec(BREAKER_FAILURE_RATE),
        )
        meter.create_observable_counter(
            DEPENDENCY_CALLS, callbacks=[self._observe_calls], **spec(DEPENDENCY_CALLS)
        )
        meter.create_observable_counter(
            DEPENDENCY_FALLBACKS, callbacks=[self._observe_fallbacks], **spec(DEPENDENCY_FALLBACKS)
        )
        meter.create_observable_counter(
            FALLBACK_REPLAYED, callbacks=[self._observe_replayed], **spec(FALLBACK_REPLAYED)
        )
        meter.create_observable_gauge(
            HEALTH_STATUS, callbacks=[self._observe_health], **spec(HEALTH_STATUS)
        )
        self._create_beyond_breakers(meter, spec)

    def _create_beyond_breakers(
        self, meter: metrics.Meter, spec: Callable[[str], dict[str, str]]
    ) -> None:
        """Retry budgets, concurrency limits and chaos drills."""
        meter.create_observable_counter(
            DEPENDENCY_RETRIES,
            callbacks=[lambda options: self._collect("retries", _retries)],
            **spec(DEPENDENCY_RETRIES),
        )
        meter.create_observable_gauge(
            CONCURRENCY_LIMIT,
            callbacks=[lambda options: self._collect("concurrency limit", _limits)],
            **spec(CONCURRENCY_LIMIT),
        )
        meter.create_observable_gauge(
            CONCURRENCY_INFLIGHT,
            callbacks=[lambda options: self._collect("in-flight calls", _inflight)],
            **spec(CONCURRENCY_INFLIGHT),
        )
        meter.create_observable_counter(
            CHAOS_INJECTED,
            callbacks=[lambda options: self._collect("chaos faults", _chaos)],
            **spec(CHAOS_INJECTED),
        )

    # -- which registry ----------------------------------------------------------------

    def attach(self, registry: Registry) -> None:
        """Report on ``registry`` from now on."""
        self.detach()
        self._registry_ref = weakref.ref(registry)
        self._unsubscribe = [
            registry.add_transition_listener(self._on_transition),
            registry.add_event_listener(self._on_event),
        ]
        self._report_zeros(registry)

    def detach(self) -> None:
        """Stop reporting."""
        self._registry_ref = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    def _report_zeros(self, registry: Registry) -> None:
        # Reported from the start (at 0) so that increase() sees the first real one.
        for name in registry.breakers():
            for old, new in _WATCHED_TRANSITIONS:
                self._transitions.add(0, _transition_attributes(name, old, new))
        for outcome in _RELOAD_OUTCOMES:
            self._reloads.add(0, {"outcome": outcome})

    # -- counted as they happen --------------------------------------------------------

    def _on_transition(self, breaker: CircuitBreaker, old: State, new: State) -> None:
        try:
            self._transitions.add(
                1, _transition_attributes(breaker.name, old, new), context=call_context()
            )
        except Exception:
            _log.debug("counting a transition failed", exc_info=True)

    def _on_event(self, event: OperatorEvent) -> None:
        if event.kind != "reload":
            return
        outcome = "applied" if event.detail == "applied" else "failed"
        self._reloads.add(1, {"outcome": outcome})
        registry = self._registry()
        if outcome == "applied" and registry is not None:
            self._report_zeros(registry)  # dependencies the new config added

    def _registry(self) -> Registry | None:
        ref = self._registry_ref
        return None if ref is None else ref()

    # -- callbacks ---------------------------------------------------------------------

    def _collect(
        self, what: str, read: Callable[[Registry], Iterator[Observation]]
    ) -> list[Observation]:
        """What ``read`` yields for the current registry. Never raises: a failing callback
        would drop the whole collection, so an error keeps what was read before it."""
        registry = self._registry()
        observations: list[Observation] = []
        if registry is None:
            return observations
        try:
            for observation in read(registry):
                observations.append(observation)
        except Exception:
            _log.debug("%s callback failed", what, exc_info=True)
        return observations

    def _observe_state(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._collect("breaker state", _states)

    def _observe_failure_rate(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._collect("failure rate", _failure_rates)

    def _observe_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._collect("calls", _calls)

    def _observe_fallbacks(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._collect("fallbacks", _fallbacks)

    def _observe_replayed(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._collect("replayed", _replayed)

    def _observe_health(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._collect("health", _health)


def _transition_attributes(name: str, old: State, new: State) -> dict[str, str]:
    return {"dependency.name": name, "breaker.from_state": old.value, "breaker.state": new.value}


def _states(registry: Registry) -> Iterator[Observation]:
    for dependency in registry.dependencies:
        state = registry.breaker(dependency.name).state
        base = {
            "dependency.name": dependency.name,
            "dependency.criticality": dependency.criticality.value,
        }
        for candidate in _STATES:
            yield Observation(
                1 if candidate is state else 0, {**base, "breaker.state": candidate.value}
            )


def _failure_rates(registry: Registry) -> Iterator[Observation]:
    for name, breaker in registry.breakers().items():
        yield Observation(breaker.snapshot().failure_rate, {"dependency.name": name})


def _calls(registry: Registry) -> Iterator[Observation]:
    limiters = registry.limiters()
    for name, breaker in registry.breakers().items():
        snap = breaker.snapshot()
        for outcome, value in (
            ("success", snap.total_successes),
            ("failure", snap.total_failures),
            ("slow", snap.total_slow),
        ):
            yield Observation(value, {"dependency.name": name, "outcome": outcome})
        rejected = {"dependency.name": name, "outcome": "rejected"}
        yield Observation(snap.total_rejected, {**rejected, "reject.reason": "open"})
        limiter = limiters.get(name)
        if limiter is not None:
            yield Observation(limiter.rejected, {**rejected, "reject.reason": "limit"})


def _fallbacks(registry: Registry) -> Iterator[Observation]:
    for (name, reason, operation), value in registry.fallback_operation_counts().items():
        attributes = {"dependency.name": name, "reason": reason, "fallback.operation": operation}
        yield Observation(value, attributes)


def _replayed(registry: Registry) -> Iterator[Observation]:
    for dependency in registry.dependencies:
        fallback = dependency.fallback
        if getattr(fallback, "replay_writes", False):
            for outcome, value in fallback.replay_counts().items():  # type: ignore[union-attr]
                yield Observation(value, {"dependency.name": dependency.name, "outcome": outcome})


def _retries(registry: Registry) -> Iterator[Observation]:
    for (name, outcome), value in registry.retry_counts().items():
        yield Observation(value, {"dependency.name": name, "outcome": outcome})


def _limits(registry: Registry) -> Iterator[Observation]:
    for name, limiter in registry.limiters().items():
        yield Observation(limiter.limit, {"dependency.name": name})


def _inflight(registry: Registry) -> Iterator[Observation]:
    for name, limiter in registry.limiters().items():
        yield Observation(limiter.inflight, {"dependency.name": name})


def _chaos(registry: Registry) -> Iterator[Observation]:
    for (name, fault), value in registry.chaos_counts().items():
        yield Observation(value, {"dependency.name": name, "fault": fault})


def _health(registry: Registry) -> Iterator[Observation]:
    status = registry.health().status
    for candidate in _HEALTH_STATUSES:
        yield Observation(1 if candidate == status else 0, {"health.status": candidate})


_installed: dict[int, tuple[MeterProvider, ResilienceMetrics]] = {}
_installed_lock = threading.Lock()


def install_metrics(
    registry: Registry, meter_provider: MeterProvider | None = None
) -> ResilienceMetrics:
    """The metrics for ``meter_provider`` (created once per provider), reporting on ``registry``."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _installed_lock:
        known = _installed.get(id(provider))
        if known is None or known[0] is not provider:
            known = (provider, ResilienceMetrics(provider))
            _installed[id(provider)] = known
    known[1].attach(registry)
    return known[1]
