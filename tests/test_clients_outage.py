"""Every client of docs/clients.md against a real server that fails: PostgreSQL behind a
fault proxy, an own HTTP server, an own grpc server.

For each client, with the guards and with spans alone (in both semantic-convention
modes): failing calls open the breaker, each adding exactly one failure; once open, a
guarded call is rejected within milliseconds with the client's own error (also a
``CircuitOpenError``) and the server sees nothing; after the server returns and
``open_seconds`` pass, calls succeed and the breaker closes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience import BreakerSpanProcessor, CircuitOpenError, Registry, State, load_config
from otel_resilience.instrumentation import install
from tests.clients_cases import CASES, Case
from tests.support.client_servers import SERVICE, CountingProxy, GrpcServer, HttpServer

OPEN_SECONDS = 0.4
FAILURES = 3
# guards: guards and the OTel instrumentation; guards-alone: no instrumentation at all;
# spans, spans-stable: the instrumentation alone (both semantic-convention modes).
MODES = ("guards", "guards-alone", "spans", "spans-stable")


@contextlib.contextmanager
def semconv(mode: str) -> Iterator[None]:
    """``OTEL_SEMCONV_STABILITY_OPT_IN=database,http`` for ``spans-stable``, read afresh.

    The instrumentations read the variable once per process; the test resets that
    reading before and after, so each mode is what the instrumentations see.
    """
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability as Stability,
    )

    def reread() -> None:
        Stability._initialized = False
        Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = {}

    saved = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN")
    if mode == "spans-stable":
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "database,http"
    else:
        os.environ.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
    reread()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
        else:
            os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = saved
        reread()


@contextlib.contextmanager
def server_for(case: Case) -> Iterator[Any]:
    if case.server in ("postgres", "redis"):
        proxy = CountingProxy(5432 if case.server == "postgres" else 6379)
        proxy.start()
        try:
            yield proxy
        finally:
            proxy.close()
        return
    server: Any = HttpServer() if case.server == "http" else GrpcServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def reached(server: Any) -> int:
    """How many connections (PostgreSQL) or requests (HTTP, grpc) reached the server."""
    return server.connections if isinstance(server, CountingProxy) else server.requests


def match_for(case: Case, server: Any, mode: str) -> dict[str, Any]:
    if case.server == "postgres":
        return {"db.system": "postgresql", "server.port": server.port}
    if case.server == "redis":
        return {"db.system": "redis", "server.port": server.port}
    if case.server == "grpc" and not mode.startswith("guards"):
        return {"rpc.system": "grpc", "rpc.service": SERVICE}  # grpc spans carry no address
    return {"server.address": "127.0.0.1", "server.port": server.port}


def make_fail(server: Any, how: str) -> None:
    if how == "refused":
        server.fail()
    elif how == "503":
        server.status = 503
    else:
        server.unavailable = True


@contextlib.contextmanager
def wired(case: Case, registry: Registry, mode: str) -> Iterator[None]:
    """The case's OTel instrumentations (but in ``guards-alone``) on a provider feeding
    ``registry``'s breakers, and the client guards (but in the span modes)."""
    guards = mode.startswith("guards")
    provider = global_provider()
    processor = BreakerSpanProcessor(registry)
    provider.add_span_processor(processor)
    instrumentors = [] if mode == "guards-alone" else case.instrumentors()
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    uninstall = install(registry) if guards else None
    try:
        yield
    finally:
        if uninstall is not None:
            uninstall()
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        processor.shutdown()  # the SDK cannot remove a processor: this one stops recording


def global_provider() -> TracerProvider:
    """The global SDK tracer provider, set if there is none yet.

    The grpc instrumentations ignore the ``tracer_provider`` given to ``instrument()``
    (they read it from each channel call), so spans go to the global provider.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    return provider


def assert_rejection(case: Case, error: BaseException) -> None:
    """The rejection is the client's own error and, where it is raised, CircuitOpenError."""
    if case.client == "sqlalchemy" and not isinstance(error, CircuitOpenError):
        orig = error.orig  # type: ignore[attr-defined]
        assert isinstance(orig, CircuitOpenError) or isinstance(orig.__cause__, CircuitOpenError)
    else:
        assert isinstance(error, CircuitOpenError)
    if case.client == "grpc":
        import grpc

        assert error.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def call_quietly(caller: Any) -> None:
    with contextlib.suppress(Exception):
        caller.call()


