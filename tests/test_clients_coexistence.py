"""Guards and OpenTelemetry's instrumentations coexist, in either order, for every client.

The checks the upstream instrumentation suites make of the library (``uninstrument()``
removes the tracing, re-instrumenting traces once, the application's own options take
effect), written here against real servers: ``uninstrument()`` removes the tracing and
never the guard; ``instrument()`` again traces each call as often as before, not twice;
uninstalling the guards leaves the tracing alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from otel_resilience import CircuitOpenError, Registry, configure, load_config
from otel_resilience._configure import reset_for_tests
from otel_resilience.instrumentation import install
from tests.clients_cases import CASES, Case
from tests.support.client_servers import HttpServer
from tests.test_clients_outage import global_provider, match_for, server_for


class Spans(SpanProcessor):
    """Counts the CLIENT spans that end while it is on."""

    def __init__(self) -> None:
        self.on = True
        self.count = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self.on and span.kind is SpanKind.CLIENT:
            self.count += 1


@pytest.fixture(scope="module")
def spans() -> Iterator[Spans]:
    collector = Spans()
    global_provider().add_span_processor(collector)
    yield collector
    collector.on = False


def spans_per_call(case: Case, server: Any, spans: Spans) -> int:
    """Client spans of one call on a fresh, warmed-up client (instrumentations apply to
    connections, sessions, engines and channels made after ``instrument()``)."""
    caller = case.caller(server)
    try:
        caller.call()
        before = spans.count
        caller.call()
        return spans.count - before
    finally:
        with contextlib.suppress(Exception):
            caller.close()


def guard_rejects(case: Case, server: Any, registry: Registry) -> bool:
    """Whether a call on a fresh client is rejected while the breaker is forced open."""
    caller = case.caller(server)
    try:
        caller.call()
        registry.breaker("dep").force_open()
        try:
            caller.call()
        except case.rejected_classes() as error:
            cause: Any = error
            while cause is not None and not isinstance(cause, CircuitOpenError):
                cause = getattr(cause, "orig", None) or cause.__cause__
            return cause is not None
        return False
    finally:
        registry.breaker("dep").reset()
        with contextlib.suppress(Exception):
            caller.close()


@pytest.mark.parametrize("order", ["instrumented-first", "guarded-first"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_uninstrument_and_reinstrument_leave_the_guard_and_trace_once(
    case: Case, order: str, spans: Spans
) -> None:
    """In either order: ``uninstrument()`` strips the tracing and keeps the guard,
    ``instrument()`` again traces as often as before, and uninstalling the guard keeps
    the tracing."""
    with server_for(case) as server:
        registry = load_config(
            {"dependencies": {"dep": {"match": match_for(case, server, "guards")}}}
        )
        instrumentors = case.instrumentors()

        def instrument() -> None:
            for instrumentor in instrumentors:
                instrumentor.instrument(tracer_provider=global_provider())

        def uninstrument_all() -> None:
            for instrumentor in instrumentors:
                instrumentor.uninstrument()

        instrument()
        try:
            baseline = spans_per_call(case, server, spans)
            assert baseline >= 1, "the instrumentation made no span"
            if order == "instrumented-first":
                uninstall = install(registry)
            else:
                uninstrument_all()
                uninstall = install(registry)
                instrument()
            try:
                assert spans_per_call(case, server, spans) == baseline
                assert guard_rejects(case, server, registry)
                uninstrument_all()
                assert spans_per_call(case, server, spans) == 0, "uninstrument() left tracing"
                assert guard_rejects(case, server, registry), "uninstrument() took the guard"
                instrument()
                assert spans_per_call(case, server, spans) == baseline, "traced twice"
                assert guard_rejects(case, server, registry)
            finally:
                uninstall()
            assert spans_per_call(case, server, spans) == baseline, "uninstall took the tracing"
            assert not guard_rejects(case, server, registry), "the guard is still there"
        finally:
            uninstrument_all()


def test_configure_switches_no_instrumentation_on_unless_asked() -> None:
    """configure() guards the clients but leaves their tracing as the application set it;
    ``instrument_clients=True`` switches on those not on yet."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    try:
        configure({}, tracer_provider=global_provider())
        assert not RequestsInstrumentor().is_instrumented_by_opentelemetry
        configure({}, tracer_provider=global_provider(), instrument_clients=True)
        assert RequestsInstrumentor().is_instrumented_by_opentelemetry
    finally:
        reset_for_tests()
    assert not RequestsInstrumentor().is_instrumented_by_opentelemetry


def test_the_apps_own_later_instrument_options_take_effect(spans: Spans) -> None:
    """After configure(instrument_clients=True), the application's own
    ``instrument(request_hook=...)`` replaces ours: its hook runs, and each request is
    still traced once."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    seen: list[str] = []
    server = HttpServer().start()
    try:
        configure({}, tracer_provider=global_provider(), instrument_clients=True)
        RequestsInstrumentor().instrument(
            tracer_provider=global_provider(),
            request_hook=lambda span, request: seen.append(request.url),
        )
        import requests

        before = spans.count
        requests.get(server.url, timeout=2)
        assert seen == [server.url]
        assert spans.count - before == 1
    finally:
        reset_for_tests()
        RequestsInstrumentor().uninstrument()
        server.stop()


def test_an_instrumentation_the_app_switched_on_is_left_alone() -> None:
    """configure(instrument_clients=True) does not touch an instrumentation the
    application switched on itself, and does not switch it off again."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    RequestsInstrumentor().instrument(tracer_provider=global_provider())
    try:
        configure({}, tracer_provider=global_provider(), instrument_clients=True)
        reset_for_tests()
        assert RequestsInstrumentor().is_instrumented_by_opentelemetry
    finally:
        reset_for_tests()
        RequestsInstrumentor().uninstrument()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_clients_made_under_an_earlier_install_follow_the_last_one(case: Case) -> None:
    """Connections, sessions and channels made while one set of guards was installed are
    guarded by the next one (``configure()`` again replaces the guards)."""
    with server_for(case) as server:
        match = match_for(case, server, "guards")
        first = load_config({"dependencies": {"dep": {"match": match}}})
        uninstall = install(first)
        caller = case.caller(server)
        try:
            caller.call()
            uninstall()
            second = load_config({"dependencies": {"dep": {"match": match}}})
            uninstall = install(second)
            second.breaker("dep").force_open()
            with pytest.raises(case.rejected_classes()):
                caller.call()
        finally:
            uninstall()
            with contextlib.suppress(Exception):
                caller.close()
