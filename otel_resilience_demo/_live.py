"""What the live page plots: per dependency, calls per second by outcome and p99 latency.

Calls by outcome come from the breakers' running totals (success, failure, slow, rejected),
sampled every ``step_seconds``; latency comes from the dependency's client spans, read by
a span processor on the global tracer provider. Both are kept for ``window_seconds``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.trace import SpanKind

from otel_resilience import Registry

__all__ = ["CallSeries", "install_latency_recorder"]

_OUTCOMES = ("success", "failure", "slow", "rejected")
# Latency samples kept per dependency between two steps (a bound on memory at high rates).
_MAX_SAMPLES = 5000


class CallSeries:
    """Rolling per-dependency series for the page; ``sample()`` is called every step."""

    def __init__(
        self,
        registry: Registry,
        *,
        step_seconds: float = 2.0,
        window_seconds: float = 180.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.step_seconds = step_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._points: dict[str, deque[dict[str, Any]]] = {}
        self._maxlen = max(1, int(window_seconds / step_seconds))
        self._last: dict[str, tuple[float, tuple[int, ...]]] = {}
        self._latencies: dict[str, list[float]] = {}

    def record_latency(self, name: str, milliseconds: float) -> None:
        """One call's duration, from its client span (any thread)."""
        with self._lock:
            samples = self._latencies.setdefault(name, [])
            if len(samples) < _MAX_SAMPLES:
                samples.append(milliseconds)

    def sample(self) -> None:
        """Close the current step: rates since the last sample and the step's p99."""
        now = self._clock()
        totals = {}
        for name, breaker in self.registry.breakers().items():
            if name == "telemetry":
                continue
            snap = breaker.snapshot()
            totals[name] = (
                snap.total_successes,
                snap.total_failures,
                snap.total_slow,
                snap.total_rejected,
            )
        with self._lock:
            latencies, self._latencies = self._latencies, {}
            for name, counts in totals.items():
                last = self._last.get(name)
                self._last[name] = (now, counts)
                if last is None or now <= last[0]:
                    continue
                elapsed = now - last[0]
                point: dict[str, Any] = {
                    outcome: round(max(0, new - old) / elapsed, 2)
                    for outcome, new, old in zip(_OUTCOMES, counts, last[1], strict=True)
                }
                point["t"] = round(now, 3)
                point["p99_ms"] = _p99(latencies.get(name, []))
                self._points.setdefault(name, deque(maxlen=self._maxlen)).append(point)

    def to_dict(self) -> dict[str, Any]:
        """``{"step_seconds": s, "dependencies": {name: [point, ...]}}`` for the page."""
        with self._lock:
            return {
                "step_seconds": self.step_seconds,
                "dependencies": {name: list(points) for name, points in self._points.items()},
            }


def _p99(samples: list[float]) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)], 2)


class _LatencyRecorder(SpanProcessor):
    """Feeds client span durations to the current CallSeries, by dependency."""

    def __init__(self) -> None:
        self.series: CallSeries | None = None

    def on_end(self, span: ReadableSpan) -> None:
        series = self.series
        if series is None or span.kind is not SpanKind.CLIENT:
            return
        start, end = span.start_time, span.end_time
        if start is None or end is None:
            return
        try:
            name = series.registry.classify(span.attributes or {})
        except Exception:
            return
        if name is not None:
            series.record_latency(name, (end - start) / 1e6)


_recorders: list[_LatencyRecorder] = []


def install_latency_recorder(series: CallSeries) -> None:
    """Point the process's span recorder at ``series`` (added to the SDK provider once)."""
    if not _recorders:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, SDKTracerProvider):
            return
        recorder = _LatencyRecorder()
        provider.add_span_processor(recorder)
        _recorders.append(recorder)
    _recorders[0].series = series
