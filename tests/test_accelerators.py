"""The C accelerators answer as their Python twins do.

``otel_resilience._conend`` is the span processor's ``on_end`` fast path in C. These tests
run the same spans, made of every shape a span can take (the SDK's, other code's, hostile
values), through a processor on the C path and through one on the Python path, each with a
registry of its own, and compare everything the spans can change: each breaker's counts,
the dependencies discovered, the guard marks consumed and the errors logged.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from otel_resilience import (
    BreakerSpanProcessor,
    Dependency,
    Registry,
    _context,
    _processor,
    load_config,
)
from otel_resilience._accel import PURE_PYTHON_ENV
from otel_resilience._context import GUARDED, GUARDED_SPANS

PURE = os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0")

# Windows of three calls: a breaker's steady case (a full window of successes, where a
# success is counted without the lock) comes after three successes, within a short run.
CONFIG: dict[str, Any] = {
    "defaults": {"breaker": {"window_size": 3, "minimum_calls": 3, "open_seconds": 60}},
    "dependencies": {
        "cache": {"match": {"db.system": "redis"}, "breaker": {"consecutive_failures": 3}},
        "api": {"match": {"server.address": "api.internal"}},
        "pay": {  # timed: its spans take the general path (a memo entry named None)
            "match": {"server.address": "pay.example"},
            "breaker": {"slow_call_seconds": 1.0},
        },
    },
}


def test_the_accelerators_are_built_in_ci() -> None:
    """Under CI the C accelerators must be there (the build is required there), unless the
    run asks for the Python twins."""
    if PURE:
        assert _processor._CONEND is None
        return
    if os.environ.get("CI") != "true" and _processor._CONEND is None:
        pytest.skip("the C accelerators are not built here")
    assert _processor._CONEND is not None
    from otel_resilience import _cguard, _cmemory, _conend

    assert _conend.FastOnEnd is not None
    assert _cguard.HandSuccess is not None
    assert _cmemory.GetNoter is not None
    assert _context._CGUARD is not None


class StrSub(str):
    """A str subclass whose ``find`` sees no slashes: the C path leaves URLs of this type
    to the Python path, which calls it."""

    def find(self, *args: Any) -> int:  # type: ignore[override]
        return -1


class LoudDict(dict[str, Any]):
    """A dict whose ``get`` answers "redis" for ``db.system``: the C path leaves it to the
    Python path, which calls it."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return "redis" if key == "db.system" else super().get(key, default)


