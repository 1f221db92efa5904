"""Chaos drills: the double switch, fault injection, and its path through the guards."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import CircuitOpenError, ConfigError, Registry, load_config
from otel_resilience._chaos import ChaosSettings, FaultInjector, FaultSpec, chaos_switched_on
from otel_resilience._metrics import ResilienceMetrics
from otel_resilience.instrumentation import install
from tests.support.health_servers import RedisServer, redis_server
from tests.test_metrics import points

# -- pure ------------------------------------------------------------------------------


def test_both_switches_are_needed() -> None:
    """The config's enabled flag and OTEL_RESILIENCE_CHAOS=1 together arm a drill; either
    alone injects nothing."""
    faults = {"redis": FaultSpec(error_rate=1.0)}
    assert chaos_switched_on({"OTEL_RESILIENCE_CHAOS": "1"})
    for value in ("", "0", "true", "yes"):
        assert not chaos_switched_on({"OTEL_RESILIENCE_CHAOS": value})
    assert not chaos_switched_on({})
    assert ChaosSettings(True, faults, armed=True).spec_for("redis") == faults["redis"]
    assert ChaosSettings(True, faults, armed=False).spec_for("redis") is None
    assert ChaosSettings(False, faults, armed=True).spec_for("redis") is None
    assert ChaosSettings(True, faults, armed=True).spec_for("postgres") is None


def test_settings_read_the_environment_when_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings made without an explicit ``armed`` take it from the environment."""
    monkeypatch.delenv("OTEL_RESILIENCE_CHAOS", raising=False)
    assert not ChaosSettings(True).armed
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    assert ChaosSettings(True).armed


def test_error_rate_one_fails_every_call() -> None:
    """error_rate 1.0: every draw asks for a fault, reported as it is drawn."""
    seen: list[str] = []
    injector = FaultInjector(FaultSpec(error_rate=1.0), on_fault=seen.append)
    assert [injector.draw() for _ in range(5)] == [(0.0, True)] * 5
    assert seen == ["error"] * 5


def test_rates_are_drawn_per_call() -> None:
    """error_rate and latency_rate are shares of calls (seeded, so exact here); a call
    drawn neither gets None."""
    injector = FaultInjector(
        FaultSpec(error_rate=0.25, latency_seconds=0.5, latency_rate=0.5), rng=random.Random(3)
    )
    plans = [injector.draw() for _ in range(2000)]
    failed = sum(1 for plan in plans if plan is not None and plan[1])
    delayed = [plan[0] for plan in plans if plan is not None and plan[0]]
    assert 400 < failed < 600
    assert 850 < len(delayed) < 1150
    assert set(delayed) == {0.5}
    assert None in plans


def test_latency_and_error_together_are_both_reported() -> None:
    """A slow failing call: both faults reported, latency first."""
    events: list[str] = []
    injector = FaultInjector(FaultSpec(error_rate=1.0, latency_seconds=0.2), on_fault=events.append)
    assert injector.draw() == (0.2, True)
    assert events == ["latency", "error"]


def test_an_idle_spec_injects_nothing() -> None:
    """Zero rates, or latency with no seconds, are idle and draw nothing."""
    assert FaultSpec().idle
    assert FaultSpec(latency_seconds=1.0, latency_rate=0).idle
    assert not FaultSpec(latency_seconds=1.0).idle
    assert FaultInjector(FaultSpec(latency_rate=1.0)).draw() is None


def test_a_failing_reporter_does_not_break_the_drill() -> None:
    """on_fault raising is ignored: the fault is still drawn."""

    def broken(kind: str) -> None:
        raise RuntimeError("telemetry down")

    injector = FaultInjector(FaultSpec(error_rate=1.0), on_fault=broken)
    assert injector.draw() == (0.0, True)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"error_rate": -0.1}, "error_rate"),
        ({"error_rate": 2}, "error_rate"),
        ({"error_rate": "often"}, "error_rate"),
        ({"latency_rate": 1.5}, "latency_rate"),
        ({"latency_seconds": -1}, "latency_seconds"),
        ({"latency_seconds": 3600}, "latency_seconds"),
        ({"latency_seconds": float("inf")}, "latency_seconds"),
    ],
)
def test_bad_fault_values_name_the_field(values: dict[str, object], field: str) -> None:
    """Rates outside 0..1 and negative or absurd latencies are refused."""
    with pytest.raises(ValueError, match=field):
        FaultSpec(**values)  # type: ignore[arg-type]


