"""End-to-end scenarios of issue 7 against the example chat service, with real servers.

One app per module (``configure()`` is process-wide), served by uvicorn on a free port: an
own redis-server that tests kill and SIGSTOP, the shared PostgreSQL behind a TCP fault
proxy, the analytics stub, and a real OTLP receiver. Each test starts from every server
up and every breaker closed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
import yaml

from otel_resilience import State
from otel_resilience._configure import reset_for_tests
from otel_resilience_demo._app import AGENT_EVENTS, DEFAULT_CONFIG, ChatService, create_app
from otel_resilience_demo._tokens import sign_token
from otel_resilience_demo.analytics_stub import AnalyticsStub
from tests.support.health_servers import (
    FaultProxy,
    RedisServer,
    free_port,
    need_tool,
    serve_asgi,
)
from tests.support.otlp_receiver import OTLPReceiver

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = f"chat_test_{os.getpid()}"
SECRET = b"chat-service-test-secret"
BREAKER = {"open_seconds": 0.5, "max_open_seconds": 4.0, "consecutive_failures": 3}
CONFIG: dict[str, Any] = {
    "service": "chat-service-test",
    "defaults": {"breaker": {"minimum_calls": 10, **BREAKER}},
    "dependencies": {
        "postgres": {
            "criticality": "critical",
            "match": {"db.system": "postgresql"},
            "breaker": {"call_timeout_seconds": 1.0},
        },
        "redis": {"criticality": "optional", "match": {"db.system": "redis"}, "fallback": "memory"},
        "analytics": {
            "criticality": "optional",
            "match": {"server.address": "placeholder"},
            "breaker": {"call_timeout_seconds": 0.5},
        },
    },
    "telemetry": {"criticality": "monitoring", "export_timeout_seconds": 0.5},
}


@dataclass
class Env:
    """The running service and the servers behind it."""

    base: str
    chat: ChatService
    redis: RedisServer
    postgres: FaultProxy
    analytics: AnalyticsStub
    collector: OTLPReceiver

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://") + "/ws"

    def state(self, name: str) -> State:
        return self.chat.registry.breaker(name).state


@pytest.fixture(scope="module")
def env(lingering_receivers: list[OTLPReceiver]) -> Iterator[Env]:
    redis = RedisServer(need_tool("redis-server"))
    redis.start()
    postgres = FaultProxy("127.0.0.1", 5432).start()
    analytics = AnalyticsStub(free_port()).start()
    collector = OTLPReceiver().start()
    app = create_app(
        CONFIG,
        redis_url=redis.url,
        postgres_dsn=f"postgresql://postgres@127.0.0.1:{postgres.port}/test",
        analytics_url=analytics.url,
        schema=SCHEMA,
        token_secret=SECRET,
        otlp_endpoint=collector.endpoint,
        probe_interval_seconds=0.2,
    )
    try:
        with serve_asgi(app) as base:
            yield Env(base, app.state.chat, redis, postgres, analytics, collector)
    finally:
        reset_for_tests()
        redis.stop()
        analytics.stop()
        postgres.close()
        # The demo's telemetry outlives the app (one per process) and keeps exporting here.
        collector.mode = "accept"
        collector.start()
        lingering_receivers.append(collector)
        asyncio.run(_drop_schema())


async def _drop_schema() -> None:
    connection = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await connection.close()


@pytest.fixture(autouse=True)
def _healthy(env: Env) -> Iterator[None]:
    """Every server up and every breaker closed before each test."""
    _restore(env)
    yield
    _restore(env)


def _restore(env: Env) -> None:
    if env.redis.process is None:
        env.redis.start()
    else:
        env.redis.resume()
    env.postgres.forward()
    if env.postgres._server is None:
        env.postgres.start()
    env.analytics.set_mode("ok")
    if env.collector.mode != "accept" or env.collector._server is None:
        env.collector.start()
    for breaker in env.chat.registry.breakers().values():
        if breaker.state is not State.DISABLED:
            breaker.reset()


# -- a WebSocket user -----------------------------------------------------------------------


@dataclass
class User:
    """One chat user: its socket, its replies by message id, and the notices it got."""

    name: str
    ws: Any
    notices: list[dict[str, Any]] = field(default_factory=list)
    foreign: list[dict[str, Any]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    async def say(self, text: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Send one message; the events about it (five, or an error), in arrival order."""
        message_id = f"{self.name}-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        await self.ws.send(json.dumps({"type": "message", "id": message_id, "text": text}))
        events: list[dict[str, Any]] = []

        async def receive() -> list[dict[str, Any]]:
            while True:
                event = json.loads(await self.ws.recv())
                if event.get("user") != self.name:
                    self.foreign.append(event)
                if event["type"] in ("service_degraded", "service_restored"):
                    self.notices.append(event)
                    continue
                if event.get("message_id") != message_id:
                    self.foreign.append(event)
                    continue
                events.append(event)
                self.latencies.append(time.monotonic() - started)
                if event["type"] in ("agent_completed", "error"):
                    return events

        # asyncio.wait_for, not asyncio.timeout: the suite also runs on Python 3.10.
        return await asyncio.wait_for(receive(), timeout)

    async def wait_notice(self, kind: str, dependency: str, timeout: float) -> dict[str, Any]:
        for notice in self.notices:
            if notice["type"] == kind and notice["dependency"] == dependency:
                return notice

        async def receive() -> dict[str, Any]:
            while True:
                event = json.loads(await self.ws.recv())
                if event["type"] in ("service_degraded", "service_restored"):
                    self.notices.append(event)
                    if event["type"] == kind and event["dependency"] == dependency:
                        return event

        return await asyncio.wait_for(receive(), timeout)


