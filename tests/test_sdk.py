"""``_sdk.py``: each private OpenTelemetry attribute read in one place, with a harmless
answer when an object (another SDK version, a hand-made or third-party object) lacks it."""

from __future__ import annotations

from typing import ClassVar

import pytest
from opentelemetry.sdk import _configuration
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import (
    ConcurrentMultiSpanProcessor,
    ReadableSpan,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from otel_resilience import BreakerSpanProcessor, Registry, State, configure
from otel_resilience._configure import reset_for_tests
from otel_resilience._processor import idle_hook
from otel_resilience._sdk import (
    call_busy_hooks_only,
    renew_exporter_connections,
    sampler_from_environment,
    set_batch_exporter,
    set_reader_exporter,
    span_fields,
    span_processors,
    status_code,
    tracer_registry,
)


def test_a_provider_of_another_kind_has_no_tracers_or_processors_to_reach() -> None:
    """A tracer provider that is not the SDK's answers "nothing known", not an error;
    the SDK's own gives its tracers and processors."""
    assert tracer_registry(object()) is None
    assert span_processors(object()) == ()
    provider = TracerProvider()
    processor = SimpleSpanProcessor(InMemorySpanExporter())
    provider.add_span_processor(processor)
    provider.get_tracer("t")
    found = tracer_registry(provider)
    assert found is not None
    assert len(found[0]) == 1
    assert span_processors(provider) == (processor,)


def test_exporters_are_replaced_only_where_the_sdk_keeps_them() -> None:
    """A simple span processor and an in-memory reader have no exporter slot to replace:
    nothing is changed and the answer is False."""
    processor = SimpleSpanProcessor(InMemorySpanExporter())
    assert set_batch_exporter(processor, InMemorySpanExporter()) is False
    assert not hasattr(processor, "_batch_processor")
    reader = InMemoryMetricReader()
    assert set_reader_exporter(reader, object()) is False
    assert not hasattr(reader, "_exporter")


class DuckSpan:
    """A span-like object with only the public ReadableSpan properties."""

    kind = SpanKind.CLIENT
    attributes: ClassVar[dict[str, str]] = {"db.system": "redis"}
    status = Status(StatusCode.ERROR)
    instrumentation_scope = InstrumentationScope("duck")
    context = SpanContext(1, 2, is_remote=False)

    def get_span_context(self) -> SpanContext:
        return self.context


class DuckStatus:
    status_code = StatusCode.ERROR


def test_only_otlp_exporters_get_connections_of_their_own() -> None:
    """A forked child's renewal: the OTLP gRPC exporter gets a new channel that does not
    share the process-wide subchannel pool (asked for once however often it is renewed),
    the OTLP/HTTP exporter's session drops its pooled connections and stays usable; an
    exporter without connections is left as it is."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    http = HTTPSpanExporter(endpoint="http://127.0.0.1:4318/v1/traces")
    assert renew_exporter_connections(http) is True
    http.shutdown()

    other = InMemorySpanExporter()
    assert renew_exporter_connections(other) is False
    assert renew_exporter_connections(object()) is False
    exporter = OTLPSpanExporter(endpoint="127.0.0.1:4317", insecure=True)
    try:
        for _ in range(2):
            inherited = exporter._channel
            assert renew_exporter_connections(exporter) is True
            assert exporter._channel is not inherited
            pools = [
                o for o in exporter._channel_options if o[0] == "grpc.use_local_subchannel_pool"
            ]
            assert pools == [("grpc.use_local_subchannel_pool", 1)]
    finally:
        exporter.shutdown()


def test_span_fields_fall_back_to_the_public_properties() -> None:
    """An object without the SDK span's private fields is read through its public
    properties; a status without ``_status_code`` through ``status_code``."""
    assert span_fields(DuckSpan()) == (
        SpanKind.CLIENT,
        {"db.system": "redis"},
        DuckSpan.status,
        DuckSpan.instrumentation_scope,
        DuckSpan.context,
    )
    assert status_code(DuckStatus()) is StatusCode.ERROR
    assert status_code(object()) is None


def test_hand_made_readable_span_with_plain_attributes_feeds_the_breaker() -> None:
    """A ReadableSpan built by hand (attributes a plain dict, not the SDK's bounded
    attributes) is classified and recorded like one the SDK made."""
    registry = Registry.from_config(
        {
            "dependencies": {
                "cache": {"match": {"db.system": "redis"}, "breaker": {"consecutive_failures": 2}}
            }
        }
    )
    processor = BreakerSpanProcessor(registry)
    for _ in range(2):
        processor.on_end(
            ReadableSpan(
                name="GET",
                kind=SpanKind.CLIENT,
                attributes={"db.system": "redis"},
                status=Status(StatusCode.ERROR),
                start_time=1,
                end_time=2,
            )
        )
    assert registry.breaker("cache").state is State.OPEN
    assert span_fields(ReadableSpan(name="x", kind=SpanKind.CLIENT))[1] is None


def test_sampler_from_environment_follows_otel_traces_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_TRACES_SAMPLER picks the sampler, as the SDK's configurator does; an SDK
    without the configurator's sampler helpers gives the documented default."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    assert sampler_from_environment().get_description() == "AlwaysOffSampler"
    monkeypatch.delattr(_configuration, "_import_sampler")
    fallback = sampler_from_environment()
    assert isinstance(fallback, ParentBased)
    assert fallback.get_description().startswith("ParentBased{root:AlwaysOnSampler")


class Hooks(SimpleSpanProcessor):
    """Notes every hook the SDK calls on it, by ``label``."""

    def __init__(self, label: str, calls: list[str]) -> None:
        super().__init__(InMemorySpanExporter())
        self.label = label
        self.calls = calls

    def on_start(self, span: object, parent_context: object = None) -> None:
        self.calls.append(f"{self.label}.on_start")

    def _on_ending(self, span: object) -> None:
        self.calls.append(f"{self.label}._on_ending")

    def on_end(self, span: ReadableSpan) -> None:
        self.calls.append(f"{self.label}.on_end")


class StartingBreakerProcessor(BreakerSpanProcessor):
    """A breaker processor of the user's with an ``on_start`` of its own."""

    starts = 0

    def on_start(self, span: object, parent_context: object = None) -> None:
        StartingBreakerProcessor.starts += 1


def configure_cache(provider: TracerProvider, request: pytest.FixtureRequest) -> Registry:
    """configure() on ``provider`` with one dependency of redis spans, undone after the
    test."""
    registry = configure(
        {"dependencies": {"cache": {"match": {"db.system": "redis"}}}},
        tracer_provider=provider,
        meter_provider=MeterProvider(),
        instrument=False,
    )
    request.addfinalizer(reset_for_tests)
    return registry


def test_the_breaker_processor_gets_no_idle_hook_calls_and_every_other_processor_does(
    request: pytest.FixtureRequest,
) -> None:
    """configure() has the SDK skip the breaker processor's empty on_start and _on_ending;
    processors added before and after it get every hook, in order, and the breaker still
    counts each span (on_end). A subclass with its own on_start gets it called."""
    calls: list[str] = []
    provider = TracerProvider()
    provider.add_span_processor(Hooks("before", calls))
    registry = configure_cache(provider, request)
    provider.add_span_processor(Hooks("after", calls))
    tracer = provider.get_tracer("opentelemetry.instrumentation.redis")
    for _ in range(2):
        tracer.start_span("GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}).end()
    hooks = ["on_start", "_on_ending", "on_end"]
    assert calls == 2 * [f"{label}.{hook}" for hook in hooks for label in ("before", "after")]
    assert registry.breaker("cache").snapshot().total_successes == 2
    # A processor added later that starts spans itself is called too.
    provider.add_span_processor(StartingBreakerProcessor(registry))
    tracer.start_span("GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}).end()
    assert StartingBreakerProcessor.starts == 1
    provider.shutdown()


class EmptyHooks(SimpleSpanProcessor):
    """Hooks whose bodies are empty (a docstring, ``pass``, ``return None``) and an
    ``on_end`` that notes the span."""

    ends = 0

    def on_start(self, span: object, parent_context: object = None) -> None:
        """Nothing."""

    def _on_ending(self, span: object) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        EmptyHooks.ends += 1


def test_empty_hooks_of_any_processor_are_skipped_and_others_are_called(
    request: pytest.FixtureRequest,
) -> None:
    """The SDK's batch and simple processors' on_start and _on_ending are empty: configure()
    has the SDK skip them, as any processor's empty hook; a hook with a body, an instance's
    own hook or a wrapped one (wrapt) is called, and every on_end is."""
    import wrapt

    assert idle_hook(SimpleSpanProcessor(InMemorySpanExporter()), "on_start") is True
    assert idle_hook(SimpleSpanProcessor(InMemorySpanExporter()), "_on_ending") is True
    assert idle_hook(Hooks("x", []), "on_start") is False
    empty = EmptyHooks(InMemorySpanExporter())
    assert idle_hook(empty, "on_start") is True
    assert idle_hook(empty, "_on_ending") is True
    own = EmptyHooks(InMemorySpanExporter())
    own.on_start = lambda span, parent_context=None: None  # type: ignore[method-assign]
    assert idle_hook(own, "on_start") is False

    starts: list[object] = []

    class Wrapped(EmptyHooks):
        pass

    def noting(wrapped: object, instance: object, args: object, kwargs: object) -> None:
        starts.append(args)

    Wrapped.on_start = wrapt.FunctionWrapper(EmptyHooks.on_start, noting)  # type: ignore[method-assign]
    wrapped = Wrapped(InMemorySpanExporter())
    assert idle_hook(wrapped, "on_start") is False

    provider = TracerProvider()
    provider.add_span_processor(empty)
    provider.add_span_processor(wrapped)
    configure({}, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False)
    request.addfinalizer(reset_for_tests)
    EmptyHooks.ends = 0
    provider.get_tracer("t").start_span("s").end()
    assert len(starts) == 1  # the wrapped hook ran
    assert EmptyHooks.ends == 2  # both processors' on_end
    provider.shutdown()


def test_hooks_are_left_to_the_sdk_where_its_processor_is_not_the_synchronous_one() -> None:
    """The concurrent multi-processor, or hooks someone else installed, are not touched:
    every processor's hooks run as the SDK runs them."""
    concurrent = TracerProvider(active_span_processor=ConcurrentMultiSpanProcessor(2))
    assert call_busy_hooks_only(concurrent, idle_hook) is False
    assert "on_start" not in vars(concurrent._active_span_processor)
    assert call_busy_hooks_only(object(), idle_hook) is False
    calls: list[str] = []
    provider = TracerProvider()
    provider.add_span_processor(Hooks("sdk", calls))
    active = provider._active_span_processor
    theirs = active.on_start
    active.on_start = theirs  # type: ignore[method-assign]  # someone else's hook
    assert call_busy_hooks_only(provider, idle_hook) is False
    assert vars(active)["on_start"] is theirs
    assert "_on_ending" not in vars(active)
    provider.shutdown()
    concurrent.shutdown()


def test_hook_filtering_is_installed_once_and_follows_a_replaced_processor_list() -> None:
    """A second call keeps the first hooks; processors set as a list (not the SDK's
    tuple) still get every hook."""
    calls: list[str] = []
    registry = Registry()
    provider = TracerProvider()
    ours = BreakerSpanProcessor(registry)
    provider.add_span_processor(ours)
    assert call_busy_hooks_only(provider, idle_hook) is True
    active = provider._active_span_processor
    first = type(active)
    assert first is not SynchronousMultiSpanProcessor
    assert isinstance(active, SynchronousMultiSpanProcessor)
    assert not any(hook in vars(active) for hook in ("on_start", "_on_ending", "on_end"))
    assert call_busy_hooks_only(provider, idle_hook) is True
    assert type(active) is first
    active._span_processors = [ours, Hooks("listed", calls)]  # type: ignore[assignment]
    provider.get_tracer("t").start_span("s").end()
    assert calls == ["listed.on_start", "listed._on_ending", "listed.on_end"]
    provider.shutdown()


def test_generated_hooks_follow_processors_changed_after_wiring(
    request: pytest.FixtureRequest,
) -> None:
    """The multi-processor's hooks are generated for the processors it holds, one call each,
    and read each processor's ``on_end`` at every span: an ``on_end`` a processor gets on
    the instance later is the one called; the breaker processor's compiled fast path is
    used and, forgotten by a reload, its general path counts the same; a processor added
    later gets every hook from the next span on."""
    calls: list[str] = []
    provider = TracerProvider()
    first = Hooks("first", calls)
    provider.add_span_processor(first)
    registry = configure_cache(provider, request)
    ours = next(sp for sp in provider._active_span_processor._span_processors if sp is not first)
    tracer = provider.get_tracer("opentelemetry.instrumentation.redis")

    def span() -> None:
        tracer.start_span("GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}).end()

    for _ in range(3):
        span()
    assert "on_end" in vars(ours)  # compiled: the instance's own on_end
    assert calls.count("first.on_end") == 3
    first.on_end = lambda span: calls.append("patched.on_end")  # type: ignore[method-assign]
    span()
    assert calls[-1] == "patched.on_end"
    ours._forget_fast_path()  # as a reload does: the general path until it compiles again
    assert "on_end" not in vars(ours)
    span()
    later = Hooks("later", calls)
    provider.add_span_processor(later)
    span()
    assert calls[-6:] == [
        "first.on_start",
        "later.on_start",
        "first._on_ending",
        "later._on_ending",
        "patched.on_end",
        "later.on_end",
    ]
    assert registry.breaker("cache").snapshot().total_successes == 6
    provider.shutdown()


def test_an_on_end_set_on_a_breaker_processor_by_someone_else_is_the_one_called() -> None:
    """A breaker processor whose instance got another ``on_end`` (a subclass's own, or
    one patched in) before its hooks are generated has that ``on_end`` called, as the SDK
    would call it; the processor's own bookkeeping attribute is not used for it."""
    ends: list[object] = []

    class Noting(BreakerSpanProcessor):
        def __init__(self, registry: Registry) -> None:
            super().__init__(registry)
            self.on_end = ends.append  # type: ignore[method-assign]

    provider = TracerProvider()
    provider.add_span_processor(Noting(Registry()))
    assert call_busy_hooks_only(provider, idle_hook) is True
    span = provider.get_tracer("t").start_span("s", kind=SpanKind.CLIENT)
    span.end()
    assert len(ends) == 1
    provider.shutdown()


class SlottedProcessor(SimpleSpanProcessor):
    """A processor without an instance ``__dict__`` of its own (slots all the way down is
    not possible on the SDK's classes, so ``vars`` is made to fail as it would)."""

    ends = 0

    def on_end(self, span: ReadableSpan) -> None:
        SlottedProcessor.ends += 1

    def __getattribute__(self, name: str) -> object:
        if name == "__dict__":
            raise AttributeError(name)
        return super().__getattribute__(name)


def test_hooks_for_a_processor_without_a_dict_and_a_list_of_processors() -> None:
    """A processor whose ``vars()`` fails still has its ``on_end`` called by the generated
    hooks; a multi-processor that holds a list (not the SDK's tuple) before configure() is
    left to the SDK."""
    SlottedProcessor.ends = 0
    provider = TracerProvider()
    provider.add_span_processor(SlottedProcessor(InMemorySpanExporter()))
    assert call_busy_hooks_only(provider, idle_hook) is True
    provider.get_tracer("t").start_span("s").end()
    assert SlottedProcessor.ends == 1
    provider.shutdown()
    listed = TracerProvider()
    calls: list[str] = []
    listed._active_span_processor._span_processors = [Hooks("listed", calls)]  # type: ignore[assignment]
    assert call_busy_hooks_only(listed, idle_hook) is False
    assert type(listed._active_span_processor) is SynchronousMultiSpanProcessor
    listed.get_tracer("t").start_span("s").end()
    assert calls == ["listed.on_start", "listed._on_ending", "listed.on_end"]
    listed.shutdown()
