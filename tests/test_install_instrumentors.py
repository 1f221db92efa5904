"""``instrument_clients`` (``configure(instrument_clients=True)``) with clients or their
instrumentations missing or failing: each is skipped on its own, the rest switched on."""

from __future__ import annotations

import logging
import sys
from typing import Any

import opentelemetry.instrumentation.httpx
import pytest
from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience.instrumentation import CLIENTS, instrument_clients


def _fails(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("incompatible client version")


def test_missing_or_failing_instrumentations_are_skipped_and_the_rest_switched_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client library that is not installed and an instrumentation package that is not
    installed are skipped quietly; an instrumentor class that is not there and one whose
    ``instrument()`` raises are logged and skipped; the others are switched on, and the
    undo switches them off even when one of them fails to."""
    clients = [
        c
        for c in CLIENTS
        if c[0] in ("aiohttp", "redis", "httpx", "urllib3", "requests", "psycopg2")
    ]
    assert len(clients) == 6
    for instrumentor in (RequestsInstrumentor(), Psycopg2Instrumentor(), URLLib3Instrumentor()):
        assert not instrumentor.is_instrumented_by_opentelemetry
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # the library: not installed
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.redis", None)  # its package
    monkeypatch.delattr(opentelemetry.instrumentation.httpx, "HTTPXClientInstrumentor")
    monkeypatch.setattr(URLLib3Instrumentor, "_instrument", _fails)
    with caplog.at_level(logging.WARNING, logger="otel_resilience.instrumentation._install"):
        undo = instrument_clients(clients, TracerProvider())
        try:
            messages = [record.getMessage() for record in caplog.records]
            assert messages == [
                "could not load HTTPXClientInstrumentor",
                "could not switch on URLLib3Instrumentor",
            ]
            assert not URLLib3Instrumentor().is_instrumented_by_opentelemetry
            assert RequestsInstrumentor().is_instrumented_by_opentelemetry
            assert Psycopg2Instrumentor().is_instrumented_by_opentelemetry
            caplog.clear()
            # psycopg2 was switched on before requests: its failure must not stop the rest.
            monkeypatch.setattr(Psycopg2Instrumentor, "_uninstrument", _fails)
            undo()
            assert [record.getMessage() for record in caplog.records] == [
                f"could not switch off {Psycopg2Instrumentor()!r}"
            ]
            assert not RequestsInstrumentor().is_instrumented_by_opentelemetry
        finally:
            monkeypatch.undo()
            for instrumentor in (RequestsInstrumentor(), Psycopg2Instrumentor()):
                if instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.uninstrument()
