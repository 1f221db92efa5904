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

from ._errors import ConfigError
from ._exporter import wrap_provider_exporters
from ._metrics import ResilienceMetrics, install_metrics
from ._processor import BreakerSpanProcessor, idle_hook
from ._registry import Registry, load_config
from ._reload import Reloadable, add_reload_step
from ._sampler import ResilienceSampler
from ._sdk import call_busy_hooks_only, span_processors, tracer_registry

__all__ = ["configure", "get_registry"]

_log = logging.getLogger(__name__)


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
        # Switches off the OTel instrumentations configure(instrument_clients=True) switched on.
        self.uninstrument_clients: Callable[[], None] | None = None
        # Whether configure() (or the auto-instrumentation configurator) has run.
        self.configured = False
        self.config_error_logged: str | None = None


_wiring = _Wiring()


def get_registry() -> Registry:
    """The registry that ``configure()`` (or auto-instrumentation) made.

    Before any configure() call, one is made from ``$OTEL_RESILIENCE_CONFIG`` (or the
    defaults) without touching OpenTelemetry, so the guarded-call API works on its own.
    An invalid file does not raise here: see ``registry_from_environment``.
    """
    with _wiring.lock:
        if _wiring.registry is None:
            _wiring.registry = registry_from_environment()
        return _wiring.registry


def registry_from_environment() -> Registry:
    """The registry of ``$OTEL_RESILIENCE_CONFIG``; never raises.

    For the paths where no code of the application can catch an error (auto-instrumentation,
    ``health_app()`` with no registry): an invalid config is logged once, on one line, and
    a registry of the defaults (no declared dependency, so no breaker rejects anything)
    stands in for it, carrying the error for the health document (``config_error_of``).
    """
    try:
        return load_config(None)
    except ConfigError as exc:
        error = exc
    except Exception as exc:  # a bug of ours must not keep the service from starting
        error = ConfigError(f"could not be loaded ({type(exc).__name__})")
    registry = load_config({})
    message = "; ".join(str(error).splitlines())
    with _wiring.lock:
        registry._config_error = message
        logged, _wiring.config_error_logged = _wiring.config_error_logged, message
    if logged != message:
        _log.error(
            "the resilience config is invalid, so no dependency is protected "
            "(OpenTelemetry runs as usual): %s",
            message,
        )
    return registry


def config_error_of(registry: Registry) -> str | None:
    """The error of the invalid config that ``registry`` stands in for, if it does."""
    with _wiring.lock:
        return registry._config_error


def _forget_config_error(live: Reloadable, fresh: Reloadable) -> None:
    """A reload applied a valid config: ``live`` stands in for an invalid one no more, and
    the next invalid file is logged again."""
    with _wiring.lock:
        if isinstance(live, Registry):
            live._config_error = None
        _wiring.config_error_logged = None


add_reload_step(_forget_config_error)


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
        "tracer provider %r is not the OpenTelemetry SDK's; breakers will "
        "only see calls made through guards, not spans",
        provider,
    )
    return None


def _wire_tracing(registry: Registry, provider: SDKTracerProvider) -> None:
    """Point this provider's breaker processor and sampler wrapper at ``registry``.

    The SDK has no way to remove a span processor, so each provider gets one processor,
    added once and repointed by every later configure(); processors left on providers
    that are no longer configured are switched off.
    """
    for known_provider, known_processor in _wiring.processors.values():
        if known_provider is not provider:
            known_processor.enabled = False
    known = _wiring.processors.get(id(provider))
    if known is not None and known[0] is provider:
        processor = known[1]
        processor.registry = registry
        processor.enabled = True
    else:
        processor = BreakerSpanProcessor(registry)
        provider.add_span_processor(processor)
        _wiring.processors[id(provider)] = (provider, processor)
    _counting(provider, processor)
    # The processor does nothing as a span starts or is ending: no call there per span.
    call_busy_hooks_only(provider, idle_hook)
    _wrap_sampler(provider, registry)


def _counting(provider: SDKTracerProvider, processor: BreakerSpanProcessor) -> None:
    """Let leaf guards hand their successes to the spans of ``provider``: ``processor``,
    in its pipeline, counts them while switched on (``_context.SPAN_COUNTERS``)."""
    pipeline = getattr(provider, "_active_span_processor", None)
    if pipeline is not None:
        processor.counts_handed_successes_of(pipeline)


def _wrap_sampler(provider: SDKTracerProvider, registry: Registry) -> None:
    """Wrap the provider's sampler in a ResilienceSampler (or repoint the one there).

    Tracers copy the provider's sampler when they are created; the SDK keeps the tracers
    it made (``_tracers``, SDK 1.40+), so those that still use the old sampler get the
    wrapper too. On an SDK without that registry, tracers created before configure()
    keep the unwrapped sampler.
    """
    sampler = provider.sampler
    if isinstance(sampler, ResilienceSampler):
        sampler.registry = registry
        return
    wrapper = ResilienceSampler(sampler, registry)
    provider.sampler = wrapper
    found = tracer_registry(provider)
    if found is not None:
        tracers, lock = found
        with lock:
            for tracer in tracers.values():
                if getattr(tracer, "sampler", None) is sampler:
                    tracer.sampler = wrapper


