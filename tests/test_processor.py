"""BreakerSpanProcessor and ResilienceSampler with real SDK spans."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_resilience import (
    BreakerPolicy,
    BreakerSpanProcessor,
    Criticality,
    Dependency,
    Registry,
    ResilienceSampler,
    State,
)
from otel_resilience._context import (
    GUARDED,
    GUARDED_SPANS,
    MAX_GUARDED_SPANS,
    mark_guarded_span,
)

POLICY = BreakerPolicy(consecutive_failures=3, open_seconds=60)


def make_registry() -> Registry:
    return Registry(
        [
            Dependency("redis", Criticality.OPTIONAL, match={"db.system": "redis"}, policy=POLICY),
            Dependency(
                "pg", Criticality.CRITICAL, match={"db.system": "postgresql"}, policy=POLICY
            ),
            Dependency("api", match={"server.address": "api.internal"}, policy=POLICY),
        ]
    )


@pytest.fixture
def registry() -> Registry:
    return make_registry()


@pytest.fixture
def provider(registry: Registry) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    yield provider
    provider.shutdown()


def emit(
    provider: TracerProvider,
    attributes: dict[str, Any],
    *,
    kind: SpanKind = SpanKind.CLIENT,
    error: bool = False,
    exception: BaseException | None = None,
) -> None:
    tracer = provider.get_tracer("test")
    span = tracer.start_span("call", kind=kind, attributes=attributes)
    if exception is not None:
        span.record_exception(exception)
    if error or exception is not None:
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def totals(registry: Registry, name: str) -> tuple[int, int]:
    snap = registry.breaker(name).snapshot()
    return snap.total_successes, snap.total_failures


def test_client_spans_feed_their_breaker(provider: TracerProvider, registry: Registry) -> None:
    """Ended client spans are counted on the dependency they match; errors open it."""
    emit(provider, {"db.system": "redis", "net.peer.name": "localhost"})
    for _ in range(3):
        emit(provider, {"db.system": "redis"}, exception=ConnectionError("refused"))
    assert totals(registry, "redis") == (1, 3)
    snap = registry.breaker("redis").snapshot()
    assert snap.state is State.OPEN
    assert snap.last_error_type == "ConnectionError"


def test_new_semantic_conventions(provider: TracerProvider, registry: Registry) -> None:
    """db.system.name and url.full classify like their old names."""
    emit(provider, {"db.system.name": "postgresql"})
    emit(provider, {"url.full": "https://api.internal/v1/x", "http.response.status_code": 200})
    assert totals(registry, "pg") == (1, 0)
    assert totals(registry, "api") == (1, 0)


def test_non_client_spans_are_ignored(provider: TracerProvider, registry: Registry) -> None:
    """Server and internal spans never feed breakers."""
    emit(provider, {"db.system": "redis"}, kind=SpanKind.SERVER, error=True)
    emit(provider, {"db.system": "redis"}, kind=SpanKind.INTERNAL, error=True)
    assert totals(registry, "redis") == (0, 0)
    emit(provider, {"db.system": "redis"}, kind=SpanKind.CLIENT, error=True)  # the control
    assert totals(registry, "redis") == (0, 1)


@pytest.mark.parametrize(
    ("status", "failed"),
    [(200, False), (302, False), (404, False), (409, False), (429, True), (500, True), (503, True)],
)
def test_http_status_decides(
    provider: TracerProvider, registry: Registry, status: int, failed: bool
) -> None:
    """5xx and 429 are failures; other 4xx are not, although the span status is ERROR."""
    emit(
        provider,
        {"http.url": "http://api.internal/x", "http.status_code": status},
        error=status >= 400,
    )
    assert totals(registry, "api") == ((0, 1) if failed else (1, 0))


def test_database_scopes_are_judged_without_http_status(registry: Registry) -> None:
    """Spans of a database or cache instrumentation (redis here) carry no HTTP status, so
    none is read for them: an http.status_code 503 there, with the status unset, is no
    failure; the same span from any other instrumentation is one (the status decides)."""
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    attributes = {"db.system": "redis", "http.status_code": 503}
    for scope in ("opentelemetry.instrumentation.redis", "my.own.tracer"):
        provider.get_tracer(scope).start_span(
            "GET", kind=SpanKind.CLIENT, attributes=attributes
        ).end()
    assert totals(registry, "redis") == (1, 1)


def test_http_error_without_status_is_a_failure(
    provider: TracerProvider, registry: Registry
) -> None:
    """A refused or timed-out HTTP call (no response status) is a failure."""
    emit(provider, {"server.address": "api.internal", "error.type": "ConnectError"})
    assert totals(registry, "api") == (0, 1)
    assert registry.breaker("api").snapshot().last_error_type == "ConnectError"


def test_guarded_spans_are_skipped(provider: TracerProvider, registry: Registry) -> None:
    """Spans of calls a guard recorded (ended inside the guarded context, or entered in
    GUARDED_SPANS for their dependency) are not counted again; a span entered for another
    dependency is, and every entered span is taken out as it ends."""
    token = GUARDED.set("redis")
    try:
        emit(provider, {"db.system": "redis"}, error=True)
    finally:
        GUARDED.reset(token)
    tracer = provider.get_tracer("test")
    for entered_for in ("redis", "pg"):
        span = tracer.start_span("call", kind=SpanKind.CLIENT, attributes={"db.system": "redis"})
        mark_guarded_span(span.get_span_context(), entered_for)
        span.set_status(Status(StatusCode.ERROR))
        span.end()
        assert id(span.get_span_context()) not in GUARDED_SPANS
    assert totals(registry, "redis") == (0, 1)  # only the span entered for "pg"
    emit(provider, {"db.system": "redis"})  # outside any guard: counted
    assert totals(registry, "redis") == (1, 1)


def test_a_switched_off_processor_leaves_guarded_spans_to_the_live_one(
    registry: Registry,
) -> None:
    """A processor left switched off on the provider (an earlier configure()) does not take
    a guarded span's entry: the live processor after it still skips the span."""
    provider = TracerProvider()
    old = BreakerSpanProcessor(registry)
    provider.add_span_processor(old)
    old.shutdown()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    span = provider.get_tracer("test").start_span(
        "call", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
    )
    mark_guarded_span(span.get_span_context(), "redis")
    span.end()
    assert totals(registry, "redis") == (0, 0)
    assert id(span.get_span_context()) not in GUARDED_SPANS


