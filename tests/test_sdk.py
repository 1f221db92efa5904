"""``_sdk.py``: each private OpenTelemetry attribute read in one place, with a harmless
answer when an object (another SDK version, a hand-made or third-party object) lacks it."""

from __future__ import annotations

from typing import ClassVar

import pytest
from opentelemetry.sdk import _configuration
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from otel_resilience import BreakerSpanProcessor, Registry, State
from otel_resilience._sdk import (
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
