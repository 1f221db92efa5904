"""The example chat service through PostgreSQL outages, with its own resilience.yaml.

The example config gives PostgreSQL an active ``sql`` check with no DSN: it checks where
the app's own connections go. The shared PostgreSQL sits behind a fault proxy that
refuses (stopped) or black-holes; ``/health`` must be unhealthy through a refused, a hung
and a silent (no traffic) outage, healthy within one probe interval of PostgreSQL coming
back, and every chat message during a hung outage must get its error within 2 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets

from otel_resilience import State
from otel_resilience._configure import reset_for_tests
from otel_resilience_demo._app import ChatService, create_app
from otel_resilience_demo.analytics_stub import AnalyticsStub
from tests.support.health_servers import FaultProxy, RedisServer, free_port, need_tool, serve_asgi

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "chat_service" / "resilience.yaml"
SCHEMA = f"chat_pg_test_{os.getpid()}"
PROBE_INTERVAL = 0.5  # the example app's default
CHECK_TIMEOUT = 1.0  # the example config's health_check.timeout_seconds
SLACK = 0.75  # scheduling and a check's own run time on a busy 2-core machine


@dataclass
class Env:
    base: str
    chat: ChatService
    postgres: FaultProxy

    def breaker_state(self) -> State:
        return self.chat.registry.breaker("postgres").state


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    redis = RedisServer(need_tool("redis-server"))
    redis.start()
    postgres = FaultProxy("127.0.0.1", 5432).start()
    analytics = AnalyticsStub(free_port()).start()
    app = create_app(
        str(CONFIG),
        redis_url=redis.url,
        postgres_dsn=f"postgresql://postgres@127.0.0.1:{postgres.port}/test",
        analytics_url=analytics.url,
        schema=SCHEMA,
        token_secret=b"chat-service-postgres-test",
        probe_interval_seconds=PROBE_INTERVAL,
    )
    try:
        with serve_asgi(app) as base:
            yield Env(base, app.state.chat, postgres)
    finally:
        reset_for_tests()
        redis.stop()
        analytics.stop()
        postgres.close()
        asyncio.run(_drop_schema())


async def _drop_schema() -> None:
    connection = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await connection.close()


@pytest.fixture(autouse=True)
def _postgres_up(env: Env) -> Iterator[None]:
    """PostgreSQL reachable and the service healthy before each test."""
    _restore(env)
    _wait(lambda: health(env)["status"] == "healthy", 10, "the service is healthy")
    yield
    _restore(env)


def _restore(env: Env) -> None:
    env.postgres.forward()
    if env.postgres._server is None:
        env.postgres.start()


def health(env: Env) -> dict[str, Any]:
    response = httpx.get(f"{env.base}/health", timeout=5)
    document: dict[str, Any] = response.json()
    assert response.status_code == (503 if document["status"] == "unhealthy" else 200)
    return document


def _wait(predicate: Any, timeout: float, what: str) -> float:
    """Poll ``predicate`` every 20 ms; the seconds it took, or fail naming ``what``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


async def await_health(env: Env, status: str, timeout: float) -> float:
    return await asyncio.to_thread(
        _wait, lambda: health(env)["status"] == status, timeout, f"/health {status}"
    )


@asynccontextmanager
async def chat_user(env: Env, name: str) -> AsyncIterator[Any]:
    async with httpx.AsyncClient(base_url=env.base) as client:
        token = (await client.post("/login", json={"user": name})).json()["token"]
    async with websockets.connect(f"{env.base.replace('http', 'ws', 1)}/ws") as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(await ws.recv())["type"] == "connected"
        yield ws


async def say(ws: Any, text: str) -> tuple[str, float]:
    """Send a message; the type of its final event (agent_completed or error) and how long
    it took to arrive."""
    message_id = uuid.uuid4().hex
    started = time.monotonic()
    await ws.send(json.dumps({"type": "message", "id": message_id, "text": text}))

    async def receive() -> tuple[str, float]:
        while True:
            event = json.loads(await ws.recv())
            if event.get("message_id") == message_id and event["type"] in (
                "agent_completed",
                "error",
            ):
                return event["type"], time.monotonic() - started

    # asyncio.wait_for, not asyncio.timeout: the suite also runs on Python 3.10.
    return await asyncio.wait_for(receive(), 10)


