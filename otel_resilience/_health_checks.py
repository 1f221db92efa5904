"""Active health checks: built-in ``redis`` (PING), ``sql`` (SELECT 1), ``http`` (GET), or a
callable by import path, each with its own timeout and interval.

A check is an async function that returns when the dependency is healthy and raises (or a
callable returns False) when it is not. Clients are imported lazily inside the check, so the
core imports nothing optional. Error text kept from a failed check is passed through
``redact`` first: it never holds a password or a URL's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ._errors import ConfigError, did_you_mean
from ._fallbacks import import_object
from ._redact import describe_error, redact
from ._semconv import canonical_key

__all__ = [
    "BUILTIN_CHECKS",
    "DEFAULT_CHECK_TIMEOUT_SECONDS",
    "CheckResult",
    "HealthCheckSpec",
    "parse_health_check",
    "redact",
    "run_check",
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
    (None: derived at run time from ``match`` and the environment, see docs/health.md);
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
    short, redacted description of why it failed (None when it passed).
    """

    passing: bool
    checked_at: float
    duration_seconds: float
    error: str | None = None
    error_type: str | None = None


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
    if kind == "http" and target is None and target_env is None and "server.address" not in match:
        raise error(
            path,
            "the http check needs a url (or url_env), or a match with server.address to "
            "derive one from",
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


def _resolve_target(spec: HealthCheckSpec) -> str | None:
    if spec.target is not None:
        return spec.target
    if spec.target_env is not None:
        value = os.environ.get(spec.target_env)
        if not value:
            raise CheckFailed(f"environment variable {spec.target_env} is not set")
        return value
    return None


def _match_host_port(spec: HealthCheckSpec, default_port: int | None) -> tuple[str, int | None]:
    match = spec.match or {}
    host = match.get("server.address", "localhost")
    port_text = match.get("server.port")
    port = int(port_text) if port_text and port_text.isdigit() else default_port
    return host, port


def _redis_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _redis_ping(spec: HealthCheckSpec) -> None:
    """PING over a raw connection (AUTH first when the URL carries credentials)."""
    url = _resolve_target(spec)
    username: str | None = None
    password: str | None = None
    use_tls = False
    if url is None:
        host, port = _match_host_port(spec, 6379)
    else:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 6379
        use_tls = parts.scheme == "rediss"
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
    reader, writer = await asyncio.open_connection(host, port or 6379, ssl=use_tls or None)
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


async def _sql_select_one(spec: HealthCheckSpec) -> None:
    """Connect with asyncpg, ``SELECT 1``, close."""
    import asyncpg  # type: ignore[import-untyped, unused-ignore]

    dsn = _resolve_target(spec)
    kwargs: dict[str, Any] = {"timeout": spec.timeout_seconds}
    if dsn is None:
        match = spec.match or {}
        # Unset fields come from libpq's environment (PGHOST, PGUSER, PGPASSWORD, ...).
        if "server.address" in match:
            kwargs["host"] = match["server.address"]
        if match.get("server.port", "").isdigit():
            kwargs["port"] = int(match["server.port"])
    else:
        kwargs["dsn"] = dsn
    connection = await asyncpg.connect(**kwargs)
    try:
        value = await connection.fetchval("SELECT 1")
    finally:
        await connection.close(timeout=spec.timeout_seconds)
    if value != 1:
        raise CheckFailed(f"SELECT 1 returned {value!r}")


async def _http_get(spec: HealthCheckSpec) -> None:
    """GET the URL without following redirects; 2xx and 3xx are healthy."""
    import httpx

    url = _resolve_target(spec)
    if url is None:
        host, port = _match_host_port(spec, None)
        url = f"http://{host}:{port}/" if port else f"http://{host}/"
    async with httpx.AsyncClient(timeout=spec.timeout_seconds, follow_redirects=False) as client:
        response = await client.get(url)
    if response.status_code >= 400:
        raise CheckFailed(f"GET answered HTTP {response.status_code}")


async def _call_function(spec: HealthCheckSpec) -> None:
    """Run a user's check: sync ones in a worker thread, async ones awaited."""
    function = spec.function
    assert function is not None
    if inspect.iscoroutinefunction(function):
        result = await function()
    else:
        result = await asyncio.to_thread(function)
        if inspect.isawaitable(result):
            result = await result
    if result is False:
        name = getattr(function, "__qualname__", repr(function))
        raise CheckFailed(f"{name} returned False")


_RUNNERS: dict[str, Callable[[HealthCheckSpec], Awaitable[None]]] = {
    "redis": _redis_ping,
    "sql": _sql_select_one,
    "http": _http_get,
    "callable": _call_function,
}


async def run_check(
    spec: HealthCheckSpec, *, clock: Callable[[], float] = time.monotonic
) -> CheckResult:
    """Run ``spec`` once within its timeout; never raises (except on cancellation)."""
    started = clock()
    try:
        await asyncio.wait_for(_RUNNERS[spec.kind](spec), spec.timeout_seconds)
    except asyncio.TimeoutError:
        ended = clock()
        return CheckResult(
            False,
            ended,
            ended - started,
            f"timed out after {spec.timeout_seconds:g}s",
            "TimeoutError",
        )
    except CheckFailed as exc:
        ended = clock()
        return CheckResult(False, ended, ended - started, redact(str(exc)), "CheckFailed")
    except Exception as exc:
        ended = clock()
        return CheckResult(False, ended, ended - started, _describe_error(exc), type(exc).__name__)
    ended = clock()
    return CheckResult(True, ended, ended - started)
