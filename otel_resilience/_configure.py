"""``configure()``: the one call that wires otel_resilience into an OpenTelemetry setup."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

from ._config import load_config
from ._exporter import wrap_provider_exporters
from ._metrics import ResilienceMetrics, install_metrics
from ._processor import BreakerSpanProcessor
from ._registry import Registry
from ._sampler import ResilienceSampler

__all__ = ["configure", "get_registry"]

_log = logging.getLogger("otel_resilience")

# Client libraries whose OTel instrumentation configure() switches on when it is installed.
_INSTRUMENTORS = (
    ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
    ("opentelemetry.instrumentation.asyncpg", "AsyncPGInstrumentor"),
    ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
)


class _Wiring:
    """What the last configure() call set up, so the next one replaces it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.registry: Registry | None = None
        # One processor per tracer provider, repointed at each new registry: the SDK has
        # no way to remove a span processor, so configure() twice must not add a second.
        self.processors: dict[int, tuple[SDKTracerProvider, BreakerSpanProcessor]] = {}
        self.metrics: ResilienceMetrics | None = None
        self.uninstall_guards: Callable[[], None] | None = None
        self.instrumentors: list[Any] = []


_wiring = _Wiring()


def get_registry() -> Registry:
    """The registry that ``configure()`` (or auto-instrumentation) made.

    Before any configure() call, one is made from ``$OTEL_RESILIENCE_CONFIG`` (or the
    defaults) without touching OpenTelemetry, so the guarded-call API works on its own.
    """
    with _wiring.lock:
        if _wiring.registry is None:
            _wiring.registry = load_config(None)
        return _wiring.registry


def _sdk_tracer_provider(tracer_provider: Any) -> SDKTracerProvider | None:
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if isinstance(provider, SDKTracerProvider):
        return provider
    if tracer_provider is None and isinstance(provider, trace.ProxyTracerProvider):
        # No SDK provider is set globally yet: set one, so spans exist to drive breakers.
        created = SDKTracerProvider()
        trace.set_tracer_provider(created)
        resolved = trace.get_tracer_provider()
        return resolved if isinstance(resolved, SDKTracerProvider) else None
    _log.warning(
        "otel_resilience: tracer provider %r is not the OpenTelemetry SDK's; breakers will "
        "only see calls made through guards, not spans",
        provider,
    )
    return None


def _wire_tracing(registry: Registry, provider: SDKTracerProvider) -> None:
    known = _wiring.processors.get(id(provider))
    if known is not None and known[0] is provider:
        known[1].registry = registry
        known[1].enabled = True
    else:
        processor = BreakerSpanProcessor(registry)
        provider.add_span_processor(processor)
        _wiring.processors[id(provider)] = (provider, processor)
    sampler = provider.sampler
    if isinstance(sampler, ResilienceSampler):
        sampler.registry = registry
    else:
        # Tracers created from now on use it; create tracers (instrument) after configure().
        provider.sampler = ResilienceSampler(sampler, registry)


def _instrument_clients(provider: SDKTracerProvider | None) -> None:
    import importlib

    for module_name, class_name in _INSTRUMENTORS:
        try:
            module = importlib.import_module(module_name)
            instrumentor = getattr(module, class_name)()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=provider)
                _wiring.instrumentors.append(instrumentor)
        except ImportError:
            continue
        except Exception:
            _log.warning("otel_resilience: could not enable %s", class_name, exc_info=True)


def _install_guards(registry: Registry) -> Callable[[], None] | None:
    try:
        from .instrumentation import install
    except ImportError:
        _log.debug("otel_resilience: client guards are not available")
        return None
    uninstall: Callable[[], None] = install(registry)
    return uninstall


def configure(
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    tracer_provider: Any = None,
    meter_provider: MeterProvider | None = None,
    instrument: bool = True,
) -> Registry:
    """Wire otel_resilience into the OpenTelemetry setup and return the registry.

    ``config`` is a path (YAML, TOML, JSON), a dict, or None (then
    ``$OTEL_RESILIENCE_CONFIG``, else the defaults). Adds the span processor and the
    sampler wrapper to the SDK tracer provider (the global one by default; one is created
    and set globally if none is), reports the metrics on the meter provider (the global
    one by default), and with ``instrument`` switches on the redis, asyncpg and httpx
    instrumentations and client guards where those libraries are installed. Calling it
    again replaces the earlier wiring instead of stacking a second copy.
    """
    registry = load_config(config)
    with _wiring.lock:
        if _wiring.uninstall_guards is not None:
            _wiring.uninstall_guards()
            _wiring.uninstall_guards = None
        provider = _sdk_tracer_provider(tracer_provider)
        if provider is not None:
            _wire_tracing(registry, provider)
        wrap_provider_exporters(
            provider,
            meter_provider if meter_provider is not None else metrics.get_meter_provider(),
            registry,
        )
        if _wiring.metrics is not None:
            _wiring.metrics.detach()
        _wiring.metrics = install_metrics(registry, meter_provider)
        if instrument:
            _instrument_clients(provider)
            _wiring.uninstall_guards = _install_guards(registry)
        _wiring.registry = registry
    return registry


def adopt(registry: Registry, processor: BreakerSpanProcessor) -> None:
    """Record wiring made by the auto-instrumentation configurator as configure()'s own."""
    from opentelemetry import trace as trace_api

    with _wiring.lock:
        _wiring.registry = registry
        provider = trace_api.get_tracer_provider()
        if isinstance(provider, SDKTracerProvider):
            _wiring.processors[id(provider)] = (provider, processor)
        _wiring.metrics = install_metrics(registry)


def install_guards_for_auto_instrumentation() -> None:
    """Install the client guards for the auto-instrumented registry (post-instrument hook)."""
    with _wiring.lock:
        registry = get_registry()
        if _wiring.uninstall_guards is None:
            _wiring.uninstall_guards = _install_guards(registry)


def reset_for_tests() -> None:
    """Undo configure(): detach metrics, uninstall guards, forget the registry (tests only)."""
    with _wiring.lock:
        if _wiring.uninstall_guards is not None:
            _wiring.uninstall_guards()
            _wiring.uninstall_guards = None
        if _wiring.metrics is not None:
            _wiring.metrics.detach()
            _wiring.metrics = None
        for instrumentor in _wiring.instrumentors:
            instrumentor.uninstrument()
        _wiring.instrumentors.clear()
        # Processors stay attached to their providers (the SDK cannot remove them), off,
        # and are switched on again by the next configure() on the same provider.
        for _, processor in _wiring.processors.values():
            processor.enabled = False
        _wiring.registry = None
