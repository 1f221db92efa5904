"""Auto-instrumentation: ``opentelemetry-instrument`` wires otel_resilience with no code.

Entry points, each named ``otel_resilience`` (see pyproject.toml and
docs/auto-instrumentation.md):

- ``opentelemetry_distro``: ``ResilienceDistro`` sets the same exporter defaults as
  ``opentelemetry-distro`` (OTLP for traces, metrics and logs);
- ``opentelemetry_configurator``: ``ResilienceConfigurator`` runs the SDK's own
  configurator with the breaker span processor and the sampler wrapper added, every
  exporter it creates passed through ``wrap_exporters``, and the metrics installed;
- ``opentelemetry_pre_instrument``: ``pre_instrument`` wires the providers that another
  configurator set up, when ours was not the one chosen;
- ``opentelemetry_post_instrument``: ``post_instrument`` installs the client guards
  after the OTel instrumentations (``opentelemetry-instrument`` has switched on every
  installed one, as usual); each guard goes in under the instrumentation's wrapper
  (``instrumentation/_install.py``), so the instrumentation's span is current while
  the guard runs.

The config comes from ``$OTEL_RESILIENCE_CONFIG`` (defaults when unset).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, Literal

from opentelemetry import metrics as metrics_api
from opentelemetry.environment_variables import (
    OTEL_LOGS_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_TRACES_EXPORTER,
)
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_PROTOCOL
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from . import _configure
from ._processor import BreakerSpanProcessor
from ._redact import describe_error
from ._registry import Registry
from ._sampler import ResilienceSampler
from ._sdk import sampler_from_environment

__all__ = [
    "ResilienceConfigurator",
    "ResilienceDistro",
    "post_instrument",
    "pre_instrument",
    "wrap_exporters",
]

_log = logging.getLogger(__name__)

Signal = Literal["span", "metric", "log"]


class ResilienceDistro(BaseDistro):  # type: ignore[misc]
    """The distro: OTLP exporters by default, as ``opentelemetry-distro`` sets them."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_LOGS_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, "grpc")


def wrap_exporters(exporters: list[Any], signal: Signal, registry: Registry) -> list[Any]:
    """Every exporter the configurator creates passes through here.

    Each is wrapped in a resilient exporter (``otel_resilience._exporter``) so a dead
    backend costs a bounded time and a quiet drop.
    """
    from . import _exporter

    wrap: Callable[..., Any] = functools.partial(_exporter.wrap_exporter, signal)
    wrapped = []
    for exporter in exporters:
        try:
            wrapped.append(wrap(exporter, registry=registry))
        except Exception:
            _log.warning("could not wrap %r", exporter, exc_info=True)
            wrapped.append(exporter)
    return wrapped


def _wrap_metric_readers(registry: Registry) -> None:
    """Pass the exporters of the global meter provider's periodic readers through
    ``wrap_exporters``: the SDK's configurator builds them with no hook to intervene."""
    from ._exporter import wrap_provider_exporters

    wrap_provider_exporters(None, metrics_api.get_meter_provider(), registry)


def _base_sampler(given: sampling.Sampler | None) -> sampling.Sampler:
    """The sampler the SDK would use: the given one, else ``OTEL_TRACES_SAMPLER`` (entry
    points included), else the SDK default."""
    if given is not None:
        return given
    sampler: sampling.Sampler = sampler_from_environment()
    return sampler


class ResilienceConfigurator(_OTelSDKConfigurator):
    """The SDK's configurator with the breaker processor, sampler wrapper and metrics."""

    def _configure(self, **kwargs: Any) -> None:
        # An invalid config is logged once and replaced by the defaults (no dependency
        # protected); anything else that goes wrong here leaves OpenTelemetry as the SDK's
        # configurator alone would set it up. Either way the application starts and traces.
        try:
            registry = _configure.registry_from_environment()
            processor = BreakerSpanProcessor(registry)
            ours = self._our_arguments(dict(kwargs), registry, processor)
        except Exception as exc:
            _log.error(
                "the breakers are not wired (%s); OpenTelemetry starts without them",
                describe_error(exc),
            )
            super()._configure(**kwargs)  # type: ignore[no-untyped-call]
            return
        super()._configure(**ours)  # type: ignore[no-untyped-call]
        try:
            _wrap_metric_readers(registry)
            # The SDK's configurator has set the global providers: take them over.
            _configure.adopt(registry, processor)
        except Exception as exc:
            _log.error("the breakers are only partly wired (%s)", describe_error(exc))

    @staticmethod
    def _our_arguments(
        kwargs: dict[str, Any], registry: Registry, processor: BreakerSpanProcessor
    ) -> dict[str, Any]:
        """The SDK configurator's arguments with the processor, sampler and wrappers added."""
        kwargs["span_processors"] = [*(kwargs.get("span_processors") or ()), processor]
        kwargs["sampler"] = ResilienceSampler(_base_sampler(kwargs.get("sampler")), registry)
        export_span = kwargs.get("export_span_processor") or BatchSpanProcessor
        export_log = kwargs.get("export_log_record_processor") or BatchLogRecordProcessor

        def export_span_processor(exporter: SpanExporter) -> Any:
            return export_span(wrap_exporters([exporter], "span", registry)[0])

        def export_log_record_processor(exporter: LogRecordExporter) -> Any:
            return export_log(wrap_exporters([exporter], "log", registry)[0])

        kwargs["export_span_processor"] = export_span_processor
        kwargs["export_log_record_processor"] = export_log_record_processor
        return kwargs


def pre_instrument(**kwargs: Any) -> None:
    """Before the OTel instrumentations: wire the providers if our configurator did not."""
    try:
        _configure.ensure_configured_for_auto_instrumentation()
    except Exception:
        _log.warning("could not wire the breakers", exc_info=True)


def post_instrument(**kwargs: Any) -> None:
    """After the OTel instrumentations: install the client guards (under them)."""
    try:
        _configure.install_guards_for_auto_instrumentation()
    except Exception:
        _log.warning("could not install the client guards", exc_info=True)
    try:
        from ._reload import install_reload_triggers

        # SIGHUP and $OTEL_RESILIENCE_RELOAD_SECONDS reload the file into the live registry.
        install_reload_triggers(_configure.get_registry)
    except Exception:
        _log.warning("could not install config reloading", exc_info=True)