async def login(env: Env, name: str) -> str:
    async with httpx.AsyncClient(base_url=env.base) as client:
        response = await client.post("/login", json={"user": name})
        response.raise_for_status()
        token: str = response.json()["token"]
        return token


@asynccontextmanager
async def user(env: Env, name: str, token: str | None = None) -> AsyncIterator[User]:
    token = token or await login(env, name)
    async with websockets.connect(env.ws) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        hello = json.loads(await ws.recv())
        assert hello["type"] == "connected", hello
        chat_user = User(name, ws)
        yield chat_user


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


async def say_until(
    chat_user: User, env: Env, dependency: str, state: State, timeout: float = 10.0
) -> None:
    """Keep chatting until ``dependency``'s breaker is in ``state``."""
    deadline = time.monotonic() + timeout
    while env.state(dependency) is not state:
        assert time.monotonic() < deadline, f"{dependency} never reached {state.value}"
        await chat_user.say("are you there?")
        await asyncio.sleep(0.05)


def health(env: Env, path: str = "/health") -> httpx.Response:
    return httpx.get(env.base + path, follow_redirects=True, timeout=5)


# -- the scenarios ----------------------------------------------------------------------------


def test_example_config_is_the_default_config() -> None:
    """examples/chat_service/resilience.yaml says what the demo's embedded config says."""
    with open(ROOT / "examples" / "chat_service" / "resilience.yaml") as handle:
        assert yaml.safe_load(handle) == DEFAULT_CONFIG


async def test_redis_down_golden_path_continues(env: Env) -> None:
    """Redis killed: every user still gets all five events in order and messages are stored."""
    async with user(env, "ann") as ann, user(env, "bob") as bob:
        assert types(await ann.say("before the outage")) == list(AGENT_EVENTS)
        env.redis.stop()
        for round_number in range(5):
            for chat_user in (ann, bob):
                events = await chat_user.say(f"redis is down, round {round_number}")
                assert types(events) == list(AGENT_EVENTS)
        assert env.state("redis") is State.OPEN
    connection = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        rows = await connection.fetch(f"SELECT role FROM {SCHEMA}.messages WHERE user_name = 'bob'")
    finally:
        await connection.close()
    assert sum(row["role"] == "agent" for row in rows) >= 5


async def test_fallbacks_served_during_a_redis_outage_are_counted(env: Env) -> None:
    """While Redis is down the memory fallback answers every message's session count, and
    the state endpoint (what the page and the demo's terminal show) counts each serve."""

    def served() -> int:
        response = httpx.get(env.base + "/resilience/state", timeout=5)
        return int(response.json()["fallbacks"].get("redis", 0))

    async with user(env, "fay") as fay:
        # A message while Redis is up: the memory fallback has seen the session's counter
        # (it never makes up a value that Redis holds and it has not seen).
        assert types(await fay.say("hello")) == list(AGENT_EVENTS)
        env.redis.stop()
        await say_until(fay, env, "redis", State.OPEN)
        before = served()
        for _ in range(5):
            assert types(await fay.say("still here")) == list(AGENT_EVENTS)
        after = served()
    assert env.chat.state()["fallbacks"]["redis"] >= after
    assert after >= before + 5  # at least one serve per message (its INCR)