def test_guarded_spans_waiting_are_bounded_oldest_first() -> None:
    """Entries of spans that never reach a processor are bounded: at the cap the oldest
    half goes and the newest stay, however long spans keep not arriving."""
    GUARDED_SPANS.clear()
    contexts = [object() for _ in range(MAX_GUARDED_SPANS * 3 + 10)]
    for index, context in enumerate(contexts):
        mark_guarded_span(context, "redis")
        assert len(GUARDED_SPANS) <= MAX_GUARDED_SPANS
        if index == MAX_GUARDED_SPANS:  # the first time the table was full
            assert id(contexts[0]) not in GUARDED_SPANS
            assert id(contexts[MAX_GUARDED_SPANS // 2 - 1]) not in GUARDED_SPANS
            kept = contexts[MAX_GUARDED_SPANS // 2 : index + 1]
            assert all(id(c) in GUARDED_SPANS for c in kept)
    assert len(GUARDED_SPANS) > MAX_GUARDED_SPANS // 2
    assert all(id(c) in GUARDED_SPANS for c in contexts[-MAX_GUARDED_SPANS // 2 :])
    assert id(contexts[-MAX_GUARDED_SPANS - 1]) not in GUARDED_SPANS
    GUARDED_SPANS.clear()


def test_unmatched_spans_are_discovered_observe_only(registry: Registry) -> None:
    """Unmatched client spans become observe-only dependencies, capped in number."""
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry, max_discovered=2))
    for _ in range(10):
        emit(provider, {"db.system": "mysql"}, error=True)
    emit(provider, {"http.url": "https://search.example.com/q"})
    emit(provider, {"http.url": "https://third.example.com/q"})  # over the cap
    emit(provider, {"rpc.system": "grpc"})  # nothing to group by
    assert "mysql" in registry
    assert registry["mysql"].observe_only
    breaker = registry.breaker("mysql")
    assert breaker.state is State.DISABLED  # counts, never rejects
    assert breaker.snapshot().total_failures == 10
    assert breaker.allow()
    assert "search.example.com" in registry
    assert "third.example.com" not in registry


def test_discovered_name_never_shadows_a_declared_one() -> None:
    """An unmatched span whose group name is taken by a declared dependency gets 'auto:'."""
    registry = Registry([Dependency("redis", match={"db.system": "redis", "server.port": 6380})])
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    emit(provider, {"db.system": "redis", "server.port": 6379})
    assert registry["auto:redis"].observe_only
    assert totals(registry, "auto:redis") == (1, 0)
    assert totals(registry, "redis") == (0, 0)


def test_slow_spans_use_the_span_duration() -> None:
    """The span's own duration decides whether the call was slow."""
    registry = Registry(
        [
            Dependency(
                "redis",
                match={"db.system": "redis"},
                policy=BreakerPolicy(slow_call_seconds=0.5, minimum_calls=2),
            )
        ]
    )
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    tracer = provider.get_tracer("test")
    for _ in range(2):
        span = tracer.start_span(
            "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}, start_time=1_000_000_000
        )
        span.end(end_time=2_000_000_000)  # one second
    snap = registry.breaker("redis").snapshot()
    assert snap.total_slow == 2
    assert snap.state is State.OPEN


attribute_values = st.one_of(
    st.none(),
    st.sampled_from(["redis", "postgresql", "api.internal"]),  # values the rules match
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=50),
    st.lists(st.text(max_size=5), max_size=3),
)
attribute_keys = st.sampled_from(
    [
        "db.system",
        "db.system.name",
        "server.address",
        "net.peer.name",
        "server.port",
        "http.url",
        "url.full",
        "http.status_code",
        "http.response.status_code",
        "error.type",
        "other",
    ]
)


@given(
    attributes=st.dictionaries(attribute_keys, attribute_values, max_size=8),
    error=st.booleans(),
)
def test_malformed_spans_never_raise(attributes: dict[str, Any], error: bool) -> None:
    """Any mix of missing attributes and odd value types is handled by the rules themselves:
    nothing raises, the error path (which logs) is never taken, and a span the rules give to
    a declared dependency is recorded on its breaker as a failure or a success."""
    registry = make_registry()
    processor = BreakerSpanProcessor(registry)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    clean = {k: v for k, v in attributes.items() if v is not None}
    with warnings_logged() as logged:
        emit(provider, clean, error=error)
    assert logged == []
    name = registry.classify(clean)
    if name is not None:
        assert sum(totals(registry, name)) == 1
    with warnings_logged() as logged:
        processor.on_end(object())  # type: ignore[arg-type]  # not a span at all: swallowed
    assert sum(sum(totals(registry, n)) for n in ("redis", "pg", "api")) <= 1


@contextmanager
def warnings_logged() -> Iterator[list[logging.LogRecord]]:
    """The WARNING and worse records the library logs inside the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("otel_resilience")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_sampler_keeps_dependency_spans_recorded(registry: Registry) -> None:
    """With a sampler that drops everything, dependency spans still reach the breakers but
    are not exported."""
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=ResilienceSampler(ALWAYS_OFF, registry))
    provider.add_span_processor(BreakerSpanProcessor(registry))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    for _ in range(3):
        emit(provider, {"db.system": "redis"}, error=True)
    emit(provider, {"db.system": "redis"}, kind=SpanKind.INTERNAL)
    assert totals(registry, "redis") == (0, 3)
    assert registry.breaker("redis").state is State.OPEN
    assert exported.get_finished_spans() == ()
    tracer = provider.get_tracer("test")
    assert not tracer.start_span("internal").is_recording()
    assert "AlwaysOffSampler" in provider.sampler.get_description()


def test_producer_spans_only_when_asked(registry: Registry) -> None:
    """PRODUCER spans feed breakers only with include_producer=True."""
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    emit(provider, {"db.system": "redis"}, kind=SpanKind.PRODUCER)
    assert totals(registry, "redis") == (0, 0)
    provider.add_span_processor(BreakerSpanProcessor(registry, include_producer=True))
    emit(provider, {"db.system": "redis"}, kind=SpanKind.PRODUCER)
    assert totals(registry, "redis") == (1, 0)


def test_old_semconv_peer_name_and_port(registry: Registry) -> None:
    """net.peer.name / net.peer.port classify like server.address / server.port."""
    registry.add(
        Dependency("cache", match={"server.address": "cache.internal", "server.port": 6380})
    )
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    emit(provider, {"net.peer.name": "cache.internal", "net.peer.port": 6380})
    emit(provider, {"server.address": "cache.internal", "server.port": "6380"})
    emit(provider, {"url.full": "http://cache.internal:6380/x", "http.response.status_code": 204})
    emit(provider, {"net.peer.name": "cache.internal", "net.peer.port": 6381})  # another port
    assert totals(registry, "cache") == (3, 0)


def test_http_status_wins_over_error_type(provider: TracerProvider, registry: Registry) -> None:
    """A 404 with error.type set (as the stable HTTP conventions do) is a success; a 503
    keeps its error.type as the breaker's last error."""
    emit(provider, {"server.address": "api.internal", "http.response.status_code": 404,
                    "error.type": "404"}, error=True)  # fmt: skip
    assert totals(registry, "api") == (1, 0)
    emit(provider, {"server.address": "api.internal", "http.response.status_code": 503,
                    "error.type": "503"}, error=True)  # fmt: skip
    assert totals(registry, "api") == (1, 1)
    assert registry.breaker("api").snapshot().last_error_type == "503"


def test_error_type_without_status_is_a_failure(
    provider: TracerProvider, registry: Registry
) -> None:
    """An error.type attribute alone (status UNSET) is a failure of that type."""
    emit(provider, {"db.system": "postgresql", "error.type": "TimeoutError"})
    assert totals(registry, "pg") == (0, 1)
    assert registry.breaker("pg").snapshot().last_error_type == "TimeoutError"


def test_repointed_processor_feeds_the_new_registry(registry: Registry) -> None:
    """Assigning processor.registry sends later spans to the new registry's breakers."""
    processor = BreakerSpanProcessor(registry)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    emit(provider, {"db.system": "redis"})
    other = make_registry()
    processor.registry = other
    emit(provider, {"db.system": "redis"})
    assert totals(registry, "redis") == (1, 0)
    assert totals(other, "redis") == (1, 0)


def test_discovery_from_many_threads_respects_the_cap() -> None:
    """Spans ending on many threads at once discover each group once, within the cap."""
    registry = Registry()
    processor = BreakerSpanProcessor(registry, max_discovered=5)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    barrier = threading.Barrier(8)

    def worker(index: int) -> None:
        barrier.wait()
        for round_ in range(20):
            emit(provider, {"server.address": f"host{(index + round_) % 10}.example"})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    discovered = [dep for dep in registry if dep.observe_only]
    assert len(discovered) == 5
    counted = sum(registry.breaker(dep.name).snapshot().total_successes for dep in discovered)
    assert 0 < counted <= 160


def test_errors_inside_on_end_are_logged_once_per_kind(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A span that makes on_end fail is skipped with one log line per kind of error."""

    class Broken:
        @property
        def kind(self) -> SpanKind:
            raise RuntimeError("broken span")

    processor = BreakerSpanProcessor(registry)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for _ in range(5):
            processor.on_end(Broken())  # type: ignore[arg-type]
        emit(provider, {"db.system": "redis"}, error=True)  # and it goes on working
    assert len(caplog.records) == 1
    assert "RuntimeError" in caplog.records[0].getMessage()
    assert "broken span" in caplog.records[0].getMessage() or caplog.records[0].exc_info
    assert totals(registry, "redis") == (0, 1)


def test_huge_and_odd_attribute_values_are_handled(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Megabyte strings, huge ints, NaN, sequences, bools and a missing status are handled
    by the rules themselves: nothing raises and the error path is never taken."""
    provider = TracerProvider()
    processor = BreakerSpanProcessor(registry)
    provider.add_span_processor(processor)
    huge = "x" * 1_000_000
    odd: list[Any] = [huge, 10**30, float("nan"), ("a", "b"), True, -1, 0.5, ""]
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for value in odd:
            emit(provider, dict.fromkeys(KEYS, value), error=True)
            emit(provider, {"db.system": "redis", "http.status_code": value})
        span = provider.get_tracer("t").start_span(
            "x", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
        )
        span._status = None  # type: ignore[assignment]  # a span with no status at all
        span.end()
    assert caplog.records == []
    assert sum(totals(registry, "redis")) == len(odd) + 1


KEYS = [
    "db.system",
    "db.system.name",
    "server.address",
    "net.peer.name",
    "server.port",
    "net.peer.port",
    "http.url",
    "url.full",
    "http.status_code",
    "http.response.status_code",
    "error.type",
    "peer.service",
]

ODD_URLS = [
    "http://api.internal:8/x",
    "https://API.internal/x",
    "//api.internal/x",
    "api.internal",
    "a?b://api.internal/x",
    "http://api.internal?x=/y",
    "http://user:pw@api.internal:8#f",
    "http://[::1]:8/x",
    "http://api.internal:99999/x",
    "ht\ttp://api.internal/",
    "http:/api.internal/x",
]

any_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["redis", "postgresql", "api.internal", "6379", "http://api.internal:8/x"]),
    st.sampled_from(ODD_URLS),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(ODD_URLS),
        st.sampled_from(["", "/", "?", "#"]),
        st.text(max_size=8),
    ),
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
)


