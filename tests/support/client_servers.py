"""Real servers for the client tests: HTTP and grpc servers that fail on demand, and a
PostgreSQL fault proxy that counts the connections it accepts.

Each can stop (connections refused, same port) and start again, and says how many
requests or connections reached it, so a test can show a rejected call never did.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.health_servers import FaultProxy, free_port

__all__ = ["SERVICE", "CountingProxy", "GrpcServer", "HttpServer"]

SERVICE = "test.Echo"


class CountingProxy(FaultProxy):
    """The fault proxy in front of a shared server (PostgreSQL by default, or Redis),
    counting the connections it accepts."""

    def __init__(self, target_port: int = 5432, port: int | None = None) -> None:
        super().__init__("127.0.0.1", target_port, port)
        self.connections = 0

    async def _handle(self, reader: Any, writer: Any) -> None:
        self.connections += 1
        await super()._handle(reader, writer)

    def fail(self) -> None:
        """Refuse new connections and cut the open ones."""
        self.stop()

    def close(self) -> None:
        """Stop, give the cut connections' handlers a moment to finish, end the loop."""
        with contextlib.suppress(Exception):
            self.stop()
        time.sleep(0.05)
        super().close()

    def recover(self) -> None:
        self.start()


class HttpServer:
    """A threading HTTP server on a fixed free port: ``status`` is what every request
    gets; ``fail()`` stops it (refused), ``recover()`` serves again on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.status = 200
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HttpServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: fail() refuses at once

            def do_GET(self) -> None:
                owner.requests += 1
                body = b"ok"
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def fail(self) -> None:
        self.stop()

    def recover(self) -> None:
        self.status = 200
        if self._server is None:
            self.start()


class GrpcServer:
    """A grpc server with one service (no protoc: generic handlers, bytes in and out).

    ``test.Echo/Unary`` answers its request; ``test.Echo/Stream`` answers three times.
    With ``unavailable`` set both abort with UNAVAILABLE; ``fail()`` stops the server
    (refused), ``recover()`` starts it again on the same port.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.unavailable = False
        self.requests = 0
        self._server: Any = None

    def start(self) -> GrpcServer:
        import grpc

        def unary(request: bytes, context: Any) -> bytes:
            self.requests += 1
            if self.unavailable:
                context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
            return request

        def stream(request: bytes, context: Any) -> Iterator[bytes]:
            self.requests += 1
            if self.unavailable:
                context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
            for _ in range(3):
                yield request

        def collect(requests: Iterator[bytes], context: Any) -> bytes:
            self.requests += 1
            if self.unavailable:
                context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
            return b"".join(requests)

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(unary),
                "Stream": grpc.unary_stream_rpc_method_handler(stream),
                "Collect": grpc.stream_unary_rpc_method_handler(collect),
            },
        )
        # Without SO_REUSEPORT: a port taken meanwhile fails here, where gRPC would share it.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fail(self) -> None:
        self.stop()

    def recover(self) -> None:
        self.unavailable = False
        if self._server is None:
            self.start()


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop() if not isinstance(server, CountingProxy) else server.close()
