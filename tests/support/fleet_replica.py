"""One replica of a small service for the fleet test: the library, its metrics on the
Python Prometheus exporter, and the breakers named in $OPEN_DEPENDENCIES opened by real
failing calls; SIGUSR1 resets them (the replica reaches its dependencies again). Run as
``python -m tests.support.fleet_replica``; serves until terminated."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

from otel_resilience import load_config
from otel_resilience._metrics import ResilienceMetrics

CONFIG = {
    "service": "fleet-svc",
    "defaults": {"breaker": {"consecutive_failures": 2, "open_seconds": 300}},
    "dependencies": {
        "postgres": {"criticality": "critical"},
        "redis": {"criticality": "optional"},
        "analytics": {"criticality": "optional"},
    },
}


def refused() -> None:
    raise ConnectionRefusedError("connection refused")


def main() -> None:
    registry = load_config(CONFIG)
    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    ResilienceMetrics(provider).attach(registry)
    for name in registry.breakers():
        registry.call(name, lambda: None)
    for name in filter(None, os.environ.get("OPEN_DEPENDENCIES", "").split(",")):
        for _ in range(2):
            with contextlib.suppress(ConnectionRefusedError):
                registry.call(name, refused)
    start_http_server(int(os.environ["REPLICA_PORT"]), addr="127.0.0.1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # SIGUSR1: this replica reaches everything again (its breakers are reset).
    signal.signal(signal.SIGUSR1, lambda *_: resets.set())
    resets = threading.Event()

    def reset_on_signal() -> None:
        while not stop.is_set():
            if resets.wait(0.1):
                resets.clear()
                for breaker in registry.breakers().values():
                    breaker.reset()

    threading.Thread(target=reset_on_signal, daemon=True).start()
    print("READY", flush=True)
    stop.wait(120)  # a test that forgets a replica does not leave it running for long
    provider.shutdown()


if __name__ == "__main__":
    main()
