"""The example's /resilience live page: events with times, timeline ticks, and per
dependency calls per second by outcome and p99 latency, rendered by headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from otel_resilience import State
from otel_resilience._configure import reset_for_tests
from otel_resilience_demo._app import ChatService, create_app, prepare_config
from otel_resilience_demo.analytics_stub import AnalyticsStub
from tests.support.health_servers import RedisServer, free_port, need_tool, serve_asgi

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "live-page-admin-token"
TOKEN_ENV = "LIVE_PAGE_ADMIN_TOKEN"
CONFIG: dict[str, Any] = {
    "service": "chat-live-page-test",
    "defaults": {"breaker": {"minimum_calls": 10, "consecutive_failures": 3, "open_seconds": 5.0}},
    "dependencies": {
        "postgres": {"criticality": "critical", "match": {"db.system": "postgresql"}},
        "redis": {"criticality": "optional", "match": {"db.system": "redis"}, "fallback": "memory"},
        "analytics": {
            "criticality": "optional",
            "match": {"server.address": "placeholder"},
            "breaker": {"call_timeout_seconds": 0.5},
        },
    },
    "admin": {"token_env": TOKEN_ENV},
}


class Live:
    def __init__(self, base: str, chat: ChatService, redis: RedisServer, analytics_url: str):
        self.base = base
        self.chat = chat
        self.redis = redis
        self.analytics_url = analytics_url


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    os.environ[TOKEN_ENV] = TOKEN
    os.environ["OTEL_RESILIENCE_CHAOS"] = "1"  # a reload below switches a drill on
    redis = RedisServer(need_tool("redis-server"))
    redis.start()
    analytics = AnalyticsStub(free_port()).start()
    app = create_app(
        CONFIG,
        redis_url=redis.url,
        postgres_dsn="memory:",
        analytics_url=analytics.url,
        token_secret=b"live-page-secret",
        probe_interval_seconds=0.2,
    )
    try:
        with serve_asgi(app) as base:
            yield Live(base, app.state.chat, redis, analytics.url)
    finally:
        reset_for_tests()
        redis.stop()
        analytics.stop()
        os.environ.pop(TOKEN_ENV, None)
        os.environ.pop("OTEL_RESILIENCE_CHAOS", None)


@contextlib.asynccontextmanager
async def traffic(base: str) -> AsyncIterator[list[int]]:
    """A user sending messages without pause; yields the count of answered messages."""
    async with httpx.AsyncClient(base_url=base) as client:
        token = (await client.post("/login", json={"user": "pat"})).json()["token"]
    answered = [0]
    stop = asyncio.Event()

    async def chat() -> None:
        async with websockets.connect(base.replace("http://", "ws://") + "/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await ws.recv())["type"] == "connected"
            while not stop.is_set():
                message_id = uuid.uuid4().hex
                await ws.send(json.dumps({"type": "message", "id": message_id, "text": "hi"}))
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if event.get("message_id") == message_id and event["type"] in (
                        "agent_completed",
                        "error",
                    ):
                        answered[0] += 1
                        break
                await asyncio.sleep(0.02)

    task = asyncio.create_task(chat())

    def failed_fast(_: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not stop.is_set():
            answered[0] = -1  # wait_until's check sees it: the user's chat broke

    task.add_done_callback(failed_fast)
    try:
        yield answered
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def admin(base: str, name: str, action: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base) as client:
        return await client.post(
            f"/health/breakers/{name}/{action}", headers={"Authorization": f"Bearer {TOKEN}"}
        )


async def screenshot(browser: str, url: str, path: Path) -> None:
    """A headless Chromium screenshot of ``url`` at ``path`` (under test-artifacts/)."""
    path.parent.mkdir(exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    await asyncio.to_thread(
        subprocess.run,
        [
            browser,
            *flags,
            "--virtual-time-budget=1500",
            "--window-size=1500,700",
            f"--screenshot={path}",
            url,
        ],
        capture_output=True,
        timeout=60,
    )


async def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {check}"
        await asyncio.sleep(0.1)


async def test_live_page_shows_events_ticks_and_plots_in_chromium(live: Live) -> None:
    """During traffic, a Redis outage, a manual force-open and reset, a reload (applied and
    failed) and chaos on/off, the page lists each event with its time, draws time ticks,
    and plots calls per second by outcome and p99 latency per dependency; Chromium renders
    it and a screenshot is kept in test-artifacts/."""
    browser = need_tool("chromium")
    registry = live.chat.registry
    async with traffic(live.base) as answered:
        await wait_until(lambda: answered[0] > 20 or answered[0] < 0)
        assert answered[0] > 20, "the chat user's connection broke"
        await asyncio.sleep(2 * live.chat.series.step_seconds + 0.5)  # two samples at least
        live.redis.stop()
        await wait_until(lambda: registry.breaker("redis").state is State.OPEN)
        assert (await admin(live.base, "analytics", "force-open")).status_code == 200
        changed = prepare_config(CONFIG, live.analytics_url)
        changed["dependencies"]["redis"]["breaker"] = {"open_seconds": 2.0}
        changed["chaos"] = {"enabled": True, "dependencies": {"analytics": {"error_rate": 0.5}}}
        registry.reload(changed)  # a shorter open time, and a chaos drill on analytics
        outage = ROOT / "test-artifacts" / "resilience-live-outage.png"
        await screenshot(browser, live.base + "/resilience", outage)
        broken = prepare_config(CONFIG, live.analytics_url)
        broken["dependencies"]["redis"]["breaker"] = {"open_seconds": -1}
        with pytest.raises(ValueError, match="open_seconds"):
            registry.reload(broken)
        await asyncio.sleep(1.0)
        live.redis.start()
        await wait_until(lambda: registry.breaker("redis").state is State.CLOSED)
        registry.reload(prepare_config(CONFIG, live.analytics_url))  # the drill ends
        assert (await admin(live.base, "analytics", "reset")).status_code == 200
        await asyncio.sleep(live.chat.series.step_seconds + 0.5)

    state = httpx.get(live.base + "/resilience/state").json()
    kinds = [(e["kind"], e["dependency"], e["detail"]) for e in state["events"]]
    assert ("transition", "redis", "closed → open") in kinds
    assert ("manual", "analytics", "force-open") in kinds
    assert ("manual", "analytics", "reset") in kinds
    assert ("reload", None, "applied") in kinds
    assert any(k == "reload" and d.startswith("failed") for k, _, d in kinds)
    assert ("chaos", "analytics", "on") in kinds
    assert ("chaos", "analytics", "off") in kinds
    redis_points = state["series"]["dependencies"]["redis"]
    assert any(p["success"] > 0 for p in redis_points)
    assert any(p["p99_ms"] is not None and p["p99_ms"] > 0 for p in redis_points)
    assert any(p["rejected"] > 0 or p["failure"] > 0 for p in redis_points)

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    url = live.base + "/resilience"
    dom = await asyncio.to_thread(
        subprocess.run,
        [browser, *flags, "--virtual-time-budget=1500", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    shot = ROOT / "test-artifacts" / "resilience-live-events.png"
    await screenshot(browser, url, shot)
    html = dom.stdout
    assert '<li data-kind="transition" data-dependency="redis">' in html, html[-3000:]
    assert '<li data-kind="manual" data-dependency="analytics">' in html
    assert '<li data-kind="reload">' in html
    assert '<li data-kind="chaos" data-dependency="analytics">' in html
    assert len(re.findall(r'<time datetime="[^"]+">\d\d:\d\d:\d\d</time>', html)) >= 6
    assert len(re.findall(r'class="tick-label"[^>]*>\d\d:\d\d:\d\d<', html)) >= 2
    assert html.count('class="tick"') >= 5 * 3
    assert '<svg class="plot" data-dependency="redis"' in html
    for outcome in ("success", "p99"):
        assert f'data-outcome="{outcome}"' in html
    assert 'class="mark"' in html  # the manual actions and reloads marked on the timeline
    assert shot.stat().st_size > 1000
    assert outage.stat().st_size > 1000
