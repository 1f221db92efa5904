"""What each client guard costs a call: the guard on vs only the OpenTelemetry instrumentation.

For the clients of docs/clients.md (psycopg sync and async, psycopg2, SQLAlchemy, asyncpg,
httpx, requests, urllib3, aiohttp, grpc sync and asyncio; redis-py is measured by
``hot_path.py``), the same call is made on loopback, in one process, with the
client's OpenTelemetry instrumentation on and the guard installed or not, block by block
(``_harness.ab``: rounds interleaved, order rotated, paired ratios). The breaker stays
closed: this is the price of a guard on the success path. Time is this process's CPU
time, so the servers' work does not count: PostgreSQL is the machine's own (SELECT 1),
the HTTP and grpc servers run in a separate process pinned to the other CPU.

    python benchmarks/client_guards.py [--calls 300] [--rounds 7] [--only requests,grpc]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.clients_cases

from _harness import ab, machine_line, pin_client, server_cpu, table, taskset
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience import BreakerSpanProcessor, load_config
from otel_resilience.instrumentation import install
from tests.clients_cases import CASES, Case
from tests.support.client_servers import GrpcServer, HttpServer

# The redis guard is measured by hot_path.py (against an own redis-server); the other two
# take the same path as a row that is measured (sqlalchemy-psycopg, grpc-unary).
SKIPPED = {"redis", "grpc-client-stream", "sqlalchemy-psycopg2"}


def serve(kind: str) -> None:
    """The server process: an HTTP or grpc server until stdin closes."""
    server: Any = HttpServer() if kind == "http" else GrpcServer()
    server.start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()


@contextlib.contextmanager
def server_process(kind: str) -> Iterator[SimpleNamespace]:
    """An HTTP or grpc server in its own process on the server CPU."""
    process = subprocess.Popen(
        [*taskset(server_cpu()), sys.executable, __file__, "--serve", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    try:
        yield SimpleNamespace(
            port=port,
            url=f"http://127.0.0.1:{port}/",
            target=f"127.0.0.1:{port}",
            requests=0,
        )
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(10)


def measure(case: Case, server: Any, calls: int, rounds: int) -> tuple[float, float, float]:
    """(µs per call with the instrumentation only, with the guard too, median ratio)."""
    if case.server == "postgres":
        match = {"db.system": "postgresql", "server.port": server.port}
    else:
        match = {"server.address": "127.0.0.1", "server.port": server.port}
    registry = load_config({"dependencies": {"dep": {"match": match}}})
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    processor = BreakerSpanProcessor(registry)
    provider.add_span_processor(processor)
    instrumentors = case.instrumentors()
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    caller = case.caller(server)
    try:
        for _ in range(20):
            caller.call()

        def work() -> int:
            for _ in range(calls):
                caller.call()
            return calls

        @contextlib.contextmanager
        def guarded() -> Iterator[None]:
            uninstall = install(registry)
            try:
                yield
            finally:
                uninstall()

        samples = ab(
            work,
            {"otel": contextlib.nullcontext, "guard": guarded},
            rounds=rounds,
            clock=time.process_time_ns,
        )
    finally:
        caller.close()
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        processor.shutdown()
    summary = samples.summary("guard", "otel")
    assert summary.median_ratio is not None
    return samples.best("otel"), samples.best("guard"), summary.median_ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per block")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="", help="comma-separated case ids")
    parser.add_argument("--serve", choices=("http", "grpc"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    pin_client()
    trace.set_tracer_provider(TracerProvider())
    only = {name for name in args.only.split(",") if name}
    rows = []
    with server_process("http") as http, server_process("grpc") as grpc_server:
        servers = {"http": http, "grpc": grpc_server, "postgres": SimpleNamespace(port=5432)}
        for case in CASES:
            if case.id in SKIPPED or (only and case.id not in only):
                continue
            otel, guard, ratio = measure(case, servers[case.server], args.calls, args.rounds)
            rows.append(
                (case.id, f"{otel:.1f}", f"{guard:.1f}", f"{guard - otel:+.1f}", f"{ratio:.3f}")
            )
    print(machine_line())
    print(f"{args.calls} calls per block, {args.rounds} rounds; CPU time of this process.\n")
    print(
        table(
            ["client", "OTel only µs/call", "guard + OTel µs/call", "guard µs", "ratio (median)"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