class HealthSampler:
    """Reads /health every 50 ms in the background and keeps the statuses seen."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.statuses: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.env.base, timeout=5) as client:
            while True:
                self.statuses.append((await client.get("/health")).json()["status"])
                await asyncio.sleep(0.05)

    async def __aenter__(self) -> HealthSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def test_the_example_config_checks_postgres_where_the_app_connects(env: Env) -> None:
    """The example's PostgreSQL check has no DSN and passes against the app's own server."""
    entry = health(env)["dependencies"]["postgres"]
    assert entry["health_check"]["status"] == "passing"
    learned = env.chat.registry  # the address came from the app's pool connecting
    from otel_resilience._health import health_monitor

    address = health_monitor(learned).addresses.get("postgres")
    assert address is not None
    assert address.port == env.postgres.port


async def test_silent_outage_is_unhealthy_and_recovers_within_one_interval(env: Env) -> None:
    """No traffic at all: PostgreSQL refusing makes /health unhealthy (503) by its check
    alone, and healthy again within one probe interval of PostgreSQL coming back."""
    env.postgres.stop()
    await await_health(env, "unhealthy", PROBE_INTERVAL + CHECK_TIMEOUT + SLACK)
    async with HealthSampler(env) as sampler:
        await asyncio.sleep(1.5)
    assert set(sampler.statuses) == {"unhealthy"}
    assert env.breaker_state() is State.CLOSED  # nothing called it: only the check knows
    env.postgres.start()
    took = await await_health(env, "healthy", 5)
    assert took <= PROBE_INTERVAL + SLACK


async def test_refused_outage_with_traffic_stays_unhealthy_until_it_returns(env: Env) -> None:
    """Messages fail fast while PostgreSQL refuses; /health is unhealthy the whole time,
    half-open periods included; once it is back the breaker closes without any message
    and /health is healthy within one probe interval."""
    async with chat_user(env, "rita") as ws:
        assert (await say(ws, "hello"))[0] == "agent_completed"
        env.postgres.stop()
        await await_health(env, "unhealthy", PROBE_INTERVAL + CHECK_TIMEOUT + SLACK)
        async with HealthSampler(env) as sampler:
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                kind, took = await say(ws, "anyone there?")
                assert kind == "error"
                assert took < 2.0
                await asyncio.sleep(0.1)
        assert set(sampler.statuses) == {"unhealthy"}
        counts = env.chat.registry.breaker("postgres").transition_counts()
        assert counts.get((State.OPEN, State.HALF_OPEN), 0) >= 1  # half-open: still unhealthy
        env.postgres.start()
        took = await await_health(env, "healthy", 5)
        assert took <= PROBE_INTERVAL + SLACK
        assert env.breaker_state() is State.CLOSED
        assert (await say(ws, "back?"))[0] == "agent_completed"


async def test_hung_outage_every_message_errors_within_2s(env: Env) -> None:
    """PostgreSQL black-holed (accepting, never answering): each message gets its error
    within 2 s, /health is unhealthy through the outage, and healthy again within one
    probe interval (plus the timeout of a check caught in flight) after it answers."""
    async with chat_user(env, "hugo") as ws:
        assert (await say(ws, "hello"))[0] == "agent_completed"
        env.postgres.blackhole()
        env.postgres.cut()
        latencies: list[float] = []
        kind, took = await say(ws, "is it hung?")
        assert kind == "error"
        latencies.append(took)
        await await_health(env, "unhealthy", PROBE_INTERVAL + CHECK_TIMEOUT + SLACK)
        async with HealthSampler(env) as sampler:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                kind, took = await say(ws, "still hung?")
                assert kind == "error"
                latencies.append(took)
                await asyncio.sleep(0.05)
        assert set(sampler.statuses) == {"unhealthy"}
        assert max(latencies) < 2.0, latencies
        env.postgres.forward()
        took = await await_health(env, "healthy", 6)
        assert took <= PROBE_INTERVAL + CHECK_TIMEOUT + SLACK
        assert (await say(ws, "back?"))[0] == "agent_completed"