class OtherMapping(Mapping[str, Any]):
    """Attributes that are not a dict: the C path leaves them to the Python path."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


REDIS_SCOPE = "opentelemetry.instrumentation.redis"
HTTPX_SCOPE = "opentelemetry.instrumentation.httpx"
# The spans a service makes most, with their instrumentation's scope: sequences of them
# reach the steady case of a breaker, then leave it, so every branch is taken often.
REALISTIC: list[tuple[str, dict[str, Any]]] = [
    (REDIS_SCOPE, {"db.system": "redis", "net.peer.name": "cache.internal"}),
    (REDIS_SCOPE, {"db.system.name": "redis", "server.address": "cache.internal"}),
    (HTTPX_SCOPE, {"server.address": "api.internal", "http.response.status_code": 200}),
    (HTTPX_SCOPE, {"server.address": "api.internal", "http.response.status_code": 200}),
    (HTTPX_SCOPE, {"server.address": "api.internal", "http.response.status_code": 429}),
    (HTTPX_SCOPE, {"server.address": "api.internal", "http.response.status_code": 503}),
    (HTTPX_SCOPE, {"server.address": "api.internal", "http.response.status_code": 404}),
    (HTTPX_SCOPE, {"http.url": "http://api.internal/v1/items?id=1", "http.status_code": 200}),
    (HTTPX_SCOPE, {"http.url": "http://api.internal/v1/items?id=2", "http.status_code": 500}),
    (HTTPX_SCOPE, {"url.full": "https://pay.example/charge", "http.response.status_code": 201}),
    (HTTPX_SCOPE, {"server.address": "pay.example", "error.type": "Timeout"}),
    ("opentelemetry.instrumentation.psycopg", {"db.system": "postgresql"}),
    ("opentelemetry.instrumentation.asyncpg", {"db.system": "mysql"}),
    (HTTPX_SCOPE, {"server.address": "x.example", "http.response.status_code": 200}),
    (HTTPX_SCOPE, {"url.full": "http://y.example:8080/p", "http.response.status_code": 200}),
]
URLS = st.sampled_from(
    [
        None,
        "http://api.internal/v1/x",
        "https://pay.example:443/a/b",
        "http://api.internal",
        "",
        "no-slashes",
        "//api.internal/p",
        "http://x.example/",
        StrSub("http://api.internal/s"),
        StrSub(""),
        5,
    ]
)
STATUSES = st.sampled_from([None, 200, 204, 404, 429, 500, 503, "200", True, 0, -1, 10**30])
ANY_ATTRIBUTES = st.fixed_dictionaries(
    {},
    optional={
        "db.system": st.sampled_from(["redis", "postgresql", "mysql", ""]),
        "db.system.name": st.sampled_from(["redis", "postgresql"]),
        "server.address": st.sampled_from(["api.internal", "pay.example", "x.example", None]),
        "net.peer.name": st.sampled_from(["api.internal", "cache.internal", "y.example"]),
        "url.full": URLS,
        "http.url": URLS,
        "http.response.status_code": STATUSES,
        "http.status_code": STATUSES,
        "error.type": st.sampled_from(["", "Timeout", 0, "500"]),
        "net.peer.port": st.sampled_from([6379, 443, ["un", "hashable"]]),
    },
)
SCOPES = st.sampled_from(
    [
        REDIS_SCOPE,
        HTTPX_SCOPE,
        "opentelemetry.instrumentation.sqlalchemy",
        "opentelemetry.instrumentation.psycopg",
        None,
    ]
)
GUARDS = st.sampled_from(
    [
        ("hand", "cache"),
        ("hand", "api"),
        ("mark", "cache"),
        ("mark", "api"),
        ("var", "cache"),
        ("var", ("api", "cache")),
        ("var", "pay"),
    ]
)
# How a guard saw the call: not at all, a success handed to the span, a mark for this or
# another dependency, or the GUARDED context variable set.
REALISTIC_SPANS = st.sampled_from(REALISTIC).flatmap(
    lambda made: st.fixed_dictionaries(
        {
            "scope": st.just(made[0]),
            "attributes": st.just(made[1]),
            "kind": st.just(SpanKind.CLIENT),
            "status": st.sampled_from([StatusCode.UNSET] * 8 + [StatusCode.ERROR]),
            "holder": st.just("sdk"),
            "seconds": st.sampled_from([0.0] * 9 + [2.0]),
            "guard": st.none() | st.none() | st.none() | GUARDS,
        }
    )
)
ANY_SPANS = st.fixed_dictionaries(
    {
        "attributes": ANY_ATTRIBUTES,
        "kind": st.sampled_from([SpanKind.CLIENT] * 6 + [SpanKind.INTERNAL, SpanKind.PRODUCER]),
        "status": st.sampled_from([StatusCode.UNSET] * 3 + [StatusCode.ERROR, StatusCode.OK]),
        "scope": SCOPES,
        "holder": st.sampled_from(["sdk"] * 6 + ["ordered", "mapping", "loud", "plain", "none"]),
        "seconds": st.sampled_from([0.0, 0.0, 2.0]),
        "guard": st.none() | GUARDS,
    }
)
SPANS = REALISTIC_SPANS | REALISTIC_SPANS | REALISTIC_SPANS | ANY_SPANS


RESOURCE = Resource.get_empty()  # one for all spans (a span makes its own otherwise: slow)


def make_span(spec: dict[str, Any], index: int) -> ReadableSpan:
    attributes: Any = BoundedAttributes(attributes={}, immutable=False)
    raw = dict(spec["attributes"])
    holder = spec["holder"]
    if holder == "sdk":
        attributes._dict = raw
    elif holder == "ordered":
        attributes._dict = OrderedDict(raw)
    elif holder == "mapping":
        attributes._dict = OtherMapping(raw)
    elif holder == "loud":
        attributes._dict = LoudDict(raw)
    elif holder == "plain":
        attributes = raw  # no ``_dict``: a span made by other code
    else:
        attributes = None
    scope = None if spec["scope"] is None else InstrumentationScope(spec["scope"])
    context = SpanContext(trace_id=index + 1, span_id=index + 1, is_remote=False)
    span = ReadableSpan(
        "call",
        context=context,
        resource=RESOURCE,
        kind=spec["kind"],
        status=Status(spec["status"]),
        instrumentation_scope=scope,
        start_time=0,
        end_time=int(spec["seconds"] * 1e9),
    )
    span._attributes = attributes
    return span


@contextmanager
def python_path(pure: bool) -> Iterator[None]:
    """The processor compiles its fast path in Python while this is entered with True."""
    kept = _processor._CONEND
    if pure:
        _processor._CONEND = None
    try:
        yield
    finally:
        _processor._CONEND = kept


def run(specs: list[dict[str, Any]], *, pure: bool) -> dict[str, Any]:
    """What ``specs``' spans leave behind on a fresh registry and processor."""
    registry: Registry = load_config(CONFIG)
    processor = BreakerSpanProcessor(registry, max_discovered=2)
    logged: list[str] = []
    processor._log_error = lambda exc: logged.append(type(exc).__name__)  # type: ignore[method-assign]
    spans = [make_span(spec, index) for index, spec in enumerate(specs)]
    left: list[bool] = []
    with python_path(pure):
        for spec, span in zip(specs, spans, strict=True):
            operation = spec.get("operation")
            if operation == ("declare", "search"):  # a dependency declared meanwhile
                registry.add(Dependency("search", match={"server.address": "y.example"}))
            elif operation is not None:
                getattr(registry.breaker(operation[1]), operation[0])()
            guard = spec["guard"]
            token = None
            key = id(span.context)
            if guard is not None and guard[0] in ("hand", "mark"):
                breaker = registry.breaker(guard[1]) if guard[0] == "hand" else None
                GUARDED_SPANS[key] = (span.context, guard[1], breaker)
            elif guard is not None:
                token = GUARDED.set(guard[1])
            try:
                processor.on_end(span)
            finally:
                if token is not None:
                    GUARDED.reset(token)
            left.append(GUARDED_SPANS.pop(key, None) is not None)
        fast = type(processor.__dict__.get("on_end")).__name__
    breakers = {}
    for name in sorted(dependency.name for dependency in registry):
        snapshot = registry.breaker(name).snapshot()
        breakers[name] = (
            snapshot.state,
            snapshot.total_successes,
            snapshot.total_failures,
            snapshot.total_slow,
            snapshot.consecutive_failures,
        )
    memo = sorted(
        repr((getattr(entry[0], "name", None), key, entry[1]))
        for (_, key), entry in processor._memo.items()
    )
    return {
        "breakers": breakers,
        "memo": memo,
        "discovered": sorted(processor._discovered),
        "guard marks left": left,
        "logged": logged,
        "fast path": fast,
    }


