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
from collections.abc import Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
import grpc.aio._channel  # type: ignore[import-untyped]

from .._context import GUARDED
from .._errors import CircuitOpenError
from ._clientcall import Dependencies
from ._common import Call, mark_current_span
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


def install_grpc(installer: Installer) -> None:
    """Intercept every grpc channel made after this (sync and asyncio)."""
    dependencies = Dependencies(installer.registry)

    def classify(target: str, method: Any) -> str | None:
        service = _service(method)

        def attributes() -> dict[str, Any]:
            host, port = parse_target(target)
            found: dict[str, Any] = {"rpc.system": "grpc", "server.address": host}
            if port is not None:
                found["server.port"] = port
            if service:
                found["rpc.service"] = service
            return found

        return dependencies.name((target, service), attributes)

    def start(target: str, method: Any) -> Call | None:
        """A admitted call, None to pass the call through; raises when rejected."""
        if not installer.active():
            return None
        name = classify(target, method)
        if name is None:
            return None
        if GUARDED.get() == name:
            mark_current_span()
            return None
        call = Call(installer.entry(name), lambda exc: True)
        if not call.admit():
            raise GrpcCircuitOpenError(name, call.entry.breaker.retry_after())
        return call

    def record(call: Call, code: Any) -> None:
        breaker = call.entry.breaker
        if code in FAILURE_CODES:
            breaker.record_failure(0.0, code.name)
        elif code is grpc.StatusCode.CANCELLED:
            breaker.release()  # the caller gave up: no outcome
        else:
            breaker.record_success(0.0)

    def settle(call: Call, outcome: Any) -> Any:
        """Record the outcome of a sync call now if it is over, else when it ends."""
        call._leave()  # the context ends here; the outcome may come on grpc's thread
        if outcome.done():
            exception = outcome.exception()
            if exception is None:
                record(call, grpc.StatusCode.OK)
            elif isinstance(exception, grpc.RpcError) and hasattr(exception, "code"):
                record(call, exception.code())
            else:
                record(call, grpc.StatusCode.INTERNAL)
            return outcome
        if not outcome.add_callback(lambda: record(call, outcome.code())):
            record(call, outcome.code())
        return outcome

    def sync_interceptor(target: str) -> Any:
        bases = (
            grpc.UnaryUnaryClientInterceptor,
            grpc.UnaryStreamClientInterceptor,
            grpc.StreamUnaryClientInterceptor,
            grpc.StreamStreamClientInterceptor,
        )

        class Interceptor(*bases):  # type: ignore[misc]  # grpcio is untyped
            def _intercept(self, continuation: Any, details: Any, request: Any) -> Any:
                call = start(target, details.method)
                if call is None:
                    return continuation(details, request)
                try:
                    outcome = continuation(details, request)
                except BaseException as exc:
                    call.raised(exc)
                    raise
                return settle(call, outcome)

            intercept_unary_unary = _intercept
            intercept_unary_stream = _intercept
            intercept_stream_unary = _intercept
            intercept_stream_stream = _intercept

        return Interceptor()

    def channel(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        made = wrapped(*args, **kwargs)
        target = args[0] if args else kwargs.get("target", "")
        return grpc.intercept_channel(made, sync_interceptor(str(target)))

    pending: set[asyncio.Task[None]] = set()

    async def read_code(call: Call, finished: Any) -> None:
        try:
            code = await finished.code()
        except BaseException:
            code = None
        record(call, code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.INTERNAL)

    def asettle(call: Call, outcome: Any) -> Any:
        """Record the outcome of an asyncio call when it ends (its code is awaited)."""
        call._leave()

        def done(finished: Any) -> None:
            task = asyncio.get_running_loop().create_task(read_code(call, finished))
            pending.add(task)  # a task nobody holds may be collected before it runs
            task.add_done_callback(pending.discard)

        if hasattr(outcome, "add_done_callback"):
            outcome.add_done_callback(done)
        else:  # a response, not a call: it is over
            record(call, grpc.StatusCode.OK)
        return outcome

    def aio_interceptors(target: str) -> list[Any]:
        async def intercept(continuation: Any, details: Any, request: Any) -> Any:
            call = start(target, details.method)
            if call is None:
                return await continuation(details, request)
            try:
                outcome = await continuation(details, request)
            except BaseException as exc:
                call.raised(exc)
                raise
            return asettle(call, outcome)

        class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
            intercept_unary_unary = staticmethod(intercept)

        class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
            intercept_unary_stream = staticmethod(intercept)

        class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
            intercept_stream_unary = staticmethod(intercept)

        class StreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
            intercept_stream_stream = staticmethod(intercept)

        return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]

    def aio_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        target = args[0] if args else kwargs.get("target", "")
        arguments = list(args)
        if len(arguments) >= 5:
            arguments[4] = [*(arguments[4] or ()), *aio_interceptors(str(target))]
        else:
            kwargs = {
                **kwargs,
                "interceptors": [
                    *(kwargs.get("interceptors") or ()),
                    *aio_interceptors(str(target)),
                ],
            }
        return wrapped(*arguments, **kwargs)

    guard_channel: Callable[..., Any] = channel
    installer.wrap(grpc, "insecure_channel", guard_channel)
    installer.wrap(grpc, "secure_channel", guard_channel)
    installer.wrap(grpc.aio._channel.Channel, "__init__", aio_init)
