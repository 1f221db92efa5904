"""Shared fixtures: a fake clock, an OTLP receiver, hypothesis profiles, and reset of global
state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

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
