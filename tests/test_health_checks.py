"""Active health checks: config validation, built-ins against real servers, redaction."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_resilience import ConfigError, Registry
from otel_resilience._health_checks import (
    HealthCheckSpec,
    parse_health_check,
    redact,
    run_check,
)
from tests.support.health_servers import (
    FaultProxy,
    RedisServer,
    free_port,
    need_tool,
    redis_server,
)

PG_DSN = "postgresql://postgres:hunter2@127.0.0.1:{port}/test"
SECRET = "hunter2"


def config_with(check: object, match: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "dependencies": {
            "db": {
                "criticality": "critical",
                "match": match or {"db.system": "postgresql"},
                "health_check": check,
            }
        }
    }


# -- validation at load time -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "key_path", "words"),
    [
        ({"type": "sql", "dns": "postgresql://x"}, "dependencies.db.health_check.dns", "dsn"),
        ({"type": "sql", "timeout_seconds": 0}, "health_check.timeout_seconds", "seconds from"),
        ({"type": "sql", "timeout_seconds": "2"}, "health_check.timeout_seconds", "number"),
        (
            {"type": "redis", "interval_seconds": -1},
            "health_check.interval_seconds",
            "seconds from",
        ),
        ({"type": "sql", "url": "postgresql://x"}, "health_check.url", "takes dsn"),
        ({"type": "sql", "dsn": "mysql://h/db"}, "health_check.dsn", "postgresql://"),
        ({"type": "redis", "url": "redis://"}, "health_check.url", "no host"),
        ({"type": "pingg"}, "health_check.type", "unknown built-in"),
        ("pingg", "dependencies.db.health_check", "unknown built-in"),
        ({"type": "no_such_module_x:check"}, "health_check.type", "cannot import"),
        ("tests.support.health_checks_helpers:missing", "health_check", "no attribute"),
        ("tests.support.health_checks_helpers:NOT_CALLABLE", "health_check", "not callable"),
        (
            {"type": "tests.support.health_checks_helpers:sync_ok", "url": "x"},
            "health_check.url",
            "no",
        ),
        ({"type": "sql", "dsn_env": "1BAD"}, "health_check.dsn_env", "environment variable"),
        (["sql"], "dependencies.db.health_check", "built-in name"),
        ({"timeout_seconds": 1}, "health_check.type", "is required"),
    ],
)
def test_bad_health_check_config_fails_at_load(check: object, key_path: str, words: str) -> None:
    """A bad health_check is a ConfigError at load naming the key path and what is allowed."""
    with pytest.raises(ConfigError) as caught:
        Registry.from_config(config_with(check))
    assert key_path in str(caught.value)
    assert words in str(caught.value)


def test_config_error_never_shows_the_password() -> None:
    """A DSN with a bad scheme is reported without its password."""
    with pytest.raises(ConfigError) as caught:
        Registry.from_config(config_with({"type": "sql", "dsn": f"mysql://u:{SECRET}@h/db"}))
    assert SECRET not in str(caught.value)


def test_valid_health_checks_load_as_specs() -> None:
    """Built-in names, mappings and import paths load and parse into HealthCheckSpecs."""
    registry = Registry.from_config(
        {
            "dependencies": {
                "db": {"criticality": "critical", "health_check": "sql"},
                "cache": {
                    "match": {
                        "db.system": "redis",
                        "net.peer.name": "cache",
                        "net.peer.port": 7000,
                    },
                    "health_check": {"type": "redis", "timeout_seconds": 0.5},
                },
                "api": {
                    "health_check": {
                        "type": "http",
                        "url": "http://127.0.0.1:9/health",
                        "interval_seconds": 3,
                    }
                },
                "search": {"health_check": "tests.support.health_checks_helpers:sync_ok"},
            }
        }
    )
    db, cache, api, search = (
        parse_health_check(registry[name].health_check, match=registry[name].match)
        for name in ("db", "cache", "api", "search")
    )
    assert isinstance(db, HealthCheckSpec)
    assert db.kind == "sql"
    assert isinstance(cache, HealthCheckSpec)
    assert cache.match == {"db.system": "redis", "server.address": "cache", "server.port": "7000"}
    assert cache.timeout_seconds == 0.5
    assert isinstance(api, HealthCheckSpec)
    assert api.interval_seconds == 3.0
    assert isinstance(search, HealthCheckSpec)
    assert search.kind == "callable"


def test_redact_removes_credentials() -> None:
    """URL credentials and password=... values are replaced by ***."""
    text = (
        f"failed: postgresql://app:{SECRET}@db:5432/x and redis://:{SECRET}@r:6379 "
        f"host=db password={SECRET} token: {SECRET}"
    )
    cleaned = redact(text)
    assert SECRET not in cleaned
    assert "postgresql://***@db:5432/x" in cleaned


# -- running against real servers --------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def pg_proxy() -> Iterator[FaultProxy]:
    proxy = FaultProxy("127.0.0.1", 5432).start()
    try:
        yield proxy
    finally:
        proxy.close()


def spec(raw: object, match: dict[str, str] | None = None) -> HealthCheckSpec:
    parsed = parse_health_check(raw, match=match)
    assert parsed is not None
    return parsed


async def test_redis_ping_passes_and_fails_when_killed(own_redis: RedisServer) -> None:
    """The redis check passes against a live server and fails once it is killed."""
    check = spec({"type": "redis", "url": own_redis.url, "timeout_seconds": 1})
    assert (await run_check(check)).passing
    own_redis.stop()
    result = await run_check(check)
    assert not result.passing
    assert result.error_type == "ConnectionRefusedError"


async def test_redis_target_derived_from_match(own_redis: RedisServer) -> None:
    """Without a url the redis check pings match's server.address and server.port."""
    check = spec("redis", match={"server.address": "127.0.0.1", "server.port": str(own_redis.port)})
    assert (await run_check(check)).passing


