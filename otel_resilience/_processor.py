"""The span processor: every ended client span feeds its dependency's breaker.

``on_end`` runs on the application's thread and the SDK does not catch what it raises,
so the whole body is guarded: a malformed span is skipped, never an error in the app.
It runs for every client span, so it is written for speed: the SDK's own ``ReadableSpan``
is read through its fields (the public properties copy the attributes into a proxy),
classification is memoised by the registry, and the duration is computed only for a
breaker that has a slow-call bound.

The common case (a successful span of a plain instrumentation, its dependency's breaker
closed and steady) takes a fast path compiled for the registry's classifier: the
classifier's key is read inline and looks up the span's breaker in one memo, since
between two real calls every object and every frame the path touches costs a cache miss
(``_FAST_ON_END``). The memo entry of the last span is kept beside it: a span of the same
scope with an equal key (a service calling one Redis, one database) takes it without
hashing the key again, which touches every value in it. Anything else goes the general
way, ``_end``.
"""

from __future__ import annotations

import dis
import functools
import logging
import threading
import time
import types
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from ._breaker import CircuitBreaker, State
from ._context import (
    GUARDED,
    GUARDED_SPANS,
    count_handed_successes,
    count_success,
    http_status_is_failure,
)
from ._dependency import Dependency
from ._events import OperatorEvent
from ._health import address_learner, learning_needed
from ._registry import Registry
from ._scopes import (
    DRIVER,
    DRIVER_STARTED,
    EXACT_CLIENT_KEYS,
    EXACT_CLIENT_SCOPE,
    OTHER,
    answers_http,
    scope_role,
)
from ._sdk import readable_fields, span_fields, status_code
from ._semconv import Classifier, lookup
from ._trace_links import TRIPPING_SPAN

__all__ = ["MAX_DISCOVERED_NAME", "BreakerSpanProcessor", "idle_hook", "span_outcome"]

_log = logging.getLogger(__name__)

_ERROR = StatusCode.ERROR
_CLOSED = State.CLOSED
_DISABLED = State.DISABLED
_CLIENT = SpanKind.CLIENT
_PRODUCER = SpanKind.PRODUCER
_EMPTY: Mapping[str, Any] = {}
_get_guarded = GUARDED.get
_POP: Any = object()  # _end's guarded_span: take the span's entry out of GUARDED_SPANS
_UNMATCHED: Any = object()  # a fast-path memo's name: spans of no declared dependency
_MEMO_SIZE = 1024  # fast-path memo entries; emptied when full, as the classifier's cache
# A fast-path memo entry: (scope, dependency name, its breaker, may carry an HTTP status).
_MemoEntry = tuple[Any, str | None, Any, bool]
# Seconds between two log lines about the same kind of error in on_end.
_LOG_INTERVAL = 60.0
MAX_DISCOVERED_NAME = 128
"""Longer system names or server addresses are not grouped into a dependency."""


def _event_error_type(span: ReadableSpan) -> str | None:
    """``exception.type`` of the span's first ``exception`` event, if any."""
    for event in span.events or ():
        if event.name == "exception" and event.attributes:
            value = event.attributes.get("exception.type")
            if value:
                return str(value)
    return None


def _other_fields(span: Any) -> tuple[Any, Mapping[str, Any], Any, Any, Any]:
    """``readable_fields`` of a span that is not the SDK's usual ReadableSpan: a
    ReadableSpan made by other code (a plain dict of attributes, maybe no status) through
    its fields, any other span through the public API."""
    if isinstance(span, ReadableSpan):
        kind, fields, status, scope, context = span_fields(span)
        return kind, fields if fields is not None else _EMPTY, status_code(status), scope, context
    return (
        span.kind,
        span.attributes or _EMPTY,
        status_code(span.status),
        span.instrumentation_scope,
        span.get_span_context(),
    )


def _status_is_error(status: Any) -> bool:
    if status is None:
        return False
    return status_code(status) is _ERROR


def span_outcome(span: ReadableSpan, attributes: Mapping[str, Any]) -> tuple[bool, str | None]:
    """``(failed, error_type)`` of a client span, by the rules of DESIGN.md 5.

    For HTTP the response status decides first (5xx and 429 fail, other statuses mean
    the server answered, although the instrumentations mark every status >= 400 ERROR).
    Otherwise an ERROR status or an ``error.type`` attribute is a failure; its type is
    ``error.type``, else the ``exception`` event's ``exception.type``.
    """
    get = attributes.get
    raw = get("http.response.status_code")
    if raw is None:
        raw = get("http.status_code")
    if raw is not None:
        try:
            code = int(raw)
        except (TypeError, ValueError, OverflowError):
            code = 0
        if code > 0:
            if http_status_is_failure(code):
                error_type = get("error.type")
                return True, str(error_type) if error_type else str(code)
            return False, None
    error_type = get("error.type")
    if error_type or _status_is_error(span_fields(span)[2] or span.status):
        if not error_type:
            error_type = _event_error_type(span)
        return True, str(error_type) if error_type else "error"
    return False, None


