"""Guards for grpc: sync and asyncio channels, unary and streaming calls, as interceptors.

A call's dependency is its channel's target (``server.address``/``server.port``) with
``rpc.system=grpc`` and ``rpc.service``: grpc spans carry no address, so a dependency
declared by address is found through the guard, and one declared by ``rpc.service`` by
the spans too.

Where the interceptors are added, so that they sit under OpenTelemetry's and neither its
``uninstrument()`` nor ``instrument()`` touches them:

- sync: ``grpc.insecure_channel``/``secure_channel`` are guarded as innermost layers
  (the instrumentation wraps them with ``wrapt``) and intercept the channel they make;
- asyncio: the instrumentation replaces ``grpc.aio.insecure_channel`` with a function
  of its own, so the guard appends its interceptors in ``grpc.aio.Channel.__init__``,
  after any the application or the instrumentation passed: innermost.

A rejected call raises ``GrpcCircuitOpenError``: a ``grpc.RpcError`` (an
``grpc.aio.AioRpcError``) whose ``code()`` is ``UNAVAILABLE``. Imported only when grpcio
is installed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
import grpc.aio._channel  # type: ignore[import-untyped]

from .._context import GUARDED, is_guarded
from .._errors import CircuitOpenError
from .._guard import (
    Admission,
    Client,
    Entry,
    _admit,
    _chaos_plan,
    _rejected,
    guarded_acall,
    guarded_call,
)
from ._clientcall import Current, guard_current_span, never_serve
from ._install import Installer

__all__ = ["GrpcCircuitOpenError", "install_grpc", "parse_target"]

# Status codes that mean the server is unavailable or failing, not that it answered.
FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
    }
)


class GrpcCircuitOpenError(CircuitOpenError, grpc.aio.AioRpcError):  # type: ignore[misc]
    """The breaker of the grpc dependency is open: raised before the call is started.

    Also a ``grpc.RpcError`` with ``code()`` ``UNAVAILABLE``, what grpc raises when the
    server cannot be reached, so existing handlers keep working.
    """

    def __init__(self, dependency: str, retry_after: float) -> None:
        message = str(CircuitOpenError(dependency, retry_after))
        grpc.aio.AioRpcError.__init__(
            self,
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=message,
        )
        self.dependency = dependency
        self.retry_after = retry_after
        self.args = (message,)

    __reduce__ = CircuitOpenError.__reduce__

    def __str__(self) -> str:
        return self.args[0]  # type: ignore[no-any-return]


def parse_target(target: str) -> tuple[str, int | None]:
    """``(address, port)`` of a grpc channel target (``host:port``, ``dns:///host:port``,
    ``ipv4:...``, ``[::1]:port``, ``unix:path``); port 443 when none is given."""
    rest = target
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if rest.startswith(prefix):
            rest = rest[len(prefix) :]
            break
    else:
        if rest.startswith(("unix:", "unix-abstract:")):
            return rest.split(":", 1)[1], None
    if rest.startswith("//"):  # dns://authority/host:port
        rest = rest[2:].split("/", 1)[-1]
    rest = rest.split(",", 1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host, port_text = rest, ""
    try:
        port = int(port_text) if port_text else 443
    except ValueError:
        port = 443
    return host, port


def _service(method: Any) -> str:
    if isinstance(method, bytes):
        method = method.decode("utf-8", "replace")
    return str(method).lstrip("/").rpartition("/")[0]


def _failure_code(exc: BaseException) -> Any:
    code = exc.code() if isinstance(exc, grpc.RpcError) and hasattr(exc, "code") else None
    return code if isinstance(code, grpc.StatusCode) else None


def _is_failure(exc: BaseException) -> bool:
    # A status the server chose (NOT_FOUND, INVALID_ARGUMENT...) is an answer.
    code = _failure_code(exc)
    return code is None or code in FAILURE_CODES


def _answer(outcome: Any) -> str | None:
    """A sync unary outcome that failed (the interceptor API returns failures)."""
    if not outcome.done():
        return None  # a future: its outcome comes later (counted as admitted, see docs)
    exception = outcome.exception()
    if exception is None:
        return None
    code = _failure_code(exception)
    if code is None or code in FAILURE_CODES:
        return code.name if code is not None else type(exception).__name__
    return None


class _Unavailable(grpc.aio.AioRpcError):  # type: ignore[misc]  # grpcio is untyped
    """A grpc failure with ``code()`` UNAVAILABLE (what chaos drills inject)."""

    def __init__(self, message: str) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), message
        )


GRPC = Client(
    "grpc",
    marks_span=True,
    open_error=GrpcCircuitOpenError,
    fault=_Unavailable,
    is_failure=_is_failure,
    answer=_answer,
    serve=never_serve,
)
"""Sync unary calls (the interceptor API returns failed outcomes instead of raising);
response streams record when the stream ends."""


def _aio_answer(outcome: tuple[Any, Any]) -> str | None:
    code = outcome[1]
    return code.name if code in FAILURE_CODES else None


GRPC_AIO = Client(
    "grpc.aio",
    marks_span=True,
    open_error=GrpcCircuitOpenError,
    fault=_Unavailable,
    is_failure=_is_failure,
    answer=_aio_answer,
    serve=never_serve,
)
"""asyncio unary calls: the guarded function returns ``(call, status)``."""


class _Stream:
    """An admitted response stream: what its end records, once.

    A stream's length is the application's, not the server's latency: it is recorded with
    no duration (never a slow call, never a latency sample of an adaptive limit)."""

    __slots__ = ("admission", "entry", "trial")

    def __init__(self, entry: Entry, trial: bool, admission: Admission | None) -> None:
        self.entry = entry
        self.trial = trial
        self.admission = admission

    def record(self, code: Any) -> None:
        """The stream ended with status ``code``: record it, give the permit back."""
        breaker = self.entry.breaker
        failed = code in FAILURE_CODES
        if failed:
            breaker.record_failure(0.0, code.name)
        elif code is grpc.StatusCode.CANCELLED:
            breaker.record_cancelled(0.0, self.trial)
        else:
            breaker.record_success(0.0)
        if self.admission is not None:
            self.admission.release(0.0, failed)


def _begin_stream(entry: Entry) -> tuple[_Stream, float, BaseException | None] | None:
    """Admit a response-streaming call on the guarded-call path (the breaker, then the
    admission step): None when it joins an outer guarded call, else the admitted stream
    and what chaos asks of it (seconds to sleep first, a fault to raise). Raises the
    rejection error (``GrpcCircuitOpenError``, or the limit's error mixed with it)."""
    if is_guarded(GUARDED.get(), entry.name):
        return None
    guard_current_span(entry.name)
    trial, admission, reason = _admit(entry)
    if reason is not None:
        _rejected(entry, GRPC, reason, None, (), {})  # never served: raises
    stream = _Stream(entry, trial, admission)
    plan = _chaos_plan(entry, GRPC)
    if plan is None:
        return stream, 0.0, None
    return stream, plan[0], plan[1]


def _injected(stream: _Stream, fault: BaseException | None) -> None:
    """Raise the fault chaos asked for, recorded as the stream's (UNAVAILABLE) failure."""
    if fault is not None:
        stream.record(grpc.StatusCode.UNAVAILABLE)
        raise fault


_current = Current()


def _entry_of(target: str, method: Any) -> Entry | None:
    """The entry of a call's dependency under the current install (channels made under an
    earlier ``configure()`` follow the last one)."""
    dependencies = _current.dependencies()
    if dependencies is None:
        return None
    service = _service(method)

    def attributes() -> dict[str, Any]:
        host, port = parse_target(target)
        found: dict[str, Any] = {"rpc.system": "grpc", "server.address": host}
        if port is not None:
            found["server.port"] = port
        if service:
            found["rpc.service"] = service
        return found

    return dependencies.entry((target, service), attributes)


_SYNC_BASES = (
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
)


class _SyncInterceptor(*_SYNC_BASES):  # type: ignore[misc]  # grpcio is untyped
    """The guard of one sync channel (its target names the server)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def _unary(self, continuation: Any, details: Any, request: Any) -> Any:
        entry = _entry_of(self.target, details.method)
        if entry is None:
            return continuation(details, request)
        return guarded_call(entry, GRPC, continuation, (details, request), {}, None)

    def _stream(self, continuation: Any, details: Any, request: Any) -> Any:
        entry = _entry_of(self.target, details.method)
        begun = None if entry is None else _begin_stream(entry)
        if begun is None:
            return continuation(details, request)
        stream, delay, fault = begun
        if delay > 0:
            try:
                time.sleep(delay)
            except BaseException:  # interrupted before the call: no outcome
                stream.record(grpc.StatusCode.CANCELLED)
                raise
        _injected(stream, fault)
        try:
            outcome = continuation(details, request)
        except BaseException:
            stream.record(grpc.StatusCode.UNKNOWN)
            raise
        if not outcome.add_callback(lambda: stream.record(outcome.code())):
            stream.record(outcome.code())  # already over
        return outcome

    intercept_unary_unary = _unary
    intercept_stream_unary = _unary
    intercept_unary_stream = _stream
    intercept_stream_stream = _stream


# Tasks reading the status of finished asyncio streams (held until they have run).
_pending: set[asyncio.Task[None]] = set()


async def _record_when_done(stream: _Stream, call: Any) -> None:
    try:
        code = await call.code()
    except BaseException:  # pragma: no cover - a finished call's code() answers; kept safe
        code = grpc.StatusCode.UNKNOWN
    stream.record(code)


async def _invoke(continuation: Any, details: Any, request: Any) -> tuple[Any, Any]:
    """The call and its status: a failed call is returned, as grpc returns it (the
    application's ``await`` raises its error), and its status tells the guard."""
    call = await continuation(details, request)
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return call, error.code()
    return call, grpc.StatusCode.OK


class _AioGuard:
    """The guard of one asyncio channel: unary calls on the guarded-call path, response
    streams admitted on it and recorded when they end."""

    def __init__(self, target: str) -> None:
        self.target = target

    async def unary(self, continuation: Any, details: Any, request: Any) -> Any:
        entry = _entry_of(self.target, details.method)
        if entry is None:
            return await continuation(details, request)
        call, _ = await guarded_acall(
            entry, GRPC_AIO, _invoke, (continuation, details, request), {}, None
        )
        return call

    async def stream(self, continuation: Any, details: Any, request: Any) -> Any:
        entry = _entry_of(self.target, details.method)
        begun = None if entry is None else _begin_stream(entry)
        if begun is None:
            return await continuation(details, request)
        stream, delay, fault = begun
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:  # cancelled before the call: no outcome
                stream.record(grpc.StatusCode.CANCELLED)
                raise
        _injected(stream, fault)
        try:
            call = await continuation(details, request)
        except BaseException:
            stream.record(grpc.StatusCode.UNKNOWN)
            raise

        def done(finished: Any) -> None:
            task = asyncio.get_running_loop().create_task(_record_when_done(stream, finished))
            _pending.add(task)
            task.add_done_callback(_pending.discard)

        call.add_done_callback(done)
        return call


class _AioUnaryUnary(_AioGuard, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.unary(continuation, details, request)


class _AioUnaryStream(_AioGuard, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.stream(continuation, details, request)


class _AioStreamUnary(_AioGuard, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.unary(continuation, details, request)


class _AioStreamStream(_AioGuard, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.stream(continuation, details, request)


_AIO_INTERCEPTORS = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)


def install_grpc(installer: Installer) -> None:
    """Intercept every grpc channel made after this (sync and asyncio).

    The interceptors ask the current install (the last ``configure()``) on each call, so
    channels made under an earlier one follow it.
    """
    _current.activate(installer)

    def channel(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        made = wrapped(*args, **kwargs)
        target = args[0] if args else kwargs.get("target", "")
        return grpc.intercept_channel(made, _SyncInterceptor(str(target)))

    def aio_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        target = str(args[0] if args else kwargs.get("target", ""))
        ours = [interceptor(target) for interceptor in _AIO_INTERCEPTORS]
        arguments = list(args)
        if len(arguments) >= 5:
            arguments[4] = [*(arguments[4] or ()), *ours]
        else:  # pragma: no cover - grpc's own channel factories pass all five by position
            kwargs = {**kwargs, "interceptors": [*(kwargs.get("interceptors") or ()), *ours]}
        return wrapped(*arguments, **kwargs)

    installer.wrap(grpc, "insecure_channel", channel)
    installer.wrap(grpc, "secure_channel", channel)
    installer.wrap(grpc.aio._channel.Channel, "__init__", aio_init)