PARAMS = [
    pytest.param(case, how, mode, id=f"{case.id}-{how}-{mode}")
    for case in CASES
    for how in case.failures
    for mode in MODES
]


@pytest.mark.parametrize(("case", "how", "mode"), PARAMS)
def test_outage_opens_the_breaker_fails_fast_and_recovers(case: Case, how: str, mode: str) -> None:
    """Failing calls add one failure each and open the breaker; a guarded call is then
    rejected at once with the client's error and reaches nothing; recovery closes it."""
    guards = mode.startswith("guards")
    with semconv(mode), server_for(case) as server:
        registry = load_config(
            {
                "dependencies": {
                    "dep": {
                        "criticality": "critical",
                        "match": match_for(case, server, mode),
                        "breaker": {
                            "consecutive_failures": FAILURES,
                            "open_seconds": OPEN_SECONDS,
                            "minimum_calls": 100,
                        },
                    }
                }
            }
        )
        breaker = registry.breaker("dep")
        with wired(case, registry, mode):
            caller = case.caller(server)
            try:
                if not guards:
                    # Spans alone see no connect (there is no span for it): the failing
                    # calls are queries on connections opened before, as in a pool.
                    caller.reconnect = False
                    caller.prime(FAILURES)
                caller.call()
                assert breaker.snapshot().total_successes >= 1, "the first call was not seen"
                before = breaker.snapshot().total_successes
                caller.call()
                added = breaker.snapshot().total_successes - before
                expected = case.successes_per_call
                if not guards and case.span_successes_per_call is not None:
                    expected = case.span_successes_per_call
                assert added == expected, f"a good call added {added} successes"
                make_fail(server, how)
                for number in range(FAILURES):
                    before = breaker.snapshot()
                    call_quietly(caller)
                    after = breaker.snapshot()
                    added = after.total_failures - before.total_failures
                    assert added == 1, f"failing call {number} added {added} failures"
                    assert after.total_successes == before.total_successes
                assert breaker.state is State.OPEN
                if guards:
                    seen = reached(server)
                    started = time.monotonic()
                    with pytest.raises(case.rejected_classes()) as rejected:
                        caller.call()
                    assert time.monotonic() - started < 0.5
                    assert_rejection(case, rejected.value)
                    assert reached(server) == seen, "a rejected call reached the server"
                    assert breaker.snapshot().total_failures == FAILURES
                server.recover()
                time.sleep(OPEN_SECONDS + 0.1)
                caller.reconnect = True
                caller.call()
                assert breaker.state is State.CLOSED
            finally:
                with contextlib.suppress(Exception):
                    caller.close()


def test_connections_opened_before_the_guards_and_pooled_ones_are_guarded() -> None:
    """psycopg: a connection opened before the guards were installed, a psycopg_pool
    pool's connections and server-side cursors are rejected while the breaker is open."""
    import psycopg
    from psycopg_pool import ConnectionPool

    proxy = CountingProxy()
    proxy.start()
    dsn = f"host=127.0.0.1 port={proxy.port} dbname=test user=postgres connect_timeout=2"
    registry = load_config(
        {"dependencies": {"db": {"match": {"db.system": "postgresql", "server.port": proxy.port}}}}
    )
    early = psycopg.connect(dsn, autocommit=True)
    pool = ConnectionPool(dsn, min_size=1, max_size=1, open=True, timeout=5)
    uninstall = install(registry)
    try:
        with pool.connection() as pooled:
            pooled.execute("SELECT 1")
        registry.breaker("db").force_open()
        seen = proxy.connections
        with pytest.raises(psycopg.OperationalError) as rejected:
            early.execute("SELECT 1")
        assert isinstance(rejected.value, CircuitOpenError)
        with pool.connection() as pooled, pytest.raises(CircuitOpenError):
            pooled.execute("SELECT 1")
        with early.transaction(), pytest.raises(CircuitOpenError):
            early.cursor(name="server_side").execute("SELECT 1")
        assert proxy.connections == seen
    finally:
        uninstall()
        registry.breaker("db").reset()
        early.close()
        pool.close()
        proxy.close()


def cached_response(request: Any) -> Any:
    """A fallback for requests (by import path): a Response made here."""
    import requests

    response = requests.Response()
    response.status_code = 200
    response._content = b"from the fallback"
    response.request = request
    response.url = request.url
    return response


