"""Concurrency limits: a static cap, or an adaptive one that follows measured latency.

The adaptive algorithms are those of Netflix's concurrency-limits: ``gradient2`` moves
the limit by the ratio of the long-term to the short-term latency (queueing shows up as
short-term latency rising above the long-term baseline), ``vegas`` by the queue it
estimates from the lowest latency seen and the current one. Both only move while the
dependency is actually used near its limit (an idle service learns nothing about it).

Pure: no clock (durations are passed in), no I/O; the randomness of vegas's probing is
an injected ``random.Random``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADAPTIVE_ALGORITHMS",
    "ConcurrencyLimiter",
    "FixedLimit",
    "Gradient2Limit",
    "LimitAlgorithm",
    "LimitPolicy",
    "VegasLimit",
]

ADAPTIVE_ALGORITHMS = ("gradient2", "vegas")
_MAX_LIMIT = 100_000
_DEFAULT_INITIAL = 20


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer from 1 to {_MAX_LIMIT}, got {value!r}")
    if not 1 <= value <= _MAX_LIMIT:
        raise ValueError(f"{name} must be from 1 to {_MAX_LIMIT}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """A dependency's concurrency limit (config key ``limits``).

    Either ``max_concurrent_calls`` (static), or ``adaptive`` (``"gradient2"`` or
    ``"vegas"``) with ``min``, ``max`` and ``initial`` (by default 20, or the nearest
    value from min to max). A bad value raises ``ValueError`` naming the field.
    """

    max_concurrent_calls: int | None = None
    adaptive: str | None = None
    min: int = 1
    max: int = 200
    initial: int | None = None

    def __post_init__(self) -> None:
        if self.adaptive is None:
            if self.max_concurrent_calls is None:
                raise ValueError(
                    "max_concurrent_calls or adaptive is required: give a static limit "
                    "(max_concurrent_calls: N) or an adaptive one (adaptive: gradient2 or vegas)"
                )
            _count("max_concurrent_calls", self.max_concurrent_calls)
            return
        if self.max_concurrent_calls is not None:
            raise ValueError(
                "max_concurrent_calls cannot be combined with adaptive: a limit is either "
                "static or adaptive"
            )
        if self.adaptive not in ADAPTIVE_ALGORITHMS:
            raise ValueError(
                f"adaptive must be one of {', '.join(ADAPTIVE_ALGORITHMS)}, got {self.adaptive!r}"
            )
        _count("min", self.min)
        _count("max", self.max)
        if self.min > self.max:
            raise ValueError(f"min must be <= max ({self.max}), got {self.min}")
        initial = self.initial
        if initial is None:
            initial = min(max(_DEFAULT_INITIAL, self.min), self.max)
            object.__setattr__(self, "initial", initial)
        _count("initial", initial)
        if not self.min <= initial <= self.max:
            raise ValueError(
                f"initial must be from min ({self.min}) to max ({self.max}), got {initial}"
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The policy's field names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def algorithm(self, rng: random.Random | None = None) -> LimitAlgorithm:
        """A fresh algorithm for this policy."""
        initial = self.initial if self.initial is not None else _DEFAULT_INITIAL
        if self.adaptive == "gradient2":
            return Gradient2Limit(minimum=self.min, maximum=self.max, initial=initial)
        if self.adaptive == "vegas":
            return VegasLimit(minimum=self.min, maximum=self.max, initial=initial, rng=rng)
        assert self.max_concurrent_calls is not None
        return FixedLimit(self.max_concurrent_calls)


class LimitAlgorithm:
    """How a limit moves with each completed call. ``timed``: it needs call durations."""

    timed = False

    def __init__(self, minimum: int, maximum: int, initial: int) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.limit = float(initial)

    def update(self, rtt: float, inflight: int) -> None:
        """A call took ``rtt`` seconds with ``inflight`` calls in flight (itself included)."""


class FixedLimit(LimitAlgorithm):
    """``max_concurrent_calls``: a limit that never moves."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit, limit, limit)


class _ExpAverage:
    """Netflix's ExpAvgMeasurement: a plain mean over the first ``warmup`` samples, then
    an exponential average over about ``window`` samples."""

    __slots__ = ("_count", "_factor", "_warmup", "value")

    def __init__(self, window: int, warmup: int) -> None:
        self._factor = 2.0 / (window + 1)
        self._warmup = warmup
        self._count = 0
        self.value = 0.0

    def add(self, sample: float) -> float:
        if self._count < self._warmup:
            self._count += 1
            self.value += (sample - self.value) / self._count
        else:
            self.value = self.value * (1 - self._factor) + sample * self._factor
        return self.value


