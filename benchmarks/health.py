"""Benchmark: /health latency with every dependency down or hung, and recovery time.

Run: .venv/bin/python benchmarks/health.py [--quick]

1. /health latency (p50, p99), with the prober running and every check hanging or failing:
   redis-server SIGSTOPped, a PostgreSQL DSN and an HTTP URL pointing at sockets that
   accept and never answer, and ten more dependencies with open breakers. Measured two
   ways: in-process (the ASGI app called directly, no network) and over HTTP (uvicorn on
   127.0.0.1, one keep-alive httpx client). The peer is the usual hand-written endpoint
   that checks each dependency while the request waits (1 s timeout per check).
2. Recovery: a redis-server is killed (breaker opens on user traffic), then restarted; no
   traffic follows. We time the restart to a CLOSED breaker, with the prober and without.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from otel_resilience import HealthProber, Registry, State, health_app
from otel_resilience._health_checks import parse_health_check, run_check


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


class RedisServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is needed for this benchmark")
        self.process = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
            self.process = None


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50 * 1000, p99 * 1000


def all_down_registry(redis_port: int, pg_port: int, http_port: int) -> Registry:
    dependencies: dict[str, Any] = {
        "redis": {
            "criticality": "optional",
            "health_check": {"type": "redis", "url": f"redis://127.0.0.1:{redis_port}"},
        },
        "postgres": {
            "criticality": "critical",
            "health_check": {
                "type": "sql",
                "dsn": f"postgresql://app:secret@127.0.0.1:{pg_port}/app",
                "timeout_seconds": 30,
            },
        },
        "billing": {
            "criticality": "important",
            "health_check": {"type": "http", "url": f"http://127.0.0.1:{http_port}/health"},
        },
    }
    for index in range(10):
        dependencies[f"api{index}"] = {"criticality": "optional"}
    registry = Registry.from_config({"service": "bench", "dependencies": dependencies})
    for name, breaker in registry.breakers().items():
        if name.startswith("api"):
            breaker.force_open()
    for name in ("redis", "postgres", "billing"):
        breaker = registry.breaker(name)
        for _ in range(5):
            breaker.record_failure(error_type="ConnectionError")
    return registry


async def asgi_get(app: Any, path: str) -> int:
    """One in-process ASGI request; returns the status code."""
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    await app(scope, receive, send)
    return status


async def naive_health(specs: list[Any]) -> None:
    """The peer: check every dependency while the request waits."""
    await asyncio.gather(*(run_check(spec) for spec in specs))


async def latency(requests: int, naive_requests: int) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    redis = RedisServer(free_port())
    redis.start()
    redis.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        with black_hole() as pg_port, black_hole() as http_port:
            registry = all_down_registry(redis.port, pg_port, http_port)
            app = health_app(registry, interval_seconds=0.05)
            with app.prober:
                await asyncio.sleep(0.3)  # checks are in flight and hanging
                assert await asgi_get(app, "/health") == 503
                samples = []
                for _ in range(requests):
                    started = time.perf_counter()
                    await asgi_get(app, "/health")
                    samples.append(time.perf_counter() - started)
                results["ours, in-process ASGI"] = percentiles(samples)
            results["ours, HTTP via uvicorn"] = await over_http(
                health_app(registry, interval_seconds=0.05), requests // 4
            )
            specs = [
                parse_health_check({"type": "redis", "url": f"redis://127.0.0.1:{redis.port}"}),
                parse_health_check(
                    {"type": "sql", "dsn": f"postgresql://a:b@127.0.0.1:{pg_port}/a"}
                ),
                parse_health_check({"type": "http", "url": f"http://127.0.0.1:{http_port}/"}),
            ]
            specs = [dataclasses.replace(spec, timeout_seconds=1.0) for spec in specs if spec]
            samples = []
            for _ in range(naive_requests):
                started = time.perf_counter()
                await naive_health(specs)
                samples.append(time.perf_counter() - started)
            results["peer: check on request (1 s timeouts)"] = percentiles(samples)
    finally:
        redis.stop()
    return results


async def over_http(app: Any, requests: int) -> tuple[float, float]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        await asyncio.sleep(0.01)
    samples = []
    try:
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await client.get("/health")
            for _ in range(requests):
                started = time.perf_counter()
                await client.get("/health")
                samples.append(time.perf_counter() - started)
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 10)
    return percentiles(samples)


async def recovery(rounds: int, interval: float, open_seconds: float, prober: bool) -> list[float]:
    """Seconds from a redis-server restart to a CLOSED breaker, with no user traffic."""
    times = []
    for _ in range(rounds):
        redis = RedisServer(free_port())
        registry = Registry.from_config(
            {
                "dependencies": {
                    "redis": {
                        "breaker": {"consecutive_failures": 2, "open_seconds": open_seconds},
                        "health_check": {
                            "type": "redis",
                            "url": f"redis://127.0.0.1:{redis.port}",
                            "timeout_seconds": 0.5,
                        },
                    }
                }
            }
        )
        breaker = registry.breaker("redis")
        probing = HealthProber(registry, interval_seconds=interval)
        if prober:
            probing.start()
        try:
            for _ in range(2):  # user traffic fails while redis is down
                breaker.record_failure(error_type="ConnectionRefusedError")
            assert breaker.state is State.OPEN
            await asyncio.sleep(random.uniform(0.0, 2 * interval))  # any phase of the prober
            redis.start()
            restarted = time.monotonic()
            deadline = restarted + open_seconds + 5 * interval
            while breaker.state is not State.CLOSED and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            times.append(
                time.monotonic() - restarted if breaker.state is State.CLOSED else float("inf")
            )
        finally:
            probing.stop()
            redis.stop()
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    args = parser.parse_args()
    requests = 400 if args.quick else 2000
    rounds = 3 if args.quick else 10
    results = await latency(requests, 3 if args.quick else 5)
    print("/health latency, every dependency down or hung (ms)")
    print(f"{'':40} {'p50':>9} {'p99':>9}")
    ours_p99 = results["ours, in-process ASGI"][1]
    for name, (p50, p99) in results.items():
        print(f"{name:40} {p50:9.3f} {p99:9.3f}   p99 x{p99 / ours_p99:,.0f}")
    interval, open_seconds = 0.5, 1.0
    print(f"\nrecovery: restart to CLOSED, no traffic (interval {interval}s, open {open_seconds}s)")
    with_prober = await recovery(rounds, interval, open_seconds, prober=True)
    without = await recovery(min(rounds, 2), interval, open_seconds, prober=False)
    print(
        f"with the prober:    median {statistics.median(with_prober):.3f}s, "
        f"max {max(with_prober):.3f}s over {len(with_prober)} rounds"
    )
    never = all(t == float("inf") for t in without)
    print(
        "without the prober: "
        + ("never closes (stays half-open until traffic comes)" if never else str(without))
    )


if __name__ == "__main__":
    asyncio.run(main())