# The fast path of ``BreakerSpanProcessor.on_end``, compiled per classifier (its key lines
# are inlined where ``{key_lines}`` stands). It reads the SDK's ReadableSpan fields those
# of ``_sdk.readable_fields`` one attribute at a time (specialised loads touch less memory
# than the ``attrgetter``) and finds ``(scope, name, breaker, may carry an HTTP status)``
# in ``memo`` by the scope and the classifier's key. It handles a successful span of a
# memoised dependency: counted on a closed, steady breaker, or skipped because a guard
# counted it; a span that matches no dependency is dropped here once none can be
# discovered (discovery off, or its cap reached). Anything else (another shape of span, a
# PRODUCER span, a special scope, a failure, a breaker off its steady case, a dependency
# that is timed or learns addresses) goes to ``general`` (``_end``), as does a span that
# may become a discovered dependency. A span of no memoised dependency also compiles the path
# again when the registry's classifier changed meanwhile (a dependency was added, or
# discovered from that very span). A memoised answer stays right when one is added: the
# classifier answers the first dependency that matches, and the new one comes last (a
# reload, which can change matches, recompiles; so do a new registry and switching off).
# A span whose success a guard handed to it (_context.hand_success_to_span) is counted on
# the guard's breaker first; when it is the span of ``EXACT_SCOPE`` (a client whose spans
# carry the very attributes its guard classified the call by, and the classifier reads no
# others: ``_exact_scope``) the guard's dependency is the span's, and it is not classified
# again.
# The span's attributes are read with ``dict.get`` (no bound method made per span), so
# only a plain dict takes the path: the SDK's, until it reaches its maximum length and
# becomes an OrderedDict. The key lines' own locals: ``v0``..., ``url``, ``parts``,
# ``start``, ``end``, ``key``.
_FAST_ON_END = """
def on_end(span):
    try:
        try:
            kind = span._kind
            attributes = span._attributes._dict
            code = span._status._status_code
            scope = span._instrumentation_scope
        except AttributeError:
            return general(span, POP)
        if kind is not CLIENT or type(attributes) is not dict:  # (OrderedDict: at maxlen)
            return general(span, POP)
        if GUARDED_SPANS:
            context = span._context  # (read here: a guarded span's own)
            guarded_span = GUARDED_SPANS.pop(id(context), None)
            if guarded_span is not None:
                handed = guarded_span[2]
                if handed is not None:  # a guard's success handed to the span (count_success)
                    if handed._steady_ring.steady:
                        next(handed._fast_successes)
                    else:
                        handed.record_success()
                    if (
                        guarded_span[0] is context
                        and scope is not None
                        and scope._name == EXACT_SCOPE
                    ):
                        return
        else:
            guarded_span = None
{key_lines}
        last = last_seen[0]
        if last[0] is scope and last[1] == key:
            target = last[2]
        else:
            try:
                target = memo.get((id(scope), key))
            except TypeError:
                return general(span, guarded_span)
            if target is None or target[0] is not scope:
                target = fast_target(scope, attributes, key)
            last_seen[0] = (scope, key, target)
        name = target[1]
        if name is None:
            return processor._end_and_compile(span, guarded_span)
        if name is UNMATCHED:
            if registry._classifier is not classifier or (  # one was declared meanwhile
                processor.auto_discover
                and len(processor._discovered) < processor.max_discovered
            ):
                return processor._end_and_compile(span, guarded_span)  # may match, or be discovered
            return  # no dependency, and none can be discovered: as the general path
        if guarded_span is not None:
            if guarded_span[1] == name and guarded_span[0] is context:
                return
            return general(span, guarded_span)
        guarded = get_guarded()
        if guarded is not None and (
            guarded == name or (type(guarded) is tuple and name in guarded)
        ):
            return
        if target[3]:
            http = dict_get(attributes, "http.response.status_code")
            if http is None:
                http = dict_get(attributes, "http.status_code")
            if http is not None:
                if type(http) is not int or not 0 < http < 400:
                    return general(span, None)
            elif code is ERROR or dict_get(attributes, "error.type"):
                return general(span, None)
        elif code is ERROR or dict_get(attributes, "error.type"):
            return general(span, None)
        breaker = target[2]
        state = breaker._state
        if (state is CLOSED or state is DISABLED) and breaker._steady_ring.steady:
            next(breaker._fast_successes)
        else:
            general(span, None)
    except Exception as exc:
        log_error(exc)
"""


