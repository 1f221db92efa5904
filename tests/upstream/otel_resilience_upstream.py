"""A pytest plugin for OpenTelemetry's own instrumentation test suites: every test runs
with otel_resilience configured around it, as an application would have it.

``tests/test_clients_upstream.py`` runs each upstream suite from its sdist twice, with
``-p otel_resilience_upstream`` and without, and compares what passes. This folder goes
on ``PYTHONPATH`` instead of the plugin living in ``tests.support``: every suite has a
``tests`` package of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience import configure
from otel_resilience._configure import reset_for_tests

# Dependencies that the suites' calls match, so the guards take part in them.
CONFIG = {
    "dependencies": {
        "redis": {"match": {"db.system": "redis"}},
        "postgres": {"match": {"db.system": "postgresql"}},
        "mock": {"match": {"server.address": "mock"}},
        "localhost": {"match": {"server.address": "localhost"}},
        "loopback": {"match": {"server.address": "127.0.0.1"}},
    }
}


@pytest.fixture(autouse=True)
def _otel_resilience_configured() -> Iterator[None]:
    configure(CONFIG, tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    try:
        yield
    finally:
        reset_for_tests()
