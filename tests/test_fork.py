"""Fork safety (DESIGN.md 3): after os.fork every background part runs again in the child.

Each case runs in a subprocess with a timeout, so a hang fails the test instead of the
suite: a real ``os.fork`` child exporting spans to a real OTLP gRPC receiver and running
health checks, and gunicorn ``--preload`` with uvicorn workers exporting from workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.health_servers import free_port
from tests.support.otlp_receiver import OTLPReceiver
from tests.support.reports import last_json_line

ROOT = Path(__file__).resolve().parent.parent

FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from otel_resilience import HealthProber, Registry, ResilientSpanExporter

    endpoint, dsn = sys.argv[1], sys.argv[2]
    registry = Registry.from_config({
        "service": "forked",
        "dependencies": {
            "postgres": {
                "criticality": "critical",
                "health_check": {"type": "sql", "dsn": dsn, "timeout_seconds": 2,
                                 "interval_seconds": 0.1},
            },
            "api": {"breaker": {"consecutive_failures": 2, "open_seconds": 60}},
        },
    })
    api = registry.breaker("api")
    for _ in range(2):
        api.record_failure(error_type="ConnectionError")  # open in the parent at the fork
    exporter = ResilientSpanExporter(
        OTLPSpanExporter(endpoint=endpoint, insecure=True), export_timeout_seconds=5.0
    )
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    tracer = provider.get_tracer("fork-test")
    prober = HealthProber(registry, interval_seconds=0.1)
    prober.start()
    with tracer.start_as_current_span("parent-before-fork"):
        pass
    assert provider.force_flush(5000)

    def checks_seen(deadline):
        seen = set()
        while time.monotonic() < deadline and len(seen) < 3:
            check = registry.health().to_dict()["dependencies"]["postgres"].get("health_check")
            if check:
                seen.add(check["checked_at"])
            time.sleep(0.05)
        return len(seen)

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        report = {"prober_running": prober.running, "api_at_fork": api.state.value}
        api.reset()  # the child's breaker lives on its own
        report["api_after_reset"] = api.state.value
        for index in range(3):
            with tracer.start_as_current_span(f"child-{os.getpid()}-{index}"):
                pass
        report["flushed"] = provider.force_flush(5000)
        report["checks"] = checks_seen(time.monotonic() + 10)
        report["breaker_state"] = exporter.breaker.state.value
        report["child"] = os.getpid()
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    with tracer.start_as_current_span("parent-after-fork"):
        pass
    provider.force_flush(5000)
    report = json.loads(b"".join(chunks))
    report["parent_checks"] = checks_seen(time.monotonic() + 10)
    report["api_in_parent"] = api.state.value
    print(json.dumps(report))
    """
)


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c script args...`` from the repository's root, with a timeout that fails a
    hang instead of the suite."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def wait_for_spans(receiver: OTLPReceiver, prefix: str, count: int, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        names = [name for name in list(receiver.spans) if name.startswith(prefix)]
        if len(names) >= count or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def test_forked_child_exports_spans_and_runs_health_checks(receiver: OTLPReceiver) -> None:
    """A child of os.fork exports its spans through the resilient exporter's (restarted)
    worker and probes its dependencies with a (restarted) prober; its breakers start from
    the parent's state and live on their own; the parent goes on too."""
    result = run_script(FORK_SCRIPT, receiver.endpoint, "postgresql://postgres@127.0.0.1:5432/test")
    report = last_json_line(result)
    assert report["prober_running"] is True
    assert report["flushed"] is True
    assert report["checks"] >= 3  # the child's own prober ran the check again and again
    assert report["parent_checks"] >= 3
    assert report["breaker_state"] == "closed"
    assert report["api_at_fork"] == "open"  # the child starts from the parent's state
    assert report["api_after_reset"] == "closed"
    assert report["api_in_parent"] == "open"  # and the parent's is its own
    child_spans = wait_for_spans(receiver, f"child-{report['child']}-", 3, 5)
    assert len(child_spans) == 3
    assert "parent-before-fork" in receiver.spans
    assert wait_for_spans(receiver, "parent-after-fork", 1, 5)
    assert "dropping telemetry" not in result.stderr


