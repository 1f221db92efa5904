"""Exporters that survive their own backend: hard deadlines, a breaker, quiet logs.

With the collector down, the stock OTLP exporters retry with backoff for up to their
timeout on every batch, log a warning per retry, and make ``shutdown()`` wait. Wrapped in
a ``ResilientSpanExporter`` (or the metric and log ones), every call returns within
``export_timeout_seconds``: the inner call runs on one worker thread per wrapper and the
caller stops waiting at the deadline. A failed or late export opens the ``telemetry``
breaker; while it is open batches are dropped at once and counted in
``resilience.telemetry.dropped``; after ``open_seconds`` one probe export tries again.
One log line when export stops working, one when it is back.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry import metrics
from opentelemetry.context import attach, detach, set_value
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._breaker import CircuitBreaker, State
from ._config import TELEMETRY_DEPENDENCY, TELEMETRY_POLICY
from ._fork import after_fork_in_child, around_fork, renew_breaker_locks
from ._metrics import METER_NAME, SPECS, TELEMETRY_DROPPED
from ._policy import BreakerPolicy
from ._registry import Registry
from ._sdk import (
    SUPPRESS_INSTRUMENTATION_KEY,
    batch_exporter,
    exporter_timeout,
    metric_exporter_preferences,
    metric_readers,
    reader_exporter,
    renew_exporter_connections,
    set_batch_exporter,
    set_exporter_timeout,
    set_reader_exporter,
    span_processors,
)

__all__ = [
    "ResilientLogExporter",
    "ResilientMetricExporter",
    "ResilientSpanExporter",
    "wrap_exporter",
    "wrap_provider_exporters",
]

_log = logging.getLogger(__name__)

R = TypeVar("R")

_WORKER_PREFIX = "otel-resilience-export"
_TIMED_OUT = object()
_BUSY = object()
FORK_WAIT_SECONDS = 0.1
"""How long a fork waits for an export in flight on a worker to end (``_Worker``)."""


class InnerExporterAborted(Exception):
    """The inner exporter raised a BaseException that is not an Exception (SystemExit,
    KeyboardInterrupt): contained as an export failure named after it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(type(error).__name__)
        self.error_type = type(error).__name__