# -- drills against an own redis-server that counts the commands it gets ---------------


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as own:
        yield own


def commands_received(server: RedisServer, command: str) -> int:
    """How many ``command`` calls the server executed (INFO commandstats), asked with no
    guard installed."""
    with redis.Redis(port=server.port) as admin:
        stats = admin.info("commandstats")
    entry = stats.get(f"cmdstat_{command}")
    return int(entry["calls"]) if entry else 0


def drill_registry(server: RedisServer, faults: dict[str, Any], **extra: Any) -> Registry:
    return load_config(
        {
            "dependencies": {
                "cache": {
                    "match": {"db.system": "redis", "server.port": server.port},
                    "breaker": {"consecutive_failures": 3, "open_seconds": 30},
                    **extra,
                }
            },
            "chaos": {"enabled": True, "dependencies": {"cache": faults}},
        }
    )


def client_for(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))


def test_error_rate_one_keeps_every_call_from_the_server(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Armed (config and OTEL_RESILIENCE_CHAOS=1), error_rate 1.0: every GET fails with
    redis' own ConnectionError before any I/O (the server counts none), the failures open
    the breaker like real ones, and each injected fault is counted."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = drill_registry(server, {"error_rate": 1.0})
    before = commands_received(server, "get")
    uninstall = install(registry)
    try:
        client = client_for(server)
        for _ in range(3):
            with pytest.raises(redis.exceptions.ConnectionError) as injected:
                client.get("k")
            assert not isinstance(injected.value, CircuitOpenError)
        assert registry.breaker("cache").state.value == "open"
        with pytest.raises(CircuitOpenError):
            client.get("k")
    finally:
        uninstall()
    assert commands_received(server, "get") == before
    snapshot = registry.breaker("cache").snapshot()
    assert (snapshot.total_failures, snapshot.last_error_type) == (3, "ConnectionError")
    assert registry.chaos_counts() == {("cache", "error"): 3, ("cache", "latency"): 0}


def test_enabled_without_the_variable_injects_nothing(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chaos.enabled true but no OTEL_RESILIENCE_CHAOS: every command reaches the server."""
    monkeypatch.delenv("OTEL_RESILIENCE_CHAOS", raising=False)
    registry = drill_registry(server, {"error_rate": 1.0, "latency_seconds": 5.0})
    before = commands_received(server, "get")
    uninstall = install(registry)
    try:
        client = client_for(server)
        started = time.monotonic()
        for _ in range(5):
            assert client.get("k") is None
        assert time.monotonic() - started < 4.0  # no 5 s latency either
    finally:
        uninstall()
    assert commands_received(server, "get") == before + 5
    assert set(registry.chaos_counts().values()) == {0}  # reported, never counted


def test_injected_errors_get_the_fallback(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An optional dependency with a fallback serves it for an injected error, as for a
    real one (reason error)."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = drill_registry(
        server,
        {"error_rate": 1.0},
        criticality="optional",
        fallback="tests.fallbacks_for_tests:local_analytics",
    )
    uninstall = install(registry)
    try:
        assert client_for(server).get("k") == "kept locally"
    finally:
        uninstall()
    assert registry.fallback_counts() == {("cache", "error"): 1}


def test_latency_is_added_before_the_call_and_marked_on_the_span(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """latency_seconds with latency_rate 1: the call waits first, then reaches the server;
    the client span (the instrumentation runs outside the guard) carries
    resilience.chaos=true."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = drill_registry(server, {"latency_seconds": 0.2, "latency_rate": 1.0})
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    uninstall = install(registry)
    RedisInstrumentor().instrument(tracer_provider=provider)  # over the guard's layer
    try:
        started = time.monotonic()
        assert client_for(server).get("k") is None
        assert time.monotonic() - started >= 0.2
    finally:
        RedisInstrumentor().uninstrument()
        uninstall()
    spans = [span for span in exporter.get_finished_spans() if span.name == "GET"]
    assert len(spans) == 1
    attributes = spans[0].attributes or {}
    assert attributes["resilience.chaos"] is True
    assert attributes["resilience.chaos.fault"] == "latency"
    assert registry.chaos_counts() == {("cache", "error"): 0, ("cache", "latency"): 1}


async def test_async_latency_does_not_block_the_event_loop(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis.asyncio under a latency drill: the wait is an asyncio.sleep, so another task
    keeps running meanwhile."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = drill_registry(server, {"latency_seconds": 0.3})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    uninstall = install(registry)
    client = redis.asyncio.Redis(port=server.port, socket_timeout=5)
    ticking = asyncio.ensure_future(ticker())
    try:
        assert await client.get("k") is None
    finally:
        ticking.cancel()
        await client.aclose()
        uninstall()
    assert ticks >= 10
    assert registry.chaos_counts() == {("cache", "error"): 0, ("cache", "latency"): 1}


def test_registry_chaos_context_manager_for_tests() -> None:
    """registry.chaos(name, error_rate=1.0) injects faults into call/protect/guard inside
    the block only (with no env var needed: a test asks for it explicitly)."""
    registry = Registry.from_config({"dependencies": {"svc": {}}})

    @registry.protect("svc")
    def protected() -> str:
        return "ok"

    assert registry.call("svc", lambda: "ok") == "ok"
    with registry.chaos("svc", error_rate=1.0):
        with pytest.raises(ConnectionError):
            registry.call("svc", lambda: pytest.fail("must not run"))
        with pytest.raises(ConnectionError):
            protected()
        with pytest.raises(ConnectionError), registry.guard("svc"):
            pytest.fail("a faulted block must not run")
        assert registry.call("svc", lambda: "x", fallback=lambda: "fallback") == "fallback"
    assert registry.call("svc", lambda: "ok") == "ok"
    assert protected() == "ok"
    assert registry.chaos_counts() == {("svc", "error"): 4}
    assert registry.breaker("svc").snapshot().total_failures == 4


def test_without_a_client_span_the_surrounding_span_is_marked() -> None:
    """A fault injected into registry.call marks the span of the surrounding work."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    registry = Registry.from_config({"dependencies": {"svc": {}}})
    with (
        registry.chaos("svc", error_rate=1.0),
        provider.get_tracer("test").start_as_current_span("request"),
        pytest.raises(ConnectionError),
    ):
        registry.call("svc", lambda: "never")
    (span,) = exporter.get_finished_spans()
    assert span.attributes == {"resilience.chaos": True, "resilience.chaos.fault": "error"}


async def test_registry_chaos_latency_on_acall() -> None:
    """registry.chaos(name, latency_seconds=...) delays acall with asyncio.sleep."""
    registry = Registry.from_config({"dependencies": {"svc": {}}})

    async def work() -> str:
        return "ok"

    with registry.chaos("svc", latency_seconds=0.05):
        started = time.monotonic()
        assert await registry.acall("svc", work) == "ok"
        assert time.monotonic() - started >= 0.05
    assert registry.chaos_counts() == {("svc", "latency"): 1}


@pytest.mark.parametrize(
    ("chaos", "key"),
    [
        ({"enabled": "yes"}, "chaos.enabled"),
        ({"dependencies": {"cache": {"error_rate": 1.5}}}, "chaos.dependencies.cache.error_rate"),
        ({"dependencies": {"cache": {"error_rate": -1}}}, "chaos.dependencies.cache.error_rate"),
        (
            {"dependencies": {"cache": {"latency_seconds": -0.1}}},
            "chaos.dependencies.cache.latency_seconds",
        ),
        (
            {"dependencies": {"cache": {"latency_seconds": 86400}}},
            "chaos.dependencies.cache.latency_seconds",
        ),
        (
            {"dependencies": {"cache": {"latency_rate": 2}}},
            "chaos.dependencies.cache.latency_rate",
        ),
        ({"dependencies": {"cache": {"eror_rate": 1}}}, "chaos.dependencies.cache.eror_rate"),
        ({"dependencies": {"nosuch": {"error_rate": 1}}}, "chaos.dependencies.nosuch"),
    ],
)
def test_bad_chaos_blocks_are_config_errors_naming_the_key(chaos: Any, key: str) -> None:
    """Mistyped switches, rates outside 0..1, negative or absurd latencies, unknown keys
    and undeclared dependencies fail at load."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config({"dependencies": {"cache": {}}, "chaos": chaos})


DRILL_APP = """
import json

import redis

from otel_resilience import get_registry

client = redis.Redis(port={port}, socket_timeout=5, retry=None)
failed = 0
for _ in range(5):
    try:
        client.get("k")
    except redis.exceptions.ConnectionError:
        failed += 1
registry = get_registry()
print("RESULT " + json.dumps({{
    "failed": failed,
    "state": registry.breaker("cache").state.value,
    "injected": registry.chaos_counts().get(("cache", "error"), 0),
}}))
"""


@pytest.mark.parametrize("armed", [True, False])
def test_a_staging_drill_needs_only_the_config_and_the_variable(
    server: RedisServer, tmp_path: Path, armed: bool
) -> None:
    """Under opentelemetry-instrument, an unchanged app against a Redis drill (config with
    chaos enabled, error_rate 1.0): with OTEL_RESILIENCE_CHAOS=1 every GET fails before
    reaching the server and the breaker opens; without it, all five reach the server."""
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert instrument is not None, "opentelemetry-instrument is part of the test install"
    config = tmp_path / "resilience.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            dependencies:
              cache:
                criticality: critical
                match: {{db.system: redis, server.port: {server.port}}}
                breaker: {{consecutive_failures: 3, open_seconds: 30}}
            chaos:
              enabled: true
              dependencies:
                cache: {{error_rate: 1.0}}
            """
        )
    )
    app = tmp_path / "app.py"
    app.write_text(DRILL_APP.format(port=server.port))
    env = {key: value for key, value in os.environ.items() if key != "OTEL_RESILIENCE_CHAOS"} | {
        "OTEL_RESILIENCE_CONFIG": str(config),
        "OTEL_PYTHON_DISTRO": "otel_resilience",
        "OTEL_PYTHON_CONFIGURATOR": "otel_resilience",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    if armed:
        env["OTEL_RESILIENCE_CHAOS"] = "1"
    before = commands_received(server, "get")
    result = subprocess.run(
        [instrument, sys.executable, str(app)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, result.stdout + result.stderr
    report = json.loads(lines[0].removeprefix("RESULT "))
    if armed:
        assert report == {"failed": 5, "state": "open", "injected": 3}
        assert commands_received(server, "get") == before
    else:
        assert report == {"failed": 0, "state": "closed", "injected": 0}
        assert commands_received(server, "get") == before + 5


def test_injected_faults_are_counted_in_their_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    """resilience.chaos.injected counts faults by kind; a dependency named in the chaos
    block is reported from load, at 0."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    registry = load_config(
        {
            "dependencies": {"svc": {}, "quiet": {}},
            "chaos": {
                "enabled": True,
                "dependencies": {
                    "svc": {"error_rate": 1.0, "latency_seconds": 0.001},
                    "quiet": {"error_rate": 0.0},
                },
            },
        }
    )
    reader = InMemoryMetricReader()
    ResilienceMetrics(MeterProvider(metric_readers=[reader])).attach(registry)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            registry.call("svc", lambda: "never")
    injected = {
        (a["dependency.name"], a["fault"]): v
        for a, v in points(reader)["resilience.chaos.injected"]
    }
    assert injected == {
        ("svc", "error"): 2,
        ("svc", "latency"): 2,
        ("quiet", "error"): 0,
        ("quiet", "latency"): 0,
    }


def test_reload_arms_and_disarms_a_drill(monkeypatch: pytest.MonkeyPatch) -> None:
    """registry.reload applies a chaos block (and its removal) in place."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    config: dict[str, Any] = {"dependencies": {"svc": {}}}
    registry = load_config(config)
    assert registry.call("svc", lambda: "ok") == "ok"
    config["chaos"] = {"enabled": True, "dependencies": {"svc": {"error_rate": 1.0}}}
    registry.reload(config)
    with pytest.raises(ConnectionError):
        registry.call("svc", lambda: "never")
    config["chaos"]["enabled"] = False
    registry.reload(config)
    assert registry.call("svc", lambda: "ok") == "ok"
    assert registry.chaos_counts()[("svc", "error")] == 1
