"""Shared fixtures: a fake clock, an OTLP receiver, hypothesis profiles, and reset of global
state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import otel_resilience_demo._servers as demo_servers
from tests.support import ports

# The demo's servers that the tests start in this process (RedisProcess, FaultProxy,
# CollectorStandIn, PostgresCluster) take their ports from this worker's block too.
demo_servers.free_port = ports.free_port

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock never goes back"
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def lingering_receivers() -> Iterator[list[Any]]:
    """OTLP receivers kept serving until the session ends: a module whose app set up the
    demo's telemetry (one per process, exporting on its own threads) leaves its collector
    here, so those exports keep succeeding instead of failing, and logging that they fail,
    during whatever tests this process runs next."""
    receivers: list[Any] = []
    yield receivers
    for server in receivers:
        server.close()


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A real OTLP gRPC receiver on a free port (``tests.support.otlp_receiver``), closed
    after the test."""
    from tests.support.otlp_receiver import OTLPReceiver  # grpc: only for the tests using it

    server = OTLPReceiver().start()
    try:
        yield server
    finally:
        server.close()
