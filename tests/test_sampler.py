"""ResilienceSampler: breakers see every dependency call whatever the user's sampler drops."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import (
    BreakerPolicy,
    BreakerSpanProcessor,
    Dependency,
    Registry,
    ResilienceSampler,
    State,
)
from tests.support.health_servers import redis_server

NO_RETRY = Retry(NoBackoff(), 0)


def make_registry() -> Registry:
    policy = BreakerPolicy(consecutive_failures=3, open_seconds=60)
    return Registry([Dependency("redis", match={"db.system": "redis"}, policy=policy)])


@pytest.fixture
def instrumented() -> Iterator[tuple[Registry, TracerProvider, InMemorySpanExporter]]:
    """The OTel redis instrumentation on a provider that samples nothing, with the wrapper."""
    registry = make_registry()
    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=ResilienceSampler(TraceIdRatioBased(0), registry))
    provider.add_span_processor(BreakerSpanProcessor(registry))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    RedisInstrumentor().instrument(tracer_provider=provider)
    try:
        yield registry, provider, exported
    finally:
        RedisInstrumentor().uninstrument()
        provider.shutdown()


def test_redis_spans_reach_the_breaker_at_sampling_rate_zero(
    instrumented: tuple[Registry, TracerProvider, InMemorySpanExporter],
) -> None:
    """redis-py spans (attributes set after start) are recorded but not exported at ratio 0."""
    registry, _, exported = instrumented
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    for _ in range(5):
        client.get("otel_resilience:test_sampler")
    assert registry.breaker("redis").snapshot().total_successes == 5
    assert exported.get_finished_spans() == ()


def test_killed_redis_opens_the_breaker_through_unsampled_spans(
    instrumented: tuple[Registry, TracerProvider, InMemorySpanExporter],
) -> None:
    """With nothing sampled and no guards, a killed redis-server still opens the breaker."""
    registry, _, exported = instrumented
    with redis_server() as server:
        client = redis.Redis(
            port=server.port, socket_timeout=1, socket_connect_timeout=1, retry=NO_RETRY
        )
        client.set("k", "v")
        server.stop()
        for _ in range(3):
            with pytest.raises(redis.exceptions.ConnectionError):
                client.get("k")
    snapshot = registry.breaker("redis").snapshot()
    assert (snapshot.state, snapshot.total_successes, snapshot.total_failures) == (
        State.OPEN,
        1,
        3,
    )
    assert exported.get_finished_spans() == ()


def decide(sampler: ResilienceSampler, kind: SpanKind, attributes: dict[str, object]) -> Decision:
    return sampler.should_sample(None, 1, "span", kind, attributes).decision


def test_decisions_by_kind_and_start_attributes() -> None:
    """Dropped client spans of a dependency, of a discoverable group, or naming no server
    become RECORD_ONLY; other kinds and spans of no dependency stay dropped."""
    sampler = ResilienceSampler(ALWAYS_OFF, make_registry(), include_discovered=False)
    record_only, drop = Decision.RECORD_ONLY, Decision.DROP
    assert decide(sampler, SpanKind.CLIENT, {"db.system": "redis"}) is record_only
    assert decide(sampler, SpanKind.CLIENT, {}) is record_only  # redis-py: told at end
    assert decide(sampler, SpanKind.CLIENT, {"db.statement": "GET ?"}) is record_only
    assert decide(sampler, SpanKind.CLIENT, {"db.system": "mysql"}) is drop
    assert decide(sampler, SpanKind.SERVER, {"db.system": "redis"}) is drop
    assert decide(sampler, SpanKind.INTERNAL, {}) is drop
    discovering = ResilienceSampler(ALWAYS_OFF, make_registry())
    assert decide(discovering, SpanKind.CLIENT, {"db.system": "mysql"}) is record_only
    assert decide(discovering, SpanKind.CLIENT, {"url.full": "https://x.example/"}) is record_only


def test_sampled_spans_keep_the_wrapped_decision() -> None:
    """When the wrapped sampler samples, its decision is returned unchanged."""
    sampler = ResilienceSampler(ALWAYS_ON, make_registry())
    assert decide(sampler, SpanKind.CLIENT, {"db.system": "redis"}) is Decision.RECORD_AND_SAMPLE
    assert sampler.get_description() == "ResilienceSampler{AlwaysOnSampler}"


def parent(sampled: bool, *, remote: bool = False) -> object:
    """A parent context holding a span of that sampling flag."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    span = NonRecordingSpan(SpanContext(1, 2, is_remote=remote, trace_flags=flags))
    return trace.set_span_in_context(span)


