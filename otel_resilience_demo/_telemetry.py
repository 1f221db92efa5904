"""Telemetry for the example chat service: Prometheus ``/metrics`` and OTLP export.

The OTLP exporters are wrapped in ``ResilientSpanExporter`` / ``ResilientMetricExporter``
on the registry's ``telemetry`` breaker, so a collector that is down or
black-holed costs the service nothing.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_resilience import Registry, ResilientSpanExporter

__all__ = ["Telemetry", "build_telemetry", "export_spans", "prometheus_text"]

_log = logging.getLogger(__name__)

# One meter provider per process: prometheus_client's registry is global and a metric
# reader belongs to one provider for life. Later calls reuse it.
_shared: Telemetry | None = None


@dataclass
class Telemetry:
    """What ``build_telemetry`` set up, and how to take it down again."""

    meter_provider: MeterProvider
    otlp_endpoint: str | None
    span_processors: list[BatchSpanProcessor] = field(default_factory=list)

    def flush(self) -> None:
        """Push out the spans batched so far (bounded by the exporters' own timeouts)."""
        for processor in self.span_processors:
            with contextlib.suppress(Exception):
                processor.force_flush(2000)


def _prometheus() -> MetricReader | None:
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
    except ImportError:
        return None
    return PrometheusMetricReader()


def prometheus_text() -> tuple[bytes, str] | None:
    """The Prometheus exposition of this process's metrics, and its content type."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    except ImportError:
        return None
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def build_telemetry(otlp_endpoint: str | None = None, *, timeout_seconds: float = 1.0) -> Telemetry:
    """A meter provider with the Prometheus reader (and OTLP export when an endpoint is given).

    Made once per process: a later call returns the first one's setup. ``configure()``
    wraps the OTLP metric exporter in ``ResilientMetricExporter``; ``export_spans`` adds
    the span export once the registry exists.
    """
    global _shared  # noqa: PLW0603 - one meter provider per process, made on first use
    if _shared is not None:
        if otlp_endpoint is not None and _shared.otlp_endpoint is None:
            _log.warning("telemetry was set up earlier without OTLP; %s is ignored", otlp_endpoint)
        return _shared
    readers: list[MetricReader] = []
    prometheus = _prometheus()
    if prometheus is not None:
        readers.append(prometheus)
    if otlp_endpoint is not None:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
        except ImportError:
            _log.warning("the OTLP exporters are not installed; telemetry stays in-process")
            otlp_endpoint = None
        else:
            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(
                        endpoint=otlp_endpoint, insecure=True, timeout=timeout_seconds
                    ),
                    export_interval_millis=2000,
                    export_timeout_millis=timeout_seconds * 1000,
                )
            )
    _shared = Telemetry(MeterProvider(metric_readers=readers), otlp_endpoint)
    return _shared


def export_spans(telemetry: Telemetry, registry: Registry) -> None:
    """Send spans to the OTLP endpoint through ``ResilientSpanExporter`` (the registry's
    ``telemetry`` breaker), on the global SDK tracer provider. Once per process."""
    if telemetry.otlp_endpoint is None or telemetry.span_processors:
        return
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    timeout = registry.telemetry.export_timeout_seconds
    exporter = ResilientSpanExporter(
        OTLPSpanExporter(endpoint=telemetry.otlp_endpoint, insecure=True, timeout=timeout),
        export_timeout_seconds=timeout,
        registry=registry,
    )
    processor = BatchSpanProcessor(exporter, schedule_delay_millis=500)
    provider.add_span_processor(processor)
    telemetry.span_processors.append(processor)
