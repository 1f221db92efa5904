"""Retry budgets: Finagle's token bucket, tied to the dependency's breaker.

Every call made to a dependency deposits ``percent`` of a retry; every retry withdraws
one. Deposits and withdrawals expire after ``ttl_seconds``, and a constant reserve of
``min_per_second * ttl_seconds`` retries lets a service that has just started (or sees
little traffic) retry at all. So retries stay at most ``percent`` of the calls made, plus
``min_per_second``, however many callers retry at once: a retry storm cannot multiply the
load on a dependency that is already failing.

The budget reads no clock of its own (``clock`` is injected) and does no I/O.
``RetryGate`` ties one budget to one breaker: no retry while the breaker is not CLOSED.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._breaker import BreakerSnapshot, CircuitBreaker, State
from ._errors import CircuitOpenError

__all__ = ["RetryBudget", "RetryBudgetPolicy", "RetryGate", "retry_predicate"]

# Token amounts are integers scaled by this factor, as in Finagle, so that many small
# deposits add up exactly.
_SCALE = 1000
_SLICES = 10

_MAX_PERCENT = 1.0
_MAX_MIN_PER_SECOND = 10_000.0
_MIN_TTL_SECONDS = 1.0
_MAX_TTL_SECONDS = 60.0


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low:g} to {high:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryBudgetPolicy:
    """How many retries a dependency may take (config key ``retry_budget``).

    ``percent``: retries as a fraction of the calls made (0 to 1); ``min_per_second``:
    retries always allowed per second on top (0 to 10000); ``ttl_seconds``: how long a
    deposit counts (1 to 60, as in Finagle). A bad value raises ``ValueError`` naming the
    field.
    """

    percent: float = 0.2
    min_per_second: float = 10.0
    ttl_seconds: float = 10.0

    def __post_init__(self) -> None:
        _number("percent", self.percent, 0.0, _MAX_PERCENT)
        _number("min_per_second", self.min_per_second, 0.0, _MAX_MIN_PER_SECOND)
        _number("ttl_seconds", self.ttl_seconds, _MIN_TTL_SECONDS, _MAX_TTL_SECONDS)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The policy's field names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))


class RetryBudget:
    """A leaky token bucket over ``ttl_seconds`` (ten slices) plus a fixed reserve."""

    __slots__ = (
        "_clock",
        "_deposit",
        "_epoch",
        "_lock",
        "_reserve",
        "_slice_seconds",
        "_slices",
        "_withdrawal",
        "policy",
    )

    def __init__(
        self,
        policy: RetryBudgetPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy if policy is not None else RetryBudgetPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._deposit = round(self.policy.percent * _SCALE)
        # A retry is itself a call and deposits like one: charging that deposit too keeps
        # retries at ``percent`` of the calls that were not retries.
        self._withdrawal = _SCALE + self._deposit
        self._reserve = round(
            self.policy.min_per_second * self.policy.ttl_seconds * self._withdrawal
        )
        self._slice_seconds = self.policy.ttl_seconds / _SLICES
        self._slices = [0] * _SLICES
        self._epoch = int(clock() / self._slice_seconds)

    def _advance(self, now: float) -> None:
        epoch = int(now / self._slice_seconds)
        steps = epoch - self._epoch
        if steps <= 0:
            return
        slices = self._slices
        if steps >= _SLICES:
            for index in range(_SLICES):
                slices[index] = 0
        else:
            for step in range(1, steps + 1):
                slices[(self._epoch + step) % _SLICES] = 0
        self._epoch = epoch

    def deposit(self, calls: float = 1) -> None:
        """Credit ``calls`` calls made (a fraction: calls partly older than the ttl)."""
        if calls <= 0 or not self._deposit:
            return
        with self._lock:
            self._advance(self._clock())
            self._slices[self._epoch % _SLICES] += round(calls * self._deposit)

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        with self._lock:
            self._advance(self._clock())
            if self._reserve + sum(self._slices) < self._withdrawal:
                return False
            self._slices[self._epoch % _SLICES] -= self._withdrawal
            return True

    def balance(self) -> float:
        """How many retries the budget would allow now."""
        with self._lock:
            self._advance(self._clock())
            return max(0, self._reserve + sum(self._slices)) / self._withdrawal


class RetryGate:
    """One dependency's retry decisions: its budget, fed by its breaker's call counts.

    Deposits are read from the breaker's cumulative counts when a retry is asked for, so
    the guarded-call path pays nothing for them. Calls seen after a long quiet spell are
    credited only for the part of that spell inside the ttl (assuming they were spread
    evenly), so old traffic cannot pay for a storm now.
    """

    __slots__ = ("_clock", "_lock", "_seen", "_seen_at", "allowed", "breaker", "budget", "denied")

    def __init__(
        self,
        breaker: CircuitBreaker,
        policy: RetryBudgetPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.breaker = breaker
        self.budget = RetryBudget(policy, clock=clock)
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = _calls_made(breaker.snapshot())
        self._seen_at = clock()
        self.allowed = 0
        self.denied = 0

    @property
    def policy(self) -> RetryBudgetPolicy:
        return self.budget.policy

    def _credit(self, calls_made: int) -> None:
        with self._lock:
            new = calls_made - self._seen
            now = self._clock()
            elapsed = now - self._seen_at
            self._seen = calls_made
            self._seen_at = now
        if new <= 0:
            return
        ttl = self.budget.policy.ttl_seconds
        self.budget.deposit(new if elapsed <= ttl else new * ttl / elapsed)

    def retry_allowed(self) -> bool:
        """Spend a retry: True while the breaker is CLOSED and the budget has one left."""
        snapshot = self.breaker.snapshot()
        self._credit(_calls_made(snapshot))
        allowed = snapshot.state is State.CLOSED and self.budget.try_withdraw()
        with self._lock:
            if allowed:
                self.allowed += 1
            else:
                self.denied += 1
        return allowed


def _calls_made(snapshot: BreakerSnapshot) -> int:
    """Every call the breaker recorded an outcome for (rejections are not calls made)."""
    return snapshot.total_successes + snapshot.total_failures + snapshot.total_slow


def retry_predicate(
    gate_of: Callable[[], RetryGate], exception_types: tuple[type[BaseException], ...]
) -> Callable[[BaseException], bool]:
    """``exc -> bool`` for stamina's ``on=`` and tenacity's ``retry_if_exception``.

    True only for ``exception_types`` and only while the gate allows a retry. A call the
    guard itself rejected (open breaker, concurrency limit) is never retried: the guard
    already said no, and retrying at once would only add load.
    """
    if not exception_types:
        raise TypeError("retry_on() needs at least one exception type to retry on")
    for kind in exception_types:
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"retry_on() takes exception types, got {kind!r}")

    def should_retry(exc: BaseException) -> bool:
        # A rejection is not counted as a denied retry either: the retries counter says
        # what the budget and the breaker decided (so a spent budget shows on its own).
        if not isinstance(exc, exception_types) or isinstance(exc, CircuitOpenError):
            return False
        return gate_of().retry_allowed()

    return should_retry
