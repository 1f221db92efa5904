"""A real OTLP gRPC receiver for the tests, built from opentelemetry-proto and grpcio.

Modes: ``accept`` (store what arrives), ``slow`` (answer after ``delay`` seconds),
``unavailable`` (answer UNAVAILABLE); ``stop()`` closes the port (connections refused);
``blackhole()`` puts a plain socket on the port that accepts and never answers; ``start()``
brings the receiver back on the same port.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.support.health_servers import free_port

__all__ = ["OTLPReceiver"]


class OTLPReceiver:
    """An OTLP/gRPC server on 127.0.0.1 that a test can break and mend."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.mode = "accept"
        self.delay = 0.0
        self.spans: list[str] = []
        self.metric_names: list[str] = []
        self.metric_points: list[tuple[str, dict[str, str], float]] = []
        self.log_bodies: list[str] = []
        self._server: grpc.Server | None = None
        self._blackhole: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _answer(self, context: Any) -> bool:
        if self.mode == "slow":
            time.sleep(self.delay)
        if self.mode == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver says unavailable")
        return True

    def start(self) -> OTLPReceiver:
        self.stop()  # a running server first: never two on the port
        self.close_blackhole()
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver._answer(context)
                with receiver._lock:
                    for resource_spans in request.resource_spans:
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend(span.name for span in scope_spans.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver._answer(context)
                with receiver._lock:
                    for resource_metrics in request.resource_metrics:
                        for scope_metrics in resource_metrics.scope_metrics:
                            for metric in scope_metrics.metrics:
                                receiver.metric_names.append(metric.name)
                                points = metric.sum.data_points or metric.gauge.data_points
                                for point in points:
                                    labels = {a.key: a.value.string_value for a in point.attributes}
                                    value = point.as_int or point.as_double
                                    receiver.metric_points.append((metric.name, labels, value))
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                receiver._answer(context)
                with receiver._lock:
                    for resource_logs in request.resource_logs:
                        for scope_logs in resource_logs.scope_logs:
                            receiver.log_bodies.extend(
                                record.body.string_value for record in scope_logs.log_records
                            )
                return logs_service_pb2.ExportLogsServiceResponse()

        # Without SO_REUSEPORT: a port taken meanwhile fails here, where gRPC would share it.
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        server.add_insecure_port(self.endpoint)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Close the port: connections are refused."""
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def blackhole(self) -> None:
        """Stop serving and listen on the port without ever reading: connections hang."""
        self.stop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._blackhole = sock

    def close_blackhole(self) -> None:
        if self._blackhole is not None:
            self._blackhole.close()
            self._blackhole = None

    def close(self) -> None:
        self.stop()
        self.close_blackhole()
