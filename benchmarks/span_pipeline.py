"""How fast spans alone notice an outage: redis killed to an OPEN breaker.

GETs at 100 calls/s against an own redis-server, which is killed; time until the breaker
is OPEN, driven by spans alone and with the client guard. (What the span side costs per
call, ``on_end`` and end to end, is measured by ``hot_path.py`` through the shared
harness.)

    python benchmarks/span_pipeline.py [--outages 5]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import Registry, State, configure
from otel_resilience._configure import reset_for_tests
from otel_resilience.instrumentation import install

# -- outage to open ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is needed for the outage measure")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return server
        except OSError:
            time.sleep(0.02)
    server.kill()
    sys.exit(f"redis-server did not start on port {port}")


def outage_to_open(*, guarded: bool, rate: float = 100.0) -> float:
    """Seconds from killing redis-server to an OPEN breaker, GETs at ``rate`` per second,
    with the default breaker policy (5 consecutive failures or 50% of 10 calls)."""
    port = free_port()
    server = start_redis(port)
    provider = TracerProvider()
    config = {
        "dependencies": {
            "cache": {
                "criticality": "optional",
                "match": {"db.system": "redis", "server.port": port},
                "fallback": "memory" if guarded else None,
            }
        }
    }
    if config["dependencies"]["cache"]["fallback"] is None:
        del config["dependencies"]["cache"]["fallback"]
    registry: Registry = configure(
        config, tracer_provider=provider, meter_provider=MeterProvider(), instrument=False
    )
    RedisInstrumentor().instrument(tracer_provider=provider)
    uninstall = install(registry) if guarded else None
    client = redis.Redis(
        port=port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    stop = threading.Event()

    def traffic() -> None:
        interval = 1 / rate
        next_call = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(redis.exceptions.RedisError):
                client.get("k")
            next_call += interval
            stop.wait(max(0.0, next_call - time.monotonic()))

    worker = threading.Thread(target=traffic)
    worker.start()
    time.sleep(0.3)
    breaker = registry.breaker("cache")
    killed = time.monotonic()
    server.kill()
    while breaker.state is not State.OPEN and time.monotonic() - killed < 10:
        time.sleep(0.0005)
    opened = time.monotonic() - killed
    stop.set()
    worker.join()
    server.wait()
    if uninstall is not None:
        uninstall()
    RedisInstrumentor().uninstrument()
    reset_for_tests()
    provider.shutdown()
    return opened


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--outages", type=int, default=5)
    args = parser.parse_args()

    spans_only = [outage_to_open(guarded=False) for _ in range(args.outages)]
    with_guard = [outage_to_open(guarded=True) for _ in range(args.outages)]

    print(
        f"Measured {datetime.date.today()} on CPython {platform.python_version()}; "
        f"{args.outages} outages each.\n"
    )
    print("| Redis killed to breaker OPEN, 100 calls/s | median ms | max ms | target |")
    print("|---|---:|---:|---:|")
    for name, times in (("spans alone (no guard)", spans_only), ("with the guard", with_guard)):
        print(
            f"| {name} | {statistics.median(times) * 1000:.0f} | {max(times) * 1000:.0f} | < 1000 |"
        )


if __name__ == "__main__":
    main()
