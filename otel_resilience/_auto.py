"""Auto-instrumentation: ``opentelemetry-instrument`` wires otel_resilience with no code.

Three entry points, each named ``otel_resilience`` (see pyproject.toml):

- ``opentelemetry_distro``: ``ResilienceDistro`` sets the same exporter defaults as
  ``opentelemetry-distro`` (OTLP for traces, metrics and logs);
- ``opentelemetry_configurator``: ``ResilienceConfigurator`` runs the SDK's own
  configurator with the breaker span processor and the sampler wrapper added, and the
  span and log exporters chosen by ``OTEL_*_EXPORTER`` passed through ``wrap_exporter``;
- ``opentelemetry_post_instrument``: ``post_instrument`` installs the client guards
  after the OTel instrumentations, so a guard wraps the instrumented call.

The config comes from ``$OTEL_RESILIENCE_CONFIG`` (defaults when unset).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import metrics
from opentelemetry.environment_variables import (
    OTEL_LOGS_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_TRACES_EXPORTER,
)
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_PROTOCOL
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from . import _configure
from ._config import load_config
from ._exporter import (
    wrap_log_exporter,
    wrap_metric_exporter,
    wrap_provider_exporters,
    wrap_span_exporter,
)
from ._processor import BreakerSpanProcessor
from ._registry import Registry
from ._sampler import ResilienceSampler

__all__ = ["ResilienceConfigurator", "ResilienceDistro", "post_instrument", "wrap_exporter"]

_log = logging.getLogger("otel_resilience")


class ResilienceDistro(BaseDistro):  # type: ignore[misc]
    """The distro: OTLP exporters by default, as ``opentelemetry-distro`` sets them."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_LOGS_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, "grpc")


def wrap_exporter(exporter: Any, registry: Registry, signal: str) -> Any:
    """``exporter`` made resilient (``signal``: span, metric or log)."""
    if signal == "span":
        return wrap_span_exporter(exporter, registry)
    if signal == "metric":
        return wrap_metric_exporter(exporter, registry)
    return wrap_log_exporter(exporter, registry)


class ResilienceConfigurator(_OTelSDKConfigurator):
    """The SDK's configurator with the breaker processor, sampler wrapper and metrics."""

    def _configure(self, **kwargs: Any) -> None:
        registry = load_config(None)
        processor = BreakerSpanProcessor(registry)
        kwargs.setdefault("span_processors", [])
        kwargs["span_processors"] = [*kwargs["span_processors"], processor]
        if kwargs.get("sampler") is None:
            kwargs["sampler"] = ResilienceSampler(sampling._get_from_env_or_default(), registry)
        if kwargs.get("export_span_processor") is None:

            def export_span_processor(exporter: SpanExporter) -> BatchSpanProcessor:
                return BatchSpanProcessor(wrap_exporter(exporter, registry, "span"))

            kwargs["export_span_processor"] = export_span_processor
        if kwargs.get("export_log_record_processor") is None:

            def export_log_record_processor(exporter: Any) -> Any:
                from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

                return BatchLogRecordProcessor(wrap_exporter(exporter, registry, "log"))

            kwargs["export_log_record_processor"] = export_log_record_processor
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]
        # The SDK's configurator has set the global providers: take them over, and wrap
        # the metric exporters (the SDK offers no hook for those).
        _configure.adopt(registry, processor)
        wrap_provider_exporters(None, metrics.get_meter_provider(), registry)


def post_instrument(**kwargs: Any) -> None:
    """After the OTel instrumentations: install the client guards around them."""
    try:
        _configure.install_guards_for_auto_instrumentation()
    except Exception:
        _log.warning("otel_resilience: could not install the client guards", exc_info=True)
