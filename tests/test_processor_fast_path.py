"""BreakerSpanProcessor's compiled fast path: after the first span, ``on_end`` is code
compiled for the registry's classifier with a memo of breakers. Each test lets spans take
that path first, then changes what the memo was built from, and checks the spans still
count as the general rules say."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_resilience import (
    BreakerSpanProcessor,
    Dependency,
    Registry,
    State,
    load_config,
)
from otel_resilience._context import GUARDED_SPANS

REDIS = {"db.system": "redis", "net.peer.name": "cache.internal", "net.peer.port": 6379}
CONFIG: dict[str, Any] = {
    "dependencies": {
        "cache": {"match": {"db.system": "redis"}, "breaker": {"consecutive_failures": 3}},
        "api": {
            "match": {"server.address": "api.internal"},
            "breaker": {"consecutive_failures": 3},
        },
    }
}


@pytest.fixture
def registry() -> Registry:
    return load_config(CONFIG)


@pytest.fixture
def provider(registry: Registry) -> Iterator[TracerProvider]:
    provider = traced(BreakerSpanProcessor(registry))
    yield provider
    provider.shutdown()


def emit(
    provider: TracerProvider,
    attributes: dict[str, Any],
    *,
    scope: str = "opentelemetry.instrumentation.redis",
    error: bool = False,
    seconds: float = 0.0,
) -> None:
    """One CLIENT span; ``seconds`` long when asked (start and end times set)."""
    tracer = provider.get_tracer(scope)
    span = tracer.start_span("call", kind=SpanKind.CLIENT, attributes=attributes, start_time=0)
    if error:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=int(seconds * 1e9))


def traced(processor: BreakerSpanProcessor) -> TracerProvider:
    """A tracer provider whose spans end in ``processor``."""
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider


def totals(registry: Registry, name: str) -> tuple[int, int]:
    """(successes, failures) that ``name``'s breaker ever recorded."""
    snapshot = registry.breaker(name).snapshot()
    return snapshot.total_successes, snapshot.total_failures


def calls(registry: Registry, name: str) -> tuple[int, int]:
    """(calls, failures) in the window of ``name``'s breaker."""
    snapshot = registry.breaker(name).snapshot()
    return snapshot.calls, snapshot.failures


def test_successes_then_failures_open_the_breaker(
    provider: TracerProvider, registry: Registry
) -> None:
    for _ in range(20):
        emit(provider, REDIS)
    assert calls(registry, "cache") == (20, 0)
    for _ in range(3):
        emit(provider, REDIS, error=True)
    assert registry.breaker("cache").state is State.OPEN


def test_a_reload_that_bounds_durations_makes_spans_slow_calls(
    provider: TracerProvider, registry: Registry
) -> None:
    for _ in range(5):
        emit(provider, REDIS, seconds=2.0)  # no bound yet: plain successes
    reloaded = {
        "dependencies": {
            **CONFIG["dependencies"],
            "cache": {
                "match": {"db.system": "redis"},
                "breaker": {
                    "slow_call_seconds": 1.0,
                    "slow_call_rate_threshold": 0.5,
                    "minimum_calls": 4,
                    "window_size": 4,
                },
            },
        }
    }
    registry.reload(reloaded)
    for _ in range(4):
        emit(provider, REDIS, seconds=2.0)
    assert registry.breaker("cache").snapshot().total_slow == 4
    assert registry.breaker("cache").state is State.OPEN


def test_a_dependency_declared_later_gets_its_spans(registry: Registry) -> None:
    """Spans that matched nothing (and are not discovered) count once a dependency that
    matches them is declared, and the memoised ones keep counting where they did."""
    provider = traced(BreakerSpanProcessor(registry, auto_discover=False))
    search = {"server.address": "search.internal", "http.response.status_code": 200}
    for _ in range(3):
        emit(provider, REDIS)
        emit(provider, search, scope="opentelemetry.instrumentation.httpx")
    assert "search" not in registry
    registry.add(Dependency("search", match={"server.address": "search.internal"}))
    for _ in range(2):
        emit(provider, search, scope="opentelemetry.instrumentation.httpx")
        emit(provider, REDIS)
    assert calls(registry, "search") == (2, 0)
    assert calls(registry, "cache") == (5, 0)
    provider.shutdown()