# The start of the scripts below: ``span(name)``, one finished span to export, as a batch.
SPANS_IN_SCRIPT = textwrap.dedent(
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))

    def span(name):
        memory.clear()
        with provider.get_tracer("fork-test").start_as_current_span(name):
            pass
        return memory.get_finished_spans()
    """
)


CONNECTED_FORK_SCRIPT = SPANS_IN_SCRIPT + textwrap.dedent(
    """
    import json, logging, os, sys, threading
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from otel_resilience import ResilientSpanExporter

    endpoint, children = sys.argv[1], int(sys.argv[2])

    class Complaints(logging.Filter):
        # What the inner exporter logs at WARNING or above (a retry, a failure), counted
        # before the wrapper's own filter keeps it quiet.
        count = 0
        def filter(self, record):
            if record.levelno >= logging.WARNING:
                Complaints.count += 1
            return True

    logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").addFilter(Complaints())

    exporter = ResilientSpanExporter(  # generous: a loaded machine starts 16 children
        OTLPSpanExporter(endpoint=endpoint, insecure=True), export_timeout_seconds=5
    )
    assert exporter.export(span("parent-connects")).name == "SUCCESS"
    batches = [span(f"connected-child-{index}") for index in range(children)]
    background, exported, stop = span("parent-background"), threading.Event(), threading.Event()

    def keep_exporting():  # as a pre-fork server's master does, exporting as it forks
        while not stop.is_set():
            exporter.export(background)
            exported.set()

    exporting = threading.Thread(target=keep_exporting)
    exporting.start()
    exported.wait(10)
    results_read, results_write = os.pipe()
    pids = []
    for index in range(children):
        pid = os.fork()
        if pid == 0:
            result = exporter.export(batches[index]).name
            report = {"result": result, "complaints": Complaints.count,
                      "breaker": exporter.breaker.state.value}
            os.write(results_write, (json.dumps(report) + "\\n").encode())
            os._exit(0)
        pids.append(pid)
    os.close(results_write)
    for pid in pids:
        os.waitpid(pid, 0)
    stop.set()
    exporting.join()
    with os.fdopen(results_read) as lines:
        reports = [json.loads(line) for line in lines]
    after = exporter.export(span("parent-after-children")).name
    print(json.dumps({"children": reports, "parent_after": after,
                      "parent_complaints": Complaints.count}))
    """
)


def test_forked_children_of_an_exporting_parent_export_on_connections_of_their_own(
    receiver: OTLPReceiver,
) -> None:
    """The parent is exporting on its gRPC connection (another thread, as a pre-fork
    server's master does) while it forks; each child's first export goes out on a channel
    of the child's own. With the inherited channel, a call in flight at the fork made about
    one child in three hang to the deadline, open the telemetry breaker and drop its spans;
    and the parent's connection still works after the children used theirs."""
    children = 16
    result = run_script(CONNECTED_FORK_SCRIPT, receiver.endpoint, str(children))
    report = last_json_line(result)
    assert len(report["children"]) == children
    for child in report["children"]:
        assert child == {"result": "SUCCESS", "complaints": 0, "breaker": "closed"}
    assert report["parent_after"] == "SUCCESS"
    assert report["parent_complaints"] == 0
    spans = wait_for_spans(receiver, "connected-child-", children, 10)
    assert sorted(spans) == sorted(f"connected-child-{index}" for index in range(children))
    assert wait_for_spans(receiver, "parent-after-children", 1, 10)
    assert "dropping telemetry" not in result.stderr
    # Each fork waited for the export in flight (FORK_WAIT_SECONDS), so grpc made every
    # child whole; skipped, a child's poller shared the parent's (1 run in about 50 failed).
    assert "skipping fork() handlers" not in result.stderr


# Then ``Slow(seconds)``: an exporter whose answer takes ``seconds``; ``started`` is set
# when an export begins, ``ended_at`` is when the last one ended.
SLOW_EXPORTER_IN_SCRIPT = SPANS_IN_SCRIPT + textwrap.dedent(
    """
    import threading, time
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Slow(SpanExporter):
        def __init__(self, seconds):
            self.seconds, self.started, self.ended_at = seconds, threading.Event(), None
        def export(self, spans):
            self.started.set()
            time.sleep(self.seconds)
            self.ended_at = time.monotonic()
            return SpanExportResult.SUCCESS
    """
)


WAIT_FORK_SCRIPT = SLOW_EXPORTER_IN_SCRIPT + textwrap.dedent(
    """
    import json, os, threading, time
    from otel_resilience import ResilientSpanExporter
    from otel_resilience._exporter import FORK_WAIT_SECONDS

    report = {"wait": FORK_WAIT_SECONDS}
    for case, seconds in (("in_flight", 0.02), ("stuck", 3.0)):
        inner = Slow(seconds)
        exporter = ResilientSpanExporter(inner, export_timeout_seconds=10)
        batch = span(case)
        exporting = threading.Thread(target=exporter.export, args=(batch,))
        exporting.start()
        inner.started.wait(5)
        before = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forked = time.monotonic()
        os.waitpid(pid, 0)
        ended = inner.ended_at
        report[case] = {"fork_seconds": forked - before,
                        "ended_before_fork": ended is not None and ended <= forked}
        exporting.join(10)
        # The worker's lock was let go in the parent: the next export goes through.
        report[case]["next"] = exporter.export(span(case + "-next")).name
    print(json.dumps(report))
    """
)


def test_a_fork_waits_briefly_for_an_export_in_flight() -> None:
    """A fork waits for an export in flight on a wrapper's worker to end (a prompt answer),
    but no longer than FORK_WAIT_SECONDS for a stuck one; the parent's exports go on after."""
    result = run_script(WAIT_FORK_SCRIPT)
    report = last_json_line(result)
    assert report["in_flight"] == {
        "fork_seconds": report["in_flight"]["fork_seconds"],
        "ended_before_fork": True,
        "next": "SUCCESS",
    }
    assert report["stuck"]["ended_before_fork"] is False
    assert report["wait"] <= report["stuck"]["fork_seconds"] < 2.0  # not the 3 s export
    assert report["stuck"]["next"] == "SUCCESS"


INTERRUPTED_FORK_SCRIPT = SLOW_EXPORTER_IN_SCRIPT + textwrap.dedent(
    """
    import json, os, signal, threading, time
    from otel_resilience import ResilientSpanExporter

    inner = Slow(1.0)
    exporter = ResilientSpanExporter(inner, export_timeout_seconds=10)
    exporting = threading.Thread(target=exporter.export, args=(span("slow"),))
    exporting.start()
    inner.started.wait(5)
    # Ctrl-C while the fork waits for the export in flight (FORK_WAIT_SECONDS, 0.1 s).
    threading.Timer(0.03, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        pid = os.fork()
    except KeyboardInterrupt:  # (it came before the fork: nothing was tested)
        pid = None
    if pid == 0:
        os._exit(0)
    if pid is not None:
        os.waitpid(pid, 0)
    exporting.join(10)
    results = []
    after = threading.Thread(target=lambda: results.append(exporter.export(span("after")).name))
    after.start()
    after.join(5)  # with the worker's lock left held, this export would wait forever
    print(json.dumps({"forked": pid is not None, "after": results}))
    """
)


def test_a_fork_interrupted_while_waiting_for_an_export_leaves_the_exporter_usable() -> None:
    """Ctrl-C while a fork waits for an export in flight: the fork goes on (Python ignores
    what a fork hook raises), and the exporter's worker is not left locked: the next export
    goes through instead of waiting forever."""
    for _ in range(3):  # the signal must land while the fork waits (within 0.1 s)
        result = run_script(INTERRUPTED_FORK_SCRIPT)
        report = last_json_line(result)
        if report["forked"] and "KeyboardInterrupt" in result.stderr:
            break
    assert report["forked"], result.stderr
    assert "KeyboardInterrupt" in result.stderr  # raised in the fork's hook, and ignored
    assert report["after"] == ["SUCCESS"]


HTTP_FORK_SCRIPT = SPANS_IN_SCRIPT + textwrap.dedent(
    """
    import json, os, sys
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from otel_resilience import ResilientSpanExporter

    endpoint, children = sys.argv[1], int(sys.argv[2])

    exporter = ResilientSpanExporter(OTLPSpanExporter(endpoint=endpoint), export_timeout_seconds=5)
    # Kept alive in the session's pool at the fork: the connection every child inherits.
    assert exporter.export(span("parent-connects")).name == "SUCCESS"
    batches = [span(f"http-child-{index}") for index in range(children)]
    results_read, results_write = os.pipe()
    pids = []
    for index in range(children):
        pid = os.fork()
        if pid == 0:
            result = exporter.export(batches[index]).name
            os.write(results_write, (json.dumps(result) + "\\n").encode())
            os._exit(0)
        pids.append(pid)
    os.close(results_write)
    for pid in pids:
        os.waitpid(pid, 0)
    with os.fdopen(results_read) as lines:
        results = [json.loads(line) for line in lines]
    after = exporter.export(span("parent-after-children")).name
    print(json.dumps({"children": results, "parent_after": after}))
    """
)


class _KeepAliveOTLP(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint over HTTP/1.1 keep-alive (as a collector serves it)
    that notes which connection each span came on."""

    protocol_version = "HTTP/1.1"
    spans_by_connection: ClassVar[dict[int, list[str]]] = {}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest.FromString(body)
        names = [
            span.name
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        port = self.client_address[1]
        self.spans_by_connection.setdefault(port, []).extend(names)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def keep_alive_collector() -> Iterator[ThreadingHTTPServer]:
    _KeepAliveOTLP.spans_by_connection = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveOTLP, bind_and_activate=False)
    server.request_queue_size = 128  # every child connects at once
    server.server_bind()
    server.server_activate()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_forked_children_of_an_otlp_http_exporter_use_connections_of_their_own(
    keep_alive_collector: ThreadingHTTPServer,
) -> None:
    """OTLP/HTTP: the parent's kept-alive connection is in the exporter's pool at the fork.
    Each child sends on a connection of its own, never on the parent's (two processes
    writing on one socket read each other's answers: a child then waits out its deadline
    for an answer another process took), and the parent goes on on its own."""
    children = 8
    endpoint = f"http://127.0.0.1:{keep_alive_collector.server_address[1]}/v1/traces"
    result = run_script(HTTP_FORK_SCRIPT, endpoint, str(children))
    report = last_json_line(result)
    assert report == {"children": ["SUCCESS"] * children, "parent_after": "SUCCESS"}
    senders = {
        port: {name if name.startswith("http-child-") else "parent" for name in names}
        for port, names in _KeepAliveOTLP.spans_by_connection.items()
    }
    assert all(len(names) == 1 for names in senders.values()), senders
    arrived = sorted(name for names in senders.values() for name in names)
    assert arrived == sorted(["parent", *(f"http-child-{index}" for index in range(children))])
    assert "dropping telemetry" not in result.stderr


# -- gunicorn --preload ------------------------------------------------------------------

PRELOAD_APP = textwrap.dedent(
    """
    import os
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from otel_resilience import configure, health_app

    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=os.environ["TEST_OTLP_ENDPOINT"], insecure=True),
            schedule_delay_millis=50,
        )
    )
    trace.set_tracer_provider(provider)
    registry = configure(
        {
            "service": "preloaded",
            "telemetry": {"export_timeout_seconds": 5},
            "dependencies": {
                "postgres": {
                    "criticality": "critical",
                    "match": {"db.system": "postgresql"},
                    "health_check": {"type": "sql", "dsn": os.environ["TEST_DSN"],
                                     "timeout_seconds": 2, "interval_seconds": 0.2},
                },
            },
        },
        tracer_provider=provider,
    )
    health = health_app(registry, interval_seconds=0.2)
    health.prober.start()  # in the master, before the fork: workers must get their own
    tracer = trace.get_tracer("preload-test")

    async def hello(request):
        with tracer.start_as_current_span(f"worker-{os.getpid()}"):
            pass
        provider.force_flush(5000)
        return JSONResponse({"pid": os.getpid(), "prober": health.prober.running})

    app = Starlette(routes=[Route("/hello", hello), Mount("/health", health)])
    """
)


AUTO_APP = textwrap.dedent(
    """
    import os
    from opentelemetry import trace
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from otel_resilience import health_app

    # opentelemetry-instrument set everything up in the master, before this import.
    health = health_app(interval_seconds=0.2)
    health.prober.start()
    tracer = trace.get_tracer("preload-test")

    async def hello(request):
        with tracer.start_as_current_span(f"worker-{os.getpid()}"):
            pass
        trace.get_tracer_provider().force_flush(5000)
        return JSONResponse({"pid": os.getpid(), "prober": health.prober.running})

    app = Starlette(routes=[Route("/hello", hello), Mount("/health", health)])
    """
)

AUTO_CONFIG = """
service: preloaded
dependencies:
  postgres:
    criticality: critical
    match: {db.system: postgresql}
    health_check: {type: sql, dsn_env: TEST_DSN, timeout_seconds: 2, interval_seconds: 0.2}
