"""The servers the demo starts, and the faults it injects into them.

An own redis-server (killed, paused with SIGSTOP, restarted), an own PostgreSQL cluster
(initdb / pg_ctl) or the machine's, behind a TCP fault proxy that can refuse or
black-hole, and an OTLP collector stand-in that can be black-holed.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "CollectorStandIn",
    "FaultProxy",
    "PostgresCluster",
    "RedisProcess",
    "free_port",
    "port_open",
    "wait_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
        return True
    return False


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


class RedisProcess:
    """An own redis-server on a free port: ``start``, ``kill``, ``pause``, ``resume``."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def kill(self) -> None:
        """Connections are refused from now on."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections; nothing answers (hung)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)


class PostgresCluster:
    """An own PostgreSQL cluster made with initdb in a temporary directory.

    Run as the ``postgres`` user when this process is root (initdb refuses root).
    """

    def __init__(self, bin_dir: str, port: int | None = None) -> None:
        self.bin_dir = bin_dir
        self.port = port or free_port()
        self.directory = tempfile.mkdtemp(prefix="otel-resilience-demo-pg-")
        self._as_postgres = os.geteuid() == 0

    @staticmethod
    def find_bin_dir() -> str | None:
        """The newest /usr/lib/postgresql/*/bin with initdb and pg_ctl, or one on PATH."""
        for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
            if os.path.exists(os.path.join(candidate, "initdb")):
                return candidate
        initdb = shutil.which("initdb")
        return os.path.dirname(initdb) if initdb else None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        data = os.path.join(self.directory, "data")
        self._run(os.path.join(self.bin_dir, "initdb"), "-D", data, "-A", "trust", "-U", "postgres")
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -F "
            "-c shared_buffers=16MB -c max_connections=50"
        )
        self._run(
            os.path.join(self.bin_dir, "pg_ctl"),
            "-D",
            data,
            "-o",
            options,
            "-l",
            os.path.join(self.directory, "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(
                os.path.join(self.bin_dir, "pg_ctl"),
                "-D",
                os.path.join(self.directory, "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            )
        shutil.rmtree(self.directory, ignore_errors=True)


class _LoopThread:
    """An asyncio event loop in a daemon thread, for servers that live beside the demo."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class FaultProxy:
    """A TCP proxy on a free port in front of ``target``, in its own thread and event loop.

    Modes: ``forward`` (pass bytes both ways), ``blackhole`` (accept, never answer),
    and ``stop()`` / ``start()`` (stop listening: connections are refused).
    ``cut()`` closes every open connection. The demo and the test suite both use it.
    """

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.mode = "forward"
        self._runner = _LoopThread("fault-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.mode == "blackhole":
                await reader.read()
                return
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
            self._writers.add(upstream)

            async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    while data := await source.read(65536):
                        if self.mode == "blackhole":
                            continue
                        sink.write(data)
                        await sink.drain()
                with contextlib.suppress(OSError):
                    sink.close()

            await asyncio.gather(pump(reader, upstream), pump(upstream_reader, writer))
        except OSError:
            pass
        finally:
            for each in (writer, upstream):
                if each is not None:
                    self._writers.discard(each)
                    with contextlib.suppress(OSError):
                        each.close()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._cut()

    async def _cut(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(OSError):
                writer.close()
        self._writers.clear()

    def start(self) -> FaultProxy:
        """Listen (again) and forward."""
        self.mode = "forward"
        self._runner.run(self._listen())
        return self

    def stop(self) -> None:
        """Stop listening and cut every connection: new ones are refused."""
        self._runner.run(self._close())

    def blackhole(self) -> None:
        """Keep accepting, never answer, and hang the open connections too."""
        self.mode = "blackhole"

    def forward(self) -> None:
        """Pass bytes both ways again."""
        self.mode = "forward"

    def cut(self) -> None:
        """Close every open connection (the listener stays)."""
        self._runner.run(self._cut())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._runner.run(self._close())
        self._runner.close()


class CollectorStandIn:
    """An OTLP/gRPC receiver that counts what it gets, or a black hole on the same port.

    ``up()`` serves OTLP traces and metrics with grpcio (installed with the OTLP exporter);
    ``blackhole()`` replaces it with a TCP listener that accepts and never answers, the
    failure that costs a default OTLP exporter the most.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.spans = 0
        self.metric_exports = 0
        self.mode = "down"
        self._grpc: Any = None
        self._runner = _LoopThread("collector-stand-in")
        self._hole: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> bool:
        """Serve OTLP; False when grpcio or the OTLP protobufs are missing."""
        self._runner.run(self._close_hole())
        try:
            self._grpc = self._grpc_server()
        except ImportError:
            return False
        self._grpc.start()
        self.mode = "up"
        return True

    def _grpc_server(self) -> Any:
        from concurrent import futures

        import grpc  # type: ignore[import-untyped]
        from opentelemetry.proto.collector.metrics.v1 import (
            metrics_service_pb2,
            metrics_service_pb2_grpc,
        )
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        stand_in = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        stand_in.spans += len(scope_spans.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                stand_in.metric_exports += 1
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
            Metrics(), server
        )
        server.add_insecure_port(self.endpoint)
        return server

    def _stop_grpc(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(2)
            self._grpc = None

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._held.add(writer)
        with contextlib.suppress(OSError):
            await reader.read()
        self._held.discard(writer)

    async def _open_hole(self) -> None:
        self._hole = await asyncio.start_server(self._hold, "127.0.0.1", self.port)

    async def _close_hole(self) -> None:
        if self._hole is not None:
            self._hole.close()
            self._hole = None
        for writer in list(self._held):
            with contextlib.suppress(OSError):
                writer.close()
        self._held.clear()

    def blackhole(self) -> None:
        """Accept connections and never answer."""
        self._stop_grpc()
        deadline = time.monotonic() + 3
        while True:
            try:
                self._runner.run(self._open_hole())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.mode = "blackhole"

    def close(self) -> None:
        self._stop_grpc()
        with contextlib.suppress(Exception):
            self._runner.run(self._close_hole())
        self._runner.close()


def call_quietly(fn: Callable[[], Any]) -> None:
    """Run a cleanup step; a failure of one must not stop the others."""
    with contextlib.suppress(Exception):
        fn()