@pytest.mark.skipif(
    PURE or _processor._CONEND is None, reason="the C path is switched off or not built"
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SPANS, min_size=1, max_size=40))
def test_the_c_on_end_answers_as_the_python_on_end(specs: list[dict[str, Any]]) -> None:
    on_c = run(specs, pure=False)
    on_python = run(specs, pure=True)
    assert on_python["fast path"] in ("function", "NoneType")
    if on_python["fast path"] == "function":
        assert on_c["fast path"] == "FastOnEnd"
    on_c.pop("fast path")
    on_python.pop("fast path")
    assert on_c == on_python


# What the warm-up of the exhaustive test sends: a success of every declared dependency
# and of a discovered one, three times each, so that every breaker is in its steady case.
WARM_UP = [
    (REDIS_SCOPE, {"db.system": "redis", "net.peer.name": "cache.internal"}),
    (HTTPX_SCOPE, {"server.address": "api.internal", "http.response.status_code": 200}),
    (HTTPX_SCOPE, {"url.full": "https://pay.example/charge", "http.response.status_code": 201}),
    (HTTPX_SCOPE, {"server.address": "x.example", "http.response.status_code": 200}),
    ("opentelemetry.instrumentation.pymysql", {"db.system": "mysql"}),  # the cap (2) reached
]
OPERATIONS = [
    ("force_open", "cache"),
    ("disable", "api"),
    ("force_open", "api"),
    ("declare", "search"),
]
SHAPES = (("sdk", 0.0), ("sdk", 2.0), ("ordered", 0.0), ("mapping", 0.0), ("loud", 0.0))
ODD_ATTRIBUTES: list[dict[str, Any]] = [
    {"url.full": "http://api.internal"},
    {"url.full": "//api.internal/p", "http.status_code": 200},
    {"url.full": "", "http.url": "http://api.internal/v1"},
    {"url.full": 5, "http.url": "http://api.internal/v1"},
    {"url.full": StrSub("http://api.internal/s")},
    {"http.url": StrSub("")},
    {"url.full": "no-slashes"},
    {"server.address": "api.internal", "http.response.status_code": True},
    {"server.address": "api.internal", "http.response.status_code": "200"},
    {"server.address": "api.internal", "http.response.status_code": 10**30},
    {"server.address": "api.internal", "http.response.status_code": 0},
    {"server.address": "api.internal", "error.type": ""},
    {"db.system": "redis", "net.peer.port": ["un", "hashable"]},
    {},
]


