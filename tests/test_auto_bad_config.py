"""A broken config under auto-instrumentation: one log line, OTel as usual, the app serves."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from otel_resilience import _configure, get_registry, health_app
from otel_resilience._health_app import HealthApp
from tests.support.health_servers import free_port
from tests.support.otlp_receiver import OTLPReceiver

BROKEN = """\
servce: typo
dependencies:
  cache:
    match: {db.system: redis}
    breaker: {window_size: 1000000000000}
    fallback: "cfg_exits_at_import:fallback"
"""

APP = """
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from otel_resilience import health_app


async def work(request):
    client = redis.Redis(port={bad_port}, socket_connect_timeout=0.2)
    try:
        client.get("k")
    except redis.exceptions.ConnectionError:
        pass
    return JSONResponse({{"ok": True}})


app = Starlette(routes=[Route("/work", work), Mount("/health", health_app())])
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning")
"""


def wait_serving(process: subprocess.Popen[str], port: int, timeout: float = 60) -> None:
    """Until ``port`` accepts connections; fails at once if the process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _, stderr = process.communicate()
            pytest.fail(f"the app exited with {process.returncode}: {stderr}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on port {port} after {timeout}s")


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_broken_config_under_opentelemetry_instrument(
    tmp_path: Path, receiver: OTLPReceiver
) -> None:
    """With an invalid config (typo, absurd number, a module calling sys.exit at import) the
    app starts, serves, exports its traces, logs the error once on one line without a
    traceback, and /health shows it in `config_error`."""
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert instrument is not None, "opentelemetry-instrument is part of the test install"
    (tmp_path / "cfg_exits_at_import.py").write_text("import sys\nsys.exit(5)\n")
    config = tmp_path / "resilience.yaml"
    config.write_text(BROKEN)
    port = free_port()
    app = tmp_path / "app.py"
    app.write_text(APP.format(port=port, bad_port=free_port()))
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OTEL_RESILIENCE_CONFIG": str(config),
        "OTEL_PYTHON_DISTRO": "otel_resilience",
        "OTEL_PYTHON_CONFIGURATOR": "otel_resilience",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.endpoint}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "broken-config-app",
    }
    process = subprocess.Popen(
        [instrument, sys.executable, str(app)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_serving(process, port)
        status, body = get(f"http://127.0.0.1:{port}/work")
        assert (status, body) == (200, {"ok": True})
        status, document = get(f"http://127.0.0.1:{port}/health")
        assert status == 200
        assert document["status"] == "healthy"
        error = document["config_error"]
        assert f"{config}: servce: unknown key" in error
        assert "dependencies.cache.breaker.window_size: must be an integer" in error
        assert "raised SystemExit: 5" in error
        deadline = time.monotonic() + 30
        while "GET" not in receiver.spans and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "GET" in receiver.spans  # the redis client span reached the collector
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert "Traceback" not in stderr, stderr
    assert "Failed to auto initialize" not in stderr, stderr
    mentions = [line for line in stderr.splitlines() if "resilience config is invalid" in line]
    assert len(mentions) == 1, stderr
    assert f"{config}: servce: unknown key" in mentions[0]


def test_health_app_reports_the_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In-process: get_registry() stands in the defaults for an invalid file, logs once, and
    health_app() shows the error (redacted) instead of raising."""
    config = tmp_path / "r.yaml"
    config.write_text(
        "dependencies:\n  db:\n    health_check: {type: sql, dsn: 'mysql://u:hunter2@h/db'}\n"
    )
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(config))
    _configure.reset_for_tests()
    with caplog.at_level(logging.ERROR):
        registry = get_registry()
        app = health_app()
        assert isinstance(app, HealthApp)
        document = _call(app)
    assert [d.name for d in registry] == ["telemetry"]
    assert "dependencies.db.health_check.dsn: must be a postgres" in document["config_error"]
    assert "hunter2" not in json.dumps(document)
    errors = [r for r in caplog.records if "resilience config is invalid" in r.getMessage()]
    assert len(errors) == 1
    assert errors[0].exc_info is None
    _configure.reset_for_tests()


def _call(app: HealthApp) -> dict[str, Any]:
    import asyncio

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/health", "root_path": ""}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    document: dict[str, Any] = json.loads(sent[1]["body"])
    return document
