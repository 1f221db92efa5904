"""Chaos drills: inject errors and latency into a dependency's calls, before any I/O.

What Polly's Simmy does for .NET, for staging: a ``chaos:`` block in the config says
which dependency fails how often and how slowly, and acts only when ``chaos.enabled`` is
true AND the process runs with ``OTEL_RESILIENCE_CHAOS=1``. An injected error is the
client's own connection error, raised by the guard before the call reaches the network,
and goes through the breaker (and the fallback) like a real one.

The decision is pure (an injected ``random.Random``); the sleeps are injected too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CHAOS_ATTRIBUTE",
    "CHAOS_ENV_VAR",
    "CHAOS_FAULT_ATTRIBUTE",
    "ChaosError",
    "ChaosSettings",
    "FaultInjector",
    "FaultSpec",
    "chaos_switched_on",
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

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The spec's field names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

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


class ChaosError(ConnectionError):
    """An injected fault, for calls made through ``call``/``acall``/``protect``/``guard``
    (client guards raise the client's own connection error instead)."""

    def __init__(self, dependency: str) -> None:
        self.dependency = dependency
        super().__init__(f"chaos drill: injected connection error for dependency {dependency!r}")

    def __reduce__(self) -> tuple[type[ChaosError], tuple[str]]:
        return (type(self), (self.dependency,))


class FaultInjector:
    """Decides and applies the faults of one dependency, and counts what it injected.

    ``before_call(make_error)`` (sync) or ``await abefore_call(make_error)``: sleeps when
    a latency fault is drawn, then raises ``make_error()`` when an error is drawn.
    ``on_fault(kind)`` is told of each fault (``"latency"``, ``"error"``) as it happens,
    before the sleep or the raise, so the current span can carry it.
    """

    __slots__ = ("_asleep", "_lock", "_rng", "_sleep", "errors", "latencies", "on_fault", "spec")

    def __init__(
        self,
        spec: FaultSpec,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self._rng = rng if rng is not None else random.Random()
        self._sleep = sleep
        self._asleep = asleep
        self._lock = threading.Lock()
        self.on_fault = on_fault
        self.errors = 0
        self.latencies = 0

    def draw(self) -> tuple[float, bool]:
        """The faults for one call: (seconds to wait, whether to fail)."""
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
                self.latencies += 1
            fail = spec.error_rate >= 1 or (spec.error_rate > 0 and rng.random() < spec.error_rate)
            if fail:
                self.errors += 1
        return delay, fail

    def _report(self, kind: str) -> None:
        if self.on_fault is not None:
            # Telemetry never breaks the drill's own call path.
            with contextlib.suppress(Exception):
                self.on_fault(kind)

    def before_call(self, make_error: Callable[[], BaseException]) -> None:
        delay, fail = self.draw()
        if delay:
            self._report("latency")
            self._sleep(delay)
        if fail:
            self._report("error")
            raise make_error()

    async def abefore_call(self, make_error: Callable[[], BaseException]) -> None:
        delay, fail = self.draw()
        if delay:
            self._report("latency")
            await self._asleep(delay)
        if fail:
            self._report("error")
            raise make_error()
