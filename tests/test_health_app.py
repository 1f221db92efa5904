"""The health endpoints: routes, status codes, mounting, lifespan, real outages, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from otel_resilience import (
    BreakerPolicy,
    Dependency,
    HealthEvent,
    HealthProber,
    Registry,
    State,
    health_app,
    on_health_change,
)
from otel_resilience._cli import main as cli_main
from tests.support.health_servers import FaultProxy, RedisServer, redis_server, serve_asgi

SECRET = "hunter2"
FAST = BreakerPolicy(consecutive_failures=2, minimum_calls=2, open_seconds=0.5)


def small_registry(**criticalities: str) -> Registry:
    return Registry(
        [Dependency(name, level, policy=FAST) for name, level in criticalities.items()],
        service="chat-api",
    )


def trip(registry: Registry, name: str) -> None:
    for _ in range(2):
        registry.breaker(name).record_failure(error_type="ConnectionError")


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


# -- routes and status codes ---------------------------------------------------------------


async def test_endpoints_answer_json() -> None:
    """/health, /health/ready and /health/live answer 200 JSON while all is well."""
    app = health_app(small_registry(postgres="critical"), probe=False)
    async with client_for(app) as client:
        for path in ("/health", "/health/ready", "/health/live"):
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == "application/json"
        document = (await client.get("/health")).json()
    assert document["status"] == "healthy"
    assert document["dependencies"]["postgres"]["state"] == "closed"


@pytest.mark.parametrize(
    ("level", "status", "health_code", "ready_code"),
    [
        ("critical", "unhealthy", 503, 503),
        ("important", "degraded", 200, 200),
        ("optional", "degraded", 200, 200),
        ("monitoring", "healthy", 200, 200),
    ],
)
async def test_503_only_when_unhealthy(
    level: str, status: str, health_code: int, ready_code: int
) -> None:
    """An open breaker gives 503 on /health and /health/ready only for a critical dependency."""
    registry = small_registry(dep=level)
    trip(registry, "dep")
    async with client_for(health_app(registry, probe=False)) as client:
        health = await client.get("/health")
        ready = await client.get("/health/ready")
        live = await client.get("/health/live")
    assert health.status_code == health_code
    assert health.json()["status"] == status
    assert ready.status_code == ready_code
    assert live.status_code == 200


async def test_unknown_path_404_and_other_methods_405() -> None:
    """Other paths are 404; methods other than GET and HEAD are 405 with an Allow header."""
    async with client_for(health_app(small_registry(a="optional"), probe=False)) as client:
        missing = await client.get("/healthz")
        posted = await client.post("/health")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET, HEAD"


async def test_head_has_status_and_no_body() -> None:
    """HEAD answers the same status and headers as GET, with an empty body."""
    registry = small_registry(postgres="critical")
    trip(registry, "postgres")
    async with client_for(health_app(registry, probe=False)) as client:
        response = await client.head("/health/ready")
    assert response.status_code == 503
    assert response.content == b""


async def test_no_registry_uses_global_one_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    """health_app() with no registry asks otel_resilience's get_registry() at request time."""
    registry = small_registry(postgres="critical")
    fake = types.ModuleType("otel_resilience._configure")
    fake.get_registry = lambda: registry  # type: ignore[attr-defined]
    fake.config_error_of = lambda registry: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "otel_resilience._configure", fake)
    async with client_for(health_app(probe=False)) as client:
        document = (await client.get("/health")).json()
    assert list(document["dependencies"]) == ["postgres"]


async def test_failing_report_answers_a_fixed_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the report cannot be made, /health answers 500 with a fixed text, never the
    exception's message (which may hold a secret); /health/live still answers 200."""
    registry = small_registry(postgres="critical")

    def broken(_: object) -> None:
        raise RuntimeError("cannot connect to postgresql://app:hunter2@db/prod")

    monkeypatch.setattr("otel_resilience._health_app.health_report", broken)
    async with client_for(health_app(registry, probe=False)) as client:
        response = await client.get("/health")
        live = await client.get("/health/live")
    assert response.status_code == 500
    assert response.json() == {"status": "error", "error": "health report failed"}
    assert live.status_code == 200


# -- mounting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "paths"),
    [
        ("/ops", ("/ops/health", "/ops/health/ready", "/ops/health/live")),
        ("/health", ("/health", "/health/ready", "/health/live")),
    ],
)
async def test_mounted_in_starlette(prefix: str, paths: tuple[str, ...]) -> None:
    """Mounted in Starlette under a prefix, the endpoints live below the prefix."""
    registry = small_registry(postgres="critical")
    trip(registry, "postgres")
    app = Starlette(routes=[Mount(prefix, app=health_app(registry, probe=False))])
    # Starlette redirects a bare mount path ("/health") to "/health/", which also answers.
    async with client_for(app) as client:
        client.follow_redirects = True
        codes = [(await client.get(path)).status_code for path in paths]
        other = await client.get(f"{prefix}/nope")
    assert codes == [503, 503, 200]
    assert other.status_code == 404


