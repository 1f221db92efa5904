"""Active health checks: built-in ``redis`` (PING), ``sql`` (SELECT 1), ``http`` (GET), or a
callable by import path, each with its own timeout and interval.

A check is an async function that returns when the dependency is healthy and raises (or a
callable returns False) when it is not. A built-in check with no address in the config
checks the address learned from the dependency's own calls (``_addresses``); until one is
learned its result is ``unknown``. Clients are imported lazily inside the check, so the
core imports nothing optional. Error text kept from a failed check is passed through
``redact`` first: it never holds a password or a URL's credentials.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import inspect
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ._addresses import Address
from ._context import http_status_is_failure
from ._errors import ConfigError, did_you_mean
from ._fallbacks import import_object
from ._redact import describe_error, redact
from ._semconv import canonical_key

__all__ = [
    "BUILTIN_CHECKS",
    "DEFAULT_CHECK_TIMEOUT_SECONDS",
    "CheckResult",
    "HealthCheckSpec",
    "import_clients",
    "needs_address",
    "parse_health_check",
    "redact",
    "run_check",
    "run_check_blocking",
]

DEFAULT_CHECK_TIMEOUT_SECONDS = 2.0
BUILTIN_CHECKS = ("redis", "sql", "http")
_CHECK_KEYS = ("type", "url", "dsn", "url_env", "dsn_env", "timeout_seconds", "interval_seconds")
_TARGET_KEYS = {"redis": ("url", "url_env"), "sql": ("dsn", "dsn_env"), "http": ("url", "url_env")}
_MAX_ERROR_CHARS = 200
_MAX_SECONDS = 86_400.0

ErrorFactory = Callable[[str, str], ConfigError]
"""``error(key_path, message)``: builds the ConfigError that names the source and key path."""


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    """A validated health check: what to run, against what, how long it may take, how often.

    ``kind`` is ``redis``, ``sql``, ``http`` or ``callable``. ``target`` is the URL or DSN
    (None: the address learned from the dependency's calls, else ``match``'s
    ``server.address``, see docs/health.md);
    ``target_env`` names an environment variable holding it, read at each run, so the
    config file need not hold a secret. ``interval_seconds`` None means the prober's own.
    """

    kind: str
    target: str | None = None
    target_env: str | None = None
    function: Callable[[], Any] | None = None
    timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS
    interval_seconds: float | None = None
    match: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        target = redact(self.target) if self.target else self.target_env
        return f"HealthCheckSpec({self.kind}, {target!r}, timeout={self.timeout_seconds:g}s)"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one health check run.

    ``checked_at`` is a reading of the monotonic clock when the run ended; ``error`` is a
    short, redacted description of why it failed (None when it passed). ``unknown``: the
    check could not run because no address is known for it yet; such a result neither
    passes nor fails (``passing`` is False, and health ignores it).
    """

    passing: bool
    checked_at: float
    duration_seconds: float
    error: str | None = None
    error_type: str | None = None
    unknown: bool = False

    @property
    def status(self) -> str:
        """``passing``, ``failing`` or ``unknown``."""
        if self.unknown:
            return "unknown"
        return "passing" if self.passing else "failing"


# -- parsing and validation ------------------------------------------------------------------


def _default_error(path: str, message: str) -> ConfigError:
    return ConfigError(message, path=path or None)


def _seconds(value: Any, path: str, error: ErrorFactory) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise error(path, f"must be a number of seconds > 0, got {value!r}")
    if not value <= _MAX_SECONDS:  # also refuses inf and nan
        raise error(path, f"must be a number of seconds up to {_MAX_SECONDS:g}, got {value!r}")
    return float(value)


def _callable_spec(
    path_text: str, key_path: str, error: ErrorFactory, **options: Any
) -> HealthCheckSpec:
    try:
        target = import_object(path_text)
    except ValueError as exc:
        raise error(key_path, str(exc)) from None
    if not callable(target):
        raise error(key_path, f"{path_text!r} is not callable (it is {type(target).__name__})")
    return HealthCheckSpec("callable", function=target, **options)