def _attached(provider: SDKTracerProvider, processor: BreakerSpanProcessor) -> bool:
    """Whether ``processor`` is among the provider's span processors (SDK internals)."""
    return processor in span_processors(provider)


def _instrument_clients(provider: SDKTracerProvider | None) -> None:
    """Switch on the OTel instrumentation of every installed client (instrument_clients)."""
    from .instrumentation import CLIENTS, instrument_clients

    if _wiring.uninstrument_clients is not None:
        _wiring.uninstrument_clients()
    _wiring.uninstrument_clients = instrument_clients(CLIENTS, provider)


def _install_guards(registry: Registry) -> Callable[[], None] | None:
    from .instrumentation import install

    uninstall: Callable[[], None] = install(registry)
    return uninstall


def configure(
    config: Mapping[str, Any] | str | os.PathLike[str] | Registry | None = None,
    *,
    tracer_provider: Any = None,
    meter_provider: MeterProvider | None = None,
    instrument: bool = True,
    instrument_clients: bool = False,
) -> Registry:
    """Wire otel_resilience into the OpenTelemetry setup and return the registry.

    ``config`` is a path (YAML, TOML, JSON), a dict, or None (then
    ``$OTEL_RESILIENCE_CONFIG``, else the defaults). Adds the span processor and the
    sampler wrapper to the SDK tracer provider (the global one by default; one is created
    and set globally if none is), reports the metrics on the meter provider (the global
    one by default), and with ``instrument`` guards the calls of every supported client
    library that is installed (docs/clients.md). It changes nothing the application
    traces: the clients' OpenTelemetry instrumentations are switched on only with
    ``instrument_clients`` (those not instrumented already; the application's own later
    ``instrument(...)`` of one replaces ours). Calling it again replaces the earlier
    wiring instead of stacking a second copy.
    """
    registry = config if isinstance(config, Registry) else load_config(config)
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
        if instrument_clients:
            _instrument_clients(provider)
        if instrument:
            _wiring.uninstall_guards = _install_guards(registry)
        _wiring.registry = registry
        _wiring.configured = True
    return registry


def adopt(registry: Registry, processor: BreakerSpanProcessor) -> None:
    """Take over the wiring made by the auto-instrumentation configurator as configure()'s own.

    The configurator passed ``processor`` to the SDK's own configurator; if that did not
    attach it (``OTEL_CONFIG_FILE`` makes the SDK ignore extra processors), the global
    provider is wired the way configure() does it.
    """
    with _wiring.lock:
        provider = trace.get_tracer_provider()
        if isinstance(provider, SDKTracerProvider):
            if _attached(provider, processor):
                _wiring.processors[id(provider)] = (provider, processor)
                _counting(provider, processor)
                call_busy_hooks_only(provider, idle_hook)
                _wrap_sampler(provider, registry)
            else:
                _wire_tracing(registry, provider)
        if _wiring.metrics is not None:
            _wiring.metrics.detach()
        _wiring.metrics = install_metrics(registry)
        _wiring.registry = registry
        _wiring.configured = True


def ensure_configured_for_auto_instrumentation() -> None:
    """Wire the global providers if no otel_resilience configurator did (pre-instrument hook).

    When another configurator (``opentelemetry-distro``'s) was chosen, the span processor,
    sampler wrapper and metrics are still added to the providers it set up, before the
    instrumentations create their tracers; its exporters are then not made resilient.
    """
    with _wiring.lock:
        if _wiring.configured:
            return
    _log.info(
        "another OpenTelemetry configurator was chosen; adding the breaker "
        "processor and metrics to its providers (set OTEL_PYTHON_CONFIGURATOR=otel_resilience "
        "for resilient exporters too)"
    )
    configure(registry_from_environment(), instrument=False)


def install_guards_for_auto_instrumentation() -> None:
    """Install the client guards for the auto-instrumented registry (post-instrument hook)."""
    with _wiring.lock:
        registry = get_registry()
        if _wiring.uninstall_guards is None:
            _wiring.uninstall_guards = _install_guards(registry)


def reset_for_tests() -> None:
    """Undo configure(): detach metrics, uninstall guards, forget the registry (tests only).

    Processors stay attached to their providers (the SDK cannot remove them), switched
    off, and are switched on again by the next configure() on the same provider.
    """
    with _wiring.lock:
        if _wiring.uninstall_guards is not None:
            _wiring.uninstall_guards()
            _wiring.uninstall_guards = None
        if _wiring.metrics is not None:
            _wiring.metrics.detach()
            _wiring.metrics = None
        if _wiring.uninstrument_clients is not None:
            _wiring.uninstrument_clients()
            _wiring.uninstrument_clients = None
        # Processors stay attached to their providers (the SDK cannot remove them), off,
        # and are switched on again by the next configure() on the same provider.
        for _, processor in _wiring.processors.values():
            processor.enabled = False
        _wiring.registry = None
        _wiring.configured = False
        _wiring.config_error_logged = None
