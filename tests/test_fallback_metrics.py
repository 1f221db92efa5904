"""fallback.operation on resilience.dependency.fallbacks, and resilience.fallback.replayed."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience import load_config
from otel_resilience._memory_cache import MemoryCache
from otel_resilience._metrics import ResilienceMetrics
from tests.test_metrics import points


def test_fallback_operation_and_replayed_counts() -> None:
    """Fallbacks are reported by operation, and a replaying memory fallback's journal
    outcomes as resilience.fallback.replayed."""
    registry = load_config(
        {
            "dependencies": {
                "cache": {"fallback": {"type": "memory", "replay_writes": True}},
                "plain": {"fallback": "memory"},
            }
        }
    )
    cache = registry["cache"].fallback
    assert isinstance(cache, MemoryCache)
    registry._count_fallback("cache", "open", "write")
    registry._count_fallback("cache", "open", "write")
    registry._count_fallback("cache", "error")
    cache.serve([("SET", "k", "v")])
    cache.serve([("SET", "k", "w")], reason="timeout")
    cache.set_replay_client(lambda: lambda *args: True)
    cache.replay()
    reader = InMemoryMetricReader()
    metrics = ResilienceMetrics(MeterProvider(metric_readers=[reader]))
    metrics.attach(registry)
    found = points(reader)
    fallbacks = {
        (a["dependency.name"], a["reason"], a["fallback.operation"]): v
        for a, v in found["resilience.dependency.fallbacks"]
    }
    assert fallbacks == {("cache", "open", "write"): 2, ("cache", "error", "read"): 1}
    replayed = {
        (a["dependency.name"], a["outcome"]): v for a, v in found["resilience.fallback.replayed"]
    }
    assert replayed == {("cache", "replayed"): 1, ("cache", "dropped"): 1}
    assert registry.fallback_counts() == {("cache", "open"): 2, ("cache", "error"): 1}
