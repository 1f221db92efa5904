"""Done when: a service using these clients, run with ``opentelemetry-instrument`` and a
config that names its dependencies by address, fails fast during an outage and recovers.

The service (``APP``) runs under ``opentelemetry-instrument`` with the otel_resilience
distro and configurator; its PostgreSQL (psycopg, behind a fault proxy), HTTP (requests)
and grpc servers run in it and are stopped and started again by it. It reports, per
client, what the test asserts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.health_servers import free_port
from tests.support.reports import last_json_line

ROOT = Path(__file__).resolve().parent.parent

APP = """
import json, sys, time
import grpc, psycopg, requests
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient
from otel_resilience import CircuitOpenError, State, get_registry
from tests.support.client_servers import SERVICE, CountingProxy, GrpcServer, HttpServer

pg_port, http_port, grpc_port = (int(port) for port in sys.argv[1:4])
report = {"instrumented": [
    PsycopgInstrumentor().is_instrumented_by_opentelemetry,
    RequestsInstrumentor().is_instrumented_by_opentelemetry,
    GrpcInstrumentorClient().is_instrumented_by_opentelemetry,
]}
proxy = CountingProxy(port=pg_port).start()
http = HttpServer(port=http_port).start()
rpc = GrpcServer(port=grpc_port).start()
channel = grpc.insecure_channel(rpc.target, options=[
    ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 100)])
unary = channel.unary_unary(f"/{SERVICE}/Unary", request_serializer=lambda b: b,
                            response_deserializer=lambda b: b)

def query():
    with psycopg.connect(f"host=127.0.0.1 port={pg_port} dbname=test user=postgres "
                         "connect_timeout=2") as conn:
        return conn.execute("SELECT 1").fetchone()

clients = {
    "psycopg": (query, proxy, lambda: proxy.connections),
    "requests": (lambda: requests.get(http.url, timeout=2), http, lambda: http.requests),
    "grpc": (lambda: unary(b"x", timeout=2), rpc, lambda: rpc.requests),
}
for name, (call, server, reached) in clients.items():
    breaker = get_registry().breaker(name)
    call()
    server.fail() if name != "psycopg" else proxy.stop()
    for _ in range(3):
        try:
            call()
        except Exception:
            pass
    opened = breaker.state is State.OPEN
    seen, started = reached(), time.monotonic()
    try:
        call()
        fast = None
    except Exception as error:
        fast = [isinstance(error, CircuitOpenError), type(error).__mro__[1].__name__,
                time.monotonic() - started, reached() == seen]
    server.recover() if name != "psycopg" else proxy.start()
    time.sleep(0.5)
    call()
    report[name] = {"opened": opened, "fast": fast, "closed": breaker.state is State.CLOSED}
print(json.dumps(report))
"""


def test_opentelemetry_instrument_service_fails_fast_and_recovers(tmp_path: Path) -> None:
    """Under opentelemetry-instrument, psycopg, requests and grpc calls to dependencies
    declared by address open their breakers, are then rejected at once without reaching
    the server, and recover by themselves."""
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert instrument is not None, "opentelemetry-instrument is part of the test install"
    pg_port, http_port, grpc_port = free_port(), free_port(), free_port()
    breaker = "{consecutive_failures: 3, open_seconds: 0.4, minimum_calls: 100}"
    config = tmp_path / "resilience.yaml"
    config.write_text(
        "dependencies:\n"
        f"  psycopg: {{criticality: critical, match: {{db.system: postgresql,"
        f" server.port: {pg_port}}}, breaker: {breaker}}}\n"
        f"  requests: {{criticality: critical, match: {{server.address: 127.0.0.1,"
        f" server.port: {http_port}}}, breaker: {breaker}}}\n"
        f"  grpc: {{criticality: critical, match: {{server.address: 127.0.0.1,"
        f" server.port: {grpc_port}}}, breaker: {breaker}}}\n",
        encoding="utf-8",
    )
    app = tmp_path / "app.py"
    app.write_text(APP, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OTEL_RESILIENCE_CONFIG": str(config),
        "OTEL_PYTHON_DISTRO": "otel_resilience",
        "OTEL_PYTHON_CONFIGURATOR": "otel_resilience",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "clients-app",
    }
    result = subprocess.run(
        [instrument, sys.executable, str(app), str(pg_port), str(http_port), str(grpc_port)],
        env=env,
        check=False,  # the assertion below shows the app's stderr
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    report = last_json_line(result, stderr_tail=3000)
    assert report["instrumented"] == [True, True, True]
    for name in ("psycopg", "requests", "grpc"):
        outcome = report[name]
        assert outcome["opened"], name
        is_open_error, _, seconds, unreached = outcome["fast"]
        assert is_open_error, name
        assert seconds < 0.5, name
        assert unreached, f"a rejected {name} call reached the server"
        assert outcome["closed"], name


IMPORTED_LATER = """
import sys
from otel_resilience import CircuitOpenError, configure
from opentelemetry.sdk.trace import TracerProvider

registry = configure({"dependencies": {"api": {"match": {"server.port": int(sys.argv[1])}}}},
                     tracer_provider=TracerProvider())
imported = [name for name in ("requests", "grpc", "sqlalchemy", "aiohttp") if name in sys.modules]
import requests  # imported after configure(): guarded on import
registry.breaker("api").force_open()
try:
    requests.get(f"http://127.0.0.1:{sys.argv[1]}/", timeout=1)
    print("not rejected", imported)
except CircuitOpenError:
    print("rejected", imported)
"""


def test_a_client_imported_after_configure_is_guarded(tmp_path: Path) -> None:
    """configure() imports no client library; one the application imports later is
    guarded when it is imported."""
    script = tmp_path / "later.py"
    script.write_text(IMPORTED_LATER, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script), str(free_port())],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "rejected []", result.stderr[-2000:]