async def test_redis_check_times_out_on_a_hung_server(own_redis: RedisServer) -> None:
    """A SIGSTOPped redis-server fails the check at its timeout, not later."""
    check = spec({"type": "redis", "url": own_redis.url, "timeout_seconds": 0.3})
    own_redis.pause()
    try:
        started = time.monotonic()
        result = await run_check(check)
        elapsed = time.monotonic() - started
    finally:
        own_redis.resume()
    assert not result.passing
    assert result.error == "timed out after 0.3s"
    assert elapsed < 2.0


async def test_redis_auth_failure_hides_password(own_redis: RedisServer) -> None:
    """A redis URL with a wrong password fails the check without showing the password."""
    url = f"redis://user:{SECRET}@127.0.0.1:{own_redis.port}/0"
    result = await run_check(spec({"type": "redis", "url": url}))
    assert not result.passing
    assert SECRET not in repr(result)


async def test_sql_check_through_proxy_down_and_back(pg_proxy: FaultProxy) -> None:
    """SELECT 1 passes through the proxy, fails while it refuses, passes again after restart."""
    check = spec({"type": "sql", "dsn": PG_DSN.format(port=pg_proxy.port), "timeout_seconds": 2})
    assert (await run_check(check)).passing
    pg_proxy.stop()
    down = await run_check(check)
    assert not down.passing
    assert SECRET not in repr(down)
    pg_proxy.start()
    assert (await run_check(check)).passing


async def test_sql_check_times_out_when_black_holed(pg_proxy: FaultProxy) -> None:
    """A black-holed database fails the check at its timeout."""
    check = spec({"type": "sql", "dsn": PG_DSN.format(port=pg_proxy.port), "timeout_seconds": 0.3})
    pg_proxy.blackhole()
    started = time.monotonic()
    result = await run_check(check)
    assert not result.passing
    assert time.monotonic() - started < 2.0


