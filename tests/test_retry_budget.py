"""Retry budgets: the token bucket, its tie to the breaker, and stamina/tenacity use."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import stamina
import tenacity
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpenError,
    ConfigError,
    Registry,
    load_config,
)
from otel_resilience._metrics import ResilienceMetrics
from otel_resilience._retry_budget import (
    RetryBudget,
    RetryBudgetPolicy,
    RetryGate,
    retry_predicate,
)
from otel_resilience.instrumentation import install
from tests.conftest import FakeClock
from tests.test_metrics import points


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


def test_a_deposit_counts_for_ten_slices_of_the_ttl(clock: FakeClock) -> None:
    """Expiry is by tenths of the ttl: a deposit still counts in the tenth slice after
    its own, and no longer in the eleventh."""
    clock.now = 0.0
    budget = RetryBudget(
        RetryBudgetPolicy(percent=1.0, min_per_second=0, ttl_seconds=10), clock=clock
    )
    budget.deposit(2)  # one retry's worth (a retry costs 2 deposits at percent 1)
    clock.advance(9.99)
    assert budget.balance() == 1
    clock.advance(0.01)
    assert budget.balance() == 0


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
    """A rejection that is also the client's connection error is not retried, and is not
    counted as a denied retry (the guard decided, not the budget)."""

    class ClientOpenError(CircuitOpenError, ConnectionError):
        pass

    gate = RetryGate(breaker_for(clock), RetryBudgetPolicy(), clock=clock)
    predicate = retry_predicate(lambda: gate, (ConnectionError,))
    assert not predicate(ClientOpenError("dep", 1.0))
    assert (gate.allowed, gate.denied) == (0, 0)


def test_predicate_needs_exception_types() -> None:
    """retry_on() without types, or with something that is not one, is a TypeError."""
    with pytest.raises(TypeError, match="at least one"):
        retry_predicate(lambda: None, ())  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="exception types"):
        retry_predicate(lambda: None, ("OSError",))  # type: ignore[arg-type, return-value]


# -- a retry storm against a real, failing HTTP server ---------------------------------


class _Failing(BaseHTTPRequestHandler):
    """Answers every request with 503 and counts it."""

    requests = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with _Failing.lock:
            _Failing.requests += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[int]:
    _Failing.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def api_registry(port: int, breaker: dict[str, Any], **extra: Any) -> Registry:
    return load_config(
        {
            "dependencies": {
                "api": {
                    "match": {"server.address": "127.0.0.1", "server.port": port},
                    "breaker": breaker,
                    **extra,
                }
            }
        }
    )


# A breaker that stays closed through the storm: only the budget bounds the retries.
NEVER_OPENS = {"consecutive_failures": None, "minimum_calls": 100, "failure_rate_threshold": 1.0}
BUDGET = {"percent": 0.2, "min_per_second": 1, "ttl_seconds": 10}
OPERATIONS = 40
ATTEMPTS = 10

RetryingGet = Callable[[Callable[[], None]], None]


def with_stamina(registry: Registry) -> RetryingGet:
    def run(get: Callable[[], None]) -> None:
        retrying = stamina.retry(
            on=registry.retry_on("api", httpx.HTTPStatusError, httpx.TransportError),
            attempts=ATTEMPTS,
            timeout=None,
            wait_initial=0.0,
            wait_max=0.0,
            wait_jitter=0.0,
        )
        retrying(get)()

    return run


def with_tenacity(registry: Registry) -> RetryingGet:
    def run(get: Callable[[], None]) -> None:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                registry.retry_on("api", httpx.HTTPStatusError, httpx.TransportError)
            ),
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=tenacity.wait_none(),
            reraise=True,
        )
        retrying(get)

    return run


@contextlib.contextmanager
def retried_gets(
    registry: Registry, port: int, retrier: Callable[[Registry], RetryingGet]
) -> Iterator[Callable[[], None]]:
    """A GET of the server (through the installed guards), retried by ``retrier``."""
    uninstall = install(registry)
    try:
        run = retrier(registry)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:

            def get() -> None:
                client.get("/").raise_for_status()

            yield lambda: run(get)
    finally:
        uninstall()


@pytest.mark.parametrize("retrier", [with_stamina, with_tenacity])
def test_a_retry_storm_is_bounded_by_the_budget(
    failing_server: int, retrier: Callable[[Registry], RetryingGet]
) -> None:
    """40 operations retrying up to 10 times each against a server that always fails
    would send 400 requests; the budget (20% of calls plus 1 a second over 10 s) lets
    through at most 40 * 1.2 + 10 (+ what the retries themselves deposit), and the server
    counts no more. Retries are counted allowed and denied."""
    registry = api_registry(failing_server, NEVER_OPENS, retry_budget=BUDGET)
    with retried_gets(registry, failing_server, retrier) as get:
        for _ in range(OPERATIONS):
            with pytest.raises(httpx.HTTPStatusError):
                get()
    counts = registry.retry_counts()
    allowed, denied = counts[("api", "allowed")], counts[("api", "denied")]
    # Both libraries ask the predicate before their attempt limit, so an operation that
    # runs out of attempts spent a token on a retry it did not make: hence <=.
    assert OPERATIONS + 10 <= _Failing.requests <= OPERATIONS + allowed
    assert allowed <= 0.2 * OPERATIONS + 10 + 5  # 5: deposits of the retries themselves
    assert denied >= OPERATIONS - 5  # nearly every operation ended on a denied retry
    assert registry.breaker("api").state.value == "closed"


@pytest.mark.parametrize("retrier", [with_stamina, with_tenacity])
def test_no_retry_reaches_a_dependency_whose_breaker_is_open(
    failing_server: int, retrier: Callable[[Registry], RetryingGet]
) -> None:
    """Three failures open the breaker: the call that opened it is not retried, and while
    it is open the guard's rejection (an httpx.ConnectError too) is not retried either;
    the server sees exactly the three requests."""
    registry = api_registry(
        failing_server, {"consecutive_failures": 3, "open_seconds": 60}, retry_budget=BUDGET
    )
    with retried_gets(registry, failing_server, retrier) as get:
        with pytest.raises(httpx.HTTPStatusError):
            get()  # three attempts, then the breaker is open: the third not retried
        assert registry.breaker("api").state.value == "open"
        for _ in range(5):
            with pytest.raises(httpx.ConnectError) as rejected:
                get()
            assert isinstance(rejected.value, CircuitOpenError)
    assert _Failing.requests == 3
    assert not registry.retry_allowed("api")
    counts = registry.retry_counts()
    assert counts[("api", "allowed")] == 2
    assert counts[("api", "denied")] == 1 + 1  # the opening call, and retry_allowed above


def test_retry_allowed_spends_the_default_budget(clock: FakeClock) -> None:
    """Without retry_budget a dependency has the default (0.2, 10, 10): 100 retries in a
    quiet second, then none, and an unknown name is an error."""
    registry = Registry.from_config({"dependencies": {"db": {}}}, clock=clock)
    granted = 0
    while registry.retry_allowed("db"):
        granted += 1
    assert granted == 100
    assert registry.retry_counts()[("db", "denied")] == 1
    clock.advance(10.5)
    assert registry.retry_allowed("db")
    with pytest.raises(KeyError, match="unknown dependency"):
        registry.retry_allowed("nope")
    with pytest.raises(KeyError, match="unknown dependency"):
        registry.retry_on("nope", OSError)


@pytest.mark.parametrize(
    ("budget", "key"),
    [
        ({"percent": -0.5}, "dependencies.api.retry_budget.percent"),
        ({"percent": 3}, "dependencies.api.retry_budget.percent"),
        ({"min_per_second": -1}, "dependencies.api.retry_budget.min_per_second"),
        ({"min_per_second": 1e12}, "dependencies.api.retry_budget.min_per_second"),
        ({"ttl_seconds": 0}, "dependencies.api.retry_budget.ttl_seconds"),
        ({"ttl_seconds": 86400}, "dependencies.api.retry_budget.ttl_seconds"),
        ({"ttl_seconds": "10s"}, "dependencies.api.retry_budget.ttl_seconds"),
        ({"precent": 0.2}, "dependencies.api.retry_budget.precent"),
        ("lots", "dependencies.api.retry_budget"),
    ],
)
def test_bad_budgets_are_config_errors_naming_the_key(budget: Any, key: str) -> None:
    """Negative, absurd, mistyped or misspelt budgets fail at load, naming the key path."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config({"dependencies": {"api": {"retry_budget": budget}}})