def parse_health_check(
    raw: Any,
    *,
    match: Mapping[str, str] | None = None,
    path: str = "health_check",
    error: ErrorFactory = _default_error,
) -> HealthCheckSpec | None:
    """Validate a dependency's ``health_check`` (DESIGN.md 7) into a ``HealthCheckSpec``.

    Accepts None, a spec, a callable, a built-in name (``redis``, ``sql``, ``http``), an
    import path ``"module:function"``, or a mapping with ``type`` and the keys
    ``url``/``dsn`` (or ``url_env``/``dsn_env``), ``timeout_seconds`` and
    ``interval_seconds``. Errors name the key path, the value and what is allowed.
    """
    if raw is None or isinstance(raw, HealthCheckSpec):
        return raw
    match = {canonical_key(key): str(value) for key, value in (match or {}).items()}
    if callable(raw):
        return HealthCheckSpec("callable", function=raw, match=match)
    if isinstance(raw, str):
        raw = {"type": raw}
        mapping_form = False
    elif isinstance(raw, Mapping):
        mapping_form = True
    else:
        raise error(
            path,
            "must be a built-in name (redis, sql, http), an import path 'module:function' or a "
            f"mapping with a 'type', got {type(raw).__name__} {raw!r}",
        )
    for key in raw:
        if not isinstance(key, str) or key not in _CHECK_KEYS:
            raise error(
                f"{path}.{key}",
                f"unknown key{did_you_mean(str(key), _CHECK_KEYS)}; allowed: "
                f"{', '.join(_CHECK_KEYS)}",
            )
    type_path = f"{path}.type" if mapping_form else path
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise error(
            type_path,
            "must name a built-in check (redis, sql, http) or an import path "
            f"'module:function', got {kind!r}",
        )
    timeout = _seconds(
        raw.get("timeout_seconds", DEFAULT_CHECK_TIMEOUT_SECONDS), f"{path}.timeout_seconds", error
    )
    interval = raw.get("interval_seconds")
    if interval is not None:
        interval = _seconds(interval, f"{path}.interval_seconds", error)
    options: dict[str, Any] = {
        "timeout_seconds": timeout,
        "interval_seconds": interval,
        "match": match,
    }
    if kind not in BUILTIN_CHECKS:
        if ":" not in kind and "." not in kind:
            raise error(
                type_path,
                f"unknown health check {kind!r}; built-ins: {', '.join(BUILTIN_CHECKS)}, or "
                "an import path 'module:function'",
            )
        for key in ("url", "dsn", "url_env", "dsn_env"):
            if key in raw:
                raise error(f"{path}.{key}", f"a callable health check ({kind}) takes no {key}")
        return _callable_spec(kind, type_path, error, **options)
    allowed = _TARGET_KEYS[kind]
    for key in ("url", "dsn", "url_env", "dsn_env"):
        if key in raw and key not in allowed:
            raise error(
                f"{path}.{key}",
                f"the {kind} check takes {' or '.join(allowed)}, not {key}",
            )
    target_key, env_key = allowed
    target = raw.get(target_key)
    target_env = raw.get(env_key)
    if target is not None and target_env is not None:
        raise error(f"{path}.{env_key}", f"give either {target_key} or {env_key}, not both")
    if target is not None:
        if not isinstance(target, str) or not target.strip():
            raise error(
                f"{path}.{target_key}", f"must be a non-empty string, got {type(target).__name__}"
            )
        _validate_target(kind, target, f"{path}.{target_key}", error)
    if target_env is not None and (
        not isinstance(target_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target_env)
    ):
        raise error(
            f"{path}.{env_key}", f"must be an environment variable name, got {target_env!r}"
        )
    return HealthCheckSpec(kind, target=target, target_env=target_env, **options)


def _validate_target(kind: str, target: str, path: str, error: ErrorFactory) -> None:
    schemes = {
        "redis": ("redis", "rediss"),
        "sql": ("postgres", "postgresql"),
        "http": ("http", "https"),
    }[kind]
    try:
        parts = urlsplit(target)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError as exc:
        raise error(path, f"is not a valid URL ({exc}): {redact(target)!r}") from None
    if parts.scheme not in schemes:
        raise error(
            path,
            f"must be a {' or '.join(s + '://' for s in schemes)} URL, got {redact(target)!r}",
        )
    if kind != "sql" and not parts.hostname:
        raise error(path, f"has no host: {redact(target)!r}")


def _describe_error(exc: BaseException) -> str:
    return describe_error(exc, _MAX_ERROR_CHARS)


# -- running ---------------------------------------------------------------------------------


class CheckFailed(Exception):
    """A health check answered, and the answer was "unhealthy"."""


class NoAddress(Exception):
    """A built-in check has no address yet: nothing in the config, nothing learned."""


_CLIENT_MODULES = {"sql": "asyncpg", "http": "httpx"}


def import_clients(specs: Iterable[HealthCheckSpec | None]) -> None:
    """Import the client libraries these checks use, now, on the calling thread.

    The checks import them lazily; done first from a check's own thread, the import could
    be under way when a pre-fork server forks, and a forked child would then wait forever
    for the module lock that thread held. A missing library is left to the check to report.
    """
    for spec in specs:
        module = None if spec is None else _CLIENT_MODULES.get(spec.kind)
        if module is not None:
            with contextlib.suppress(ImportError):
                importlib.import_module(module)