async def test_redis_hung_golden_path_continues(env: Env) -> None:
    """Redis paused (SIGSTOP): all five events still arrive for every message, none hangs."""
    async with user(env, "hana") as hana:
        env.redis.pause()
        for _ in range(6):
            assert types(await hana.say("redis hangs", timeout=5)) == list(AGENT_EVENTS)
        assert env.state("redis") is State.OPEN


async def test_monitoring_down_has_no_effect(env: Env) -> None:
    """Collector refused, then black-holed: chat completes every message, events in order."""
    async with user(env, "mo") as mo:
        await mo.say("warm up")
        deadline = time.monotonic() + 10
        while not env.collector.spans:
            assert time.monotonic() < deadline, "no span reached the collector"
            await mo.say("spans please")
            await asyncio.sleep(0.2)
        baseline = max(mo.latencies)
        env.collector.stop()
        for _ in range(10):
            assert types(await mo.say("collector refused")) == list(AGENT_EVENTS)
        env.collector.blackhole()
        for _ in range(10):
            assert types(await mo.say("collector black-holed")) == list(AGENT_EVENTS)
            await asyncio.sleep(0.1)
        # Generous: export never runs on the chat path; this only catches a hang.
        assert max(mo.latencies[-50:]) < max(1.0, 10 * baseline)
        env.collector.close_blackhole()


async def test_analytics_failing_kept_locally_and_flushed(env: Env) -> None:
    """Analytics answering 500s: chat is unaffected, events are kept, then flushed on recovery."""
    env.analytics.set_mode("error")
    sent_ids = []
    async with user(env, "ada") as ada:
        for _ in range(12):
            events = await ada.say("analytics is failing")
            assert types(events) == list(AGENT_EVENTS)
            sent_ids.append(events[0]["message_id"])
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + 5
        while env.state("analytics") is not State.OPEN:
            assert time.monotonic() < deadline, "the analytics breaker never opened"
            await asyncio.sleep(0.05)
        assert len(env.chat.analytics.kept) > 0
        env.analytics.set_mode("ok")
        deadline = time.monotonic() + 15
        while True:
            received = {event.get("message_id") for event in env.analytics.events()}
            if set(sent_ids) <= received:
                break
            assert time.monotonic() < deadline, "kept analytics were not flushed"
            await asyncio.sleep(0.1)
    assert len(env.chat.analytics.kept) == 0
    assert env.chat.analytics.flushed > 0


async def test_recovery_closes_breakers_without_operator_action(env: Env) -> None:
    """Redis, analytics and PostgreSQL come back: their breakers close from traffic alone."""
    async with user(env, "rex") as rex:
        env.redis.stop()
        await say_until(rex, env, "redis", State.OPEN)
        env.analytics.set_mode("error")
        for _ in range(10):
            await rex.say("analytics down")
        env.postgres.stop()
        await say_until(rex, env, "postgres", State.OPEN)
        deadline = time.monotonic() + 5
        while env.state("analytics") is not State.OPEN:
            assert time.monotonic() < deadline, "the analytics breaker never opened"
            await asyncio.sleep(0.05)
        env.redis.start()
        env.analytics.set_mode("ok")
        env.postgres.start()
        deadline = time.monotonic() + 20
        while any(
            env.state(name) is not State.CLOSED for name in ("redis", "analytics", "postgres")
        ):
            assert time.monotonic() < deadline, {
                n: env.state(n) for n in ("redis", "analytics", "postgres")
            }
            await rex.say("back yet?")
            await asyncio.sleep(0.1)
        assert types(await rex.say("all back")) == list(AGENT_EVENTS)
    assert health(env).json()["status"] == "healthy"


async def test_many_concurrent_users_get_exactly_their_own_events(env: Env) -> None:
    """30 users chatting at once through a Redis and analytics outage: nothing lost or crossed."""
    env.redis.stop()
    env.analytics.set_mode("error")
    names = [f"user{i:02d}" for i in range(30)]
    tokens = await asyncio.gather(*(login(env, name) for name in names))
    results: dict[str, list[list[dict[str, Any]]]] = {}

    async def chat(name: str, token: str) -> User:
        async with user(env, name, token) as chat_user:
            replies = []
            for index in range(4):
                replies.append(await chat_user.say(f"{name} says {index}", timeout=10))
            results[name] = replies
            return chat_user

    users = await asyncio.gather(*(chat(n, t) for n, t in zip(names, tokens, strict=True)))
    for chat_user in users:
        assert chat_user.foreign == []
        replies = results[chat_user.name]
        assert len(replies) == 4
        for index, events in enumerate(replies):
            assert types(events) == list(AGENT_EVENTS), events
            assert {event["user"] for event in events} == {chat_user.name}
            assert events[-1]["reply"].startswith(f"{chat_user.name},")
            assert len({event["message_id"] for event in events}) == 1, index


