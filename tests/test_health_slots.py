"""Active checks in bounded slots, against the address the dependency's own calls use.

Real servers throughout: an own redis-server (killed), PostgreSQL behind a fault proxy
(refusing, black-holed), a sync check that never returns, a slow HTTP server.
"""

from __future__ import annotations

import asyncio
import http.server
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_resilience import BreakerSpanProcessor, HealthProber, Registry
from otel_resilience._addresses import Address
from otel_resilience._health import health_monitor
from otel_resilience.instrumentation import install
from tests.support.health_servers import FaultProxy, RedisServer, free_port, redis_server
from tests.support.reports import last_json_line

PG_DSN = "postgresql://postgres@127.0.0.1:{port}/test"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def pg_proxy() -> Iterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", 5432).start()
    try:
        yield proxy
    finally:
        proxy.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


async def until(registry: Registry, name: str, status: str) -> None:
    await asyncio.to_thread(wait_for, lambda: check_status(registry, name) == status)


def check_of(registry: Registry, name: str) -> dict[str, Any]:
    entry = registry.health().to_dict()["dependencies"][name]
    return dict(entry.get("health_check") or {})


def check_status(registry: Registry, name: str) -> str | None:
    return check_of(registry, name).get("status")


# -- a hung check in its own slot --------------------------------------------------------

HUNG_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    from otel_resilience import HealthProber, Registry
    from tests.support.health_checks_helpers import hung_starts

    registry = Registry.from_config({
        "service": "slots",
        "dependencies": {
            "stuck": {
                "criticality": "optional",
                "health_check": {
                    "type": "tests.support.health_checks_helpers:sync_hangs_forever",
                    "timeout_seconds": 0.3,
                    "interval_seconds": 0.1,
                },
            },
            "db": {
                "criticality": "critical",
                "health_check": {"type": "sql", "dsn": sys.argv[1], "timeout_seconds": 2,
                                 "interval_seconds": 0.1},
            },
        },
    })
    prober = HealthProber(registry, interval_seconds=0.1)
    prober.start()
    checked = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        document = registry.health().to_dict()
        db = document["dependencies"]["db"].get("health_check") or {}
        if db.get("checked_at"):
            checked.add(db["checked_at"])
        if len(checked) >= 8:
            break
        time.sleep(0.05)
    document = registry.health().to_dict()
    print(json.dumps({"document": document, "starts": len(hung_starts), "db_runs": len(checked)}))
    sys.stdout.flush()
    # No prober.stop(): the stuck check's thread must not keep the process alive.
    """
)


def test_hung_sync_check_is_timed_out_never_starves_and_never_blocks_exit() -> None:
    """A sync check that sleeps forever next to a healthy critical check: the healthy one
    keeps passing, the hung one is reported timed out and started once, the service is
    only degraded, and the process exits promptly without stopping the prober."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", HUNG_SCRIPT, PG_DSN.format(port=5432)],
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    elapsed = time.monotonic() - started
    report = last_json_line(result)
    document = report["document"]
    assert report["db_runs"] >= 8  # the healthy check ran again and again meanwhile
    assert document["dependencies"]["db"]["healthy"] is True
    assert document["dependencies"]["db"]["health_check"]["status"] == "passing"
    stuck = document["dependencies"]["stuck"]
    assert stuck["healthy"] is False
    assert stuck["health_check"]["status"] == "failing"
    assert "timed out after 0.3s" in stuck["health_check"]["error"]
    assert report["starts"] == 1  # never started again while stuck
    assert document["status"] == "degraded"
    assert elapsed < 30  # a generous bound: it hangs forever if the thread blocks exit


# -- the learned address -----------------------------------------------------------------


def redis_registry(**check: Any) -> Registry:
    return Registry.from_config(
        {
            "service": "learn",
            "dependencies": {
                "cache": {
                    "criticality": "critical",
                    "match": {"db.system": "redis"},
                    "health_check": {
                        "type": "redis",
                        "timeout_seconds": 0.5,
                        "interval_seconds": 0.1,
                        **check,
                    },
                }
            },
        }
    )


def test_redis_check_follows_the_guarded_client_not_localhost(own_redis: RedisServer) -> None:
    """health_check: redis without a url is unknown until the app's client is used, then
    pings that client's Redis: killing it fails the check although Redis on 6379 is up."""
    registry = redis_registry()
    uninstall = install(registry)
    client = redis.Redis(host="127.0.0.1", port=own_redis.port, socket_timeout=0.5)
    try:
        with HealthProber(registry, interval_seconds=0.1):
            wait_for(lambda: check_status(registry, "cache") == "unknown")
            assert registry.health().status == "healthy"  # unknown is not a false alarm
            client.set("otel-resilience-health:learn", "1")
            wait_for(lambda: check_status(registry, "cache") == "passing")
            own_redis.stop()
            wait_for(lambda: check_status(registry, "cache") == "failing")
            assert registry.health().status == "unhealthy"
            assert "Refused" in str(check_of(registry, "cache")["error"])
            own_redis.start()
            wait_for(lambda: check_status(registry, "cache") == "passing")
            assert registry.health().status == "healthy"
    finally:
        client.close()
        uninstall()