async def test_mounted_in_fastapi_with_prober_in_lifespan() -> None:
    """Mounted in FastAPI, the endpoints answer and the parent's lifespan runs the prober."""
    registry = small_registry(postgres="critical")
    health = health_app(registry, interval_seconds=0.1)
    seen_running: list[bool] = []

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with health.prober:
            seen_running.append(health.prober.running)
            yield

    from contextlib import asynccontextmanager

    app = FastAPI(lifespan=asynccontextmanager(lifespan))

    @app.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    app.mount("/ops", health)
    with serve_asgi(app) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/hello")).status_code == 200
            response = await client.get("/ops/health/ready")
    assert response.status_code == 200
    assert response.json()["service"] == "chat-api"
    assert seen_running == [True]
    assert not health.prober.running


def test_own_lifespan_starts_and_stops_prober() -> None:
    """Served on its own, the app's ASGI lifespan starts the prober and stops it at shutdown."""
    app = health_app(small_registry(postgres="critical"), interval_seconds=0.1)
    with serve_asgi(app):
        assert app.prober.running
    assert not app.prober.running


# -- real outages --------------------------------------------------------------------------


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


def outage_registry(redis_url: str, dsn: str, timeout: float = 0.5) -> Registry:
    return Registry.from_config(
        {
            "service": "chat-api",
            "dependencies": {
                "redis": {
                    "criticality": "optional",
                    "match": {"db.system": "redis"},
                    "breaker": {"consecutive_failures": 2, "open_seconds": 0.5},
                    "fallback": "none",
                    "health_check": {
                        "type": "redis",
                        "url": redis_url,
                        "timeout_seconds": timeout,
                        "interval_seconds": 0.2,
                    },
                },
                "postgres": {
                    "criticality": "critical",
                    "match": {"db.system": "postgresql"},
                    "breaker": {"consecutive_failures": 2, "open_seconds": 0.5},
                    "health_check": {
                        "type": "sql",
                        "dsn": dsn,
                        "timeout_seconds": timeout,
                        "interval_seconds": 0.2,
                    },
                },
            },
        }
    )


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def redis_get(url: str) -> Any:
    client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return await client.get("k")
    finally:
        await client.aclose()


async def pg_select(dsn: str) -> Any:
    connection = await asyncpg.connect(dsn, timeout=0.5)
    try:
        return await connection.fetchval("SELECT 1")
    finally:
        await connection.close()


async def user_traffic(registry: Registry, name: str, call: Callable[[], Any], n: int) -> None:
    for _ in range(n):
        with contextlib.suppress(Exception):
            await registry.acall(name, call, fallback=None)


