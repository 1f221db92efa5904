"""Chaos drills: inject errors and latency into a dependency's calls, before any I/O.

What Polly's Simmy does for .NET, for staging: a ``chaos:`` block in the config says
which dependency fails how often and how slowly, and acts only when ``chaos.enabled`` is
true AND the process runs with ``OTEL_RESILIENCE_CHAOS=1``. An injected error is the
client's own connection error, raised by the guard before the call reaches the network,
and goes through the breaker (and the fallback) like a real one.

The decision is pure (an injected ``random.Random``); the guarded-call path does the
waiting and the raising (``_guard.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

__all__ = [
    "CHAOS_ATTRIBUTE",
    "CHAOS_ENV_VAR",
    "CHAOS_FAULT_ATTRIBUTE",
    "ChaosSettings",
    "FaultInjector",
    "FaultSpec",
    "chaos_switched_on",
    "mark_current_span",
]

CHAOS_ENV_VAR = "OTEL_RESILIENCE_CHAOS"
CHAOS_ATTRIBUTE = "resilience.chaos"
CHAOS_FAULT_ATTRIBUTE = "resilience.chaos.fault"

_MAX_LATENCY_SECONDS = 60.0


def chaos_switched_on(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment arms chaos drills (``OTEL_RESILIENCE_CHAOS=1``)."""
    env = os.environ if environ is None else environ
    return env.get(CHAOS_ENV_VAR, "").strip() == "1"


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """The faults for one dependency: ``error_rate`` of calls fail at once; a share
    ``latency_rate`` of calls waits ``latency_seconds`` first. Validated (``ValueError``
    naming the field)."""

    error_rate: float = 0.0
    latency_seconds: float = 0.0
    latency_rate: float = 1.0

    def __post_init__(self) -> None:
        _rate("error_rate", self.error_rate)
        _rate("latency_rate", self.latency_rate)
        latency = self.latency_seconds
        if (
            isinstance(latency, bool)
            or not isinstance(latency, (int, float))
            or not math.isfinite(latency)
            or not 0 <= latency <= _MAX_LATENCY_SECONDS
        ):
            raise ValueError(
                f"latency_seconds must be a number of seconds from 0 to "
                f"{_MAX_LATENCY_SECONDS:g}, got {latency!r}"
            )

    @property
    def idle(self) -> bool:
        """Whether this spec injects nothing at all."""
        return self.error_rate == 0 and (self.latency_seconds == 0 or self.latency_rate == 0)


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    """The ``chaos:`` section: the faults per dependency, and the config's switch.

    ``active`` is both switches at once: ``enabled`` and ``OTEL_RESILIENCE_CHAOS=1`` (read
    when the settings are made, that is when the config is loaded).
    """

    enabled: bool = False
    dependencies: Mapping[str, FaultSpec] = field(default_factory=dict)
    armed: bool = field(default_factory=chaos_switched_on)

    @property
    def active(self) -> bool:
        return self.enabled and self.armed

    def spec_for(self, name: str) -> FaultSpec | None:
        """The faults to inject into ``name``'s calls now, or None."""
        if not self.active:
            return None
        spec = self.dependencies.get(name)
        return None if spec is None or spec.idle else spec


class FaultInjector:
    """Decides the faults of one dependency's calls: the guarded-call path's chaos step.

    ``draw()`` is asked before each call's I/O and answers ``(seconds to wait, whether to
    fail)``, or None for a call left alone; the path sleeps (``asyncio.sleep`` on the
    async path) and raises the client's own connection error. ``on_fault(kind)`` is told
    of each fault drawn (``"latency"``, ``"error"``); it must not raise (it is wrapped).
    """

    __slots__ = ("_lock", "_rng", "on_fault", "spec")

    def __init__(
        self,
        spec: FaultSpec,
        *,
        rng: random.Random | None = None,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self.on_fault = on_fault

    def __repr__(self) -> str:
        return f"<FaultInjector {self.spec!r}>"

    def draw(self) -> tuple[float, bool] | None:
        """The faults for one call: (seconds to wait, whether to fail), or None."""
        spec = self.spec
        with self._lock:
            rng = self._rng
            delay = 0.0
            if (
                spec.latency_seconds > 0
                and spec.latency_rate > 0
                and (spec.latency_rate >= 1 or rng.random() < spec.latency_rate)
            ):
                delay = spec.latency_seconds
            fail = spec.error_rate >= 1 or (spec.error_rate > 0 and rng.random() < spec.error_rate)
        if not delay and not fail:
            return None
        if self.on_fault is not None:
            # Telemetry never breaks the drill's own call path.
            with contextlib.suppress(Exception):
                if delay:
                    self.on_fault("latency")
                if fail:
                    self.on_fault("error")
        return delay, fail


def mark_current_span(kind: str) -> None:
    """Mark the current span (the client span, when the instrumentation runs outside the
    guard; else the span of the surrounding work) as touched by an injected fault."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(CHAOS_ATTRIBUTE, True)
        span.set_attribute(CHAOS_FAULT_ATTRIBUTE, kind)