def test_redis_check_learns_from_client_spans(own_redis: RedisServer) -> None:
    """Without guards, the span processor teaches the check the address of the spans."""
    registry = redis_registry()
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "GET",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system": "redis",
            "net.peer.name": "127.0.0.1",
            "net.peer.port": own_redis.port,
        },
    ):
        pass
    learned = health_monitor(registry).addresses.get("cache")
    assert learned is not None
    assert (learned.host, learned.port) == ("127.0.0.1", own_redis.port)
    with HealthProber(registry, interval_seconds=0.1):
        wait_for(lambda: check_status(registry, "cache") == "passing")
        own_redis.stop()
        wait_for(lambda: check_status(registry, "cache") == "failing")
    provider.shutdown()


def test_config_url_wins_over_the_learned_address(own_redis: RedisServer) -> None:
    """A url in the config is what the check pings, whatever the calls use."""
    registry = redis_registry(url=f"redis://127.0.0.1:{free_port()}/0")
    health_monitor(registry).addresses.learn("cache", Address("127.0.0.1", own_redis.port))
    with HealthProber(registry, interval_seconds=0.1):
        wait_for(lambda: check_status(registry, "cache") == "failing")


async def test_sql_check_learns_from_asyncpg_connect_and_sees_every_outage(
    pg_proxy: FaultProxy,
) -> None:
    """health_check: sql without a dsn checks where the app's asyncpg connects (a guard
    learns it: connecting has no span): refused and black-holed fail it, recovery passes."""
    registry = Registry.from_config(
        {
            "dependencies": {
                "postgres": {
                    "criticality": "critical",
                    "match": {"db.system": "postgresql"},
                    "health_check": {
                        "type": "sql",
                        "timeout_seconds": 0.5,
                        "interval_seconds": 0.1,
                    },
                }
            }
        }
    )
    uninstall = install(registry)
    try:
        async with HealthProber(registry, interval_seconds=0.1):
            connection = await asyncpg.connect(PG_DSN.format(port=pg_proxy.port), timeout=2)
            await connection.close()
            await asyncio.to_thread(
                wait_for, lambda: check_status(registry, "postgres") == "passing"
            )
            pg_proxy.stop()
            await asyncio.to_thread(
                wait_for, lambda: check_status(registry, "postgres") == "failing"
            )
            assert registry.health().status == "unhealthy"
            pg_proxy.start()
            await asyncio.to_thread(
                wait_for, lambda: check_status(registry, "postgres") == "passing"
            )
            pg_proxy.blackhole()
            await asyncio.to_thread(
                wait_for, lambda: check_status(registry, "postgres") == "failing"
            )
            assert "timed out" in str(check_of(registry, "postgres")["error"])
            pg_proxy.forward()
            await asyncio.to_thread(
                wait_for, lambda: check_status(registry, "postgres") == "passing"
            )
    finally:
        uninstall()