@given(
    spans=st.lists(
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), any_values),
        max_size=6,
    )
)
def test_memoised_classification_equals_the_plain_rules(spans: list[dict[str, Any]]) -> None:
    """The cached, generated classifier gives the same answer as matching pair by pair."""
    ported = Dependency("ported", match={"server.address": "api.internal", "server.port": 8})
    registry = Registry([ported, *make_registry()])
    classifier = registry._classifier
    for attributes in spans * 2:  # the second pass answers from the cache
        assert registry.classify(attributes) == classifier.match(attributes)


def test_forwarded_sdk_spans_count_like_readable_ones(registry: Registry) -> None:
    """A span handed over as the SDK's live Span (a processor that forwards what it gets)
    is read through its public properties: client spans count, others do not."""
    processor = BreakerSpanProcessor(registry)
    tracer = TracerProvider().get_tracer("test")
    for kind in (SpanKind.CLIENT, SpanKind.INTERNAL):
        span = tracer.start_span("GET", kind=kind, attributes={"db.system": "redis"})
        span.set_status(Status(StatusCode.ERROR))
        span.end()
        processor.on_end(span)
    assert totals(registry, "redis") == (0, 1)
    assert processor.force_flush() is True  # nothing is buffered


def test_max_discovered_must_not_be_negative(registry: Registry) -> None:
    """A negative cap on discovered dependencies is refused, naming the value."""
    with pytest.raises(ValueError, match="max_discovered must be >= 0, got -1"):
        BreakerSpanProcessor(registry, max_discovered=-1)
    assert BreakerSpanProcessor(registry).registry is registry