def test_configured_budget_reaches_the_dependency() -> None:
    """retry_budget in the config becomes the dependency's RetryBudgetPolicy."""
    registry = load_config(
        {"dependencies": {"api": {"retry_budget": {"percent": 0.1, "ttl_seconds": 30}}}}
    )
    budget = registry["api"].retry_budget
    assert budget is not None
    assert (budget.percent, budget.min_per_second, budget.ttl_seconds) == (0.1, 10, 30)


def test_retries_are_counted_in_their_metric(clock: FakeClock) -> None:
    """resilience.dependency.retries reports allowed and denied per dependency, from 0."""
    registry = Registry.from_config(
        {"dependencies": {"db": {"retry_budget": {"min_per_second": 0.2, "ttl_seconds": 10}}}},
        clock=clock,
    )
    reader = InMemoryMetricReader()
    ResilienceMetrics(MeterProvider(metric_readers=[reader])).attach(registry)
    assert {tuple(a.values()): v for a, v in points(reader)["resilience.dependency.retries"]} == {
        ("db", "allowed"): 0,
        ("db", "denied"): 0,
        ("telemetry", "allowed"): 0,
        ("telemetry", "denied"): 0,
    }
    assert registry.retry_allowed("db")
    assert registry.retry_allowed("db")
    assert not registry.retry_allowed("db")
    retries = {
        (a["dependency.name"], a["outcome"]): v
        for a, v in points(reader)["resilience.dependency.retries"]
    }
    assert (retries[("db", "allowed")], retries[("db", "denied")]) == (2, 1)