def test_the_fast_path_is_compiled_again_for_discovered_dependencies(
    registry: Registry,
) -> None:
    """A discovery adds a dependency (a new classifier): the next span compiles the fast
    path for it, so the discovered dependency's spans do not stay on the general path."""
    processor = BreakerSpanProcessor(registry)
    provider = traced(processor)
    emit(provider, REDIS)
    compiled = processor._fast_classifier
    assert compiled is registry._classifier
    pg = {"db.system": "postgresql", "net.peer.name": "db.internal"}
    for _ in range(3):
        emit(provider, pg)
    assert registry._classifier is not compiled
    assert processor._fast_classifier is registry._classifier
    assert calls(registry, "postgresql") == (3, 0)
    provider.shutdown()


def test_a_repointed_processor_feeds_the_new_registry(registry: Registry) -> None:
    processor = BreakerSpanProcessor(registry)
    provider = traced(processor)
    for _ in range(3):
        emit(provider, REDIS)
    other = load_config(CONFIG)
    processor.registry = other
    for _ in range(2):
        emit(provider, REDIS)
    assert calls(registry, "cache") == (3, 0)
    assert calls(other, "cache") == (2, 0)
    provider.shutdown()


def test_http_statuses_count_per_scope_when_scopes_interleave(
    provider: TracerProvider, registry: Registry
) -> None:
    """An HTTP client's 503 fails; a status attribute on a redis span is not an answer."""
    api_503 = {"server.address": "api.internal", "http.response.status_code": 503}
    api_200 = {"server.address": "api.internal", "http.response.status_code": 200}
    redis_with_status = {**REDIS, "http.response.status_code": 503}
    for _ in range(2):
        emit(provider, api_200, scope="opentelemetry.instrumentation.httpx")
        emit(provider, redis_with_status)
        emit(provider, api_503, scope="opentelemetry.instrumentation.httpx")
    assert calls(registry, "api") == (4, 2)
    assert calls(registry, "cache") == (2, 0)


def test_spans_that_alternate_between_keys_and_scopes_each_reach_their_own_breaker() -> None:
    """The last span's memo entry serves the next only for the same scope and key: two
    Redis servers in turn, then one key from a cache client and from an HTTP client. The
    windows are full of successes first (steady), where the fast path counts a success
    itself."""
    steady = {"window_size": 4, "minimum_calls": 4}
    registry = load_config(
        {
            "dependencies": {
                "sessions": {
                    "match": {"db.system": "redis", "server.port": 6380},
                    "breaker": steady,
                },
                "cache": {"match": {"db.system": "redis"}, "breaker": steady},
                "api": {"match": {"server.address": "api.internal"}, "breaker": steady},
            }
        }
    )
    provider = traced(BreakerSpanProcessor(registry))
    sessions = {**REDIS, "net.peer.port": 6380}
    api = {"server.address": "api.internal", "http.response.status_code": 200}
    for _ in range(4):
        emit(provider, REDIS)
        emit(provider, sessions)
        emit(provider, api, scope="opentelemetry.instrumentation.httpx")
    for _ in range(3):
        emit(provider, REDIS)
        emit(provider, REDIS)
        emit(provider, sessions)
    assert totals(registry, "cache") == (10, 0)
    assert totals(registry, "sessions") == (7, 0)
    # A status attribute on a cache client's span is no answer; on an HTTP client's, 503
    # is a failure, even right after a span of the same key that was a success.
    busy = {"server.address": "api.internal", "http.response.status_code": 503}
    emit(provider, busy)
    emit(provider, busy, scope="opentelemetry.instrumentation.httpx")
    emit(provider, busy)
    emit(provider, busy, scope="opentelemetry.instrumentation.httpx")
    assert totals(registry, "api") == (6, 2)
    provider.shutdown()


