"""The metrics of DESIGN.md 6: names, units and attributes, and their Prometheus names."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import REGISTRY, generate_latest

from otel_resilience import BreakerPolicy, CircuitOpenError, Criticality, Dependency, Registry
from otel_resilience._metrics import ResilienceMetrics
from tests.conftest import FakeClock


def make_registry(clock: FakeClock) -> Registry:
    policy = BreakerPolicy(consecutive_failures=2, open_seconds=5)
    return Registry(
        [
            Dependency("redis", Criticality.OPTIONAL, policy=policy, fallback=lambda: "cached"),
            Dependency("pg", Criticality.CRITICAL, policy=policy),
        ],
        clock=clock,
        service="svc",
    )


def drive(registry: Registry, clock: FakeClock) -> None:
    """Successes, failures, an opening, a fallback, a rejection, a recovery."""

    def down() -> None:
        raise ConnectionError("refused")

    registry.call("redis", lambda: "ok")
    registry.call("redis", down)
    registry.call("redis", down)  # opens
    registry.call("redis", down)  # rejected: fallback "open"
    clock.advance(5)
    registry.call("redis", lambda: "ok")  # probe closes it
    registry.call("pg", lambda: 1)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            registry.call("pg", down)
    with pytest.raises(CircuitOpenError):
        registry.call("pg", lambda: 1)


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            assert scope.scope.name == "otel_resilience"
            for metric in scope.metrics:
                found[metric.name] = [
                    (dict(point.attributes or {}), point.value) for point in metric.data.data_points
                ]
    return found


def test_instruments_names_and_attributes(clock: FakeClock) -> None:
    """Each instrument of DESIGN.md 6 reports with its exact name and attributes."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = make_registry(clock)
    metrics = ResilienceMetrics(provider)
    metrics.attach(registry)
    drive(registry, clock)
    found = points(reader)
    assert set(found) == {
        "resilience.breaker.state",
        "resilience.breaker.transitions",
        "resilience.breaker.failure_rate",
        "resilience.dependency.calls",
        "resilience.dependency.fallbacks",
        "resilience.dependency.retries",
        "resilience.health.status",
        "resilience.config.reloads",
    }
    state = {
        (a["dependency.name"], a["dependency.criticality"], a["breaker.state"]): v
        for a, v in found["resilience.breaker.state"]
    }
    assert state[("pg", "critical", "open")] == 1
    assert state[("pg", "critical", "closed")] == 0
    assert state[("redis", "optional", "closed")] == 1
    assert sum(v for (name, _, _), v in state.items() if name == "pg") == 1
    transitions = {
        (a["dependency.name"], a["breaker.from_state"], a["breaker.state"]): v
        for a, v in found["resilience.breaker.transitions"]
    }
    assert {key: value for key, value in transitions.items() if value} == {
        ("redis", "closed", "open"): 1,
        ("redis", "open", "half_open"): 1,
        ("redis", "half_open", "closed"): 1,
        ("pg", "closed", "open"): 1,
    }
    # the usual transitions are reported from the start, at 0, so increase() sees the first
    assert transitions[("pg", "half_open", "open")] == 0
    assert transitions[("redis", "half_open", "open")] == 0
    calls = {
        (a["dependency.name"], a["outcome"]): v for a, v in found["resilience.dependency.calls"]
    }
    assert calls[("redis", "success")] == 2
    assert calls[("redis", "failure")] == 2
    assert calls[("redis", "rejected")] == 1
    assert calls[("pg", "rejected")] == 1
    fallbacks = {
        (a["dependency.name"], a["reason"]): v for a, v in found["resilience.dependency.fallbacks"]
    }
    assert fallbacks == {("redis", "error"): 2, ("redis", "open"): 1}
    health = {a["health.status"]: v for a, v in found["resilience.health.status"]}
    assert health == {"healthy": 0, "degraded": 0, "unhealthy": 1}
    rates = {a["dependency.name"]: v for a, v in found["resilience.breaker.failure_rate"]}
    assert rates["pg"] == pytest.approx(2 / 3)
    assert rates["redis"] == 0.0  # closed again: the window was cleared


def test_prometheus_names_on_the_python_exporter_path(clock: FakeClock) -> None:
    """Through opentelemetry-exporter-prometheus the names are those of DESIGN.md 6."""
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        registry = make_registry(clock)
        ResilienceMetrics(provider).attach(registry)
        drive(registry, clock)
        text = generate_latest(REGISTRY).decode()
    finally:
        provider.shutdown()  # also unregisters the reader's collector
    names = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line.startswith("resilience_")
    }
    assert names == {
        "resilience_breaker_state",
        "resilience_breaker_transitions_total",
        "resilience_breaker_failure_rate",
        "resilience_dependency_calls_total",
        "resilience_dependency_fallbacks_total",
        "resilience_dependency_retries_total",
        "resilience_health_status",
        "resilience_config_reloads_total",
    }

    def sample(name: str, *labels: str) -> str:
        matches = [
            line.rsplit(" ", 1)[1]
            for line in text.splitlines()
            if line.startswith(name + "{") and all(label in line for label in labels)
        ]
        assert len(matches) == 1, (name, labels, matches)
        return matches[0]

    open_pg = ('breaker_state="open"', 'dependency_criticality="critical"', 'dependency_name="pg"')
    assert sample("resilience_breaker_state", *open_pg) == "1.0"
    rejected = ('dependency_name="redis"', 'outcome="rejected"')
    assert sample("resilience_dependency_calls_total", *rejected) == "1.0"


def test_detached_metrics_report_nothing(clock: FakeClock) -> None:
    """After detach, callbacks report nothing and transitions are not counted."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = make_registry(clock)
    metrics = ResilienceMetrics(provider)
    metrics.attach(registry)
    metrics.detach()
    drive(registry, clock)
    data = reader.get_metrics_data()
    # The synchronous counters keep the zeros reported while attached, and only those.
    assert data is None or all(
        not metric.data.data_points
        or (
            metric.name in ("resilience.breaker.transitions", "resilience.config.reloads")
            and all(point.value == 0 for point in metric.data.data_points)
        )
        for resource_metrics in data.resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
    )
