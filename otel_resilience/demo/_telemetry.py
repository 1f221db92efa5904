"""Telemetry for the example chat service: Prometheus ``/metrics`` and OTLP export.

The OTLP exporters are wrapped in ``ResilientSpanExporter`` / ``ResilientMetricExporter``
(DESIGN.md 3) when this version of otel_resilience has them, so a collector that is down
or black-holed costs the service nothing; without them the plain exporters run with a
short timeout in the SDK's background threads.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = ["Telemetry", "build_telemetry", "prometheus_text"]

_log = logging.getLogger("otel_resilience.demo")

# One meter provider per process: prometheus_client's registry is global and a metric
# reader belongs to one provider for life. Later calls reuse it.
_shared: Telemetry | None = None


@dataclass
class Telemetry:
    """What ``build_telemetry`` set up, and how to take it down again."""

    meter_provider: MeterProvider
    resilient_exporters: bool
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


def _resilient(kind: str) -> Any:
    import otel_resilience

    return getattr(otel_resilience, kind, None)


def build_telemetry(otlp_endpoint: str | None = None, *, timeout_seconds: float = 1.0) -> Telemetry:
    """A meter provider with the Prometheus reader (and OTLP export when an endpoint is given).

    Spans go to OTLP through a batch processor on the global SDK tracer provider. Made once
    per process: a later call returns the first one's setup.
    """
    global _shared  # noqa: PLW0603 - one meter provider per process, made on first use
    if _shared is not None:
        if otlp_endpoint is not None and not _shared.span_processors:
            _log.warning("telemetry was set up earlier without OTLP; %s is ignored", otlp_endpoint)
        return _shared
    readers: list[MetricReader] = []
    prometheus = _prometheus()
    span_processors: list[BatchSpanProcessor] = []
    resilient = False
    if otlp_endpoint is not None:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            _log.warning("OTLP exporters are not installed; telemetry stays in-process")
        else:
            span_exporter: Any = OTLPSpanExporter(
                endpoint=otlp_endpoint, insecure=True, timeout=timeout_seconds
            )
            metric_exporter: Any = OTLPMetricExporter(
                endpoint=otlp_endpoint, insecure=True, timeout=timeout_seconds
            )
            span_wrapper = _resilient("ResilientSpanExporter")
            metric_wrapper = _resilient("ResilientMetricExporter")
            if span_wrapper is not None and metric_wrapper is not None:
                resilient = True
                span_exporter = span_wrapper(span_exporter, export_timeout_seconds=timeout_seconds)
                metric_exporter = metric_wrapper(
                    metric_exporter, export_timeout_seconds=timeout_seconds
                )
            readers.append(
                PeriodicExportingMetricReader(
                    metric_exporter,
                    export_interval_millis=2000,
                    export_timeout_millis=timeout_seconds * 1000,
                )
            )
            provider = trace.get_tracer_provider()
            if isinstance(provider, TracerProvider):
                processor = BatchSpanProcessor(
                    span_exporter, schedule_delay_millis=500, export_timeout_millis=1000
                )
                provider.add_span_processor(processor)
                span_processors.append(processor)
    if prometheus is not None:
        readers.insert(0, prometheus)
    _shared = Telemetry(MeterProvider(metric_readers=readers), resilient, span_processors)
    return _shared
