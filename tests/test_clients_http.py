"""The HTTP client guards (httpx, requests, urllib3, aiohttp) on the paths around the
breaker, against a real HTTP server: requests to hosts no dependency names, URLs without
a port or that the client rejects, aiohttp's ``raise_for_status``, and a request span
that ends inside another dependency's guard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import urllib3
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience import BreakerSpanProcessor, CircuitOpenError, Registry, load_config
from otel_resilience.instrumentation._clientcall import Dependencies, http_dependency
from otel_resilience.instrumentation._install import Installer
from tests.support.client_servers import HttpServer
from tests.support.guards import guarded


@pytest.fixture
def server() -> Iterator[HttpServer]:
    own = HttpServer().start()
    yield own
    own.stop()


@pytest.fixture
def elsewhere() -> Iterator[Registry]:
    """Guards with one dependency, ``api``, on a port nothing listens on, forced open: a
    request the guard took for ``api`` would be rejected."""
    registry = load_config(
        {"dependencies": {"api": {"match": {"server.address": "127.0.0.1", "server.port": 1}}}}
    )
    registry.breaker("api").force_open()
    yield from guarded(registry)


def calls(registry: Registry, name: str = "api") -> tuple[int, int, int]:
    snapshot = registry.breaker(name).snapshot()
    return snapshot.total_successes, snapshot.total_failures, snapshot.total_rejected


# -- hosts no dependency names -------------------------------------------------------------


async def test_httpx_and_aiohttp_requests_to_an_undeclared_host_go_straight_through(
    server: HttpServer, elsewhere: Registry
) -> None:
    """httpx (sync and async) and aiohttp requests to a host and port no dependency names
    reach the server, with the only declared breaker forced open, and count nowhere."""
    with httpx.Client() as client:
        assert client.get(server.url).status_code == 200
    async with httpx.AsyncClient() as async_client:
        assert (await async_client.get(server.url)).status_code == 200
    async with aiohttp.ClientSession() as session, session.get(server.url) as response:
        assert response.status == 200
    assert server.requests == 3
    assert calls(elsewhere) == (0, 0, 0)


# -- which server a URL names ---------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "port"), [("http", 80), ("https", 443)])
def test_a_url_without_a_port_names_the_schemes_default_port(scheme: str, port: int) -> None:
    """A request URL without a port (requests) and a urllib3 pool made without one belong
    to the dependency declared with the scheme's default port: rejected before any I/O
    while it is open."""
    registry = load_config(
        {"dependencies": {"web": {"match": {"server.address": "127.0.0.1", "server.port": port}}}}
    )
    for _ in guarded(registry):
        registry.breaker("web").force_open()
        with pytest.raises(requests.ConnectionError) as by_requests:
            requests.get(f"{scheme}://127.0.0.1/", timeout=1)
        pool_class = (
            urllib3.HTTPSConnectionPool if scheme == "https" else urllib3.HTTPConnectionPool
        )
        with pytest.raises(urllib3.exceptions.HTTPError) as by_urllib3:
            pool_class("127.0.0.1").request("GET", "/", retries=False)
        assert isinstance(by_requests.value, CircuitOpenError)
        assert isinstance(by_urllib3.value, CircuitOpenError)
        assert calls(registry, "web") == (0, 0, 2)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://127.0.0.1:99999/", {"server.address": "127.0.0.1"}),
        ("/no/host", {"server.port": 80}),
    ],
)
async def test_a_url_aiohttp_rejects_gets_aiohttps_error_not_a_rejection(
    url: str, match: dict[str, Any]
) -> None:
    """A URL aiohttp cannot use (a port out of range, a path with no base URL) names no
    dependency, not even a forced-open one matching the part of it that can be read: the
    request gets aiohttp's own InvalidURL, and no breaker counts it."""
    registry = load_config({"dependencies": {"local": {"match": match}}})
    for _ in guarded(registry):
        registry.breaker("local").force_open()
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.InvalidURL) as error:
                await session.get(url)
        assert not isinstance(error.value, CircuitOpenError)
        assert calls(registry, "local") == (0, 0, 0)


def test_the_per_host_lookup_stays_bounded_and_right(server: HttpServer) -> None:
    """A service calling thousands of distinct hosts keeps the guards' per-host lookup
    bounded (1024 entries), and a declared host is still found after it was emptied."""
    registry = load_config(
        {"dependencies": {"api": {"match": {"server.address": "127.0.0.1", "server.port": 8080}}}}
    )
    dependencies = Dependencies(Installer(registry))
    for number in range(1100):
        assert http_dependency(dependencies, f"http://host-{number}.internal/path") is None
        assert len(dependencies._entries) <= 1024
    found = http_dependency(dependencies, "http://127.0.0.1:8080/x")
    assert found is not None
    assert found.name == "api"


# -- aiohttp with raise_for_status ------------------------------------------------------------


@pytest.mark.parametrize(("status", "failed"), [(503, True), (404, False)])
async def test_aiohttp_raise_for_status_errors_count_by_their_status(
    server: HttpServer, status: int, failed: bool
) -> None:
    """With ``raise_for_status``, aiohttp raises ClientResponseError: a 5xx counts as a
    failure of the dependency, a 4xx as its answer (the server answered)."""
    registry = load_config(
        {
            "dependencies": {
                "api": {"match": {"server.address": "127.0.0.1", "server.port": server.port}}
            }
        }
    )
    server.status = status
    for _ in guarded(registry):
        async with aiohttp.ClientSession(raise_for_status=True) as session:
            with pytest.raises(aiohttp.ClientResponseError) as error:
                await session.get(server.url)
        assert error.value.status == status
        assert calls(registry) == ((0, 1, 0) if failed else (1, 0, 0))


# -- spans ending inside another dependency's guard ----------------------------------------------


def test_request_span_ending_inside_another_dependencys_guard_counts_once(
    server: HttpServer,
) -> None:
    """A traced requests call to dependency ``api`` made inside ``registry.guard("outer")``:
    its span ends after the ``api`` guard returned, still inside the outer guard, and is
    not counted a second time by the span processor."""
    registry = load_config(
        {
            "dependencies": {
                "api": {"match": {"server.address": "127.0.0.1", "server.port": server.port}},
                "outer": {},
            }
        }
    )
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        for _ in guarded(registry):
            with registry.guard("outer"):
                response: Any = requests.get(server.url, timeout=2)
            assert response.status_code == 200
            assert calls(registry) == (1, 0, 0)
            assert calls(registry, "outer") == (1, 0, 0)
    finally:
        instrumentor.uninstrument()