@pytest.mark.skipif(
    PURE or _processor._CONEND is None, reason="the C path is switched off or not built"
)
def test_every_kind_of_span_after_steady_breakers_answers_as_in_python() -> None:
    """Exhaustively: every breaker in its steady case (where the C path counts a success
    itself), then one span of each template, guard, status, duration and attribute holder,
    then a plain success; the C path and the Python path leave the same state."""
    warm = [
        {
            "scope": scope,
            "attributes": attributes,
            "kind": SpanKind.CLIENT,
            "status": StatusCode.UNSET,
            "holder": "sdk",
            "seconds": 0.0,
            "guard": None,
        }
        for _ in range(3)
        for scope, attributes in WARM_UP
    ]
    templates = REALISTIC + [(HTTPX_SCOPE, attributes) for attributes in ODD_ATTRIBUTES]
    guards = [None, *GUARDS.elements]  # type: ignore[attr-defined]
    compared = 0
    for scope, attributes in templates:
        for guard in guards:
            for status in (StatusCode.UNSET, StatusCode.ERROR, StatusCode.OK):
                for holder, seconds in SHAPES:
                    if holder != "sdk" and (guard is not None or status is not StatusCode.UNSET):
                        continue  # the C path hands other holders to Python at once
                    span = {
                        "scope": scope,
                        "attributes": attributes,
                        "kind": SpanKind.CLIENT,
                        "status": status,
                        "holder": holder,
                        "seconds": seconds,
                        "guard": guard,
                    }
                    specs = [*warm, span, warm[0]]
                    on_c = run(specs, pure=False)
                    on_python = run(specs, pure=True)
                    assert on_c.pop("fast path") == "FastOnEnd"
                    on_python.pop("fast path")
                    assert on_c == on_python, span
                    compared += 1
        for operation in OPERATIONS:  # a breaker switched by an operator, steady or not
            span = {**warm[0], "scope": scope, "attributes": attributes}
            specs = [*warm, span, {**span, "operation": operation}, warm[1]]
            on_c, on_python = run(specs, pure=False), run(specs, pure=True)
            assert on_c.pop("fast path") == "FastOnEnd"
            on_python.pop("fast path")
            assert on_c == on_python, span
            compared += 1
    assert compared == len(templates) * (len(guards) * 3 * 2 + 3 + len(OPERATIONS))