def test_a_success_span_closes_a_half_open_breaker() -> None:
    breaker_policy = {"consecutive_failures": 2, "open_seconds": 0.05}
    registry = load_config(
        {"dependencies": {"cache": {"match": {"db.system": "redis"}, "breaker": breaker_policy}}}
    )
    provider = traced(BreakerSpanProcessor(registry))
    for _ in range(5):
        emit(provider, REDIS)
    for _ in range(2):
        emit(provider, REDIS, error=True)
    breaker = registry.breaker("cache")
    assert breaker.state is State.OPEN
    threading.Event().wait(0.1)
    assert breaker.state is State.HALF_OPEN
    emit(provider, REDIS)
    assert breaker.state is State.CLOSED
    provider.shutdown()


def test_unhashable_attribute_values_after_the_fast_path_is_compiled(
    registry: Registry,
) -> None:
    """A span made by other code with a list where the SDK keeps strings still counts."""
    processor = BreakerSpanProcessor(registry)
    provider = traced(processor)
    emit(provider, REDIS)
    tracer = provider.get_tracer("opentelemetry.instrumentation.redis")
    span = tracer.start_span("call", kind=SpanKind.CLIENT, attributes=REDIS)
    span.end()
    span._attributes._dict["net.peer.name"] = ["cache", "internal"]  # type: ignore[union-attr]
    processor.on_end(span)
    assert calls(registry, "cache") == (3, 0)  # the first, the span's own end, this one
    provider.shutdown()


def test_a_guarded_span_of_another_dependency_is_counted(
    provider: TracerProvider, registry: Registry
) -> None:
    """A span entered in GUARDED_SPANS for another dependency is still this one's call."""
    tracer = provider.get_tracer("opentelemetry.instrumentation.redis")
    for _ in range(3):
        emit(provider, REDIS)
    span = tracer.start_span("call", kind=SpanKind.CLIENT, attributes=REDIS)
    GUARDED_SPANS[id(span.get_span_context())] = (span.get_span_context(), "api", None)
    span.end()
    assert id(span.get_span_context()) not in GUARDED_SPANS
    assert calls(registry, "cache") == (4, 0)
    span = tracer.start_span("call", kind=SpanKind.CLIENT, attributes=REDIS)
    GUARDED_SPANS[id(span.get_span_context())] = (span.get_span_context(), "cache", None)
    span.end()
    assert calls(registry, "cache") == (4, 0)  # its guard counted it


def test_a_subclass_keeps_its_own_on_end(registry: Registry) -> None:
    seen: list[str] = []

    class Counting(BreakerSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            seen.append(span.name)
            super().on_end(span)

    provider = traced(Counting(registry))
    for _ in range(3):
        emit(provider, REDIS)
    assert seen == ["call"] * 3
    assert calls(registry, "cache") == (3, 0)
    provider.shutdown()


def test_a_shut_down_processor_records_nothing(
    provider: TracerProvider, registry: Registry
) -> None:
    emit(provider, REDIS)
    processor = provider._active_span_processor._span_processors[0]
    processor.shutdown()
    emit(provider, REDIS)
    assert calls(registry, "cache") == (1, 0)


def test_switched_off_and_on_again_the_processor_records_only_while_on(
    provider: TracerProvider, registry: Registry
) -> None:
    processor = provider._active_span_processor._span_processors[0]
    for _ in range(2):
        emit(provider, REDIS)
    processor.enabled = False
    for _ in range(3):
        emit(provider, REDIS)
    processor.enabled = True
    for _ in range(2):
        emit(provider, REDIS)
    assert calls(registry, "cache") == (4, 0)


def test_unmatched_spans_past_the_cap_are_dropped_until_the_cap_is_raised(
    registry: Registry,
) -> None:
    processor = BreakerSpanProcessor(registry, max_discovered=1)
    provider = traced(processor)
    first = {"server.address": "one.internal", "http.response.status_code": 200}
    second = {"server.address": "two.internal", "http.response.status_code": 200}
    for _ in range(3):
        emit(provider, first, scope="opentelemetry.instrumentation.httpx")
        emit(provider, second, scope="opentelemetry.instrumentation.httpx")
    assert calls(registry, "one.internal") == (3, 0)
    assert "two.internal" not in registry  # the cap of one was reached
    processor.max_discovered = 2
    for _ in range(2):
        emit(provider, second, scope="opentelemetry.instrumentation.httpx")
    assert calls(registry, "two.internal") == (2, 0)
    provider.shutdown()


_URL_PARTS = st.sampled_from(
    ["http:", "https:", "", "//", "/", "api.internal", "other.internal", ":8443", "?q=/", "x"]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(_URL_PARTS, max_size=7).map("".join), min_size=1, max_size=10))