def test_a_requests_fallback_answers_for_an_open_http_dependency() -> None:
    """An optional HTTP dependency with a fallback: once open, ``requests`` calls get the
    fallback's answer (called with the prepared request) instead of an error."""
    import requests

    server = HttpServer().start()
    registry = load_config(
        {
            "dependencies": {
                "api": {
                    "criticality": "optional",
                    "match": {"server.address": "127.0.0.1", "server.port": server.port},
                    "fallback": "tests.test_clients_outage:cached_response",
                }
            }
        }
    )
    uninstall = install(registry)
    try:
        assert requests.get(server.url, timeout=2).status_code == 200
        registry.breaker("api").force_open()
        seen = server.requests
        answer = requests.get(server.url, timeout=2)
        assert (answer.status_code, answer.text) == (200, "from the fallback")
        assert server.requests == seen
    finally:
        uninstall()
        server.stop()


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_a_black_holed_postgres_opens_on_connect_timeouts_then_fails_fast(driver: str) -> None:
    """PostgreSQL that accepts connections and never answers: connects time out and
    count as failures; once open, a connect is rejected at once, without a connection."""
    import importlib

    module = importlib.import_module(driver)
    proxy = CountingProxy()
    proxy.start()
    dsn = f"host=127.0.0.1 port={proxy.port} dbname=test user=postgres connect_timeout=1"
    registry = load_config(
        {
            "dependencies": {
                "db": {
                    "match": {"db.system": "postgresql", "server.port": proxy.port},
                    "breaker": {"consecutive_failures": 2, "open_seconds": 30},
                }
            }
        }
    )
    uninstall = install(registry)
    try:
        proxy.blackhole()
        for _ in range(2):
            with pytest.raises(module.OperationalError):
                module.connect(dsn)
        assert registry.breaker("db").snapshot().total_failures == 2
        assert registry.breaker("db").state is State.OPEN
        seen, started = proxy.connections, time.monotonic()
        with pytest.raises(module.OperationalError) as rejected:
            module.connect(dsn)
        assert isinstance(rejected.value, CircuitOpenError)
        assert time.monotonic() - started < 0.5
        assert proxy.connections == seen
    finally:
        uninstall()
        proxy.close()


GRPC_CASES = [case for case in CASES if case.client == "grpc"]


@pytest.mark.parametrize("case", GRPC_CASES, ids=[case.id for case in GRPC_CASES])
def test_a_grpc_dependency_declared_by_service_counts_each_call_once(case: Case) -> None:
    """Declared by ``rpc.service``, a grpc dependency matches both the guard and the spans;
    each call, streams included, still counts once."""
    with server_for(case) as server:
        registry = load_config(
            {"dependencies": {"dep": {"match": {"rpc.system": "grpc", "rpc.service": SERVICE}}}}
        )
        with wired(case, registry, "guards"):
            caller = case.caller(server)
            try:
                caller.call()
                before = registry.breaker("dep").snapshot().total_successes
                caller.call()
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:  # streams record when they end
                    if registry.breaker("dep").snapshot().total_successes > before:
                        break
                    time.sleep(0.01)
                time.sleep(0.1)
                assert registry.breaker("dep").snapshot().total_successes == before + 1
            finally:
                caller.close()


LEARNING_CASES = [
    case
    for case in CASES
    if case.id in ("psycopg", "psycopg-async", "psycopg2", "requests", "urllib3", "aiohttp")
]


@pytest.mark.parametrize("case", LEARNING_CASES, ids=[case.id for case in LEARNING_CASES])
def test_guarded_calls_teach_the_health_check_their_address(case: Case) -> None:
    """A health check with no address of its own checks where the guarded calls go: the
    guard hands it the server (and a database connect's database and user)."""
    from otel_resilience._health import health_monitor

    with server_for(case) as server:
        check = "sql" if case.server == "postgres" else "http"
        registry = load_config(
            {
                "dependencies": {
                    "dep": {"match": match_for(case, server, "guards"), "health_check": check}
                }
            }
        )
        uninstall = install(registry)
        caller = case.caller(server)
        try:
            caller.call()
            learned = health_monitor(registry).addresses.get("dep")
            assert learned is not None
            assert (learned.host, learned.port) == ("127.0.0.1", server.port)
            if case.server == "postgres":
                assert (learned.database, learned.user) == ("test", "postgres")
            else:
                assert learned.scheme == "http"
        finally:
            uninstall()
            caller.close()
