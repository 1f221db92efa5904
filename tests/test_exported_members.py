"""The public surface of otel_resilience is pinned."""

from __future__ import annotations

import otel_resilience

CONTRACT = {
    "BreakerPolicy",
    "CircuitBreaker",
    "State",
    "Criticality",
    "Dependency",
    "Registry",
    "CircuitOpenError",
    "health_app",
    "configure",
    "get_registry",
    "BreakerSpanProcessor",
    "ResilientSpanExporter",
    "ResilientMetricExporter",
    "ConcurrencyLimitError",
}


def test_all_is_pinned() -> None:
    """__all__ lists exactly the names the package means to export, each importable."""
    assert set(otel_resilience.__all__) == {
        "BreakerPolicy",
        "BreakerSnapshot",
        "BreakerSpanProcessor",
        "CircuitBreaker",
        "CircuitOpenError",
        "ConfigError",
        "Criticality",
        "Dependency",
        "Registry",
        "ResilienceSampler",
        "State",
        "UnknownDependencyError",
        "load_config",
        # health (issue 5)
        "DependencyHealth",
        "HealthEvent",
        "HealthProber",
        "HealthReport",
        "health_app",
        "health_events",
        "on_health_change",
        # spans drive breakers (issue 3)
        "configure",
        "get_registry",
        # telemetry that survives its backend (issue 4)
        "ResilientLogExporter",
        "ResilientMetricExporter",
        "ResilientSpanExporter",
        # beyond breakers (issue 15)
        "ConcurrencyLimitError",
        "LimitPolicy",
        "RetryBudgetPolicy",
        # operating it live (issue 16)
        "OperatorEvent",
        # Registry(telemetry=...) takes it (issue 12)
        "TelemetrySettings",
    }
    for name in otel_resilience.__all__:
        assert getattr(otel_resilience, name) is not None


def test_contract_names_are_exported() -> None:
    """Every name that DESIGN.md section 3 promises (so far built) is exported."""
    assert set(otel_resilience.__all__) >= CONTRACT