@pytest.mark.parametrize("remote", [False, True])
def test_parent_based_sampler_keeps_unsampled_dependency_spans(remote: bool) -> None:
    """Around the SDK's default ParentBased(ALWAYS_ON), which drops the children of an
    unsampled parent: a dependency's client span under such a parent is RECORD_ONLY, one of
    no dependency stays dropped, and a sampled parent's child is sampled, as before."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    registry = make_registry()
    sampler = ResilienceSampler(ParentBased(ALWAYS_ON), registry, include_discovered=False)
    unsampled, sampled = parent(False, remote=remote), parent(True, remote=remote)

    def decision(context: object, kind: SpanKind, attributes: dict[str, object]) -> Decision:
        return sampler.should_sample(context, 1, "span", kind, attributes).decision  # type: ignore[arg-type]

    redis_span = {"db.system": "redis"}
    assert decision(unsampled, SpanKind.CLIENT, redis_span) is Decision.RECORD_ONLY
    assert decision(unsampled, SpanKind.CLIENT, {"db.system": "mysql"}) is Decision.DROP
    assert decision(unsampled, SpanKind.INTERNAL, redis_span) is Decision.DROP
    assert decision(sampled, SpanKind.CLIENT, redis_span) is Decision.RECORD_AND_SAMPLE
    assert decision(None, SpanKind.CLIENT, {"db.system": "mysql"}) is Decision.RECORD_AND_SAMPLE
    # configure() repoints the wrapper at a new registry: the delegates follow it.
    sampler.registry = Registry([Dependency("mysql", match={"db.system": "mysql"})])
    assert decision(unsampled, SpanKind.CLIENT, {"db.system": "mysql"}) is Decision.RECORD_ONLY
    assert decision(unsampled, SpanKind.CLIENT, redis_span) is Decision.DROP
    wrapped_description = ParentBased(ALWAYS_ON).get_description()
    assert sampler.get_description() == f"ResilienceSampler{{{wrapped_description}}}"


def test_parent_based_ratio_root_and_subclasses() -> None:
    """A ParentBased whose root drops (a ratio of 0) keeps root dependency spans too; a
    ParentBased subclass with its own should_sample is wrapped whole and still obeyed."""
    from opentelemetry.sdk.trace.sampling import ParentBased, ParentBasedTraceIdRatio

    ratio = ResilienceSampler(ParentBasedTraceIdRatio(0), make_registry(), include_discovered=False)
    assert decide(ratio, SpanKind.CLIENT, {"db.system": "redis"}) is Decision.RECORD_ONLY
    assert decide(ratio, SpanKind.CLIENT, {"db.system": "mysql"}) is Decision.DROP

    class DropsClients(ParentBased):
        def should_sample(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            from opentelemetry.sdk.trace.sampling import SamplingResult

            return SamplingResult(Decision.DROP)

    own = ResilienceSampler(DropsClients(ALWAYS_ON), make_registry(), include_discovered=False)
    assert decide(own, SpanKind.CLIENT, {"db.system": "redis"}) is Decision.RECORD_ONLY
    assert decide(own, SpanKind.CLIENT, {"db.system": "mysql"}) is Decision.DROP


def test_the_tracer_calls_a_method_of_the_samplers_class() -> None:
    """The wrapper's ``should_sample`` is its class's, never a function on the instance
    (the SDK's call ``sampler.should_sample(...)`` stays specialised): around a
    ParentBased it is the SDK's ``ParentBased.should_sample``, deciding from wrapped
    delegates; the user's ParentBased is read, not changed."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    users = ParentBased(ALWAYS_ON)
    before = dict(vars(users))
    around_parent_based = ResilienceSampler(users, make_registry())
    around_other = ResilienceSampler(ALWAYS_OFF, make_registry())
    for sampler in (around_parent_based, around_other):
        assert "should_sample" not in vars(sampler)
        assert isinstance(sampler, ResilienceSampler)
    assert type(around_parent_based).should_sample is ParentBased.should_sample
    assert type(around_other).should_sample is ResilienceSampler.should_sample
    assert vars(users) == before
    # Wrapping the wrapper again (a second configure()) is not nested.
    again = ResilienceSampler(around_parent_based, make_registry())
    assert type(again) is ResilienceSampler


@pytest.mark.parametrize("remote", [False, True])
@pytest.mark.parametrize("parent_sampled", [None, False, True])
@pytest.mark.parametrize("kind", [SpanKind.CLIENT, SpanKind.SERVER, SpanKind.INTERNAL])
@pytest.mark.parametrize(
    "attributes", [{"db.system": "redis"}, {"db.system": "mysql"}, {}, {"http.url": "x"}]
)
def test_parent_based_decisions_equal_the_users_sampler_with_drops_kept(
    remote: bool,
    parent_sampled: bool | None,
    kind: SpanKind,
    attributes: dict[str, object],
) -> None:
    """Every decision around a ParentBased is the user's sampler's decision, except that a
    dropped client span that may belong to a dependency is RECORD_ONLY (as a wrapper that
    asks the user's sampler first, then ``_belongs_to_a_dependency``, would decide)."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    users = ParentBased(TraceIdRatioBased(0))
    sampler = ResilienceSampler(users, make_registry(), include_discovered=False)
    context = None if parent_sampled is None else parent(parent_sampled, remote=remote)
    theirs = users.should_sample(context, 1, "span", kind, attributes).decision  # type: ignore[arg-type]
    expected = theirs
    dropped_client = theirs is Decision.DROP and kind is SpanKind.CLIENT
    if dropped_client and sampler._belongs_to_a_dependency(attributes):
        expected = Decision.RECORD_ONLY
    ours = sampler.should_sample(context, 1, "span", kind, attributes).decision  # type: ignore[arg-type]
    assert ours is expected


def test_a_parent_based_whose_delegates_cannot_be_read_is_wrapped_whole() -> None:
    """A ParentBased missing a delegate attribute, or holding one that is not a Sampler,
    is not taken apart: the wrapper asks it whole and keeps its drops, as around any other
    sampler."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    missing = ParentBased(TraceIdRatioBased(0))
    del missing._root  # type: ignore[attr-defined]
    missing.should_sample = ALWAYS_OFF.should_sample  # type: ignore[method-assign]
    odd = ParentBased(TraceIdRatioBased(0))
    odd._local_parent_sampled = object()  # type: ignore[assignment]
    for users in (missing, odd):
        sampler = ResilienceSampler(users, make_registry(), include_discovered=False)
        assert type(sampler) is ResilienceSampler
        assert decide(sampler, SpanKind.CLIENT, {"db.system": "redis"}) is Decision.RECORD_ONLY
        assert decide(sampler, SpanKind.CLIENT, {"db.system": "mysql"}) is Decision.DROP
        assert decide(sampler, SpanKind.SERVER, {"db.system": "redis"}) is Decision.DROP
