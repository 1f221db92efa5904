"""Retry budgets: the token bucket, its tie to the breaker, and stamina/tenacity use."""

from __future__ import annotations

import pytest

from otel_resilience import BreakerPolicy, CircuitBreaker, CircuitOpenError
from otel_resilience._retry_budget import (
    RetryBudget,
    RetryBudgetPolicy,
    RetryGate,
    retry_predicate,
)
from tests.conftest import FakeClock


def drain(budget: RetryBudget, limit: int = 10_000) -> int:
    """How many retries the budget grants in a row right now."""
    granted = 0
    while granted < limit and budget.try_withdraw():
        granted += 1
    return granted


# -- the token bucket ----------------------------------------------------------------


def test_reserve_allows_min_per_second_times_ttl_retries(clock: FakeClock) -> None:
    """With no calls made, the reserve alone grants min_per_second * ttl_seconds retries."""
    budget = RetryBudget(
        RetryBudgetPolicy(percent=0.2, min_per_second=3, ttl_seconds=5), clock=clock
    )
    assert drain(budget) == 15
    assert not budget.try_withdraw()


def test_calls_deposit_percent_of_a_retry(clock: FakeClock) -> None:
    """100 calls at percent 0.2 pay for 16 retries (each retry is a call and pays for its
    own deposit), so retries stay at 20% of the calls that were not retries."""
    budget = RetryBudget(
        RetryBudgetPolicy(percent=0.2, min_per_second=0, ttl_seconds=10), clock=clock
    )
    assert not budget.try_withdraw()
    budget.deposit(100)
    granted = drain(budget)
    assert granted == 16
    assert granted <= 0.2 * 100
    # The 16 retries, made as calls, deposit too; what they pay for keeps the total under 20.
    budget.deposit(granted)
    more = drain(budget)
    assert more == 3
    assert granted + more <= 0.2 * 100


def test_deposits_expire_after_the_ttl(clock: FakeClock) -> None:
    """Calls older than ttl_seconds pay for nothing."""
    budget = RetryBudget(
        RetryBudgetPolicy(percent=0.5, min_per_second=0, ttl_seconds=2), clock=clock
    )
    budget.deposit(30)
    clock.advance(2.5)
    assert not budget.try_withdraw()


def test_withdrawals_expire_so_the_reserve_refills(clock: FakeClock) -> None:
    """The reserve is a rate: spent now, it is available again a ttl later."""
    budget = RetryBudget(RetryBudgetPolicy(percent=0, min_per_second=1, ttl_seconds=4), clock=clock)
    assert drain(budget) == 4
    clock.advance(2)
    assert not budget.try_withdraw()
    clock.advance(2.5)
    assert drain(budget) == 4


def test_zero_percent_and_zero_reserve_never_retries(clock: FakeClock) -> None:
    """A budget of nothing grants nothing, however many calls are made."""
    budget = RetryBudget(RetryBudgetPolicy(percent=0, min_per_second=0, ttl_seconds=1), clock=clock)
    budget.deposit(1000)
    assert not budget.try_withdraw()
    assert budget.balance() == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("percent", -0.1),
        ("percent", 1.5),
        ("percent", "lots"),
        ("percent", True),
        ("min_per_second", -1),
        ("min_per_second", 1e9),
        ("min_per_second", float("inf")),
        ("ttl_seconds", 0),
        ("ttl_seconds", 0.5),
        ("ttl_seconds", 3600),
        ("ttl_seconds", float("nan")),
    ],
)
def test_bad_policy_values_name_the_field(field: str, value: object) -> None:
    """Negative, absurd or non-numeric budget values are refused, naming the field."""
    with pytest.raises(ValueError, match=field):
        RetryBudgetPolicy(**{field: value})  # type: ignore[arg-type]


# -- tied to the breaker -------------------------------------------------------------


