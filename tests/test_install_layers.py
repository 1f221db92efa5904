"""Guard layers survive any order of OpenTelemetry's instrument/uninstrument and our own
install/uninstall: no dead layer is left behind and a later install guards again."""

from __future__ import annotations

import inspect

import pytest
import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience import CircuitOpenError, load_config
from otel_resilience.instrumentation import install
from otel_resilience.instrumentation._install import GuardLayer


def registry_for_port(port: int):  # type: ignore[no-untyped-def]
    return load_config(
        {"dependencies": {"cache": {"match": {"db.system": "redis", "server.port": port}}}}
    )


def test_install_again_after_instrument_uninstrument_uninstall_guards() -> None:
    """install, instrument, uninstrument (wrapt 2 leaves the guard bound to None), uninstall,
    install: the last install rejects calls on a forced-open breaker before any I/O, and
    the attribute holds the original function once everything is off."""
    original = inspect.getattr_static(redis.Redis, "execute_command")
    registry = registry_for_port(1)  # nothing listens on port 1: any I/O would be refused
    uninstall = install(registry)
    RedisInstrumentor().instrument(tracer_provider=TracerProvider())
    RedisInstrumentor().uninstrument()
    uninstall()
    assert inspect.getattr_static(redis.Redis, "execute_command") is original

    again = registry_for_port(1)
    uninstall_again = install(again)
    try:
        again.breaker("cache").force_open()
        client = redis.Redis(port=1)
        with pytest.raises(CircuitOpenError):
            client.get("k")
        assert isinstance(inspect.getattr_static(redis.Redis, "execute_command"), GuardLayer)
    finally:
        uninstall_again()
    assert inspect.getattr_static(redis.Redis, "execute_command") is original
