"""The operator's drill of docs/monitoring.md, against a real service process run under
opentelemetry-instrument: force a breaker open and reset it with the CLI, change
open_seconds by editing the file and sending SIGHUP, and find the trace of the call that
tripped the breaker in its log line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.health_servers import free_port

TOKEN = "drill-admin-token"

APP = """
import logging
import os

import uvicorn
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from otel_resilience import CircuitOpenError, get_registry, health_app

logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
tracer = trace.get_tracer("drill")


def refused():
    raise ConnectionRefusedError("connection refused")


async def order(request):
    registry = get_registry()
    with tracer.start_as_current_span("POST /orders") as span:
        try:
            registry.call("db", refused)
        except (ConnectionRefusedError, CircuitOpenError) as exc:
            outcome = type(exc).__name__
        ids = span.get_span_context()
        return JSONResponse(
            {"trace_id": format(ids.trace_id, "032x"), "outcome": outcome,
             "state": registry.breaker("db").state.value}
        )


app = Starlette(
    routes=[Route("/orders", order, methods=["POST"]), Mount("/health", app=health_app())]
)
uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
"""

CONFIG = """
service: drill-svc
dependencies:
  db:
    criticality: critical
    breaker: {{consecutive_failures: 2, open_seconds: {open_seconds}, max_open_seconds: 600}}
admin:
  token_env: OTEL_RESILIENCE_ADMIN_TOKEN
"""


def get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 still carries the document
        return json.loads(exc.read())


def post(url: str) -> Any:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = shutil.which("otel-resilience", path=os.path.dirname(sys.executable))
    assert command is not None
    return subprocess.run(
        [command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTEL_RESILIENCE_ADMIN_TOKEN": TOKEN},
        check=False,
    )


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {check.__doc__}"
        time.sleep(0.1)


def test_drill(tmp_path: Path) -> None:
    """Force open and reset with the CLI; edit open_seconds and SIGHUP; the breaker-open
    log line names the trace of the request that tripped it."""
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert instrument is not None
    config = tmp_path / "resilience.yaml"
    config.write_text(textwrap.dedent(CONFIG.format(open_seconds=300)))
    app = tmp_path / "app.py"
    app.write_text(APP)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "service.log"
    env = {
        **{k: v for k, v in os.environ.items() if k != "OTEL_RESILIENCE_RELOAD_SECONDS"},
        "PORT": str(port),
        "OTEL_RESILIENCE_CONFIG": str(config),
        "OTEL_RESILIENCE_ADMIN_TOKEN": TOKEN,
        "OTEL_PYTHON_DISTRO": "otel_resilience",
        "OTEL_PYTHON_CONFIGURATOR": "otel_resilience",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    with log.open("w") as stderr:
        service = subprocess.Popen(
            [instrument, sys.executable, str(app)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    try:

        def ready() -> Any:
            """the service answering /health"""
            return get(f"{base}/health")["status"] == "healthy"

        wait_for(ready)

        # 1. Force the breaker open, then reset it, from a shell.
        forced = cli("breaker", f"127.0.0.1:{port}", "db", "force-open")
        assert forced.returncode == 0, forced.stderr
        assert "closed -> forced_open" in forced.stdout
        document = get(f"{base}/health")
        assert document["status"] == "unhealthy"
        assert document["dependencies"]["db"]["state"] == "forced_open"
        assert cli("breaker", f"127.0.0.1:{port}", "db", "reset").returncode == 0
        assert get(f"{base}/health")["dependencies"]["db"]["state"] == "closed"

        # 2. Real failures open it; the answer names the trace of each request.
        answers = [post(f"{base}/orders") for _ in range(2)]
        assert [a["state"] for a in answers] == ["closed", "open"]
        tripping_trace = answers[-1]["trace_id"]
        retry_after = get(f"{base}/health")["dependencies"]["db"]["retry_after_seconds"]
        assert retry_after > 200  # open_seconds 300

        # 3. Shorten open_seconds in the file and send SIGHUP: the open breaker keeps its
        #    state, and its wait follows the new value.
        config.write_text(textwrap.dedent(CONFIG.format(open_seconds=2)))
        service.send_signal(signal.SIGHUP)

        def shortened() -> Any:
            """the open breaker's wait rescaled to the new open_seconds"""
            entry = get(f"{base}/health")["dependencies"]["db"]
            return entry["state"] == "open" and entry["retry_after_seconds"] <= 2

        wait_for(shortened)
        assert post(f"{base}/orders")["outcome"] == "CircuitOpenError"
        assert service.poll() is None
    finally:
        service.send_signal(signal.SIGINT)
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(5)
    lines = log.read_text()
    # 4. The log: each manual action once, with the caller and never the token; the reload;
    #    and the opening with the trace id of the request that tripped the breaker.
    actions = [line for line in lines.splitlines() if "breaker 'db':" in line]
    assert len(actions) == 2, lines
    assert all("127.0.0.1" in line for line in actions)
    assert TOKEN not in lines
    assert "reloaded the resilience config" in lines
    opened = re.findall(r"circuit breaker for 'db' opened .*trace_id=([0-9a-f]{32})", lines)
    assert opened == [tripping_trace], lines