telemetry:
  export_timeout_seconds: 5  # a loaded CI machine: the test is about the fork, not speed
"""


def _gunicorn(prefix: list[str]) -> list[str]:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("gunicorn is not installed (the test extra has it)")
        pytest.skip("gunicorn is not installed")
    return [*prefix, str(gunicorn)]


def run_preloaded(
    command: list[str], receiver: OTLPReceiver, tmp_path: Path, app: str, **env: str
) -> None:
    """Serve ``app`` with gunicorn --preload and two uvicorn workers; check that both
    workers run the prober, the health check passes, and each worker's span arrives."""
    (tmp_path / "preload_app.py").write_text(app)
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "TEST_OTLP_ENDPOINT": receiver.endpoint,
        "TEST_DSN": "postgresql://postgres@127.0.0.1:5432/test",
        **env,
    }
    process = subprocess.Popen(
        [
            *command,
            "--preload",
            "--workers",
            "2",
            "--worker-class",
            "uvicorn.workers.UvicornWorker",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
            "preload_app:app",
        ],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    # A new connection each time, so that both workers get requests.
                    answer = client.get("/hello", headers={"Connection": "close"}).json()
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                assert answer["prober"] is True
                pids.add(answer["pid"])
                if len(pids) >= 2:
                    break
            assert len(pids) == 2, f"answers from workers {pids}"
            checked: dict[int, str] = {}
            while time.monotonic() < deadline + 10 and len(checked) < 2:
                # Whichever worker answers: its own prober has run the check.
                answer = client.get("/hello", headers={"Connection": "close"}).json()
                health = client.get("/health/", headers={"Connection": "close"}).json()
                check = health["dependencies"]["postgres"].get("health_check") or {}
                if check.get("status") == "passing":
                    checked[answer["pid"]] = check["status"]
                time.sleep(0.05)
        assert checked, f"no worker reported a passing check: {health}"
        # Generous: a loaded machine has delayed a worker's first export past 10 s (rarely);
        # a worker whose export hangs for good still fails, with gunicorn's output.
        missing = [pid for pid in pids if not wait_for_spans(receiver, f"worker-{pid}", 1, 30)]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert not missing, f"no span from workers {missing}; gunicorn said:\n{output}"
    assert "dropping telemetry" not in output, output


def test_gunicorn_preload_workers_export_and_probe(receiver: OTLPReceiver, tmp_path: Path) -> None:
    """gunicorn --preload with uvicorn workers, configure() in the app: the library is set
    up in the master, and every worker still exports its spans and runs its checks."""
    run_preloaded(_gunicorn([]), receiver, tmp_path, PRELOAD_APP)


def test_opentelemetry_instrument_gunicorn_preload(receiver: OTLPReceiver, tmp_path: Path) -> None:
    """opentelemetry-instrument gunicorn --preload: the configurator wires the library in
    the master; every worker exports through the resilient exporter and probes."""
    (tmp_path / "resilience.yaml").write_text(AUTO_CONFIG)
    instrument = str(Path(sys.executable).with_name("opentelemetry-instrument"))
    run_preloaded(
        _gunicorn([instrument]),
        receiver,
        tmp_path,
        AUTO_APP,
        OTEL_RESILIENCE_CONFIG=str(tmp_path / "resilience.yaml"),
        OTEL_PYTHON_DISTRO="otel_resilience",
        OTEL_PYTHON_CONFIGURATOR="otel_resilience",
        OTEL_SERVICE_NAME="preloaded",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{receiver.endpoint}",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