async def test_health_degraded_for_optional_unhealthy_for_postgres(env: Env) -> None:
    """Redis or analytics down is degraded and ready; PostgreSQL down is unhealthy, not ready."""
    async with user(env, "hal") as hal:
        env.redis.stop()
        await say_until(hal, env, "redis", State.OPEN)
        assert health(env).json()["status"] == "degraded"
        assert health(env, "/health/ready").status_code == 200
        env.redis.start()
        env.chat.registry.breaker("redis").reset()
        env.analytics.set_mode("error")
        deadline = time.monotonic() + 10
        while env.state("analytics") is not State.OPEN:
            assert time.monotonic() < deadline
            await hal.say("analytics down")
        assert health(env).json()["status"] == "degraded"
        assert health(env, "/health/ready").status_code == 200
        env.postgres.stop()
        await say_until(hal, env, "postgres", State.OPEN)
        document = health(env)
        assert document.status_code == 503
        assert document.json()["status"] == "unhealthy"
        assert health(env, "/health/ready").status_code == 503
        assert health(env, "/health/live").status_code == 200


async def test_postgres_down_fails_fast_with_a_clear_error(env: Env) -> None:
    """PostgreSQL refused or black-holed: each message gets an error event in seconds, no hang."""
    async with user(env, "pia") as pia:
        env.postgres.stop()
        started = time.monotonic()
        events = await pia.say("is the database there?", timeout=5)
        assert types(events) == ["error"]
        assert events[0]["code"] == "storage_unavailable"
        assert "postgres" in events[0]["message"]
        await say_until(pia, env, "postgres", State.OPEN)
        events = await pia.say("and now?", timeout=5)
        assert events[0]["retry_after_seconds"] is not None
        assert "breaker is open" in events[0]["message"]
        env.postgres.start()
        env.chat.registry.breaker("postgres").reset()
        env.postgres.blackhole()
        env.postgres.cut()
        for _ in range(4):
            events = await pia.say("black hole", timeout=5)
            assert types(events) == ["error"]
        assert time.monotonic() - started < 25


async def test_users_are_told_about_degradation_and_restoration(env: Env) -> None:
    """A connected user gets service_degraded naming Redis and what is limited, then restored."""
    async with user(env, "tia") as tia, user(env, "tom") as tom:
        env.redis.stop()
        await say_until(tia, env, "redis", State.OPEN)
        for chat_user in (tia, tom):
            notice = await chat_user.wait_notice("service_degraded", "redis", timeout=5)
            assert "session" in notice["limited"]
            assert notice["user"] == chat_user.name
        env.redis.start()
        deadline = time.monotonic() + 10
        while env.state("redis") is not State.CLOSED:
            assert time.monotonic() < deadline
            await tia.say("redis back?")
            await asyncio.sleep(0.1)
        for chat_user in (tia, tom):
            notice = await chat_user.wait_notice("service_restored", "redis", timeout=5)
            assert notice["dependency"] == "redis"


async def refused(env: Env, first: str) -> dict[str, Any]:
    """Connect, send ``first`` as the first message: the refusal, after a 4401 close."""
    async with websockets.connect(env.ws) as ws:
        await ws.send(first)
        refusal: dict[str, Any] = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
        return refusal


def auth(token: str) -> str:
    return json.dumps({"type": "auth", "token": token})


async def test_tokens_checked_by_session_or_signature(env: Env) -> None:
    """Redis up: a logged-out session is refused; Redis down: the signature decides; bad
    tokens never pass."""
    token = await login(env, "kim")
    async with user(env, "kim", token):
        pass
    expired = sign_token(SECRET, "kim", "some-session", ttl_seconds=-1)
    forged = sign_token(b"not the secret", "kim", "some-session")
    async with httpx.AsyncClient(base_url=env.base) as client:
        response = await client.post("/logout", json={"token": token})
        assert response.status_code == 200, response.text
    for bad in (token, expired, forged, "garbage"):
        assert (await refused(env, auth(bad)))["code"] == "unauthorized"
    env.redis.stop()
    fresh = sign_token(SECRET, "kim", "session-redis-never-saw")
    async with user(env, "kim", fresh) as kim:
        assert types(await kim.say("redis is down and I am in")) == list(AGENT_EVENTS)
    for bad in (expired, forged):
        assert (await refused(env, auth(bad)))["code"] == "unauthorized"


