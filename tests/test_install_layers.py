"""Guard layers survive any order of OpenTelemetry's instrument/uninstrument and our own
install/uninstall: no dead layer is left behind and a later install guards again."""

from __future__ import annotations

import inspect
import logging
from typing import Any
from unittest import mock

import aiohttp
import pytest
import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from redis.backoff import NoBackoff
from redis.retry import Retry

from otel_resilience import CircuitOpenError, load_config
from otel_resilience.instrumentation import install
from otel_resilience.instrumentation._install import _Proxy, guard_layer, installer_of

NO_RETRY = Retry(NoBackoff(), 0)


def registry_for_port(port: int, name: str = "cache"):  # type: ignore[no-untyped-def]
    return load_config(
        {"dependencies": {name: {"match": {"db.system": "redis", "server.port": port}}}}
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
        assert guard_layer(inspect.getattr_static(redis.Redis, "execute_command")) is not None
    finally:
        uninstall_again()
    assert inspect.getattr_static(redis.Redis, "execute_command") is original


def _guard_layers(owner: Any, attribute: str) -> list[Any]:
    """The guard layers in the chain of layers of ``owner.attribute``, outermost first."""
    layers = []
    node = inspect.getattr_static(owner, attribute)
    while isinstance(node, _Proxy) or guard_layer(node) is not None:
        layer = guard_layer(node)
        if layer is not None:
            layers.append(layer)
        node = (layer if layer is not None else node).__wrapped__
    return layers


def _plain_patch(self: Any, *args: Any, **kwargs: Any) -> None:
    """A method patched in without wrapt (what ``mock.patch`` puts in place)."""


def _refused_not_rejected(client: redis.Redis) -> None:
    """The call reached the network (nothing listens on port 1) instead of being rejected."""
    with pytest.raises(redis.exceptions.ConnectionError) as refused:
        client.get("k")
    assert not isinstance(refused.value, CircuitOpenError)


def test_guard_left_under_a_plain_patch_is_spliced_out_by_the_next_install(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A patch that is no wrapt layer (mock.patch, as `responses` and friends do) hides the
    guard from uninstall; once the patch is undone the dead layer passes calls through,
    and the next install takes it out and is the only guard."""
    original = inspect.getattr_static(redis.Redis, "execute_command")
    first = registry_for_port(1)
    uninstall_first = install(first)
    guard = inspect.getattr_static(redis.Redis, "execute_command")
    with mock.patch.object(redis.Redis, "execute_command", _plain_patch):
        uninstall_first()  # cannot see through the patch: nothing to remove, no error
    assert not caplog.records
    assert inspect.getattr_static(redis.Redis, "execute_command") is guard  # restored, dead
    first.breaker("cache").force_open()
    client = redis.Redis(port=1, retry=NO_RETRY, socket_connect_timeout=0.5)
    _refused_not_rejected(client)  # a dead layer guards nothing

    second = registry_for_port(1)
    uninstall_second = install(second)
    try:
        layers = _guard_layers(redis.Redis, "execute_command")
        assert len(layers) == 1
        assert layers[0] is not guard
        assert layers[0].__wrapped__ is original
        second.breaker("cache").force_open()
        with pytest.raises(CircuitOpenError):
            client.get("k")
    finally:
        uninstall_second()
    assert inspect.getattr_static(redis.Redis, "execute_command") is original


def test_dead_guard_under_an_instrumentation_is_spliced_out_by_the_next_install() -> None:
    """A dead guard layer that an instrumentation wrapped afterwards is cut out from under
    the instrumentation's layer by the next install; tracing stays, one guard rejects."""
    original = inspect.getattr_static(redis.Redis, "execute_command")
    first = registry_for_port(1)
    uninstall_first = install(first)
    guard = inspect.getattr_static(redis.Redis, "execute_command")
    with mock.patch.object(redis.Redis, "execute_command", _plain_patch):
        uninstall_first()
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=TracerProvider())
    try:
        traced = inspect.getattr_static(redis.Redis, "execute_command")
        assert traced.__wrapped__ is guard  # the instrumentation wrapped the dead layer
        second = registry_for_port(1)
        uninstall_second = install(second)
        try:
            assert inspect.getattr_static(redis.Redis, "execute_command") is traced
            layers = _guard_layers(redis.Redis, "execute_command")
            assert len(layers) == 1
            assert layers[0] is not guard
            assert layers[0].__wrapped__ is original
            second.breaker("cache").force_open()
            with pytest.raises(CircuitOpenError):
                redis.Redis(port=1, retry=NO_RETRY).get("k")
        finally:
            uninstall_second()
    finally:
        instrumentor.uninstrument()
    assert inspect.getattr_static(redis.Redis, "execute_command") is original


def test_two_live_installs_stack_and_come_off_in_either_order() -> None:
    """Two installs at once (two registries naming the server differently): the second
    guard goes on top of the first, each rejects by its own breaker, and uninstalling the
    first, then the second, leaves the original method."""
    original = inspect.getattr_static(redis.Redis, "execute_command")
    first, second = registry_for_port(1), registry_for_port(1, "store")
    uninstall_first = install(first)
    uninstall_second = install(second)
    client = redis.Redis(port=1, retry=NO_RETRY, socket_connect_timeout=0.5)
    try:
        layers = _guard_layers(redis.Redis, "execute_command")
        assert [installer_of(layer).registry for layer in layers] == [second, first]
        first.breaker("cache").force_open()
        with pytest.raises(CircuitOpenError) as by_first:
            client.get("k")
        first.breaker("cache").reset()
        second.breaker("store").force_open()
        with pytest.raises(CircuitOpenError) as by_second:
            client.get("k")
        assert (by_first.value.dependency, by_second.value.dependency) == ("cache", "store")
        uninstall_first()
        assert [
            installer_of(layer).registry for layer in _guard_layers(redis.Redis, "execute_command")
        ] == [second]
        with pytest.raises(CircuitOpenError):
            client.get("k")
    finally:
        uninstall_first()
        uninstall_second()
    assert inspect.getattr_static(redis.Redis, "execute_command") is original


def test_client_without_the_guarded_method_is_logged_and_the_others_stay_guarded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client version without the method its guard patches (aiohttp without
    ``ClientSession._request``): install logs a warning naming the library and the
    attribute, and still guards the other clients."""
    monkeypatch.delattr(aiohttp.ClientSession, "_request")
    registry = registry_for_port(1)
    with caplog.at_level(logging.WARNING, logger="otel_resilience.instrumentation"):
        uninstall = install(registry)
    try:
        assert "could not guard aiohttp calls" in caplog.text
        assert "has no attribute '_request' to guard" in caplog.text
        registry.breaker("cache").force_open()
        with pytest.raises(CircuitOpenError):
            redis.Redis(port=1, retry=NO_RETRY).get("k")
    finally:
        uninstall()
