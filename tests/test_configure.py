"""configure(), get_registry() and auto-instrumentation, with real redis-server instances."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import State, configure, get_registry
from otel_resilience._configure import reset_for_tests
from tests.support.health_servers import free_port, redis_server

# redis-py retries a refused connection for seconds by default: the tests want each
# call's own outcome.
NO_RETRY = Retry(NoBackoff(), 0)

CONFIG = {
    "service": "svc",
    "dependencies": {
        "redis": {
            "criticality": "optional",
            "match": {"db.system": "redis"},
            "breaker": {"consecutive_failures": 3, "open_seconds": 0.3},
        }
    },
}


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    reset_for_tests()


def redis_down() -> None:
    raise ConnectionError("refused")


def client_span(provider: TracerProvider) -> None:
    span = provider.get_tracer("t").start_span(
        "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
    )
    span.end()


def test_configure_returns_and_remembers_the_registry() -> None:
    """configure() returns the registry it built and get_registry() gives it back."""
    provider = TracerProvider()
    registry = configure(
        CONFIG, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False
    )
    assert get_registry() is registry
    assert registry.service == "svc"
    client_span(provider)
    assert registry.breaker("redis").snapshot().total_successes == 1


def test_configure_on_a_tracer_provider_not_the_sdks_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given a tracer provider that is not the SDK's, configure() says that breakers will
    see only guarded calls, and guarded calls still drive them."""
    from opentelemetry.trace import NoOpTracerProvider

    with caplog.at_level(logging.WARNING, logger="otel_resilience._configure"):
        registry = configure(
            CONFIG,
            tracer_provider=NoOpTracerProvider(),
            meter_provider=MeterProvider(),
            instrument=False,
        )
    assert "is not the OpenTelemetry SDK's; breakers will only see calls made through guards" in (
        caplog.text
    )
    for _ in range(3):
        with pytest.raises(ConnectionError):
            registry.call("redis", redis_down)
    assert registry.breaker("redis").state is State.OPEN


def test_configure_twice_does_not_double_wire() -> None:
    """A second configure() replaces the first: each span is counted once, on the new registry."""
    provider = TracerProvider()
    meter_provider = MeterProvider(metric_readers=[reader := InMemoryMetricReader()])
    first = configure(
        CONFIG, tracer_provider=provider, meter_provider=meter_provider, instrument=False
    )
    second = configure(
        CONFIG, tracer_provider=provider, meter_provider=meter_provider, instrument=False
    )
    client_span(provider)
    assert first.breaker("redis").snapshot().total_successes == 0
    assert second.breaker("redis").snapshot().total_successes == 1
    assert len(provider._active_span_processor._span_processors) == 1
    assert "ResilienceSampler{ResilienceSampler" not in provider.sampler.get_description()
    data = reader.get_metrics_data()
    assert data is not None
    calls = [
        point
        for rm in data.resource_metrics
        for scope in rm.scope_metrics
        for metric in scope.metrics
        if metric.name == "resilience.dependency.calls"
        for point in metric.data.data_points
        if point.attributes
        and point.attributes["outcome"] == "success"
        and point.attributes["dependency.name"] == "redis"
    ]
    assert [point.value for point in calls] == [1]


def test_spans_alone_open_and_close_the_breaker() -> None:
    """With the redis instrumentation and no guards, a killed redis-server opens the breaker
    and, once it is back, a call after open_seconds closes it."""
    provider = TracerProvider()
    registry = configure(
        CONFIG, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False
    )
    RedisInstrumentor().instrument(tracer_provider=provider)
    try:
        with redis_server() as server:
            client = redis.Redis(
                port=server.port, socket_timeout=1, socket_connect_timeout=1, retry=NO_RETRY
            )
            client.set("k", "v")
            server.stop()
            for _ in range(3):
                with pytest.raises(redis.exceptions.ConnectionError):
                    client.get("k")
            breaker = registry.breaker("redis")
            assert breaker.state is State.OPEN
            assert breaker.snapshot().total_failures == 3
            server.start()
            import time

            time.sleep(0.35)
            assert client.get("k") is None  # a fresh server: the value is gone, the call works
            assert breaker.state is State.CLOSED
    finally:
        RedisInstrumentor().uninstrument()


SCRIPT = """
import json, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from otel_resilience import get_registry

good = redis.Redis(port={good_port}, socket_timeout=1)
bad = redis.Redis(port={bad_port}, socket_timeout=1, socket_connect_timeout=1,
                  retry=Retry(NoBackoff(), 0))
good.set("k", "v")
for _ in range(3):
    try:
        bad.get("k")
    except redis.exceptions.ConnectionError:
        pass
registry = get_registry()
print("RESULT", json.dumps({{
    "service": registry.service,
    "states": {{name: b.state.value for name, b in registry.breakers().items()}},
    "good_value": good.get("k").decode(),
}}))
"""