class _Job:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any] | None) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _Worker:
    """One daemon thread running one inner call at a time, with instrumentation suppressed."""

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._job: _Job | None = None
        self._busy = False
        self._stopped = False
        self._name = name
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        around_fork(self._before_fork, self._after_fork_in_parent)
        after_fork_in_child(self._after_fork_in_child)

    def _before_fork(self) -> None:
        """Let an export in flight end before the process forks (for at most
        ``FORK_WAIT_SECONDS``), and start none until the fork is done: the lock is held
        across it (let go in the parent, new in the child).

        grpc makes a forked child whole (its own poller, no inherited calls) only when no
        other thread is inside grpc at the fork; otherwise it logs "Other threads are
        currently calling into gRPC, skipping fork() handlers", and the child's poller
        shares the parent's: either process could take the other's socket events, and a
        child's first export or the parent's next one waited to its deadline (1 fork in
        about 50 while the parent exported in a loop, on a loaded machine).
        """
        self._lock.acquire()
        if not self._busy:
            return
        try:
            deadline = time.monotonic() + FORK_WAIT_SECONDS
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return  # a stuck export: the fork goes on without it
                self._idle.wait(left)
        except BaseException:
            # (KeyboardInterrupt while waiting): the fork goes on, and _after_fork_in_parent
            # is not called after a hook that raised, so the lock is let go here.
            self._lock.release()
            raise

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        """A forked child has no worker thread: start a fresh one (a pending job is lost)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._job = None
        self._busy = False
        if not self._stopped:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def run(self, fn: Callable[[], Any], timeout: float) -> Any:
        """``fn()``'s result, ``_BUSY`` if a previous call is still running, or
        ``_TIMED_OUT`` once ``timeout`` seconds have passed (the call goes on)."""
        job = _Job(fn)
        with self._lock:
            if self._busy or self._stopped:
                return _BUSY
            self._busy = True
            self._job = job
            self._wake.notify()
        if not job.done.wait(timeout):
            return _TIMED_OUT
        error, result = job.error, job.result
        del job
        if error is None:
            return result
        try:
            if isinstance(error, Exception):
                raise error
            # SystemExit, KeyboardInterrupt... raised by the inner exporter on our worker
            # thread are its failure, not a request to stop the application's thread.
            raise InnerExporterAborted(error)
        finally:
            # No local here refers to the error once it is raised: its traceback holds
            # this frame, and a cycle through it would keep the batch (in the exporter's
            # frame) alive until a garbage collection.
            del error

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.notify()

    def last_warning(self) -> str | None:
        """What the inner exporter last logged as a warning during the current or latest
        export on this worker, if anything."""
        ident = self._thread.ident
        return _worker_warnings.get(ident) if ident is not None else None

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._job is None and not self._stopped:
                    self._wake.wait()
                if self._job is None:
                    _worker_warnings.pop(threading.get_ident(), None)
                    return
                job, self._job = self._job, None
            _worker_warnings.pop(threading.get_ident(), None)  # this export's warnings only
            token = attach(set_value(SUPPRESS_INSTRUMENTATION_KEY, True))
            fn, job.fn = job.fn, None
            try:
                job.result = fn()  # type: ignore[misc]
            except BaseException as exc:  # handed to the caller, if it still waits
                job.error = exc
            finally:
                # Nothing here holds the batch once it is exported: kept until the next
                # export, its spans outlived a few garbage collections and were moved to
                # the older generations, whose collections the application's threads pay
                # for (about 1 µs per traced redis GET, measured).
                fn = None
                detach(token)
                with self._lock:
                    self._busy = False
                    self._idle.notify_all()
                job.done.set()
                del job  # (an error's traceback would hold the batch too)


class _QuietInner(logging.Filter):
    """Drops what the inner exporter logs from the wrapper's worker threads.

    The wrapper reports export health itself, once per state change; the inner exporter's
    last warning during the export running on a worker is kept (``_worker_warnings``, by
    the worker thread's ident), so the line naming the failure names that exporter's own
    error, not another's: every wrapper has its own worker.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName and record.threadName.startswith(_WORKER_PREFIX):
            if record.levelno >= logging.WARNING:
                try:
                    message = record.getMessage()
                except Exception:
                    message = str(record.msg)
                _worker_warnings[record.thread or 0] = message
            return False
        return True


# The inner exporter's last warning of the export running on a worker thread, by the
# thread's ident; a worker clears its own entry before each export and when it stops.
_worker_warnings: dict[int, str] = {}

# The detail of the failure this thread is recording on a telemetry breaker, for the line
# that the breaker's transition to OPEN logs (listeners run in the recording thread).
_failing = threading.local()


_quiet = _QuietInner()
_quieted: set[str] = set()
_logged_breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
_module_lock = threading.Lock()


def _quiet_loggers_of(exporter: Any) -> None:
    names = {
        cls.__module__
        for cls in type(exporter).__mro__
        if cls.__module__.startswith("opentelemetry.exporter")
    }
    with _module_lock:
        for name in names - _quieted:
            logging.getLogger(name).addFilter(_quiet)
            _quieted.add(name)


def _log_transitions(breaker: CircuitBreaker) -> None:
    """One line when telemetry export stops working and one when it is back, per breaker."""
    with _module_lock:
        if breaker in _logged_breakers:
            return
        _logged_breakers.add(breaker)

    def on_transition(_: CircuitBreaker, old: State, new: State) -> None:
        if new is State.OPEN and old is State.CLOSED:
            message = getattr(_failing, "detail", None)
            detail = f" ({message})" if message else ""
            _log.warning(
                "telemetry export is failing%s; dropping telemetry and "
                "retrying every %.3gs until it works again",
                detail,
                breaker.policy.open_seconds,
            )
        elif new is State.CLOSED and old is State.HALF_OPEN:
            _log.info("telemetry export works again")

    breaker.add_listener(on_transition)


class _Resilient(Generic[R]):
    """The shared machinery of the three wrappers."""

    signal = "traces"

    def __init__(
        self,
        exporter: Any,
        *,
        export_timeout_seconds: float = 1.0,
        policy: BreakerPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        registry: Registry | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._setup(exporter, export_timeout_seconds, policy, breaker, registry, meter_provider)

    def _setup(  # noqa: PLR0917 - private, called once from each wrapper's __init__
        self,
        exporter: Any,
        export_timeout_seconds: float,
        policy: BreakerPolicy | None,
        breaker: CircuitBreaker | None,
        registry: Registry | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        if not export_timeout_seconds > 0:
            raise ValueError(f"export_timeout_seconds must be > 0, got {export_timeout_seconds!r}")
        self.exporter = exporter
        self.export_timeout_seconds = float(export_timeout_seconds)
        if breaker is None and registry is not None and TELEMETRY_DEPENDENCY in registry:
            breaker = registry.breaker(TELEMETRY_DEPENDENCY)
        if breaker is None:
            breaker = CircuitBreaker(TELEMETRY_DEPENDENCY, policy or TELEMETRY_POLICY)
        self.breaker = breaker
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        spec = SPECS[TELEMETRY_DROPPED]
        self._dropped = provider.get_meter(METER_NAME).create_counter(
            TELEMETRY_DROPPED, unit=spec.unit, description=spec.description
        )
        self._dropped_attributes = {"signal": self.signal}
        # The series exists from the start, so increase() sees the first drops.
        self._dropped.add(0, self._dropped_attributes)
        self._worker = _Worker(f"{_WORKER_PREFIX}-{self.signal}")
        self._shutdown = False
        self._inherited_connections = False  # a forked child's: renewed before its first export
        # Let a stuck inner call free the worker no later than the inner exporter allows,
        # and sooner where the exporter exposes its timeout (the OTLP exporters do).
        inner_timeout = exporter_timeout(exporter)
        if inner_timeout is not None and inner_timeout > export_timeout_seconds:
            set_exporter_timeout(exporter, export_timeout_seconds)
        _quiet_loggers_of(exporter)
        _log_transitions(breaker)
        after_fork_in_child(self._after_fork_in_child)

    def _after_fork_in_child(self) -> None:
        # The caller's thread in the parent may have held the breaker's lock at the fork.
        renew_breaker_locks([self.breaker])
        # The inner exporter's connections are the parent's. They are replaced on the
        # worker, at the first export, under the deadline: not here, where a lock a
        # parent's thread held at the fork (grpc's, a connection pool's) would hang the
        # child's start.
        self._inherited_connections = True

    def _renewing(self, call: Callable[[], Any]) -> Callable[[], Any]:
        """``call``, preceded by new connections for the inner exporter while the ones it
        has are still the parent's; runs on the worker, so they are renewed once."""

        def renewed() -> Any:
            if self._inherited_connections:
                self._inherited_connections = False
                renew_exporter_connections(self.exporter)
            return call()

        return renewed

    def _drop(self, count: int) -> None:
        if count:
            self._dropped.add(count, self._dropped_attributes)

    def _export(self, call: Callable[[], Any], count: int, ok: Callable[[Any], bool]) -> bool:
        """Run one export under the breaker and the deadline; True when it went through."""
        if self._shutdown:
            self._drop(count)
            return False
        breaker = self.breaker
        if not breaker.allow():
            self._drop(count)
            return False
        if self._inherited_connections:
            call = self._renewing(call)
        started = time.monotonic()
        try:
            result = self._worker.run(call, self.export_timeout_seconds)
        except Exception as exc:
            error_type = getattr(exc, "error_type", None) or type(exc).__name__
            self._failed(started, count, error_type, f"{type(exc).__name__}: {exc}")
            return False
        if result is _BUSY:
            # The previous export is still stuck: this batch cannot wait behind it.
            self._failed(started, count, "ExportBusy", "the previous export is still running")
            return False
        # A failure that came back only at the deadline is the inner exporter giving up at
        # its own timeout, which is lowered to the deadline (__init__): no answer came, as
        # when the deadline cut the call off first. Which of the two ends it first is a
        # matter of thread scheduling, so both are told alike.
        if result is _TIMED_OUT or (
            not ok(result) and time.monotonic() - started >= self.export_timeout_seconds
        ):
            self._failed(
                started,
                count,
                "ExportTimeout",
                f"no answer within {self.export_timeout_seconds:g}s",
            )
            return False
        if not ok(result):
            self._failed(started, count, "ExportFailed", "the exporter reported a failure")
            return False
        breaker.record_success(time.monotonic() - started)
        return True

    def _failed(self, started: float, count: int, error_type: str, otherwise: str) -> None:
        """Record a failed export; the line its breaker may log names this exporter's own
        last warning, else ``otherwise``."""
        _failing.detail = self._worker.last_warning() or otherwise
        try:
            self.breaker.record_failure(time.monotonic() - started, error_type)
        finally:
            _failing.detail = None
        self._drop(count)

    def _bounded(self, call: Callable[[], Any], timeout_millis: float | None) -> Any:
        """Run a flush or shutdown of the inner exporter, waiting at most the deadline."""
        deadline = self.export_timeout_seconds
        if timeout_millis is not None:
            deadline = min(deadline, max(0.0, timeout_millis / 1000))
        result = self._worker.run(call, deadline)
        if result is _BUSY:
            # A stuck export holds the worker: run this on its own short-lived thread.
            done = _Job(call)

            def run() -> None:
                try:
                    done.result = call()
                except BaseException as exc:
                    done.error = exc
                done.done.set()

            threading.Thread(target=run, name=f"{_WORKER_PREFIX}-close", daemon=True).start()
            if not done.done.wait(deadline):
                return _TIMED_OUT
            return done.result
        return result

    def _flush(self, timeout_millis: float) -> bool:
        """The inner exporter's force_flush, waiting at most the deadline."""
        if self._shutdown:
            return False
        try:
            result = self._bounded(
                lambda: self.exporter.force_flush(timeout_millis), timeout_millis
            )
        except Exception:
            return False
        return result is True

    def _close(self, call: Callable[[], Any]) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        try:
            self._bounded(call, None)
        except Exception:
            _log.debug("inner exporter shutdown failed", exc_info=True)
        finally:
            self._worker.stop()


class _ResilientBatch(_Resilient[R]):
    """The span and log wrappers: ``export(batch)`` answers the signal's SUCCESS or FAILURE."""

    def _results(self) -> Any:
        """The signal's export result enum (its ``SUCCESS`` and ``FAILURE`` members)."""
        raise NotImplementedError

    def export(self, batch: Sequence[Any]) -> Any:
        return self._export_batch(batch)

    def _export_batch(self, batch: Sequence[Any]) -> Any:
        results = self._results()
        inner = self.exporter
        ok = self._export(
            lambda: inner.export(batch),
            len(batch),
            lambda result: result is results.SUCCESS,
        )
        return results.SUCCESS if ok else results.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._flush(timeout_millis)

    def shutdown(self) -> None:
        self._close(self.exporter.shutdown)


class ResilientSpanExporter(_ResilientBatch[SpanExportResult], SpanExporter):
    """A span exporter that never blocks past ``export_timeout_seconds`` and goes quiet,
    dropping and counting spans, while its backend is failing."""

    signal = "traces"

    def _results(self) -> Any:
        return SpanExportResult

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # The SDK's parameter name, for callers that pass it by keyword.
        result: SpanExportResult = self._export_batch(spans)
        return result


class ResilientLogExporter(_ResilientBatch[Any]):
    """A log record exporter with the same deadline, breaker and quiet."""

    signal = "logs"

    def _results(self) -> Any:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        return LogRecordExportResult


def _data_points(data: MetricsData) -> int:
    try:
        return sum(
            len(metric.data.data_points)
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        )
    except Exception:
        return 0


class ResilientMetricExporter(MetricExporter, _Resilient[MetricExportResult]):
    """A metric exporter with the same deadline, breaker and quiet as the span one.

    It keeps the wrapped exporter's preferred temporality and aggregation.
    """

    signal = "metrics"

    def __init__(
        self,
        exporter: MetricExporter,
        *,
        export_timeout_seconds: float = 1.0,
        policy: BreakerPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        registry: Registry | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        temporality, aggregation = metric_exporter_preferences(exporter)
        super().__init__(preferred_temporality=temporality, preferred_aggregation=aggregation)
        self._setup(exporter, export_timeout_seconds, policy, breaker, registry, meter_provider)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        inner = self.exporter
        ok = self._export(
            lambda: inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs),
            _data_points(metrics_data),
            lambda result: result is MetricExportResult.SUCCESS,
        )
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        inner = self.exporter
        self._close(lambda: inner.shutdown(timeout_millis=timeout_millis, **kwargs))


def _timeout_of(registry: Registry | None) -> float:
    return registry.telemetry.export_timeout_seconds if registry is not None else 1.0


_WRAPPERS: dict[str, type[_Resilient[Any]]] = {
    "span": ResilientSpanExporter,
    "metric": ResilientMetricExporter,
    "log": ResilientLogExporter,
}


def wrap_exporter(signal: str, exporter: Any, registry: Registry | None = None) -> Any:
    """``exporter`` of ``signal`` (``span``, ``metric`` or ``log``) made resilient with the
    registry's telemetry breaker and timeout; an exporter already wrapped is returned as is."""
    wrapper = _WRAPPERS[signal]
    if isinstance(exporter, wrapper):
        return exporter
    return wrapper(exporter, export_timeout_seconds=_timeout_of(registry), registry=registry)


def wrap_provider_exporters(
    tracer_provider: Any, meter_provider: Any, registry: Registry | None = None
) -> int:
    """Wrap the exporters already inside the SDK providers' processors and readers.

    For configure() on a setup the application built itself. It reaches into the SDK's
    batch processors and periodic readers (private attributes, checked before use), and
    leaves anything it does not recognise alone. Returns how many exporters it wrapped.
    """
    wrapped = 0
    for processor in span_processors(tracer_provider):
        inner = batch_exporter(processor)
        if isinstance(inner, SpanExporter):
            if not isinstance(inner, ResilientSpanExporter) and set_batch_exporter(
                processor, wrap_exporter("span", inner, registry)
            ):
                wrapped += 1
        elif isinstance(getattr(processor, "span_exporter", None), SpanExporter) and not isinstance(
            processor.span_exporter, ResilientSpanExporter
        ):
            processor.span_exporter = wrap_exporter("span", processor.span_exporter, registry)
            wrapped += 1
    for reader in metric_readers(meter_provider):
        inner = reader_exporter(reader)
        if (
            isinstance(inner, MetricExporter)
            and not isinstance(inner, ResilientMetricExporter)
            and set_reader_exporter(reader, wrap_exporter("metric", inner, registry))
        ):
            wrapped += 1
    return wrapped