def test_reload_applies_a_new_budget_and_keeps_the_counts(clock: FakeClock) -> None:
    """After registry.reload with a new retry_budget, the new budget decides; the retry
    counts (a Prometheus counter) carry on."""
    config: dict[str, Any] = {
        "dependencies": {"db": {"retry_budget": {"percent": 0, "min_per_second": 0.1}}}
    }
    registry = Registry.from_config(config, clock=clock)
    assert registry.retry_allowed("db")
    assert not registry.retry_allowed("db")
    config["dependencies"]["db"]["retry_budget"] = {"percent": 0, "min_per_second": 0.3}
    registry.reload(config)
    granted = 0
    while registry.retry_allowed("db"):
        granted += 1
    assert granted == 3
    assert registry.retry_counts()[("db", "allowed")] == 4
    assert registry.retry_counts()[("db", "denied")] == 2


# -- against a reference model ---------------------------------------------------------


@settings(max_examples=300)
@given(
    percent=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    min_per_second=st.sampled_from([0, 0, 0.1, 1]),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("deposit"), st.integers(0, 8)),
            st.tuples(st.just("withdraw"), st.just(0)),
            st.tuples(st.just("advance"), st.integers(0, 12)),
        ),
        max_size=80,
    ),
)
def test_budget_matches_a_reference_model(
    percent: float, min_per_second: float, steps: list[tuple[str, int]]
) -> None:
    """The bucket against a direct model: every deposit and withdrawal is kept with its
    time, counted while younger than the ttl (to slice precision), and a retry is granted
    exactly when the reserve plus the live balance covers one."""
    ttl = 10.0
    clock = FakeClock(0.0)
    budget = RetryBudget(
        RetryBudgetPolicy(percent=percent, min_per_second=min_per_second, ttl_seconds=ttl),
        clock=clock,
    )
    deposit = round(percent * 1000)
    withdrawal = 1000 + deposit
    reserve = round(min_per_second * ttl * withdrawal)
    slice_seconds = ttl / 10
    ledger: list[tuple[int, int]] = []  # (slice index, amount)

    def live() -> int:
        now = int(clock() / slice_seconds)
        return sum(amount for index, amount in ledger if now - index < 10)

    for action, value in steps:
        if action == "deposit":
            budget.deposit(value)
            if value and deposit:
                ledger.append((int(clock() / slice_seconds), value * deposit))
        elif action == "withdraw":
            expected = reserve + live() >= withdrawal
            assert budget.try_withdraw() is expected
            if expected:
                ledger.append((int(clock() / slice_seconds), -withdrawal))
        else:
            clock.advance(value * slice_seconds / 2)