def own(entry: Any, span_context: Any) -> Any:
    """``entry`` (a GUARDED_SPANS entry, or None) with the span's own context named so: each
    run makes its own span, whose ids differ."""
    if entry is None:
        return None
    return tuple("own context" if item is span_context else item for item in entry)


class PublicSpan:
    """A span of another SDK: only the public API (``kind``, ``get_span_context``)."""

    def __init__(self, kind: SpanKind, index: int) -> None:
        self.kind = kind
        self._span_context = SpanContext(trace_id=index + 1, span_id=index + 1, is_remote=False)

    def get_span_context(self) -> SpanContext:
        return self._span_context


@pytest.mark.skipif(
    PURE or _context._CGUARD is None, reason="the C path is switched off or not built"
)
def test_the_c_hand_off_answers_as_the_python_hand_off() -> None:
    """Every case of ``hand_success_to_span``: no span, a span of another SDK, a CLIENT
    span or not, ended or not, of a counted pipeline or not, already entered (marked or
    handed) or not, the table full; the C function and the Python one answer the same and
    leave the same table."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    breaker = load_config(CONFIG).breaker("cache")
    provider = TracerProvider()
    pipeline = provider._active_span_processor
    tracer = provider.get_tracer("opentelemetry.instrumentation.redis")
    functions = {
        "c": _context.hand_success_to_span,
        "python": _context._python_hand_success_to_span,
    }
    compared = 0
    for case in range(12):
        for counted in (True, False):
            for entered in (None, "mark", "hand", "other"):
                for full in (False, True):
                    answers: dict[str, Any] = {}
                    for which, function in functions.items():
                        GUARDED_SPANS.clear()
                        if full:
                            for index in range(_context.MAX_GUARDED_SPANS):
                                GUARDED_SPANS[-index - 1] = (object(), "x", None)
                        if counted:
                            _context.SPAN_COUNTERS[pipeline] = [object()]
                        if case < 4:
                            kind = [SpanKind.CLIENT, SpanKind.INTERNAL, SpanKind.SERVER][case % 3]
                            span: Any = tracer.start_span("call", kind=kind)
                            span_context = span.get_span_context()
                            if case == 3:
                                span.end()  # ended: its success cannot be handed
                        elif case < 6:
                            span = PublicSpan(
                                SpanKind.CLIENT if case == 4 else SpanKind.SERVER, case
                            )
                            span_context = span.get_span_context()
                        elif case == 6:
                            span = None  # no span at all
                            span_context = None
                        else:
                            span = trace.NonRecordingSpan(
                                SpanContext(trace_id=case, span_id=case, is_remote=False)
                            )
                            span_context = span.get_span_context()
                        if entered is not None and span_context is not None:
                            GUARDED_SPANS[id(span_context)] = (
                                span_context,
                                "other" if entered == "other" else "cache",
                                breaker if entered == "hand" else None,
                            )
                        token = otel_context.attach(
                            trace.set_span_in_context(span)
                            if span is not None
                            else otel_context.Context()
                        )
                        try:
                            answer = function("cache", breaker)
                        finally:
                            otel_context.detach(token)
                            _context.SPAN_COUNTERS.pop(pipeline, None)
                        entry = GUARDED_SPANS.get(id(span_context)) if span_context else None
                        answers[which] = (
                            own(answer, span_context),
                            len(GUARDED_SPANS),
                            own(entry, span_context),
                        )
                    GUARDED_SPANS.clear()
                    assert answers["c"] == answers["python"], (case, counted, entered, full)
                    compared += 1
    assert compared == 12 * 2 * 4 * 2
    provider.shutdown()