def test_guarded_spans_still_teach_a_health_check_its_address() -> None:
    """A span that ends inside a guarded call of its dependency is not counted again (the
    guard counts the call), but a health check with no address of its own learns the
    address of the call from it."""
    from otel_resilience._health import health_monitor

    registry = Registry.from_config(
        {
            "dependencies": {
                "cache": {
                    "match": {"db.system": "redis"},
                    "health_check": {"type": "redis"},
                }
            }
        }
    )
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    attributes = {"db.system": "redis", "server.address": "cache.internal", "server.port": 6390}
    registry.call("cache", emit, provider, attributes)
    learned = health_monitor(registry).addresses.get("cache")
    assert learned is not None
    assert (learned.host, learned.port) == ("cache.internal", 6390)
    assert totals(registry, "cache") == (1, 0)  # the guarded call, once


def test_no_discovery_when_both_names_are_declared(caplog: pytest.LogCaptureFixture) -> None:
    """An unmatched span whose group name and its 'auto:' form are both declared (matching
    other spans) is quietly left uncounted: no third name, no error."""
    registry = Registry(
        [
            Dependency("redis", match={"db.system": "redis", "server.port": 6380}),
            Dependency("auto:redis", match={"db.system": "redis", "server.port": 6381}),
        ]
    )
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    with caplog.at_level(logging.DEBUG, logger="otel_resilience"):
        emit(provider, {"db.system": "redis", "server.port": 6379})
    assert caplog.records == []
    assert [dependency.name for dependency in registry] == ["redis", "auto:redis"]
    assert totals(registry, "redis") == totals(registry, "auto:redis") == (0, 0)


def test_without_auto_discovery_unmatched_spans_are_ignored(registry: Registry) -> None:
    """With auto_discover off, a client span of no declared dependency adds none and is
    not counted anywhere."""
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry, auto_discover=False))
    emit(provider, {"db.system": "mysql"}, error=True)
    assert "mysql" not in registry
    assert [dependency.name for dependency in registry] == ["redis", "pg", "api"]