def breaker_for(clock: FakeClock, **policy: object) -> CircuitBreaker:
    defaults: dict[str, object] = {"consecutive_failures": 3, "open_seconds": 10.0}
    defaults.update(policy)
    return CircuitBreaker("dep", BreakerPolicy(**defaults), clock=clock)  # type: ignore[arg-type]


def test_gate_denies_while_the_breaker_is_not_closed(clock: FakeClock) -> None:
    """Open and half-open breakers get no retries, whatever is left in the budget."""
    breaker = breaker_for(clock)
    gate = RetryGate(breaker, RetryBudgetPolicy(min_per_second=100), clock=clock)
    assert gate.retry_allowed()
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state.value == "open"
    assert not gate.retry_allowed()
    clock.advance(10)
    assert breaker.state.value == "half_open"
    assert not gate.retry_allowed()
    breaker.force_open()
    assert not gate.retry_allowed()
    breaker.reset()
    assert gate.retry_allowed()
    assert (gate.allowed, gate.denied) == (2, 3)


def test_gate_credits_the_calls_the_breaker_recorded(clock: FakeClock) -> None:
    """Calls recorded by the breaker (from guards or spans) fill the budget."""
    breaker = breaker_for(clock, consecutive_failures=None, minimum_calls=100, window_size=100)
    gate = RetryGate(breaker, RetryBudgetPolicy(percent=0.5, min_per_second=0), clock=clock)
    assert not gate.retry_allowed()
    for _ in range(30):
        breaker.record_success()
    for _ in range(30):
        breaker.record_failure()
    granted = 0
    while gate.retry_allowed():
        granted += 1
    assert granted == 20  # 60 calls * 0.5 / 1.5 per retry
    assert gate.denied == 2


def test_gate_credits_calls_after_a_quiet_spell_only_in_part(clock: FakeClock) -> None:
    """Calls first seen after a spell longer than the ttl count only for the ttl's share."""
    breaker = breaker_for(clock, consecutive_failures=None)
    gate = RetryGate(
        breaker, RetryBudgetPolicy(percent=1.0, min_per_second=0, ttl_seconds=10), clock=clock
    )
    for _ in range(100):
        breaker.record_success()
    clock.advance(100)  # seen 100 s after the last look: a tenth falls inside the ttl
    granted = 0
    while gate.retry_allowed():
        granted += 1
    assert granted == 5  # 10 calls' worth, at 2 per retry


def test_predicate_retries_only_the_named_exception_types(clock: FakeClock) -> None:
    """retry_on's predicate: False for other exceptions (nothing spent), True for the named
    ones while the budget lasts, and never for a guard's own rejection."""
    breaker = breaker_for(clock)
    gate = RetryGate(
        breaker, RetryBudgetPolicy(percent=0, min_per_second=1, ttl_seconds=2), clock=clock
    )
    predicate = retry_predicate(lambda: gate, (OSError,))
    assert not predicate(ValueError("not ours"))
    assert (gate.allowed, gate.denied) == (0, 0)
    assert not predicate(CircuitOpenError("dep", 1.0))
    assert predicate(ConnectionRefusedError())
    assert predicate(TimeoutError())
    assert not predicate(OSError())  # the reserve of 2 is spent
    assert gate.allowed == 2


def test_predicate_never_retries_a_rejection_even_of_a_named_type(clock: FakeClock) -> None:
    """A rejection that is also the client's connection error is not retried, and counts
    as a denied retry."""

    class ClientOpenError(CircuitOpenError, ConnectionError):
        pass

    gate = RetryGate(breaker_for(clock), RetryBudgetPolicy(), clock=clock)
    predicate = retry_predicate(lambda: gate, (ConnectionError,))
    assert not predicate(ClientOpenError("dep", 1.0))
    assert gate.denied == 1


def test_predicate_needs_exception_types() -> None:
    """retry_on() without types, or with something that is not one, is a TypeError."""
    with pytest.raises(TypeError, match="at least one"):
        retry_predicate(lambda: None, ())  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="exception types"):
        retry_predicate(lambda: None, ("OSError",))  # type: ignore[arg-type, return-value]
