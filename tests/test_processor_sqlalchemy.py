"""SQLAlchemy's spans and its driver's, with spans alone: each call counts once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_resilience import BreakerPolicy, BreakerSpanProcessor, Dependency, Registry

SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy"
DRIVERS = (
    "opentelemetry.instrumentation.psycopg",
    "opentelemetry.instrumentation.psycopg2",
    "opentelemetry.instrumentation.asyncpg",
)
PG = {"db.system": "postgresql", "server.port": 5432}


@pytest.fixture
def registry() -> Registry:
    policy = BreakerPolicy(consecutive_failures=100, open_seconds=60)
    return Registry([Dependency("pg", match={"db.system": "postgresql"}, policy=policy)])


@pytest.fixture
def provider(registry: Registry) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    yield provider
    provider.shutdown()


def totals(registry: Registry) -> tuple[int, int]:
    snapshot = registry.breaker("pg").snapshot()
    return snapshot.total_successes, snapshot.total_failures


def statement(provider: TracerProvider, driver: str | None, failed: bool = False) -> None:
    """A statement as the instrumentations trace it: SQLAlchemy's span starts, the
    driver's span (a sibling) starts and ends, then SQLAlchemy's span ends."""
    outer = provider.get_tracer(SQLALCHEMY).start_span(
        "SELECT", kind=SpanKind.CLIENT, attributes=PG
    )
    if driver is not None:
        inner = provider.get_tracer(driver).start_span(
            "SELECT", kind=SpanKind.CLIENT, attributes=PG
        )
        if failed:
            inner.set_status(Status(StatusCode.ERROR))
        inner.end()
    if failed:
        outer.set_status(Status(StatusCode.ERROR))
    outer.end()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_statement_counts_once_with_the_driver_span(
    provider: TracerProvider, registry: Registry, driver: str
) -> None:
    statement(provider, driver)
    statement(provider, driver)
    assert totals(registry) == (2, 0)
    statement(provider, driver, failed=True)
    assert totals(registry) == (2, 1)


def test_a_statement_counts_once_without_a_driver_span(
    provider: TracerProvider, registry: Registry
) -> None:
    statement(provider, DRIVERS[0])
    statement(provider, None)  # an earlier driver span is not this statement's
    statement(provider, None, failed=True)
    assert totals(registry) == (2, 1)


def test_a_driver_span_of_another_thread_hides_nothing(
    provider: TracerProvider, registry: Registry
) -> None:
    outer = provider.get_tracer(SQLALCHEMY).start_span(
        "SELECT", kind=SpanKind.CLIENT, attributes=PG
    )

    def other() -> None:
        provider.get_tracer(DRIVERS[0]).start_span(
            "SELECT", kind=SpanKind.CLIENT, attributes=PG
        ).end()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    outer.end()
    assert totals(registry) == (2, 0)


def test_pool_checkout_counts_only_when_it_fails(
    provider: TracerProvider, registry: Registry
) -> None:
    tracer = provider.get_tracer(SQLALCHEMY)
    tracer.start_span("connect", kind=SpanKind.CLIENT, attributes=PG).end()
    assert totals(registry) == (0, 0)
    span = tracer.start_span("connect", kind=SpanKind.CLIENT, attributes=PG)
    span.set_status(Status(StatusCode.ERROR))
    span.end()
    assert totals(registry) == (0, 1)


def test_other_scopes_named_connect_still_count(
    provider: TracerProvider, registry: Registry
) -> None:
    provider.get_tracer("my.app").start_span("connect", kind=SpanKind.CLIENT, attributes=PG).end()
    assert totals(registry) == (1, 0)