# -- performance-based degradation with real latency -------------------------------------


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(type(self).delay)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def test_real_latency_degrades_the_service_before_any_breaker_opens() -> None:
    """Calls that take 0.25 s against a 0.1 s bound make the dependency slow and the
    service degraded while the breaker stays closed; fast calls make it healthy again."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    registry = Registry.from_config(
        {
            "dependencies": {
                "api": {
                    "criticality": "critical",
                    "breaker": {
                        "minimum_calls": 4,
                        "window_size": 8,
                        "slow_call_seconds": 0.1,
                        "slow_call_rate_threshold": 1.0,
                    },
                }
            }
        }
    )
    try:
        with httpx.Client(timeout=5) as client:
            _SlowHandler.delay = 0.25
            for _ in range(2):
                registry.call("api", client.get, url)
            for _ in range(2):
                _SlowHandler.delay = 0.0
                registry.call("api", client.get, url)
            document = registry.health().to_dict()
            assert document["dependencies"]["api"]["slow"] is True
            assert document["dependencies"]["api"]["state"] == "closed"
            assert document["status"] == "degraded"
            for _ in range(8):
                registry.call("api", client.get, url)
            assert registry.health().status == "healthy"
    finally:
        server.shutdown()
        server.server_close()


# -- half-open with an active check --------------------------------------------------------


async def test_half_open_with_a_check_never_flaps_to_healthy(pg_proxy: FaultProxy) -> None:
    """A critical PostgreSQL, refused: its breaker half-opens again and again, the prober
    makes each trial call, and the service stays unhealthy throughout; once PostgreSQL is
    back the next trial closes the breaker with no user traffic."""
    dsn = PG_DSN.format(port=pg_proxy.port)
    registry = Registry.from_config(
        {
            "dependencies": {
                "postgres": {
                    "criticality": "critical",
                    "match": {"db.system": "postgresql"},
                    "breaker": {
                        "consecutive_failures": 2,
                        "open_seconds": 0.3,
                        "max_open_seconds": 0.6,
                    },
                    # A long interval: only the breaker half-opening makes the check run.
                    "health_check": {"type": "sql", "dsn": dsn, "timeout_seconds": 0.5},
                }
            }
        }
    )

    async def select() -> Any:
        connection = await asyncpg.connect(dsn, timeout=0.5)
        try:
            return await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    breaker = registry.breaker("postgres")
    async with HealthProber(registry, interval_seconds=30):
        await until(registry, "postgres", "passing")
        pg_proxy.stop()
        for _ in range(2):
            with pytest.raises(ConnectionRefusedError):
                await registry.acall("postgres", select)
        assert breaker.state.value == "open"
        # The service's status at each moment the breaker half-opens (a refused trial ends
        # the half-open state within a millisecond: sampling could miss every one).
        when_half_open: list[str] = []

        def on_transition(_: Any, old: Any, new: Any) -> None:
            if new.value == "half_open":
                when_half_open.append(registry.health().status)

        breaker.add_listener(on_transition)
        statuses = set()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            statuses.add(registry.health().status)
            await asyncio.sleep(0.01)
        breaker.remove_listener(on_transition)
        assert statuses == {"unhealthy"}
        # It did half-open, and was still reported unhealthy each time.
        assert when_half_open
        assert set(when_half_open) == {"unhealthy"}
        reopened = breaker.transition_counts()
        assert sum(n for (old, new), n in reopened.items() if new.value == "open") >= 3
        pg_proxy.start()
        await asyncio.to_thread(wait_for, lambda: breaker.state.value == "closed", 5)
        assert registry.health().status == "healthy"


class _NotFoundAtRoot(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/api" else 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_http_check_follows_the_guarded_httpx_client() -> None:
    """health_check: http without a url: unknown until the app calls the service through
    httpx, then a GET of that server's root, healthy while it answers (a 404 too: the
    server answered), failing once it is gone."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFoundAtRoot)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    registry = Registry.from_config(
        {
            "dependencies": {
                "api": {
                    "criticality": "important",
                    "match": {"server.port": str(port)},
                    "health_check": {"type": "http", "timeout_seconds": 0.5},
                }
            }
        }
    )
    uninstall = install(registry)
    try:
        with HealthProber(registry, interval_seconds=0.1):
            wait_for(lambda: check_status(registry, "api") == "unknown")
            assert httpx.get(f"http://127.0.0.1:{port}/api", timeout=5).status_code == 200
            wait_for(lambda: check_status(registry, "api") == "passing")
            server.shutdown()
            server.server_close()
            wait_for(lambda: check_status(registry, "api") == "failing")
            assert registry.health().status == "degraded"
    finally:
        uninstall()


def test_sql_check_learns_from_guarded_psycopg_spans(pg_proxy: FaultProxy) -> None:
    """psycopg, guarded and instrumented: the guard records the calls and the processor
    skips their spans, yet those spans still teach the sql check where PostgreSQL is."""
    import psycopg
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    registry = Registry.from_config(
        {
            "dependencies": {
                "postgres": {
                    "criticality": "critical",
                    "match": {"db.system": "postgresql"},
                    "health_check": {"type": "sql", "timeout_seconds": 1, "interval_seconds": 0.1},
                }
            }
        }
    )
    provider = TracerProvider()
    processor = BreakerSpanProcessor(registry)
    provider.add_span_processor(processor)
    instrumentor = PsycopgInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    uninstall = install(registry)
    try:
        with psycopg.connect(
            f"host=127.0.0.1 port={pg_proxy.port} user=postgres dbname=test", connect_timeout=2
        ) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
        learned = health_monitor(registry).addresses.get("postgres")
        assert learned is not None
        assert (learned.host, learned.port) == ("127.0.0.1", pg_proxy.port)
        with HealthProber(registry, interval_seconds=0.1):
            wait_for(lambda: check_status(registry, "postgres") == "passing")
            pg_proxy.stop()
            wait_for(lambda: check_status(registry, "postgres") == "failing")
    finally:
        uninstall()
        instrumentor.uninstrument()
        processor.shutdown()