async def test_sql_dsn_from_environment(
    pg_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dsn_env reads the DSN from the environment at run time."""
    monkeypatch.setenv("HEALTH_TEST_DSN", PG_DSN.format(port=pg_proxy.port))
    assert (await run_check(spec({"type": "sql", "dsn_env": "HEALTH_TEST_DSN"}))).passing
    monkeypatch.delenv("HEALTH_TEST_DSN")
    result = await run_check(spec({"type": "sql", "dsn_env": "HEALTH_TEST_DSN"}))
    assert result.error == "environment variable HEALTH_TEST_DSN is not set"


async def test_http_check_status_codes() -> None:
    """The http check passes on 2xx and 3xx, fails on 5xx and on a refused connection."""
    import uvicorn

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        path = str(scope["path"])
        status = int(path.strip("/") or 200)
        headers = [(b"location", b"/200")] if 300 <= status < 400 else []
        await send({"type": "http.response.start", "status": status, "headers": headers})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{port}"
        assert (await run_check(spec({"type": "http", "url": f"{base}/204"}))).passing
        assert (await run_check(spec({"type": "http", "url": f"{base}/302"}))).passing
        failed = await run_check(spec({"type": "http", "url": f"{base}/503"}))
        assert failed.error == "GET answered HTTP 503"
    finally:
        server.should_exit = True
        await task
    refused = await run_check(spec({"type": "http", "url": f"http://127.0.0.1:{port}/"}))
    assert not refused.passing


@pytest.mark.parametrize(
    ("path", "passing", "error"),
    [
        ("tests.support.health_checks_helpers:sync_ok", True, None),
        ("tests.support.health_checks_helpers:async_ok", True, None),
        ("tests.support.health_checks_helpers:sync_false", False, "sync_false returned False"),
        (
            "tests.support.health_checks_helpers:sync_raises",
            False,
            "ConnectionError: cannot reach postgresql://***@db.internal:5432/app",
        ),
        ("tests.support.health_checks_helpers:async_hangs", False, "timed out after 0.2s"),
        ("tests.support.health_checks_helpers:sync_slow", False, "timed out after 0.2s"),
    ],
)
async def test_callable_checks(path: str, passing: bool, error: str | None) -> None:
    """Callables by import path: sync or async, True/None passes, False or raising fails."""
    check = spec({"type": path, "timeout_seconds": 0.2})
    result = await run_check(check)
    assert result.passing is passing
    assert result.error == error


def test_a_host_name_that_does_not_resolve_fails_the_check() -> None:
    """A check whose host name does not resolve fails (within its timeout) with the
    resolver's error; the failed look-up never escapes as an exception."""
    from otel_resilience._health_checks import run_check_blocking

    check = spec({"type": "http", "url": "http://no-such-host.invalid/", "timeout_seconds": 3})
    result = run_check_blocking(check)
    assert not result.passing
    assert result.error_type in ("ConnectError", "TimeoutError"), result


def test_a_check_resolving_a_host_name_starts_no_joined_thread() -> None:
    """Resolving a host name runs on a daemon thread, not in a thread pool that the
    interpreter joins at exit (a stuck resolver would keep the process alive)."""
    import threading

    from otel_resilience._health_checks import run_check_blocking

    def pool_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("asyncio_")}

    before = pool_threads()
    check = spec({"type": "http", "url": f"http://localhost:{free_port()}/", "timeout_seconds": 2})
    result = run_check_blocking(check)
    assert not result.passing
    assert result.error_type in ("ConnectError", "ConnectionRefusedError")
    assert pool_threads() <= before


# -- checks given in code, and the rarer outcomes ------------------------------------------


def check_error(raw: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_health_check(raw)
    return str(caught.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"type": "sql", "timeout_seconds": 0},
            "health_check.timeout_seconds: must be a number of seconds > 0, got 0",
        ),
        (
            {"type": "sql", "interval_seconds": 1e9},
            "health_check.interval_seconds: must be a number of seconds up to",
        ),
        (5, "health_check: must be a built-in name (redis, sql, http)"),
        ({"type": 5}, "health_check.type: must name a built-in check"),
        ({"type": "pingg"}, "health_check.type: unknown health check 'pingg'; built-ins:"),
        (
            {"type": "tests.support.health_checks_helpers:sync_ok", "dsn": "x"},
            "health_check.dsn: a callable health check",
        ),
        (
            {"type": "sql", "dsn": "postgresql://h/db", "dsn_env": "PG_DSN"},
            "health_check.dsn_env: give either dsn or dsn_env, not both",
        ),
        ({"type": "sql", "dsn": " "}, "health_check.dsn: must be a non-empty string, got str"),
        (
            {"type": "redis", "url_env": "1BAD"},
            "health_check.url_env: must be an environment variable name, got '1BAD'",
        ),
        ({"type": "http", "url": "http://[::1/x"}, "health_check.url: is not a valid URL"),
    ],
)
def test_checks_given_in_code_are_validated_too(raw: object, expected: str) -> None:
    """A health check given to Dependency in code (not through a config file) is checked
    when parsed, with errors naming the key, the value and what is allowed."""
    assert check_error(raw).startswith(expected), check_error(raw)