# What a function whose body is ``pass`` (or only a docstring) compiles to, by
# interpreter version, its no-op instructions left out: (opname, argval) pairs.
_EMPTY_BODIES = (
    [("LOAD_CONST", None), ("RETURN_VALUE", None)],  # 3.10, 3.11
    [("RETURN_CONST", None)],  # 3.12 and later
)
_NO_OPS = frozenset({"RESUME", "NOP", "CACHE"})


def idle_hook(processor: Any, hook: str) -> bool:
    """Whether ``processor``'s ``hook`` (``on_start`` or ``_on_ending``) does nothing, so
    the SDK need not call it for every span (``_sdk.call_busy_hooks_only``): the class's
    hook is a plain function whose body is empty (``pass`` or a docstring), as the breaker
    processor's are and the SDK's batch and simple processors' (``SpanProcessor``'s
    own). An instance's own hook, a wrapped one (a ``wrapt`` proxy is not a plain
    function) or one with a body is called."""
    if hook in getattr(processor, "__dict__", ()):
        return False
    function = getattr(type(processor), hook, None)
    if type(function) is not types.FunctionType:
        return False
    return _empty_body(function.__code__)


@functools.lru_cache(maxsize=256)
def _empty_body(code: types.CodeType) -> bool:
    """Whether ``code`` does nothing (asked again each time a provider's list of
    processors changes, so the answer is kept per code object)."""
    body = [
        (instruction.opname, instruction.argval)
        for instruction in dis.get_instructions(code)
        if instruction.opname not in _NO_OPS
    ]
    return body in _EMPTY_BODIES


