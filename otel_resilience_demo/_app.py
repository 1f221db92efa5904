"""The example chat service: a Starlette app whose agents stream five events per message.

Dependencies, as ``resilience.yaml`` declares them: PostgreSQL (critical: every message is
stored), Redis (optional, ``fallback: memory``: sessions and per-session counters), an
analytics HTTP service (optional: events are kept locally, bounded, while it fails and
sent when it is back) and telemetry (monitoring). ``configure()`` puts breakers on all
of them: an open Redis breaker serves the memory cache, an open PostgreSQL breaker makes
a message fail at once with an ``error`` event, an open analytics breaker keeps events
locally. Users are sent ``service_degraded`` / ``service_restored`` when an optional
dependency's breaker opens or closes.

Endpoints: ``POST /login`` (a signed token), ``POST /logout``, ``WS /ws`` (the first
message is ``{"type": "auth", "token": ...}``),
``/health`` (``health_app``), ``/metrics`` (Prometheus), ``/resilience`` (a live page),
``/resilience/state`` (what the page polls).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from otel_resilience import (
    CircuitBreaker,
    CircuitOpenError,
    Criticality,
    OperatorEvent,
    Registry,
    State,
    configure,
    health_app,
)

from ._live import CallSeries, install_latency_recorder
from ._page import RESILIENCE_PAGE
from ._telemetry import Telemetry, build_telemetry, export_spans, prometheus_text
from ._tokens import InvalidToken, sign_token, verify_token

__all__ = ["AGENT_EVENTS", "DEFAULT_CONFIG", "LIMITATIONS", "ChatService", "create_app"]

_log = logging.getLogger(__name__)

AGENT_EVENTS = (
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
)

# The example's resilience.yaml as a dict (examples/chat_service/resilience.yaml is the
# same; a test keeps them equal). Short open times so a demo shows recovery in seconds.
DEFAULT_CONFIG: dict[str, Any] = {
    "service": "chat-service",
    "defaults": {
        "breaker": {
            "failure_rate_threshold": 0.5,
            "minimum_calls": 10,
            "consecutive_failures": 3,
            "open_seconds": 1.0,
            "max_open_seconds": 4.0,
        }
    },
    "dependencies": {
        "postgres": {
            "criticality": "critical",
            "match": {"db.system": "postgresql"},
            "breaker": {"call_timeout_seconds": 1.0},
            "health_check": {"type": "sql", "timeout_seconds": 1.0},
        },
        "redis": {
            "criticality": "optional",
            "match": {"db.system": "redis"},
            "fallback": "memory",
        },
        "analytics": {
            "criticality": "optional",
            "match": {"server.address": "analytics.internal"},
            "breaker": {"call_timeout_seconds": 1.0},
        },
    },
    "telemetry": {
        "criticality": "monitoring",
        "export_timeout_seconds": 0.4,
        "breaker": {"open_seconds": 1.0, "max_open_seconds": 2.0},
    },
    "admin": {"token_env": "OTEL_RESILIENCE_ADMIN_TOKEN"},
}

# What a user loses while an optional dependency is down, in the words the user is sent.
LIMITATIONS = {
    "redis": "session cache: sessions are served from this server's memory and sign-in "
    "relies on token signatures",
    "analytics": "usage analytics: events are kept on this server and sent when it is back",
}

_STORE_DEADLINE_SECONDS = 2.0
_SESSION_TTL_SECONDS = 3600
_AUTH_SECONDS = 5.0


def _read_config_file(path: Path) -> Any:
    """A YAML (or JSON, which YAML reads too) config file as plain data."""
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _load(config: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None:
        return copy.deepcopy(DEFAULT_CONFIG)
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    raw = _read_config_file(Path(config))
    if not isinstance(raw, dict):
        raise ValueError(f"{os.fspath(config)}: a config must be a mapping, got {raw!r}")
    return raw


def prepare_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | None, analytics_url: str
) -> dict[str, Any]:
    """The config with the analytics dependency's ``match`` pointed at ``analytics_url``.

    Redis and PostgreSQL are matched by ``db.system``; the analytics service is matched
    by the host and port it is actually reached at, so other HTTP calls of the process
    (a test client, the service's own health checks) are not counted as analytics.
    """
    prepared = _load(config)
    dependencies = prepared.get("dependencies") or {}
    analytics = dependencies.get("analytics")
    if isinstance(analytics, dict):
        parts = urlsplit(analytics_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        analytics["match"] = {"server.address": parts.hostname or "", "server.port": str(port)}
    return prepared


@dataclass
class Stats:
    """Counters the live page, the demo's terminal view and the tests read."""

    started_at: float = field(default_factory=time.monotonic)
    messages: int = 0
    completed: int = 0
    failed_fast: int = 0
    events_sent: int = 0
    notices_sent: int = 0
    connections: int = 0
    refused_connections: int = 0
    auth_by_session: int = 0
    auth_by_signature: int = 0


class AnalyticsForwarder:
    """Posts analytics events in the background; keeps them locally while the service fails.

    ``enqueue`` never blocks and never raises: the chat path hands an event over and moves
    on. One task posts them; an event that cannot be posted (error, 5xx, timeout, open
    breaker) goes to ``kept``, a bounded deque whose oldest entries are dropped (and
    counted) when full. While anything is kept, a flush is tried every ``retry_seconds``:
    with the breaker open it is rejected at once without I/O, and once the breaker admits
    a trial call the flush closes it and empties ``kept``.
    """

    def __init__(
        self,
        url: str,
        *,
        max_pending: int = 1000,
        max_kept: int = 10_000,
        retry_seconds: float = 0.5,
        timeout_seconds: float = 1.0,
        batch_size: int = 200,
    ) -> None:
        self.url = url.rstrip("/")
        self.pending: deque[dict[str, Any]] = deque()
        self.kept: deque[dict[str, Any]] = deque(maxlen=max_kept)
        self.max_pending = max_pending
        self.retry_seconds = retry_seconds
        self.timeout_seconds = timeout_seconds
        self.batch_size = batch_size
        self.sent = 0
        self.flushed = 0
        self.dropped = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def enqueue(self, event: dict[str, Any]) -> None:
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(event)
        if self._wake is not None:
            self._wake.set()

    def _keep(self, events: list[dict[str, Any]]) -> None:
        overflow = len(self.kept) + len(events) - (self.kept.maxlen or 0)
        if overflow > 0:
            self.dropped += overflow
        self.kept.extend(events)

    def wake(self) -> None:
        """Try again now (the breaker closed)."""
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _post(self, client: httpx.AsyncClient, events: list[dict[str, Any]]) -> bool:
        try:
            response = await client.post(f"{self.url}/events", json=events)
        except (httpx.HTTPError, OSError, asyncio.TimeoutError, CircuitOpenError):
            return False
        return response.status_code < 300

    async def _run(self) -> None:
        assert self._wake is not None
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
            while True:
                if not self.pending:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(
                            self._wake.wait(), self.retry_seconds if self.kept else None
                        )
                    self._wake.clear()
                while self.pending:
                    events = [self.pending.popleft()]
                    while self.pending and len(events) < self.batch_size:
                        events.append(self.pending.popleft())
                    if self.kept or not await self._post(client, events):
                        # Something is already kept: keep order, let the flush send it.
                        self._keep(events)
                    else:
                        self.sent += len(events)
                while self.kept:
                    batch = [self.kept[i] for i in range(min(self.batch_size, len(self.kept)))]
                    if not await self._post(client, batch):
                        break
                    for _ in batch:
                        self.kept.popleft()
                    self.flushed += len(batch)
                    self.sent += len(batch)


class MemoryStore:
    """An in-process stand-in for PostgreSQL (``postgres_dsn="memory://"``), for machines
    without PostgreSQL. Its calls go through the postgres breaker with ``registry.acall``;
    ``down`` makes them fail as a refused connection would."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.down = False

    async def insert(self, user: str, role: str, message_id: str, body: str) -> None:
        if self.down:
            raise ConnectionRefusedError("in-process PostgreSQL stand-in is down")
        self.rows.append((user, role, message_id, body))


class _Connection:
    """One WebSocket connection: an outbound queue drained by one task, so frames of
    different senders (the agent, a broadcast notice) never interleave."""

    def __init__(self, websocket: WebSocket, user: str) -> None:
        self.websocket = websocket
        self.user = user
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.sent = 0

    def send(self, event: dict[str, Any]) -> None:
        self.queue.put_nowait(event)

    async def drain(self) -> None:
        while (event := await self.queue.get()) is not None:
            try:
                await self.websocket.send_text(json.dumps(event, separators=(",", ":")))
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            self.sent += 1


class ChatService:
    """The service's state and behaviour; the Starlette routes call into it."""

    def __init__(
        self,
        registry: Registry,
        *,
        redis_url: str,
        postgres_dsn: str,
        analytics_url: str,
        schema: str,
        token_secret: bytes,
        telemetry: Telemetry,
        probe_interval_seconds: float,
    ) -> None:
        if not schema.isidentifier():
            raise ValueError(f"schema must be a plain SQL identifier, got {schema!r}")
        self.registry = registry
        self.redis_url = redis_url
        self.postgres_dsn = postgres_dsn
        self.schema = schema
        self.token_secret = token_secret
        self.telemetry = telemetry
        self.analytics = AnalyticsForwarder(analytics_url)
        self.health = health_app(registry, interval_seconds=probe_interval_seconds)
        self.stats = Stats()
        self.connections: set[_Connection] = set()
        self.limited: dict[str, str] = {}
        self.timeline: deque[dict[str, Any]] = deque(maxlen=500)
        # What the page lists: transitions, reloads, manual actions, chaos on/off.
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self.series = CallSeries(registry)
        self._sampler: asyncio.Task[None] | None = None
        self._remove_event_listener: Any = None
        self.redis: redis.asyncio.Redis | None = None
        self.pool: Any = None
        self.memory = MemoryStore() if postgres_dsn.startswith("memory:") else None
        self._schema_ready = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove_listener: Any = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._remove_listener = self.registry.add_transition_listener(self._on_transition)
        self._remove_event_listener = self.registry.add_event_listener(self._on_operator_event)
        install_latency_recorder(self.series)
        self._sampler = self._loop.create_task(self._sample_series())
        self.redis = redis.asyncio.Redis.from_url(
            self.redis_url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        if self.memory is None:
            # min_size 0: the service starts (and fails fast) while PostgreSQL is down.
            # Connecting, as waiting for a free connection (_execute), is bounded by the
            # store's deadline: 30 first messages at once open 9 connections together.
            self.pool = await asyncpg.create_pool(
                self.postgres_dsn,
                min_size=0,
                max_size=10,
                timeout=_STORE_DEADLINE_SECONDS,
                command_timeout=2.0,
            )
            with contextlib.suppress(Exception):
                await self._ensure_schema()
        self.analytics.start()
        await self.health.prober.astart()

    async def stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
        if self._remove_event_listener is not None:
            self._remove_event_listener()
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sampler
        for connection in list(self.connections):
            connection.send({"type": "server_stopping"})
            connection.queue.put_nowait(None)
        await self.health.prober.astop()
        await self.analytics.stop()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 2.0)
            if self.pool is not None:
                self.pool.terminate()
        self.telemetry.flush()

    # -- PostgreSQL (critical) -------------------------------------------------------------

    async def _ensure_schema(self) -> None:
        await self._execute(
            f"CREATE SCHEMA IF NOT EXISTS {self.schema}; "
            f"CREATE TABLE IF NOT EXISTS {self.schema}.messages ("
            " id bigserial PRIMARY KEY, user_name text NOT NULL, role text NOT NULL,"
            " message_id text NOT NULL, body text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        self._schema_ready = True

    async def _execute(self, sql: str, *args: Any) -> None:
        # Waiting for a free connection is bounded by the store's own deadline, not a
        # shorter one: 30 users' first messages at once queue on the 10 connections (a
        # wait of 1 s failed one of them on a loaded machine while PostgreSQL was fine).
        connection = await self.pool.acquire(timeout=_STORE_DEADLINE_SECONDS)
        try:
            await connection.execute(sql, *args)
        except BaseException:
            connection.terminate()  # a failed or timed-out connection is not reused
            raise
        finally:
            with contextlib.suppress(Exception):
                await self.pool.release(connection, timeout=1.0)

    async def store(self, user: str, role: str, message_id: str, body: str) -> None:
        """Store one message; raises within ``_STORE_DEADLINE_SECONDS`` when it cannot."""

        async def store() -> None:
            if self.memory is not None:
                await self.registry.acall(
                    "postgres", self.memory.insert, user, role, message_id, body
                )
                return
            if not self._schema_ready:
                await self._ensure_schema()
            await self._execute(
                f"INSERT INTO {self.schema}.messages (user_name, role, message_id, body)"
                " VALUES ($1, $2, $3, $4)",
                user,
                role,
                message_id,
                body,
            )

        await asyncio.wait_for(store(), _STORE_DEADLINE_SECONDS)

    async def stored_messages(self, user: str) -> list[tuple[str, str, str]]:
        """(role, message_id, body) of ``user``'s stored messages, oldest first."""
        if self.memory is not None:
            return [row[1:] for row in self.memory.rows if row[0] == user]
        rows = await self.pool.fetch(
            f"SELECT role, message_id, body FROM {self.schema}.messages"
            " WHERE user_name = $1 ORDER BY id",
            user,
        )
        return [(row["role"], row["message_id"], row["body"]) for row in rows]

    # -- Redis (optional, memory fallback) -------------------------------------------------

    def _fallbacks_served(self) -> int:
        return sum(n for (name, _), n in self.registry.fallback_counts().items() if name == "redis")

    async def login(self, user: str) -> str:
        """A signed token for ``user``, valid until it expires or is logged out.

        Nothing is stored: Redis keeps only the sessions that were logged out, so a token
        stays valid while Redis is down and after Redis restarts with no data.
        """
        session_id = uuid.uuid4().hex
        return sign_token(self.token_secret, user, session_id, ttl_seconds=_SESSION_TTL_SECONDS)

    async def logout(self, token: str) -> None:
        """Refuse ``token`` from now on: its session is kept in Redis until it would expire.

        While Redis is down the memory fallback keeps it, on this server only.
        """
        claims = verify_token(self.token_secret, token)
        assert self.redis is not None
        remaining = max(1, int(claims.expires_at - time.time()) + 1)
        await self.redis.set(f"chat:logged-out:{claims.session_id}", claims.user, ex=remaining)

    async def authenticate(self, token: str) -> tuple[str, str]:
        """(user, how): how is ``session`` (Redis says the session was not logged out) or
        ``signature`` (Redis is down: the signature and expiry alone decide).

        Raises ``InvalidToken`` for a bad or expired token whatever Redis's state, and for
        a logged-out session while Redis (or its memory fallback) knows of the logout.
        """
        claims = verify_token(self.token_secret, token)
        breaker = self.registry.breaker("redis")
        if breaker.state in (State.OPEN, State.FORCED_OPEN):
            return claims.user, "signature"
        assert self.redis is not None
        before = self._fallbacks_served()
        try:
            logged_out = await self.redis.exists(f"chat:logged-out:{claims.session_id}")
        except Exception:
            return claims.user, "signature"
        if logged_out:
            raise InvalidToken("session ended (logged out)")
        if self._fallbacks_served() != before:
            return claims.user, "signature"  # the answer came from the fallback, not Redis
        return claims.user, "session"

    async def session_count(self, session_key: str) -> int | None:
        """Messages in this session so far (Redis, or its memory fallback).

        INCR and EXPIRE, which the memory fallback answers while Redis is down for a counter
        it has seen (it does not answer HINCRBY: the count would be lost, and no fallback
        served or counted). A session that starts during the outage goes uncounted.
        """
        assert self.redis is not None
        key = f"{session_key}:messages"
        try:
            count = await self.redis.incr(key)
            await self.redis.expire(key, _SESSION_TTL_SECONDS)
        except Exception:
            return None
        return int(count)

    # -- notices ---------------------------------------------------------------------------

    def _on_transition(self, breaker: CircuitBreaker, old: State, new: State) -> None:
        """Any thread (the prober's, the event loop's): hand over to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        stamp = time.time()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._transition, breaker.name, old, new, stamp)

    def _on_operator_event(self, event: OperatorEvent) -> None:
        """Any thread (a reload's worker, a request's): hand over to the event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        entry = {
            "t": event.at,
            "kind": event.kind,
            "dependency": event.dependency,
            "detail": event.detail,
        }
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.events.append, entry)

    async def _sample_series(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.series.sample()
            await asyncio.sleep(self.series.step_seconds)

    def _transition(self, name: str, old: State, new: State, stamp: float) -> None:
        self.timeline.append({"t": stamp, "dependency": name, "from": old.value, "to": new.value})
        self.events.append(
            {
                "t": stamp,
                "kind": "transition",
                "dependency": name,
                "detail": f"{old.value} → {new.value}",
                "state": new.value,
            }
        )
        try:
            criticality = self.registry[name].criticality
        except KeyError:
            return
        if criticality in (Criticality.CRITICAL, Criticality.MONITORING):
            return
        if new in (State.OPEN, State.FORCED_OPEN) and name not in self.limited:
            self.limited[name] = LIMITATIONS.get(name, f"{name} is unavailable")
            self.broadcast(self._notice("service_degraded", name))
        elif new is State.CLOSED and name in self.limited:
            del self.limited[name]
            self.broadcast(self._notice("service_restored", name))
            if name == "analytics":
                self.analytics.wake()

    def _notice(self, kind: str, name: str) -> dict[str, Any]:
        if kind == "service_degraded":
            limited = self.limited[name]
            message = f"{name} is unavailable; limited: {limited}. Chat continues."
        else:
            limited = LIMITATIONS.get(name, name)
            message = f"{name} is back; no longer limited: {limited}."
        return {
            "type": kind,
            "dependency": name,
            "limited": limited,
            "message": message,
            "ts": time.time(),
        }

    def broadcast(self, event: dict[str, Any]) -> None:
        for connection in list(self.connections):
            connection.send(dict(event, user=connection.user))
            self.stats.notices_sent += 1

    # -- the chat --------------------------------------------------------------------------

    def _event(self, connection: _Connection, kind: str, message_id: str, **extra: Any) -> None:
        connection.send(
            {"type": kind, "user": connection.user, "message_id": message_id, "ts": time.time()}
            | extra
        )
        self.stats.events_sent += 1

    async def handle_message(self, connection: _Connection, session: str, data: Any) -> None:
        user = connection.user
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            connection.send(
                {
                    "type": "error",
                    "code": "bad_request",
                    "message": 'send {"type": "message", "id": "...", "text": "..."}',
                }
            )
            return
        message_id = str(data.get("id") or uuid.uuid4().hex)
        text: str = data["text"]
        self.stats.messages += 1
        try:
            await self.store(user, "user", message_id, text)
        except Exception as exc:
            self._fail_fast(connection, message_id, exc)
            return
        self._event(connection, "agent_started", message_id)
        count = await self.session_count(f"chat:session:{session}")
        self._event(
            connection,
            "agent_thinking",
            message_id,
            session_messages=count,
            session_cache="fallback" if "redis" in self.limited else "redis",
        )
        self._event(connection, "tool_executing", message_id, tool="word_count")
        words = len(text.split())
        await asyncio.sleep(0)
        self._event(connection, "tool_completed", message_id, tool="word_count", result=words)
        reply = f"{user}, your message has {words} word{'s' if words != 1 else ''}."
        try:
            await self.store(user, "agent", message_id, reply)
        except Exception as exc:
            self._fail_fast(connection, message_id, exc)
            return
        self._event(connection, "agent_completed", message_id, reply=reply)
        self.stats.completed += 1
        self.analytics.enqueue(
            {"event": "message_completed", "user": user, "message_id": message_id, "words": words}
        )

    def _fail_fast(self, connection: _Connection, message_id: str, exc: BaseException) -> None:
        self.stats.failed_fast += 1
        retry_after = exc.retry_after if isinstance(exc, CircuitOpenError) else None
        reason = "its circuit breaker is open" if retry_after is not None else type(exc).__name__
        hint = f"; retry in {retry_after:.1f}s" if retry_after is not None else ""
        connection.send(
            {
                "type": "error",
                "code": "storage_unavailable",
                "dependency": "postgres",
                "user": connection.user,
                "message_id": message_id,
                "message": f"Your message was not sent: message storage (postgres) is "
                f"unavailable ({reason}){hint}.",
                "retry_after_seconds": retry_after,
                "ts": time.time(),
            }
        )

    async def _first_token(self, websocket: WebSocket) -> str:
        """The token of the ``{"type": "auth", "token": ...}`` message a client sends first.

        Not in the URL: a query string ends up in access logs and in the URL attributes of
        spans. Raises ``InvalidToken`` when the first message is not that, or does not come
        within ``_AUTH_SECONDS``.
        """
        try:
            raw = await asyncio.wait_for(websocket.receive_text(), _AUTH_SECONDS)
            message = json.loads(raw)
        except asyncio.TimeoutError:
            raise InvalidToken(f"no auth message within {_AUTH_SECONDS:g}s") from None
        except (ValueError, KeyError):
            message = None
        token = message.get("token") if isinstance(message, dict) else None
        if not isinstance(message, dict) or message.get("type") != "auth":
            raise InvalidToken('send {"type": "auth", "token": "<token>"} first')
        if not isinstance(token, str):
            raise InvalidToken("the auth message has no token")
        return token

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            token = await self._first_token(websocket)
            user, how = await self.authenticate(token)
        except WebSocketDisconnect:
            return
        except InvalidToken as exc:
            self.stats.refused_connections += 1
            await websocket.send_text(
                json.dumps({"type": "error", "code": "unauthorized", "message": str(exc)})
            )
            await websocket.close(code=4401, reason=str(exc)[:100])
            return
        if how == "session":
            self.stats.auth_by_session += 1
        else:
            self.stats.auth_by_signature += 1
        session = verify_token(self.token_secret, token).session_id
        connection = _Connection(websocket, user)
        self.connections.add(connection)
        self.stats.connections += 1
        drain = asyncio.get_running_loop().create_task(connection.drain())
        connection.send({"type": "connected", "user": user, "auth": how, "ts": time.time()})
        for name in list(self.limited):
            connection.send(dict(self._notice("service_degraded", name), user=user))
        try:
            while True:
                raw = await websocket.receive_text()
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
                await self.handle_message(connection, session, data)
        except WebSocketDisconnect:
            pass
        finally:
            self.connections.discard(connection)
            connection.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(drain, 2.0)

    def state(self) -> dict[str, Any]:
        """What ``/resilience/state`` returns: health, breakers, timeline and counters."""
        report = self.registry.health().to_dict()
        breakers = {}
        for name, breaker in self.registry.breakers().items():
            snapshot = breaker.snapshot()
            dependency = self.registry[name]
            breakers[name] = {
                "state": snapshot.state.value,
                "failure_rate": snapshot.failure_rate,
                "criticality": "observe-only"
                if dependency.observe_only
                else dependency.criticality.value,
            }
        fallbacks: dict[str, int] = {}
        for (name, _), count in self.registry.fallback_counts().items():
            fallbacks[name] = fallbacks.get(name, 0) + count
        stats = self.stats
        return {
            "service": self.registry.service,
            "now": time.time(),
            "health": report,
            "breakers": breakers,
            "limited": dict(self.limited),
            "timeline": list(self.timeline),
            "events": list(self.events),
            "series": self.series.to_dict(),
            "fallbacks": fallbacks,
            "stats": {
                "uptime_seconds": time.monotonic() - stats.started_at,
                "messages": stats.messages,
                "completed": stats.completed,
                "failed_fast": stats.failed_fast,
                "events_sent": stats.events_sent,
                "notices_sent": stats.notices_sent,
                "connections_open": len(self.connections),
                "refused_connections": stats.refused_connections,
                "analytics_sent": self.analytics.sent,
                "analytics_kept": len(self.analytics.kept),
                "analytics_flushed": self.analytics.flushed,
                "analytics_dropped": self.analytics.dropped,
                "telemetry_export": self.telemetry.otlp_endpoint is not None,
            },
        }


def create_app(
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    redis_url: str,
    postgres_dsn: str,
    analytics_url: str,
    schema: str = "chat_service",
    token_secret: bytes | None = None,
    otlp_endpoint: str | None = None,
    probe_interval_seconds: float = 0.5,
) -> Starlette:
    """The chat service as a Starlette app, pointed at the given servers.

    ``config`` is a resilience.yaml path, a dict, or None for ``DEFAULT_CONFIG``; the
    analytics dependency's ``match`` is set to ``analytics_url``'s host and port. Calls
    ``configure()`` (one per process: a second app replaces the first's wiring). Messages
    go to ``<schema>.messages``, created when missing. ``app.state.chat`` is the
    ``ChatService``.
    """
    telemetry = build_telemetry(otlp_endpoint)
    registry = configure(
        prepare_config(config, analytics_url),
        meter_provider=telemetry.meter_provider,
        instrument_clients=True,  # the demo's traces show the clients' spans too
    )
    export_spans(telemetry, registry)
    for name in ("postgres", "redis", "analytics"):
        if name not in registry:
            raise ValueError(f"the chat service's config must declare a {name!r} dependency")
    service = ChatService(
        registry,
        redis_url=redis_url,
        postgres_dsn=postgres_dsn,
        analytics_url=analytics_url,
        schema=schema,
        token_secret=token_secret if token_secret is not None else secrets.token_bytes(32),
        telemetry=telemetry,
        probe_interval_seconds=probe_interval_seconds,
    )

    async def login(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user or len(user) > 64:
            return JSONResponse({"error": 'send {"user": "<name>"} (1-64 chars)'}, 400)
        return JSONResponse({"user": user, "token": await service.login(user)})

    async def logout(request: Request) -> Response:
        try:
            body = await request.json()
            await service.logout(str(body["token"]))
        except (ValueError, KeyError, TypeError, InvalidToken) as exc:
            return JSONResponse({"error": f"cannot log out: {exc}"}, 400)
        return JSONResponse({"logged_out": True})

    async def metrics(request: Request) -> Response:
        exposition = prometheus_text()
        if exposition is None:
            return JSONResponse({"error": "prometheus_client is not installed"}, 404)
        body, content_type = exposition
        return Response(body, media_type=content_type)

    async def page(request: Request) -> Response:
        return HTMLResponse(RESILIENCE_PAGE)

    async def state(request: Request) -> Response:
        return JSONResponse(service.state(), headers={"cache-control": "no-store"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            WebSocketRoute("/ws", service.serve),
            Route("/health", service.health),
            Mount("/health", app=service.health),
            Route("/metrics", metrics),
            Route("/resilience", page),
            Route("/resilience/state", state),
        ],
        lifespan=lifespan,
    )
    app.state.chat = service
    return app


def example_config_path() -> Path:
    """Where ``examples/chat_service/resilience.yaml`` is in a source checkout."""
    return Path(__file__).resolve().parents[2] / "examples" / "chat_service" / "resilience.yaml"