async def test_outage_and_recovery_without_traffic(
    own_redis: RedisServer, pg_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """Status goes healthy, degraded, unhealthy and back; the prober closes breakers by itself."""
    caplog.set_level(logging.DEBUG)
    dsn = f"postgresql://postgres:{SECRET}@127.0.0.1:{pg_proxy.port}/test"
    registry = outage_registry(own_redis.url, dsn)
    events: list[HealthEvent] = []
    on_health_change(registry, events.append)
    app = health_app(registry, probe=False)
    statuses: list[str] = []
    bodies: list[str] = []

    async def status() -> str:
        async with client_for(app) as client:
            response = await client.get("/health")
        bodies.append(response.text)
        return str(response.json()["status"])

    async with HealthProber(registry, interval_seconds=0.2):
        await wait_for(lambda: len(registry.health().dependencies["postgres"].check or {}) > 0)
        statuses.append(await status())

        own_redis.stop()
        await user_traffic(registry, "redis", lambda: redis_get(own_redis.url), 3)
        assert registry.breaker("redis").state is State.OPEN
        statuses.append(await status())

        pg_proxy.stop()
        await user_traffic(registry, "postgres", lambda: pg_select(dsn), 3)
        assert registry.breaker("postgres").state is State.OPEN
        statuses.append(await status())

        own_redis.start()
        pg_proxy.start()
        # No user traffic from here on: only the prober can close the breakers.
        await wait_for(lambda: registry.breaker("postgres").state is State.CLOSED)
        await wait_for(lambda: registry.breaker("redis").state is State.CLOSED)
        await wait_for(lambda: registry.health().status == "healthy")
        statuses.append(await status())

    assert statuses == ["healthy", "degraded", "unhealthy", "healthy"]
    downs = [e.dependency for e in events if not e.healthy]
    ups = [e.dependency for e in events if e.healthy]
    assert {"redis", "postgres"} <= set(downs)
    assert {"redis", "postgres"} <= set(ups)
    everything = "\n".join(bodies) + caplog.text + "\n".join(e.message for e in events)
    assert SECRET not in everything
    assert "SELECT" not in "\n".join(bodies)


async def test_endpoints_fast_while_everything_hangs(
    own_redis: RedisServer, pg_proxy: FaultProxy
) -> None:
    """With redis SIGSTOPped and postgres black-holed, every endpoint answers within 1 s,
    while both checks are in flight, hanging, the whole time."""
    dsn = f"postgresql://postgres:{SECRET}@127.0.0.1:{pg_proxy.port}/test"
    registry = outage_registry(own_redis.url, dsn, timeout=5.0)
    own_redis.pause()
    pg_proxy.blackhole()
    app = health_app(registry, interval_seconds=0.1)
    try:
        with serve_asgi(app) as base:
            await asyncio.sleep(0.3)  # checks are now in flight and hanging
            hanging_before = _hanging_checks(app)
            slowest = 0.0
            async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
                for _ in range(10):
                    for path in ("/health", "/health/ready", "/health/live"):
                        started = time.monotonic()
                        response = await client.get(path)
                        slowest = max(slowest, time.monotonic() - started)
                        assert response.status_code == 200
            hanging_after = _hanging_checks(app)
            redis_connections = await asyncio.to_thread(_established_to, own_redis.port)
    finally:
        own_redis.resume()
    assert slowest < 1.0
    # The same two checks hung from before the first request to after the last one, and
    # the redis one is connected to the stopped server, waiting for its answer.
    assert set(hanging_before) == {"redis", "postgres"}
    assert hanging_after == hanging_before
    assert redis_connections >= 1


def _hanging_checks(app: Any) -> dict[str, int]:
    """The checks the health app's prober has in flight: dependency name -> task id."""
    in_flight = app.prober._in_flight
    return {name: id(task) for name, task in in_flight.items() if not task.done()}


async def test_hung_checks_do_not_pile_up(own_redis: RedisServer) -> None:
    """A check that hangs past its interval is not started again until it ends: after
    0.5 s (its interval is 0.2 s, its timeout 1 s) the one redis check started is still in
    flight, holding the only connection to the stopped server."""
    registry = outage_registry(own_redis.url, "postgresql://postgres@127.0.0.1:1/test", 1.0)
    own_redis.pause()
    try:
        async with HealthProber(registry, interval_seconds=0.05) as prober:
            await asyncio.sleep(0.5)
            redis_check = prober._in_flight.get("redis")
            hanging = redis_check is not None and not redis_check.done()
            connections = await asyncio.to_thread(_established_to, own_redis.port)
    finally:
        own_redis.resume()
    assert hanging  # a check was started and hangs
    assert connections == 1  # and no second one was started next to it


def _established_to(port: int) -> int:
    """Count client TCP connections from this process to 127.0.0.1:port."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            remote = fields[2]
            if int(remote.split(":")[1], 16) == port and fields[3] in ("01", "02"):
                count += 1
    return count


# -- the CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tripped", "code", "word"),
    [((), 0, "healthy"), (("cache",), 1, "degraded"), (("cache", "postgres"), 2, "unhealthy")],
)
def test_cli_status_exit_codes(
    tripped: tuple[str, ...], code: int, word: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """otel-resilience status prints the table and exits 0, 1 or 2 by status."""
    registry = small_registry(postgres="critical", cache="optional")
    for name in tripped:
        trip(registry, name)
    with serve_asgi(health_app(registry, probe=False)) as base:
        exit_code = cli_main(["status", base, "--timeout", "2"])
    out = capsys.readouterr().out
    assert exit_code == code
    assert word in out
    assert "postgres" in out
    assert "cache" in out


def test_cli_status_json(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the health document itself."""
    with serve_asgi(health_app(small_registry(postgres="critical"), probe=False)) as base:
        assert cli_main(["status", f"{base}/health", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["service"] == "chat-api"


def test_cli_status_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable URL exits 3 with a message on stderr."""
    from tests.support.health_servers import free_port

    assert cli_main(["status", f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 3
    assert "unreachable" in capsys.readouterr().err


def test_cli_status_shows_a_slow_dependency(capsys: pytest.CaptureFixture[str]) -> None:
    """A slow (but closed) dependency shows as slow, and the service exits 1 (degraded)."""
    registry = Registry.from_config(
        {
            "service": "chat-api",
            "dependencies": {
                "search": {
                    "criticality": "critical",
                    "breaker": {"minimum_calls": 4, "slow_call_seconds": 0.5},
                }
            },
        }
    )
    breaker = registry.breaker("search")
    for duration in (0.1, 0.1, 0.9, 0.9):
        breaker.record_success(duration)
    with serve_asgi(health_app(registry, probe=False)) as base:
        exit_code = cli_main(["status", base, "--timeout", "2"])
    out = capsys.readouterr().out
    assert exit_code == 1
    assert "degraded" in out
    assert "slow" in out