def needs_address(spec: HealthCheckSpec | None) -> bool:
    """Whether ``spec`` is a built-in check whose config gives no URL or DSN of its own."""
    return (
        spec is not None
        and spec.kind in BUILTIN_CHECKS
        and spec.target is None
        and spec.target_env is None
    )


def _resolve_target(spec: HealthCheckSpec) -> str | None:
    if spec.target is not None:
        return spec.target
    if spec.target_env is not None:
        value = os.environ.get(spec.target_env)
        if not value:
            raise CheckFailed(f"environment variable {spec.target_env} is not set")
        return value
    return None


def _address(spec: HealthCheckSpec, learned: Address | None) -> Address:
    """Where an address-less built-in check goes: the learned address, else ``match``'s.

    Never a default host: with neither, the check cannot run (``NoAddress``).
    """
    if learned is not None:
        return learned
    match = spec.match or {}
    host = match.get("server.address")
    if not host:
        raise NoAddress(
            "no address yet: the check runs against the address of the dependency's own "
            "calls once one is seen (or give it a url/dsn)"
        )
    port_text = match.get("server.port")
    return Address(host, int(port_text) if port_text and port_text.isdigit() else None)


def _redis_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _redis_ping(spec: HealthCheckSpec, learned: Address | None) -> None:
    """PING over a raw connection (AUTH first when the URL carries credentials)."""
    url = _resolve_target(spec)
    username: str | None = None
    password: str | None = None
    use_tls = False
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    if url is None:
        address = _address(spec, learned)
        username, password = address.user, address.password
        if address.scheme == "unix":
            reader, writer = await asyncio.open_unix_connection(address.host)
        else:
            reader, writer = await asyncio.open_connection(
                address.host, address.port or 6379, ssl=(address.scheme == "rediss") or None
            )
    else:
        parts = urlsplit(url)
        use_tls = parts.scheme == "rediss"
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        reader, writer = await asyncio.open_connection(
            parts.hostname or "localhost", parts.port or 6379, ssl=use_tls or None
        )
    try:
        if password is not None:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            writer.write(_redis_command(*auth))
            await writer.drain()
            reply = await reader.readline()
            if not reply.startswith(b"+OK"):
                # The server's reply never echoes the password.
                raise CheckFailed(f"AUTH refused: {reply.decode(errors='replace').strip()}")
        writer.write(_redis_command("PING"))
        await writer.drain()
        reply = await reader.readline()
        if not reply.startswith(b"+PONG"):
            text = reply.decode(errors="replace").strip() or "connection closed"
            raise CheckFailed(f"PING answered {text!r}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _sql_select_one(spec: HealthCheckSpec, learned: Address | None) -> None:
    """Connect with asyncpg, ``SELECT 1``, close."""
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    dsn = _resolve_target(spec)
    kwargs: dict[str, Any] = {"timeout": spec.timeout_seconds}
    if dsn is None:
        address = _address(spec, learned)
        # Fields the calls did not show come from libpq's environment (PGUSER, PGPASSWORD...).
        kwargs["host"] = address.host
        for key, value in (
            ("port", address.port),
            ("database", address.database),
            ("user", address.user),
            ("password", address.password),
        ):
            if value is not None:
                kwargs[key] = value
    else:
        kwargs["dsn"] = dsn
    connection = await asyncpg.connect(**kwargs)
    try:
        value = await connection.fetchval("SELECT 1")
    finally:
        await connection.close(timeout=spec.timeout_seconds)
    if value != 1:
        raise CheckFailed(f"SELECT 1 returned {value!r}")


async def _http_get(spec: HealthCheckSpec, learned: Address | None) -> None:
    """GET the URL without following redirects.

    A configured URL is healthy on 2xx and 3xx. A URL built from the learned address (its
    root path, which the service may not serve) is healthy whenever the server answers
    without a 5xx or 429, the rule its calls are judged by.
    """
    import httpx

    url = _resolve_target(spec)
    derived = url is None
    if url is None:
        address = _address(spec, learned)
        scheme = address.scheme if address.scheme in ("http", "https") else "http"
        host = f"[{address.host}]" if ":" in address.host else address.host
        url = f"{scheme}://{host}:{address.port}/" if address.port else f"{scheme}://{host}/"
    async with httpx.AsyncClient(timeout=spec.timeout_seconds, follow_redirects=False) as client:
        response = await client.get(url)
    failed = (
        http_status_is_failure(response.status_code) if derived else response.status_code >= 400
    )
    if failed:
        raise CheckFailed(f"GET answered HTTP {response.status_code}")


def _in_daemon_thread(function: Callable[[], Any]) -> asyncio.Future[Any]:
    """``function()`` on a daemon thread of its own, as a future of the running loop.

    Not ``asyncio.to_thread``: the default executor's threads are joined at interpreter
    exit, so a check that never returns would keep the process from exiting.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = function(), None
        except BaseException as exc:  # handed to the awaiting coroutine
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="otel-resilience-check", daemon=True).start()
    return future


async def _call_function(spec: HealthCheckSpec, learned: Address | None) -> None:
    """Run a user's check: sync ones in a daemon thread, async ones awaited."""
    function = spec.function
    assert function is not None
    if inspect.iscoroutinefunction(function):
        result = await function()
    else:
        result = await _in_daemon_thread(function)
        if inspect.isawaitable(result):
            result = await result
    _callable_verdict(function, result)


def _callable_verdict(function: Callable[[], Any], result: Any) -> None:
    if result is False:
        name = getattr(function, "__qualname__", repr(function))
        raise CheckFailed(f"{name} returned False")


_RUNNERS: dict[str, Callable[[HealthCheckSpec, Address | None], Awaitable[None]]] = {
    "redis": _redis_ping,
    "sql": _sql_select_one,
    "http": _http_get,
    "callable": _call_function,
}


def _outcome(
    spec: HealthCheckSpec, started: float, ended: float, exc: BaseException | None
) -> CheckResult:
    """The CheckResult of a run that started and ended at these clock readings."""
    duration = ended - started
    if exc is None:
        return CheckResult(True, ended, duration)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not str(exc):
        return CheckResult(
            False, ended, duration, f"timed out after {spec.timeout_seconds:g}s", "TimeoutError"
        )
    if isinstance(exc, NoAddress):
        return CheckResult(False, ended, duration, str(exc), "NoAddress", unknown=True)
    if isinstance(exc, CheckFailed):
        return CheckResult(False, ended, duration, redact(str(exc)), "CheckFailed")
    return CheckResult(False, ended, duration, _describe_error(exc), type(exc).__name__)


async def run_check(
    spec: HealthCheckSpec,
    *,
    clock: Callable[[], float] = time.monotonic,
    address: Address | None = None,
) -> CheckResult:
    """Run ``spec`` once within its timeout; never raises (except on cancellation).

    ``address`` is the learned address of the dependency, used by a built-in check whose
    config gives none.
    """
    started = clock()
    try:
        await asyncio.wait_for(_RUNNERS[spec.kind](spec, address), spec.timeout_seconds)
    except asyncio.TimeoutError:
        return _outcome(spec, started, clock(), asyncio.TimeoutError())
    except Exception as exc:
        return _outcome(spec, started, clock(), exc)
    return _outcome(spec, started, clock(), None)


def run_check_blocking(
    spec: HealthCheckSpec,
    *,
    clock: Callable[[], float] = time.monotonic,
    address: Address | None = None,
) -> CheckResult:
    """Run ``spec`` once on the calling thread (the prober's slot for its dependency).

    A sync callable is called right here, so the thread stays busy exactly as long as the
    check does (the prober does not start it again meanwhile, and times it out itself); an
    async check runs in a fresh event loop of this thread, within its timeout.
    """
    function = spec.function
    if (
        spec.kind == "callable"
        and function is not None
        and not inspect.iscoroutinefunction(function)
    ):
        started = clock()
        try:
            result = function()
            if inspect.isawaitable(result):
                result = _run_in_new_loop(_awaited(result), spec.timeout_seconds)
            _callable_verdict(function, result)
        except Exception as exc:
            return _outcome(spec, started, clock(), exc)
        return _outcome(spec, started, clock(), None)
    loop = asyncio.new_event_loop()
    loop.set_default_executor(_DaemonExecutor())
    try:
        return loop.run_until_complete(run_check(spec, clock=clock, address=address))
    finally:
        loop.close()


class _DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor for a check's event loop whose threads never block exit.

    asyncio resolves host names in the loop's default executor; a ThreadPoolExecutor's
    threads are joined at interpreter exit, so a resolver stuck on a dead DNS server would
    keep the process alive. Each call here gets a daemon thread of its own (a subclass,
    because asyncio accepts only a ThreadPoolExecutor; its own pool is never used).
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to whoever awaits the future
                future.set_exception(exc)

        threading.Thread(target=run, name="otel-resilience-check-io", daemon=True).start()
        return future


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _run_in_new_loop(coroutine: Awaitable[Any], timeout: float) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coroutine, timeout))
    finally:
        loop.close()