def test_opentelemetry_instrument_wires_everything(tmp_path: Path) -> None:
    """`opentelemetry-instrument python app.py` with OTEL_RESILIENCE_CONFIG wires the breakers
    from spans with no code change."""
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert instrument is not None, "opentelemetry-instrument is part of the test install"
    config = tmp_path / "resilience.yaml"
    config.write_text(
        textwrap.dedent(
            """
            service: auto-svc
            dependencies:
              cache:
                criticality: optional
                match: {db.system: redis, server.port: %d}
                breaker: {consecutive_failures: 3, open_seconds: 30}
            """
        )
        % (bad_port := free_port())
    )
    with redis_server() as server:
        app = tmp_path / "app.py"
        app.write_text(SCRIPT.format(good_port=server.port, bad_port=bad_port))
        env = {
            **os.environ,
            "OTEL_RESILIENCE_CONFIG": str(config),
            "OTEL_PYTHON_DISTRO": "otel_resilience",
            "OTEL_PYTHON_CONFIGURATOR": "otel_resilience",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
        result = subprocess.run(
            [instrument, sys.executable, str(app)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    report = result_of(result.stdout)
    assert report["service"] == "auto-svc"
    assert report["states"]["cache"] == "open"
    assert report["states"]["redis"] == "disabled"  # the good server: observe-only
    assert report["good_value"] == "v"
    assert '"db.system": "redis"' in result.stdout  # the usual exporter still gets the spans


def result_of(stdout: str) -> dict[str, Any]:
    """The JSON the app printed after its RESULT marker."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, stdout
    report: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    return report


OTHER_CONFIGURATOR = """
from opentelemetry.sdk._configuration import _OTelSDKConfigurator


class OtherConfigurator(_OTelSDKConfigurator):
    \"\"\"Stands in for opentelemetry-distro's configurator, which adds nothing either.\"\"\"
"""


def test_another_configurator_chosen_still_wires_breakers(tmp_path: Path) -> None:
    """When another installed configurator is chosen (as with opentelemetry-distro), the
    pre-instrument hook still adds the breaker processor to the providers it set up."""
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert instrument is not None
    site = tmp_path / "site"
    (site / "other_configurator-1.0.dist-info").mkdir(parents=True)
    (site / "other_configurator-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: other-configurator\nVersion: 1.0\n"
    )
    (site / "other_configurator-1.0.dist-info" / "entry_points.txt").write_text(
        "[opentelemetry_configurator]\nother = other_configurator:OtherConfigurator\n"
    )
    (site / "other_configurator.py").write_text(OTHER_CONFIGURATOR)
    bad_port = free_port()
    config = tmp_path / "resilience.yaml"
    config.write_text(
        f"dependencies:\n  cache:\n    match: {{db.system: redis, server.port: {bad_port}}}\n"
        "    breaker: {consecutive_failures: 3, open_seconds: 30}\n"
    )
    with redis_server() as server:
        app = tmp_path / "app.py"
        app.write_text(SCRIPT.format(good_port=server.port, bad_port=bad_port))
        env = {
            **os.environ,
            "PYTHONPATH": str(site),
            "OTEL_RESILIENCE_CONFIG": str(config),
            "OTEL_PYTHON_CONFIGURATOR": "other",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
        result = subprocess.run(
            [instrument, sys.executable, str(app)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert "Configuration of otel_resilience not loaded" in result.stderr
    report = result_of(result.stdout)
    assert report["states"]["cache"] == "open"
    assert report["good_value"] == "v"


def test_configure_on_another_provider_switches_the_first_off() -> None:
    """configure() with a new tracer provider stops the processor on the old one."""
    old, new = TracerProvider(), TracerProvider()
    first = configure(CONFIG, tracer_provider=old, meter_provider=MeterProvider(), instrument=False)
    second = configure(
        CONFIG, tracer_provider=new, meter_provider=MeterProvider(), instrument=False
    )
    client_span(old)
    client_span(new)
    assert first.breaker("redis").snapshot().total_successes == 0
    assert second.breaker("redis").snapshot().total_successes == 1


def test_configure_after_reset_reuses_the_processor() -> None:
    """A provider configured, reset and configured again keeps one breaker processor."""
    provider = TracerProvider()
    configure(CONFIG, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False)
    reset_for_tests()
    registry = configure(
        CONFIG, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False
    )
    client_span(provider)
    assert len(provider._active_span_processor._span_processors) == 1
    assert registry.breaker("redis").snapshot().total_successes == 1


def test_configure_guards_and_spans_count_each_call_once() -> None:
    """configure(instrument=True): the OTel redis instrumentation and the guard both see each
    call, which is counted once; an outage is then served by the memory fallback."""
    provider = TracerProvider()
    with redis_server() as server:
        config = {
            "dependencies": {
                "redis": {
                    "criticality": "optional",
                    "match": {"db.system": "redis", "server.port": server.port},
                    "fallback": "memory",
                    "breaker": {"consecutive_failures": 2, "open_seconds": 30},
                }
            }
        }
        registry = configure(config, tracer_provider=provider, meter_provider=MeterProvider())
        try:
            client = redis.Redis(port=server.port, socket_timeout=1, retry=NO_RETRY)
            client.set("k", "v")
            assert client.get("k") == b"v"
            assert registry.breaker("redis").snapshot().total_successes == 2
            server.stop()
            assert [client.get("k") for _ in range(4)] == [b"v"] * 4
            snap = registry.breaker("redis").snapshot()
            assert (snap.state, snap.total_failures, snap.total_rejected) == (State.OPEN, 2, 2)
        finally:
            reset_for_tests()


GOLDEN_SCRIPT = """
import asyncio, json, sys
import asyncpg, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from otel_resilience import CircuitOpenError, get_registry

cache = redis.Redis(port={redis_port}, socket_timeout=1, retry=Retry(NoBackoff(), 0))
DSN = "postgresql://postgres@127.0.0.1:{pg_port}/test"

async def query():
    connection = await asyncpg.connect(DSN, timeout=2)
    try:
        return await connection.fetchval("SELECT 41 + 1")
    finally:
        await connection.close()

def step(name):
    print(name, flush=True)
    assert sys.stdin.readline().strip() == "go"

def attempt():
    try:
        return asyncio.run(query())
    except CircuitOpenError as exc:
        return "fail-fast:" + type(exc).__name__
    except OSError as exc:
        return "error:" + type(exc).__name__

cache.set("greeting", "hello")
report = {{"before": [cache.get("greeting").decode(), attempt()]}}
step("outage")  # the test kills redis and stops PostgreSQL's proxy
report["outage"] = [[cache.get("greeting").decode() for _ in range(3)],
                    [attempt() for _ in range(4)]]
report["states"] = {{n: b.state.value for n, b in get_registry().breakers().items()}}
step("recovery")  # the test restarts both
import time; time.sleep(0.6)
report["after"] = [attempt(), cache.set("k", "v")]
report["states_after"] = {{n: b.state.value for n, b in get_registry().breakers().items()}}
print("REPORT " + json.dumps(report), flush=True)
"""


def test_golden_path_through_opentelemetry_instrument(tmp_path: Path) -> None:
    """A plain script under opentelemetry-instrument keeps answering through a Redis outage
    (memory fallback), fails fast during a PostgreSQL outage, recovers by itself, and
    exports the breaker metrics."""
    from tests.support.health_servers import FaultProxy

    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert instrument is not None
    proxy = FaultProxy("127.0.0.1", 5432)
    proxy.start()
    with redis_server() as server:
        config = tmp_path / "resilience.yaml"
        config.write_text(
            textwrap.dedent(
                f"""
                service: golden
                dependencies:
                  cache:
                    criticality: optional
                    match: {{db.system: redis, server.port: {server.port}}}
                    fallback: memory
                    breaker: {{consecutive_failures: 2, open_seconds: 0.5}}
                  postgres:
                    criticality: critical
                    match: {{db.system: postgresql, server.port: {proxy.port}}}
                    breaker: {{consecutive_failures: 2, open_seconds: 0.5}}
                """
            )
        )
        app = tmp_path / "app.py"
        app.write_text(GOLDEN_SCRIPT.format(redis_port=server.port, pg_port=proxy.port))
        env = {
            **os.environ,
            "OTEL_RESILIENCE_CONFIG": str(config),
            "OTEL_PYTHON_DISTRO": "otel_resilience",
            "OTEL_PYTHON_CONFIGURATOR": "otel_resilience",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "console",
            "OTEL_LOGS_EXPORTER": "none",
        }
        process = subprocess.Popen(
            [instrument, sys.executable, str(app)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            assert process.stdout.readline().strip() == "outage"
            server.stop()
            proxy.stop()
            process.stdin.write("go\n")
            process.stdin.flush()
            assert process.stdout.readline().strip() == "recovery"
            server.start()
            proxy.start()
            process.stdin.write("go\n")
            process.stdin.flush()
            output, errors = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
            proxy.close()
    assert process.returncode == 0, errors
    report = json.loads(output.split("REPORT ", 1)[1].splitlines()[0])
    assert report["before"] == ["hello", 42]
    cached, queries = report["outage"]
    assert cached == ["hello"] * 3
    assert queries[:2] == ["error:ConnectionRefusedError"] * 2
    assert queries[2:] == ["fail-fast:PostgresCircuitOpenError"] * 2
    assert report["states"]["cache"] == "open"
    assert report["states"]["postgres"] == "open"
    assert report["after"] == [42, True]
    assert report["states_after"]["postgres"] == "closed"
    assert report["states_after"]["cache"] == "closed"
    assert '"name": "resilience.breaker.state"' in output
    assert '"name": "resilience.breaker.transitions"' in output


def test_tracers_made_before_configure_get_the_sampler_wrapper() -> None:
    """A tracer created before configure() (an early instrumentation) keeps dependency spans
    recorded under a sampler that drops everything."""
    provider = TracerProvider(sampler=ALWAYS_OFF)
    early = provider.get_tracer("early")
    registry = configure(
        CONFIG, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False
    )
    span = early.start_span("GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"})
    assert span.is_recording()
    span.end()
    assert registry.breaker("redis").snapshot().total_successes == 1