def test_url_spans_on_the_fast_path_reach_the_dependency_their_url_matches(
    urls: list[str],
) -> None:
    """The fast path keys a URL span by part of its URL (a split, or a cut for other
    shapes): whatever URL spans came before, each success is counted on the dependency
    that matching its URL afresh names, or on none. The windows are full of successes
    first (steady), where the fast path counts a success itself."""
    steady = {"window_size": 2, "minimum_calls": 2}
    registry = load_config(
        {
            "dependencies": {
                "api": {
                    "match": {"server.address": "api.internal", "server.port": 8443},
                    "breaker": steady,
                },
                "plain": {"match": {"server.address": "api.internal"}, "breaker": steady},
                "other": {"match": {"server.address": "other.internal"}, "breaker": steady},
            }
        }
    )
    processor = BreakerSpanProcessor(registry, auto_discover=False)
    provider = traced(processor)
    scope = "opentelemetry.instrumentation.httpx"
    for name, address in (
        ("api", "api.internal:8443"),
        ("plain", "api.internal"),
        ("other", "other.internal"),
    ):
        for _ in range(2):
            emit(provider, {"url.full": f"https://{address}/warm"}, scope=scope)
        assert registry.breaker(name).snapshot().total_successes == 2
    for url in urls:
        for key in ("url.full", "http.url"):
            attributes = {key: url, "http.response.status_code": 200}
            expected = registry._classifier.match(attributes)
            before = {name: totals(registry, name)[0] for name in ("api", "plain", "other")}
            emit(provider, attributes, scope=scope)
            after = {name: totals(registry, name)[0] for name in ("api", "plain", "other")}
            assert after == {name: count + (name == expected) for name, count in before.items()}, (
                url
            )
    assert processor._fast_classifier is registry._classifier  # (the fast path ran)
    provider.shutdown()


def test_a_span_whose_attributes_are_an_ordered_dict_is_counted(registry: Registry) -> None:
    """SDK 1.43 keeps a span's attributes in an OrderedDict once they reach their limit;
    the fast path reads plain dicts only, and such a span goes the general way, counted."""
    processor = BreakerSpanProcessor(registry)
    provider = traced(processor)
    for _ in range(3):
        emit(provider, REDIS)  # the fast path
    assert processor._fast_classifier is registry._classifier
    span: Any = provider.get_tracer("opentelemetry.instrumentation.redis").start_span(
        "GET", kind=SpanKind.CLIENT, attributes=REDIS
    )
    span._attributes._dict = OrderedDict(span._attributes._dict)  # as 1.43 makes it
    span.end()
    span = provider.get_tracer("opentelemetry.instrumentation.redis").start_span(
        "GET", kind=SpanKind.CLIENT, attributes=REDIS
    )
    span._attributes._dict = OrderedDict(span._attributes._dict)
    span.set_status(Status(StatusCode.ERROR))
    span.end()
    assert totals(registry, "cache") == (4, 1)
    provider.shutdown()