class Gradient2Limit(LimitAlgorithm):
    """Netflix's Gradient2Limit.

    ``gradient = clamp(rtt_tolerance * long_rtt / short_rtt, 0.5, 1)``; the new limit is
    ``limit * gradient + queue_size``, smoothed. Latency above the long-term baseline
    (queueing) shrinks the limit, by at most half per step; at the baseline it grows by
    ``queue_size``. When latency falls well below the baseline after an overload, the
    baseline is pulled down faster so the limit recovers.
    """

    timed = True

    def __init__(
        self,
        *,
        minimum: int = 1,
        maximum: int = 200,
        initial: int = _DEFAULT_INITIAL,
        smoothing: float = 0.2,
        rtt_tolerance: float = 1.5,
        long_window: int = 600,
        queue_size: int = 4,
    ) -> None:
        super().__init__(minimum, maximum, initial)
        self._smoothing = smoothing
        self._tolerance = rtt_tolerance
        self._queue_size = queue_size
        self._long = _ExpAverage(long_window, warmup=10)

    @property
    def long_rtt(self) -> float:
        return self._long.value

    def update(self, rtt: float, inflight: int) -> None:
        if rtt <= 0:
            return
        long_rtt = self._long.add(rtt)
        if long_rtt / rtt > 2:
            self._long.value = long_rtt * 0.95
        if inflight < self.limit / 2:
            return  # app-limited: this load says nothing about a higher limit
        gradient = max(0.5, min(1.0, self._tolerance * long_rtt / rtt))
        target = self.limit * gradient + self._queue_size
        target = self.limit * (1 - self._smoothing) + target * self._smoothing
        self.limit = max(self.minimum, min(self.maximum, target))


def _log10(limit: float) -> int:
    return max(1, int(math.log10(max(1.0, limit))))


class VegasLimit(LimitAlgorithm):
    """Netflix's VegasLimit (after TCP Vegas).

    The queue is estimated as ``limit * (1 - rtt_noload / rtt)``, where ``rtt_noload`` is
    the lowest latency seen. With little queue the limit grows (fast while there is
    none), with much it shrinks. Every ``probe_multiplier *
    limit`` samples or so, ``rtt_noload`` is measured afresh, so a dependency whose
    baseline latency changed for good is not held to the old one forever.
    """

    timed = True

    def __init__(
        self,
        *,
        minimum: int = 1,
        maximum: int = 200,
        initial: int = _DEFAULT_INITIAL,
        smoothing: float = 1.0,
        probe_multiplier: int = 30,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(minimum, maximum, initial)
        self._smoothing = smoothing
        self._probe_multiplier = probe_multiplier
        self._rng = rng if rng is not None else random.Random()
        self._probe_jitter = self._rng.uniform(0.5, 1.0)
        self._probe_count = 0
        self.rtt_noload = 0.0

    def _should_probe(self) -> bool:
        return self._probe_jitter * self._probe_multiplier * self.limit <= self._probe_count

    def update(self, rtt: float, inflight: int) -> None:
        if rtt <= 0:
            return
        self._probe_count += 1
        if self._should_probe():
            self._probe_count = 0
            self._probe_jitter = self._rng.uniform(0.5, 1.0)
            self.rtt_noload = rtt
            return
        if self.rtt_noload == 0 or rtt < self.rtt_noload:
            self.rtt_noload = rtt
            return
        limit = self.limit
        if inflight * 2 < limit:
            return  # app-limited
        step = _log10(limit)
        queue = math.ceil(limit * (1 - self.rtt_noload / rtt))
        if queue <= step:  # threshold: no queueing, grow fast
            target = limit + 6 * step
        elif queue < 3 * step:  # alpha: a little queueing, grow
            target = limit + step
        elif queue > 6 * step:  # beta: queueing, shrink
            target = limit - step
        else:
            return
        target = max(self.minimum, min(self.maximum, target))
        self.limit = (1 - self._smoothing) * limit + self._smoothing * target


class ConcurrencyLimiter:
    """Admits calls while fewer than ``limit`` are in flight, and feeds the algorithm.

    The guarded-call path's admission step (``reason`` ``"limit"``): ``acquire()`` after
    the breaker admitted a call (False: reject it), ``release(duration, failed)`` once for
    every call it admitted. Only successful calls are latency samples: a failure that was
    fast (refused) or slow (timed out) says more about the breaker's business than about
    queueing. Bookkeeping only under the lock, never the call.
    """

    __slots__ = ("_lock", "algorithm", "inflight", "policy", "rejected", "timed")

    reason = "limit"

    def __init__(self, policy: LimitPolicy, *, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.algorithm = policy.algorithm(rng)
        self.timed = self.algorithm.timed
        self._lock = threading.Lock()
        self.inflight = 0
        self.rejected = 0

    def __repr__(self) -> str:
        return f"<ConcurrencyLimiter limit={self.limit} inflight={self.inflight}>"

    @property
    def limit(self) -> int:
        """The current limit, a whole number of calls."""
        return int(self.algorithm.limit)

    def acquire(self) -> bool:
        """Admit one call now (True), or reject it (counted)."""
        with self._lock:
            if self.inflight >= int(self.algorithm.limit):
                self.rejected += 1
                return False
            self.inflight += 1
            return True

    def release(self, duration: float = 0.0, failed: bool = False) -> None:
        """An admitted call ended after ``duration`` seconds."""
        with self._lock:
            inflight = self.inflight
            self.inflight = inflight - 1 if inflight > 0 else 0
            if self.timed and not failed:
                self.algorithm.update(duration, inflight)