async def test_token_travels_in_the_first_message_not_the_url(env: Env) -> None:
    """The WebSocket URL carries no token: a token in the query string is not accepted, and
    the first message must be the auth message."""
    token = await login(env, "lea")
    async with websockets.connect(f"{env.ws}?token={token}") as ws:
        await ws.send(json.dumps({"type": "message", "id": "m1", "text": "hi"}))
        refusal = json.loads(await ws.recv())
    assert refusal["code"] == "unauthorized"
    assert "auth" in refusal["message"]
    assert (await refused(env, "not json"))["code"] == "unauthorized"
    async with user(env, "lea", token) as lea:
        assert types(await lea.say("hello")) == list(AGENT_EVENTS)


async def test_valid_tokens_survive_a_redis_restart_with_no_data(env: Env) -> None:
    """Redis restarts empty (its own redis-server, no persistence): signed tokens that were
    valid still are, with Redis answering; a logout made after the restart still counts."""
    token = await login(env, "max")
    async with user(env, "max", token) as max_:
        assert types(await max_.say("before the restart")) == list(AGENT_EVENTS)
    env.redis.stop()
    env.redis.start()  # a new, empty redis-server on the same port
    async with user(env, "max", token) as max_:
        assert types(await max_.say("after the restart")) == list(AGENT_EVENTS)
    assert env.state("redis") is State.CLOSED  # Redis answered: the session was checked
    async with httpx.AsyncClient(base_url=env.base) as client:
        response = await client.post("/logout", json={"token": token})
        assert response.status_code == 200, response.text
    assert (await refused(env, auth(token)))["code"] == "unauthorized"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return need_tool("chromium")


async def test_live_page_shows_an_open_breaker_in_chromium(env: Env) -> None:
    """/resilience rendered by headless Chromium during a Redis outage shows redis open."""
    browser = _chromium()
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    async with user(env, "pat") as pat:
        env.redis.stop()
        # Drive the breaker's re-open backoff up so it stays open while the browser loads.
        deadline = time.monotonic() + 15
        breaker = env.chat.registry.breaker("redis")
        while not (breaker.state is State.OPEN and breaker.retry_after() > 2.5):
            assert time.monotonic() < deadline, "the redis breaker did not stay open"
            await pat.say("hold it open")
            await asyncio.sleep(0.05)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        url = env.base + "/resilience"
        dom = await asyncio.to_thread(
            subprocess.run,
            [browser, *flags, "--virtual-time-budget=1500", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        shot = artifacts / "resilience-page.png"
        await asyncio.to_thread(
            subprocess.run,
            [
                browser,
                *flags,
                "--virtual-time-budget=1500",
                "--window-size=1100,520",
                f"--screenshot={shot}",
                url,
            ],
            capture_output=True,
            timeout=60,
        )
    assert 'data-dependency="redis" data-state="open"' in dom.stdout, dom.stdout[-2000:]
    assert 'data-status="degraded"' in dom.stdout
    assert shot.stat().st_size > 1000


async def test_live_page_first_paint_and_the_observe_only_row_in_words(env: Env) -> None:
    """The page's first paint says the event rate is being measured (not "0.0"); an
    auto-discovered observe-only row comes with words saying what it is."""
    browser = _chromium()
    await login(env, "ivy")  # an HTTP call of this process to 127.0.0.1: auto-discovered
    breakers = env.chat.state()["breakers"]
    observed = [name for name, b in breakers.items() if b["criticality"] == "observe-only"]
    assert observed, "no observe-only dependency was discovered"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    page = env.base + "/resilience"

    async def dom(budget_ms: int) -> str:
        result = await asyncio.to_thread(
            subprocess.run,
            [
                browser,
                *flags,
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                page,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stdout

    # One poll: the rate needs two samples. Under load the first poll's answer can miss
    # the 200 ms budget, and the page has painted no stats yet: that dump says nothing
    # either way, so it is taken again (at most three times).
    for _ in range(3):
        first = await dom(200)
        if 'id="rate"' in first:
            break
    assert '<b id="rate">measuring</b>' in first, first[-2000:]
    later = await dom(1500)
    assert re.search(r'<b id="rate">\d+\.\d</b>', later), later[-2000:]
    assert '<p id="observe-note">' in later  # shown (no "hidden" attribute)
    assert "not declared" in later