class BreakerSpanProcessor(SpanProcessor):
    """Records every ended CLIENT span (and PRODUCER, when asked) on its dependency's breaker.

    Spans of calls that a client guard handled are skipped, since the guard records them
    and each call counts once: a span that ends while ``_context.GUARDED`` names its
    dependency, or whose context a client guard entered in ``_context.GUARDED_SPANS`` (a
    span of the instrumentation around the guard, which ends after it). A span of a call
    the guard rejected is skipped the same way. A success a leaf guard handed to its span
    (``_context.hand_success_to_span``) is counted on the guard's breaker as the span
    ends, while the processor is switched on in a pipeline ``configure()`` entered
    (``counts_handed_successes_of``). Client spans that match no
    declared dependency become observe-only dependencies named by their ``db.system`` or
    server address, up to ``max_discovered`` of them; their breakers are DISABLED, which
    admits every call and still counts outcomes, so they show in metrics and health but
    never reject.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        auto_discover: bool = True,
        max_discovered: int = 50,
        include_producer: bool = False,
    ) -> None:
        if max_discovered < 0:
            raise ValueError(f"max_discovered must be >= 0, got {max_discovered!r}")
        self._registry = registry
        self.auto_discover = auto_discover
        self.max_discovered = max_discovered
        self.include_producer = include_producer
        self._enabled = True
        self._pipelines: list[Any] = []  # counts_handed_successes_of
        # Dependency name -> (its breaker, whether it needs the span's duration, and the
        # function learning its calls' address for a health check that has none, or None).
        self._targets: dict[str, tuple[CircuitBreaker, bool, Any]] = {}
        self._discovered: set[str] = set()
        self._discover_lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._plain_scope: Any = None  # the last instrumentation scope of no special role
        self._plain_http = True  # whether its spans may carry an HTTP status (_scopes)
        # Whether a health check waits to learn an address from spans: then the spans of
        # guarded calls, skipped otherwise, still teach it (the guards skip their spans).
        self._learning = learning_needed(registry)
        # The fast path (_FAST_ON_END): its memo, and the classifier it was compiled for
        # (None: not compiled; the general path compiles it).
        self._memo: dict[tuple[int, tuple[Any, ...]], _MemoEntry] = {}
        self._fast_classifier: Classifier | None = None
        # What ``on_end`` is now (the compiled fast path, or the method), as an attribute
        # that shadows no method: the hooks ``configure()`` gives the provider's
        # multi-processor call it (``_sdk.call_busy_hooks_only``), a read the interpreter
        # specialises, where reading ``on_end`` (a method the instance shadows) is not.
        self._otel_resilience_on_end: Any = self.on_end
        # A reloaded config may change a breaker's slow-call bound: forget the flags then.
        self._unlisten = registry.add_event_listener(self._on_registry_event)

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded; False after ``shutdown()`` and on a provider that
        ``configure()`` no longer wires."""
        return self._enabled

    @enabled.setter
    def enabled(self, enabled: bool) -> None:
        self._enabled = enabled
        for pipeline in self._pipelines:
            count_handed_successes(pipeline, self, counting=enabled)
        if not enabled:
            self._forget_fast_path()  # the general path reads the flag

    def counts_handed_successes_of(self, pipeline: Any) -> None:
        """Count, while switched on, the successes that leaf guards hand to the spans
        ending through ``pipeline`` (the span processor of the provider this processor
        was added to: ``_context.SPAN_COUNTERS``)."""
        if all(known is not pipeline for known in self._pipelines):
            self._pipelines.append(pipeline)
        count_handed_successes(pipeline, self, counting=self._enabled)

    @property
    def registry(self) -> Registry:
        """The registry whose breakers the spans feed; assigning another one repoints it."""
        return self._registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        with self._discover_lock:
            self._unlisten()
            self._registry = registry
            self._targets = {}
            self._discovered = set()
            self._learning = learning_needed(registry)
            self._forget_fast_path()
            self._unlisten = registry.add_event_listener(self._on_registry_event)

    def _on_registry_event(self, event: OperatorEvent) -> None:
        if event.kind == "reload":
            self._targets = {}
            self._learning = learning_needed(self._registry)
            self._forget_fast_path()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def on_end(self, span: ReadableSpan) -> None:
        """Record the span's outcome on its dependency's breaker; never raises.

        Once a span went this way, the instance's own ``on_end`` is the fast path compiled
        for the registry's classifier (``_FAST_ON_END``): it takes the common case and
        hands every other to the same general path.
        """
        self._end_and_compile(span)

    def _end_and_compile(self, span: ReadableSpan, guarded_span: Any = _POP) -> None:
        """The general path for ``span`` (``guarded_span`` as for ``_end``), then the fast
        path compiled for the registry's classifier as it is now, unless it was already."""
        self._end(span, guarded_span)
        if self._enabled and self._fast_classifier is not self._registry._classifier:
            self._compile_fast_path()

    def _end(self, span: ReadableSpan, guarded_span: Any) -> None:
        """``on_end``'s general path. ``guarded_span``: the span's entry taken out of
        ``GUARDED_SPANS`` already (None: it had none), or ``_POP`` to take it out here."""
        try:
            try:
                # The SDK's ReadableSpan: its fields, without the properties' copies.
                kind, attributes, code, scope, context = readable_fields(span)
            except AttributeError:  # made by other code: no BoundedAttributes, or no status
                kind, attributes, code, scope, context = _other_fields(span)
            if kind is not _CLIENT and (kind is not _PRODUCER or not self.include_producer):
                return
            if not self._enabled:
                return
            # A client span whose call a guard recorded (_context.GUARDED_SPANS): its
            # dependency, taken out now whatever happens next; a success a guard handed
            # to it is counted (_context.hand_success_to_span).
            if guarded_span is _POP:
                guarded_span = GUARDED_SPANS.pop(id(context), None) if GUARDED_SPANS else None
                if guarded_span is not None and guarded_span[2] is not None:
                    count_success(guarded_span[2])
            get = attributes.get
            # SQLAlchemy's spans and its driver's count one call once (_scopes).
            if scope is not self._plain_scope and self._special_scope(scope):
                role = scope_role(scope)
                if role == DRIVER:
                    DRIVER_STARTED.set(span.start_time or 0)
                elif span.name == "connect":
                    if not span_outcome(span, attributes)[0]:
                        return  # a pool checkout that worked: its statement is the call
                else:
                    started = span.start_time
                    if started is not None and DRIVER_STARTED.get() >= started:
                        return  # the driver's span of this statement was counted
            registry = self._registry
            name = registry._classifier.classify(attributes)  # Registry.classify, one call less
            if name is None:
                if not self.auto_discover:
                    return
                name = self._discover(registry, attributes)
                if name is None:
                    return
            guarded = _get_guarded()
            if (
                guarded is not None
                and (guarded == name or (type(guarded) is tuple and name in guarded))
            ) or (
                guarded_span is not None and guarded_span[1] == name and guarded_span[0] is context
            ):
                if self._learning:
                    self._learn(attributes, name)
                return  # ended inside a guarded call of this dependency: counted there
            try:
                breaker, timed, learn = self._targets[name]
            except KeyError:
                breaker, timed, learn = self._target(registry, name)
            if learn is not None:
                learn(attributes)  # only for a dependency whose health check has no address
            if self._plain_http or scope is not self._plain_scope:  # redis: no HTTP status
                http = get("http.response.status_code")
                if http is None:
                    http = get("http.status_code")
                if http is not None:
                    if type(http) is not int or not 0 < http < 400:  # 5xx, 429: the rules
                        self._record(span, breaker, timed, *span_outcome(span, attributes))
                        return
                elif get("error.type") or code is _ERROR:
                    self._record(span, breaker, timed, *span_outcome(span, attributes))
                    return
            elif get("error.type") or code is _ERROR:
                self._record(span, breaker, timed, *span_outcome(span, attributes))
                return
            # A success (the common case), without the full rules.
            if not timed:
                state = breaker._state
                if (state is _CLOSED or state is _DISABLED) and breaker._steady_ring.steady:
                    next(breaker._fast_successes)  # CircuitBreaker.record_success's steady case
                    return
            self._record(span, breaker, timed, False, None)
        except Exception as exc:
            self._log_error(exc)

    @staticmethod
    def _record(
        span: ReadableSpan,
        breaker: CircuitBreaker,
        timed: bool,
        failed: bool,
        error_type: str | None,
    ) -> None:
        """Record an outcome off the steady success path (a failure, or a success that is
        timed or not on a steady window), with the span's duration when the breaker has a
        slow-call bound."""
        duration = 0.0
        if timed:
            start, end = span.start_time, span.end_time
            if isinstance(start, int) and isinstance(end, int):
                duration = (end - start) / 1e9
        if failed:
            # The span is the call: a transition it causes links to it (_trace_links).
            token = TRIPPING_SPAN.set(span.get_span_context())
            try:
                breaker.record_failure(duration, error_type)
            finally:
                TRIPPING_SPAN.reset(token)
        else:
            breaker.record_success(duration)

    def _compile_fast_path(self) -> None:
        """Make the instance's ``on_end`` the fast path for the registry's classifier as
        it is now (not for a subclass that has an ``on_end`` of its own); never raises."""
        if type(self).on_end is not BreakerSpanProcessor.on_end:
            return
        try:
            registry = self._registry
            classifier = registry._classifier
            memo: dict[tuple[int, tuple[Any, ...]], _MemoEntry] = {}
            namespace: dict[str, Any] = {
                "CLIENT": _CLIENT,
                "CLOSED": _CLOSED,
                "DISABLED": _DISABLED,
                "ERROR": _ERROR,
                "GUARDED_SPANS": GUARDED_SPANS,
                "EXACT_SCOPE": self._exact_scope(classifier),
                "POP": _POP,
                "UNMATCHED": _UNMATCHED,
                "classifier": classifier,
                "dict_get": dict.get,
                "registry": registry,
                "general": self._end,
                "fast_target": self._fast_target,
                "get_guarded": _get_guarded,
                "log_error": self._log_error,
                "memo": memo,
                # (scope, key, memo entry) of the last span: replaced whole, so a thread
                # reads one consistent triple.
                "last_seen": [(_POP, None, None)],  # no scope is _POP: the first span looks
                "processor": self,
            }
            key_lines = "\n".join("    " + line for line in classifier.dict_key_lines)
            # The key lines embed attribute keys with repr(): no injection (_semconv).
            exec(_FAST_ON_END.replace("{key_lines}", key_lines), namespace)
        except Exception as exc:  # pragma: no cover - the template is fixed; never fail a span
            self._log_error(exc)
            return
        self._memo = memo
        self._fast_classifier = classifier
        self.__dict__["on_end"] = namespace["on_end"]  # shadows the method: one call a span
        self._otel_resilience_on_end = namespace["on_end"]
        if not self._enabled:  # switched off meanwhile: the path does not look
            self._forget_fast_path()

    @staticmethod
    def _exact_scope(classifier: Classifier) -> Any:
        """The instrumentation scope whose spans a guard's handed success names exactly
        (``_FAST_ON_END``): the leaf client's, when ``classifier`` reads only the attributes
        its guard classified the call by; else a value no scope's name equals. (A health
        check that learns its address from spans has it from that guard already, which
        teaches it as it looks the client's pool up.)"""
        if classifier.canonical_keys <= EXACT_CLIENT_KEYS:
            return EXACT_CLIENT_SCOPE
        return _UNMATCHED

    def _forget_fast_path(self) -> None:
        """Back to the general path: the next span compiles the fast path again (for
        another registry, a reloaded config, a health check that learns addresses)."""
        self.__dict__.pop("on_end", None)
        self._otel_resilience_on_end = self.on_end
        self._fast_classifier = None
        self._memo = {}

    def _fast_target(
        self, scope: Any, attributes: Mapping[str, Any], key: tuple[Any, ...]
    ) -> _MemoEntry:
        """The fast path's memo entry for spans of ``scope`` whose classifier key is
        ``key``: ``(scope, dependency name, its breaker, whether the spans may carry an
        HTTP status)``, the name None when they take the general path (a special scope, a
        timed breaker, an address to learn), ``_UNMATCHED`` when no declared dependency
        matches (the general path discovers one while the cap allows)."""
        entry: _MemoEntry = (scope, None, None, True)
        if scope_role(scope) == OTHER and not self._learning:
            registry = self._registry
            name = registry._classifier.classify(attributes)
            if name is None:
                entry = (scope, _UNMATCHED, None, True)
            else:
                breaker, timed, learn = self._target(registry, name)
                if not timed and learn is None:
                    entry = (scope, name, breaker, answers_http(scope))
        memo = self._memo
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[id(scope), key] = entry
        return entry

    def _special_scope(self, scope: Any) -> bool:
        """Whether ``scope`` is SQLAlchemy's or a driver's instrumentation (``_scopes``);
        the last other scope is remembered, so its spans skip the look-up."""
        if scope_role(scope) == OTHER:
            self._plain_http = answers_http(scope)
            self._plain_scope = scope
            return False
        return True

    def _target(self, registry: Registry, name: str) -> tuple[CircuitBreaker, bool, Any]:
        """Dependency ``name``'s breaker, whether it needs span durations, and its address
        learner (``_health.address_learner``), kept by name: the kept one when there is."""
        target = self._targets.get(name)
        if target is not None:
            return target
        breaker = registry.breaker(name)
        target = (
            breaker,
            breaker.policy.slow_call_seconds is not None,
            address_learner(registry, name),
        )
        self._targets[name] = target
        return target

    def _learn(self, attributes: Mapping[str, Any], name: str) -> None:
        """Teach a health check the address of a guarded call's span (nothing else)."""
        learn = self._target(self._registry, name)[2]
        if learn is not None:
            learn(attributes)

    def _discover(self, registry: Registry, attributes: Mapping[str, Any]) -> str | None:
        """The observe-only dependency for an unmatched span, declared on first sight.

        The dependency's ``match`` is the attribute it was grouped by, so later spans of
        the group classify to it directly and do not come back here.
        """
        if len(self._discovered) >= self.max_discovered:
            return None
        system = lookup(attributes, "db.system")
        if system:
            base, match = system, {"db.system": system}
        else:
            address = lookup(attributes, "server.address")
            if not address:
                return None
            base, match = address, {"server.address": address}
        if not isinstance(base, str) or len(base) > MAX_DISCOVERED_NAME:
            return None  # an absurd attribute value never becomes a dependency (or /health)
        with self._discover_lock:
            if registry is not self._registry:
                return None  # repointed meanwhile: the span belongs to the old wiring
            if base in self._discovered:
                return base
            auto_name = f"auto:{base}"
            if auto_name in self._discovered:
                return auto_name
            if len(self._discovered) >= self.max_discovered:
                return None
            name = base if base not in registry else auto_name
            if name in registry:
                return None  # a declared dependency has this name and did not match
            registry.add(Dependency(name, match=match, observe_only=True))
            self._discovered.add(name)
            return name

    def _log_error(self, exc: Exception) -> None:
        # A bad span shape repeats on every call: one line per kind of error a minute.
        kind = type(exc).__name__
        now = time.monotonic()
        last = self._last_logged.get(kind)
        if last is not None and now - last < _LOG_INTERVAL:
            return
        if len(self._last_logged) > 100:
            self._last_logged.clear()
        self._last_logged[kind] = now
        _log.warning(
            "could not record a span on its breaker (%s); further %s "
            "errors are logged at most once a minute",
            kind,
            kind,
            exc_info=True,
        )

    def shutdown(self) -> None:
        """Stop recording spans."""
        self.enabled = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True