def test_a_callable_given_in_code_is_a_check() -> None:
    """A function given as the health check is run as a callable check; the spec's repr
    shows its target without credentials."""
    parsed = parse_health_check(lambda: True)
    assert parsed is not None
    assert parsed.kind == "callable"
    dsn = spec({"type": "sql", "dsn": f"postgresql://app:{SECRET}@db:5432/x"})
    assert SECRET not in repr(dsn)
    assert "postgresql://***@db:5432/x" in repr(dsn)


def test_a_sync_check_returning_an_awaitable_is_awaited() -> None:
    """A sync check function that returns an awaitable has it awaited (within the timeout)
    on the prober's thread and in an event loop alike; its False fails the check."""
    from otel_resilience._health_checks import run_check_blocking

    def deferred(value: bool) -> HealthCheckSpec:
        return spec(lambda: asyncio.sleep(0, result=value))

    assert run_check_blocking(deferred(True)).passing
    failing = run_check_blocking(deferred(False))
    assert not failing.passing
    assert failing.error is not None
    assert failing.error.endswith("returned False")
    assert asyncio.run(run_check(deferred(True))).passing
    assert not asyncio.run(run_check(deferred(False))).passing


async def test_a_sync_check_finishing_after_its_timeout_is_ignored() -> None:
    """A sync check that outlives its timeout is reported timed out; when it finishes later
    its result is dropped without an error."""
    gate = threading.Event()

    def slow() -> bool:
        gate.wait(5)
        return True

    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    result = await run_check(HealthCheckSpec("callable", function=slow, timeout_seconds=0.05))
    assert result.error == "timed out after 0.05s"
    gate.set()
    await asyncio.sleep(0.1)  # the late result reaches the loop, and is ignored
    assert errors == []


async def test_redis_check_fails_when_the_server_hangs_up() -> None:
    """A server that reads the PING and closes the connection without answering fails the
    redis check, saying so."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"PING\r\n")  # read the command, answer nothing
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_check(spec({"type": "redis", "url": f"redis://127.0.0.1:{port}"}))
    finally:
        server.close()
        await server.wait_closed()
    assert not result.passing
    assert result.error == "PING answered 'connection closed'"


def test_redis_check_follows_a_client_on_a_unix_socket(tmp_path: Path) -> None:
    """A redis check with no url pings the Unix socket the application's guarded client
    uses: passing while that redis-server runs, failing once it is killed."""
    import redis

    from otel_resilience._health import health_monitor
    from otel_resilience.instrumentation import install

    socket_path = str(tmp_path / "redis.sock")
    process = subprocess.Popen(
        [
            need_tool("redis-server"),
            "--port",
            "0",
            "--unixsocket",
            socket_path,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    registry = Registry.from_config(
        {"dependencies": {"cache": {"match": {"db.system": "redis"}, "health_check": "redis"}}}
    )
    uninstall = install(registry)
    try:
        deadline = time.monotonic() + 10
        client = redis.Redis(unix_socket_path=socket_path, socket_timeout=1)
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        address = health_monitor(registry).addresses.get("cache")
        assert address is not None
        assert (address.host, address.scheme) == (socket_path, "unix")
        check = parse_health_check(registry["cache"].health_check)
        assert check is not None
        assert asyncio.run(run_check(check, address=address)).passing
        process.kill()
        process.wait(10)
        assert not asyncio.run(run_check(check, address=address)).passing
        client.close()
    finally:
        uninstall()
        process.kill()
        process.wait(10)
