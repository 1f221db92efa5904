"""Concurrency limits: static and adaptive (gradient2, vegas) limiters, pure."""

from __future__ import annotations

import random

import pytest

from otel_resilience._limits import (
    ConcurrencyLimiter,
    Gradient2Limit,
    LimitAlgorithm,
    LimitPolicy,
    VegasLimit,
)

BASE_RTT = 0.010


def saturate(algorithm: LimitAlgorithm, rtt: float, samples: int) -> list[float]:
    """Feed ``samples`` calls of latency ``rtt`` made while the limit is fully used."""
    limits = []
    for _ in range(samples):
        algorithm.update(rtt, int(algorithm.limit))
        limits.append(algorithm.limit)
    return limits


def adaptive(kind: str) -> LimitAlgorithm:
    return LimitPolicy(adaptive=kind, min=4, max=200, initial=20).algorithm(random.Random(7))


# -- static ----------------------------------------------------------------------------


def test_static_limit_admits_up_to_the_limit_and_gives_permits_back() -> None:
    """max_concurrent_calls: N admitted at once, the next rejected, admitted again after a
    release; rejections are counted."""
    limiter = ConcurrencyLimiter(LimitPolicy(max_concurrent_calls=2))
    assert limiter.reason == "limit"
    assert limiter.acquire()
    assert limiter.acquire()
    assert not limiter.acquire()
    assert (limiter.inflight, limiter.rejected, limiter.limit) == (2, 1, 2)
    limiter.release()
    assert limiter.acquire()
    limiter.release()
    limiter.release()
    assert limiter.inflight == 0
    limiter.release()  # an extra release never takes inflight below zero
    assert limiter.inflight == 0
    assert not limiter.timed


# -- adaptive ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gradient2", "vegas"])
def test_limit_falls_when_latency_rises_tenfold_and_recovers(kind: str) -> None:
    """At steady latency under full use the limit grows; ten times the latency drives it
    down (towards min); back at the old latency it grows again. (Over a longer spell both
    algorithms take the new latency as the new baseline, as Netflix's do.)"""
    algorithm = adaptive(kind)
    steady = saturate(algorithm, BASE_RTT, 200)
    assert steady[-1] > 20
    before = algorithm.limit
    slow = saturate(algorithm, BASE_RTT * 10, 120)
    assert slow[-1] < before / 2
    assert min(slow) >= 4
    low = algorithm.limit
    recovered = saturate(algorithm, BASE_RTT, 200)
    assert recovered[-1] > low * 2
    assert max(recovered) <= 200


@pytest.mark.parametrize("kind", ["gradient2", "vegas"])
def test_limit_stays_within_min_and_max(kind: str) -> None:
    """However long latency stays high or low, the limit stays in [min, max]."""
    algorithm = adaptive(kind)
    assert 4 <= min(saturate(algorithm, BASE_RTT, 2000)) <= max(saturate(algorithm, 0.001, 500))
    assert algorithm.limit <= 200
    for _ in range(300):
        algorithm.update(BASE_RTT * 50, int(algorithm.limit))
        assert algorithm.limit >= 4


@pytest.mark.parametrize("kind", ["gradient2", "vegas"])
def test_an_idle_dependency_does_not_move_the_limit(kind: str) -> None:
    """Calls made far below the limit (app-limited) say nothing about it: no change."""
    algorithm = adaptive(kind)
    algorithm.update(BASE_RTT, 1)
    for rtt in (BASE_RTT, BASE_RTT * 10, BASE_RTT):
        for _ in range(50):
            algorithm.update(rtt, 2)
    assert algorithm.limit == 20


def test_gradient2_follows_the_long_to_short_latency_ratio() -> None:
    """gradient2 shrinks by at most half a step when short-term latency jumps, and its
    long-term baseline moves towards the new latency over time."""
    algorithm = Gradient2Limit(minimum=1, maximum=1000, initial=100)
    saturate(algorithm, BASE_RTT, 50)
    long_before = algorithm.long_rtt
    limit = algorithm.limit
    algorithm.update(BASE_RTT * 10, int(limit))
    # gradient clamps at 0.5: limit * (0.8 + 0.2 * 0.5) + 0.2 * queue_size
    assert algorithm.limit == pytest.approx(limit * 0.9 + 0.8)
    assert algorithm.long_rtt > long_before


def test_adaptive_limiter_learns_only_from_successful_calls() -> None:
    """The limiter passes durations of successful calls to the algorithm; failed calls
    only give their permit back."""
    limiter = ConcurrencyLimiter(LimitPolicy(adaptive="gradient2", min=1, max=50, initial=2))
    assert limiter.timed
    for _ in range(30):
        assert limiter.acquire()
        assert limiter.acquire()
        limiter.release(BASE_RTT, failed=False)
        limiter.release(BASE_RTT, failed=False)
    grown = limiter.limit
    assert grown > 2
    for _ in range(30):
        assert limiter.acquire()
        assert limiter.acquire()
        limiter.release(BASE_RTT * 100, failed=True)
        limiter.release(BASE_RTT * 100, failed=True)
    assert limiter.limit == grown
    assert limiter.retry_after() == pytest.approx(BASE_RTT)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({}, "max_concurrent_calls or adaptive"),
        ({"max_concurrent_calls": 0}, "max_concurrent_calls"),
        ({"max_concurrent_calls": -3}, "max_concurrent_calls"),
        ({"max_concurrent_calls": 10**9}, "max_concurrent_calls"),
        ({"max_concurrent_calls": 2.5}, "max_concurrent_calls"),
        ({"max_concurrent_calls": 4, "adaptive": "vegas"}, "cannot be combined"),
        ({"adaptive": "aimd"}, "adaptive must be one of gradient2, vegas"),
        ({"adaptive": "vegas", "min": 0}, "min"),
        ({"adaptive": "vegas", "min": 50, "max": 10}, "min must be <= max"),
        ({"adaptive": "gradient2", "initial": 500}, "initial"),
        ({"adaptive": "gradient2", "max": 10**7}, "max"),
    ],
)
def test_bad_limits_name_the_field(values: dict[str, object], field: str) -> None:
    """Zero, negative, fractional or absurd limits, and contradictory ones, are refused."""
    with pytest.raises(ValueError, match=field):
        LimitPolicy(**values)  # type: ignore[arg-type]
