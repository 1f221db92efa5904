"""Every read or write of a private OpenTelemetry API/SDK attribute, in one place.

The rest of the package calls these small functions instead of touching ``_names`` on
OpenTelemetry objects, so an SDK release that renames one breaks one function here, not
six modules. Each function says which attribute it reads and what happens when that
attribute is missing: the answer is always a harmless default (nothing wrapped, nothing
found, the public property instead), never an exception into the application.

Checked against opentelemetry-api/-sdk 1.43.0 (pyproject's floor) and 1.45.1 (the newest
tested); the attribute names below are the same in both.

Private *modules* still imported elsewhere (their public homes do not exist yet):
``opentelemetry.sdk._configuration._OTelSDKConfigurator`` (the base class of
``_auto.ResilienceConfigurator``) and ``opentelemetry.sdk._logs`` (``_auto.py``,
``_exporter.py``) and ``opentelemetry._logs`` (``_trace_links.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from operator import attrgetter
from typing import Any

from opentelemetry import context as _context
from opentelemetry.trace import SpanKind
from opentelemetry.trace import propagation as _propagation

__all__ = [
    "SPAN_KEY",
    "SUPPRESS_INSTRUMENTATION_KEY",
    "batch_exporter",
    "call_busy_hooks_only",
    "context_span",
    "current_client_span_context",
    "exporter_timeout",
    "get_current_context",
    "kind_and_context",
    "metric_exporter_preferences",
    "metric_readers",
    "readable_fields",
    "reader_exporter",
    "renew_exporter_connections",
    "sampler_from_environment",
    "set_batch_exporter",
    "set_exporter_timeout",
    "set_reader_exporter",
    "span_fields",
    "span_processors",
    "status_code",
    "tracer_registry",
]

# opentelemetry.context._SUPPRESS_INSTRUMENTATION_KEY (1.43, 1.45): the key every
# instrumentation checks to skip making spans. Missing: a key of our own, so suppression
# silently does nothing (our own exports may then be traced), and nothing raises.
SUPPRESS_INSTRUMENTATION_KEY: str = getattr(
    _context,
    "_SUPPRESS_INSTRUMENTATION_KEY",
    _context.create_key("otel_resilience.suppress_instrumentation"),
)

# opentelemetry.trace.propagation._SPAN_KEY (1.43, 1.45): where the current span sits in a
# Context. Missing: a key nothing sets, so context_span() answers None (no span known).
SPAN_KEY: str = getattr(_propagation, "_SPAN_KEY", "otel_resilience.no_span_key")


def context_span(ctx: _context.Context | None = None) -> Any:
    """The span set in ``ctx`` (default: the current context), or None when there is none.

    Unlike ``trace.get_current_span`` this does not answer ``INVALID_SPAN`` for "no span".
    """
    return (ctx if ctx is not None else _context.get_current()).get(SPAN_KEY)


# opentelemetry.context._RUNTIME_CONTEXT._current_context (1.43, 1.45): the ContextVar in
# which the default runtime context (contextvars) keeps the current Context. Missing, or
# another runtime context chosen (OTEL_PYTHON_CONTEXT): opentelemetry.context.get_current.
_CURRENT_CONTEXT = getattr(getattr(_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
_get_current: Callable[[], Any] = (
    _CURRENT_CONTEXT.get if isinstance(_CURRENT_CONTEXT, ContextVar) else _context.get_current
)
get_current_context = _get_current
"""The current OpenTelemetry Context: ``ContextVar.get`` of the runtime context's variable
(one C call), else ``opentelemetry.context.get_current``."""
_CLIENT = SpanKind.CLIENT


kind_and_context: Callable[[Any], tuple[Any, Any]] = attrgetter("_kind", "_context")
"""``(span._kind, span._context)`` of an SDK span in one C call (1.43, 1.45): what its
``kind`` and ``get_span_context()`` answer. Raises ``AttributeError`` for other spans."""


def current_client_span_context() -> Any:
    """The span context of the current span when it is a CLIENT span, else None.

    What ``trace.get_current_span()`` and the span's ``kind`` and ``get_span_context()``
    give, through ``kind_and_context`` for an SDK span, through the public API otherwise.
    """
    span = _get_current().get(SPAN_KEY)
    if span is None:
        return None
    try:
        kind, span_context = kind_and_context(span)
    except AttributeError:
        kind = getattr(span, "kind", None)
        return span.get_span_context() if kind is _CLIENT else None
    return span_context if kind is _CLIENT else None


def tracer_registry(provider: Any) -> tuple[dict[Any, Any], Any] | None:
    """``(provider._tracers, provider._tracers_lock)`` of an SDK TracerProvider.

    The SDK keeps the tracers it made (1.43, 1.45). Missing or of another shape: None, and
    the caller leaves tracers created earlier as they are.
    """
    tracers = getattr(provider, "_tracers", None)
    lock = getattr(provider, "_tracers_lock", None)
    if isinstance(tracers, dict) and lock is not None:
        return tracers, lock
    return None


def span_processors(provider: Any) -> tuple[Any, ...]:
    """``provider._active_span_processor._span_processors`` (1.43, 1.45); () when missing."""
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", ())
    return tuple(processors) if isinstance(processors, (tuple, list)) else ()


# The hooks ``call_busy_hooks_only`` gives a provider's multi-processor, generated for
# the processors it holds: one line per processor, so each call site sees one processor
# and the interpreter specialises it (a loop's one site, seeing two processor types, is
# never specialised: a generic method look-up per processor per span). A processor that
# keeps what its ``on_end`` is now in ``_otel_resilience_on_end`` (the breaker processor:
# its compiled fast path is a function on the instance, which a method look-up never
# specialises) has that attribute read and called. The multi-processor's class sees every
# change of its processors (``_span_processors`` is a property there) and generates the
# hooks again, so they check nothing per span.
_HOOKS = """
def on_start(self, span, parent_context=None):
{on_start}
def on_end(self, span):
{on_end}
def _on_ending(self, span):
{_on_ending}
"""
_HOOK_NAMES = ("on_start", "_on_ending", "on_end")
_HOOKS_MARK = "_otel_resilience_hooks"
_PROCESSORS = "_otel_resilience_processors"  # where the hooked class keeps the processors
_ON_END = "_otel_resilience_on_end"


def _hook_lines(processors: Any, idle: Callable[[Any, str], bool]) -> dict[str, str]:
    """The bodies of the generated hooks for ``processors`` (a tuple: unrolled, idle hooks
    left out; anything else: the SDK's own loop over it, every hook called)."""
    if type(processors) is not tuple:
        return {
            "on_start": "    for sp in self._span_processors:\n"
            "        sp.on_start(span, parent_context=parent_context)",
            "_on_ending": "    for sp in self._span_processors:\n        sp._on_ending(span)",
            "on_end": "    for sp in self._span_processors:\n        sp.on_end(span)",
        }
    starts = [
        f"    P{i}.on_start(span, parent_context=parent_context)"
        for i, sp in enumerate(processors)
        if not idle(sp, "on_start")
    ]
    endings = [
        f"    P{i}._on_ending(span)"
        for i, sp in enumerate(processors)
        if not idle(sp, "_on_ending")
    ]
    ends = [
        (
            f"    end = P{i}.{_ON_END}\n    end(span)"
            if _keeps_on_end(sp)
            else f"    P{i}.on_end(span)"
        )
        for i, sp in enumerate(processors)
    ]
    return {
        "on_start": "\n".join(starts) or "    pass",
        "_on_ending": "\n".join(endings) or "    pass",
        "on_end": "\n".join(ends) or "    pass",
    }


def _keeps_on_end(processor: Any) -> bool:
    """Whether ``processor`` keeps what its ``on_end`` is now in ``_ON_END``: it has that
    callable attribute, and no ``on_end`` of its instance that is another function (one
    set by someone else is called as ``on_end``, as the SDK would)."""
    current = getattr(processor, _ON_END, None)
    if not callable(current):
        return False
    own = getattr(processor, "__dict__", {}).get("on_end", current)
    return own is current


def call_busy_hooks_only(provider: Any, idle: Callable[[Any, str], bool]) -> bool:
    """Have the provider's ``SynchronousMultiSpanProcessor`` (its ``_active_span_processor``,
    1.43, 1.45) skip the ``on_start`` and ``_on_ending`` hooks that ``idle(processor, hook)``
    says do nothing, so a processor that only needs ``on_end`` costs no call per span where
    it has nothing to do. Every other processor's hooks are called as the SDK calls them,
    in the same order; a processor added later is asked about as it is added.

    The multi-processor becomes an instance of a subclass made for it, whose ``on_start``,
    ``_on_ending`` and ``on_end`` are generated for the processors it holds, one call per
    processor (``_HOOKS``), and generated again when they change. Methods of the class, not
    of the instance: the SDK's call sites (``Span.start``, ``Span.end``) stay specialised,
    which an instance's own function would prevent. Returns False, changing nothing, when
    the provider's processor is not exactly the SDK's synchronous one holding a tuple (the
    concurrent one, another SDK), or has hooks of its own on the instance (someone else's).
    """
    try:
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return False
    active = getattr(provider, "_active_span_processor", None)
    if getattr(type(active), _HOOKS_MARK, False) is True:
        return True  # installed already
    if type(active) is not SynchronousMultiSpanProcessor:
        return False
    if not isinstance(getattr(active, "_span_processors", None), tuple):
        return False
    if any(name in vars(active) for name in _HOOK_NAMES):
        return False
    has_on_ending = hasattr(SynchronousMultiSpanProcessor, "_on_ending")

    def regenerate(multi: Any, processors: Any) -> None:
        """Generate the hooks for ``processors``, set on ``multi``'s own class."""
        namespace: dict[str, Any] = {}
        if type(processors) is tuple:
            namespace.update({f"P{i}": sp for i, sp in enumerate(processors)})
        exec(_HOOKS.format(**_hook_lines(processors, idle)), namespace)
        cls = type(multi)
        for name in _HOOK_NAMES:
            if name != "_on_ending" or has_on_ending:
                setattr(cls, name, namespace[name])

    def get_processors(multi: Any) -> Any:
        return vars(multi)[_PROCESSORS]

    def set_processors(multi: Any, processors: Any) -> None:
        vars(multi)[_PROCESSORS] = processors
        regenerate(multi, processors)

    hooked = type(
        "SynchronousMultiSpanProcessor",
        (SynchronousMultiSpanProcessor,),
        {
            _HOOKS_MARK: True,
            "__module__": __name__,
            "_span_processors": property(get_processors, set_processors),
        },
    )
    with getattr(active, "_lock", None) or contextlib.nullcontext():  # as add_span_processor
        processors = vars(active).pop("_span_processors")
        vars(active)[_PROCESSORS] = processors
        active.__class__ = hooked
        regenerate(active, processors)
    return True


def batch_exporter(processor: Any) -> Any:
    """The exporter inside a BatchSpanProcessor: ``processor._batch_processor._exporter``
    (1.43, 1.45). None when the processor is not built that way."""
    holder = getattr(processor, "_batch_processor", None)
    return getattr(holder, "_exporter", None) if holder is not None else None


def set_batch_exporter(processor: Any, exporter: Any) -> bool:
    """Replace the exporter :func:`batch_exporter` found; False (nothing done) when missing."""
    holder = getattr(processor, "_batch_processor", None)
    if holder is None or not hasattr(holder, "_exporter"):
        return False
    holder._exporter = exporter
    return True


def metric_readers(meter_provider: Any) -> tuple[Any, ...]:
    """``meter_provider._metric_readers`` of an SDK MeterProvider (1.43, 1.45); () when
    missing."""
    readers = getattr(meter_provider, "_metric_readers", ())
    return tuple(readers) if isinstance(readers, (tuple, list, set, frozenset)) else ()


def reader_exporter(reader: Any) -> Any:
    """``reader._exporter`` of a PeriodicExportingMetricReader (1.43, 1.45); None when
    missing."""
    return getattr(reader, "_exporter", None)


def set_reader_exporter(reader: Any, exporter: Any) -> bool:
    """Replace the exporter :func:`reader_exporter` found; False (nothing done) when missing."""
    if not hasattr(reader, "_exporter"):
        return False
    reader._exporter = exporter
    return True


def exporter_timeout(exporter: Any) -> float | None:
    """``exporter._timeout`` in seconds, as the OTLP exporters keep it (1.43, 1.45); None
    when missing or not a number."""
    value = getattr(exporter, "_timeout", None)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def set_exporter_timeout(exporter: Any, seconds: float) -> None:
    """Lower ``exporter._timeout``; only called after :func:`exporter_timeout` found it."""
    exporter._timeout = seconds


# grpc's channel argument for a subchannel pool of the channel's own, not the process-wide one
# that channels to the same target share (and a forked child inherits, connected).
_LOCAL_SUBCHANNEL_POOL = "grpc.use_local_subchannel_pool"
# The channels a forked child replaced: kept, never closed or freed in the child, where
# closing one could shut down the socket it shares with the parent.
_INHERITED_CHANNELS: list[Any] = []


def renew_exporter_connections(exporter: Any) -> bool:
    """Give an OTLP exporter connections of its own; True if it had any to replace.

    For a forked child, before its first export: what the exporter inherited are the
    parent's connections (the same sockets in two processes). A child writing on one of
    them interleaves with the parent's requests, so either side may read the other's
    answer, or grpc refuses the socket in the child ("Wrong file descriptor generation")
    while a call the parent had in flight hangs the child's export to its deadline.

    - OTLP gRPC (1.43, 1.45: ``exporter._channel``, ``exporter._channel_options``,
      ``exporter._initialize_channel_and_stub()``, which the exporter itself uses to
      reconnect): a new channel. Alone it would still share the parent's connection
      through the process-wide subchannel pool, inherited connected, so it gets
      ``grpc.use_local_subchannel_pool``. The inherited channel is kept, never closed.
    - OTLP HTTP (its ``requests.Session``: ``exporter._session`` in 1.43,
      ``exporter._client._transport._session`` in 1.45): its pooled connections are closed
      in this process (each socket's descriptor only: the parent's connection stays up),
      so the next request opens one of the child's own; the session and its settings are
      kept.

    Missing (any other exporter): nothing happens and the answer is False.
    """
    initialize = getattr(exporter, "_initialize_channel_and_stub", None)
    options = getattr(exporter, "_channel_options", None)
    if callable(initialize) and isinstance(options, (tuple, list)):
        if not any(
            isinstance(option, tuple) and option[:1] == (_LOCAL_SUBCHANNEL_POOL,)
            for option in options
        ):
            exporter._channel_options = (*options, (_LOCAL_SUBCHANNEL_POOL, 1))
        inherited = getattr(exporter, "_channel", None)
        if inherited is not None:
            _INHERITED_CHANNELS.append(inherited)
        initialize()
        return True
    session = getattr(exporter, "_session", None)
    if session is None:
        transport = getattr(getattr(exporter, "_client", None), "_transport", None)
        session = getattr(transport, "_session", None)
    close = getattr(session, "close", None)
    if session is not None and callable(getattr(session, "mount", None)) and callable(close):
        close()  # requests.Session.close: its adapters drop their pools; they stay usable
        return True
    return False


def metric_exporter_preferences(exporter: Any) -> tuple[Any, Any]:
    """``(exporter._preferred_temporality, exporter._preferred_aggregation)`` of an SDK
    MetricExporter (1.43, 1.45). Missing: ``(None, None)``, the SDK's defaults."""
    return (
        getattr(exporter, "_preferred_temporality", None),
        getattr(exporter, "_preferred_aggregation", None),
    )


def span_fields(span: Any) -> tuple[Any, Mapping[str, Any] | None, Any, Any, Any]:
    """``(kind, attributes, status, instrumentation scope, span context)`` of an SDK
    ReadableSpan, without the copies its properties make: ``span._kind``,
    ``span._attributes._dict`` (a BoundedAttributes' dict), ``span._status``,
    ``span._instrumentation_scope`` and ``span._context`` (1.43, 1.45).

    Missing: the public properties and ``get_span_context()``. On the span processor's hot
    path, so it stays one call.
    """
    try:
        kind = span._kind
        bounded = span._attributes
        status = span._status
        scope = span._instrumentation_scope
        context = span._context
    except AttributeError:
        return (
            span.kind,
            span.attributes,
            span.status,
            span.instrumentation_scope,
            span.get_span_context(),
        )
    attributes = getattr(bounded, "_dict", None)
    if type(attributes) is not dict:
        attributes = bounded if isinstance(bounded, Mapping) else None
    return kind, attributes, status, scope, context


readable_fields: Callable[[Any], tuple[Any, Mapping[str, Any], Any, Any, Any]] = attrgetter(
    "_kind", "_attributes._dict", "_status._status_code", "_instrumentation_scope", "_context"
)
"""``(kind, attributes dict, status code, instrumentation scope, span context)`` of the SDK's
ReadableSpan in one C call: ``span._kind``, ``span._attributes._dict``,
``span._status._status_code``, ``span._instrumentation_scope``, ``span._context`` (1.43,
1.45). The span processor's hot path. Raises ``AttributeError`` for a span of another
shape (a plain dict of attributes, no status): then ``span_fields`` and ``status_code``."""


def status_code(status: Any) -> Any:
    """``status._status_code``: the public ``status_code`` without the property call
    (1.43, 1.45). Missing: the property; None for an object that has neither."""
    try:
        return status._status_code
    except AttributeError:
        return getattr(status, "status_code", None)


def sampler_from_environment() -> Any:
    """The sampler the SDK's configurator would build: ``OTEL_TRACES_SAMPLER`` (entry
    points included) through ``opentelemetry.sdk._configuration._get_sampler`` and
    ``_import_sampler``, else ``sampling._get_from_env_or_default()`` (1.43, 1.45).

    Missing: the SDK's documented default, ``ParentBased(ALWAYS_ON)``.
    """
    from opentelemetry.sdk.trace import sampling

    try:
        from opentelemetry.sdk._configuration import _get_sampler, _import_sampler

        sampler = _import_sampler(_get_sampler())
        return sampler if sampler is not None else sampling._get_from_env_or_default()
    except (ImportError, AttributeError):
        return sampling.ParentBased(sampling.ALWAYS_ON)
