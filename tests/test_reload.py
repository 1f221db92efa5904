"""Hot reload: new policies, criticalities, matches and fallbacks applied in place, breaker
state kept, atomic; SIGHUP and file polling under opentelemetry-instrument."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpenError,
    ConfigError,
    Criticality,
    OperatorEvent,
    State,
    get_registry,
    load_config,
)
from otel_resilience._memory_cache import MemoryCache
from otel_resilience._metrics import ResilienceMetrics
from tests.conftest import FakeClock

BASE = """
service: chat-api
dependencies:
  redis:
    criticality: optional
    match: {db.system: redis}
    breaker: {consecutive_failures: 3, open_seconds: 30, window_size: 20, minimum_calls: 10}
  postgres:
    criticality: critical
    match: {db.system: postgresql}
    breaker: {consecutive_failures: 5, minimum_calls: 4, failure_rate_threshold: 0.9}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record_failure(error_type="ConnectionError")


def test_open_breaker_stays_open_and_the_new_threshold_applies(
    tmp_path: Path, clock: FakeClock
) -> None:
    """An OPEN breaker is still OPEN (same object, same counts) after a reload; the new
    open_seconds shortens its wait and the new consecutive_failures trips it next time."""
    path = write(tmp_path / "resilience.yaml", BASE)
    registry = load_config(path, clock=clock)
    redis = registry.breaker("redis")
    trip(redis, 3)
    assert redis.state is State.OPEN
    before = redis.snapshot()
    write(
        path,
        BASE.replace(
            "consecutive_failures: 3, open_seconds: 30", "consecutive_failures: 2, open_seconds: 10"
        ),
    )
    registry.reload()
    assert registry.breaker("redis") is redis
    assert redis.state is State.OPEN
    after = redis.snapshot()
    assert (after.calls, after.failures, after.opened_at) == (
        before.calls,
        before.failures,
        before.opened_at,
    )
    assert redis.policy.consecutive_failures == 2
    assert after.retry_after == pytest.approx(10)
    clock.advance(10)
    assert redis.state is State.HALF_OPEN
    redis.record_success()
    assert redis.state is State.CLOSED
    trip(redis, 2)
    assert redis.state is State.OPEN  # two in a row now open it (three before the reload)


def test_closed_breaker_keeps_its_window(clock: FakeClock) -> None:
    """A CLOSED breaker keeps its outcomes; a smaller window keeps the newest that fit, and
    the new failure-rate threshold judges the next outcome."""
    registry = load_config(
        {
            "dependencies": {
                "api": {
                    "breaker": {
                        "window_size": 10,
                        "minimum_calls": 4,
                        "failure_rate_threshold": 0.9,
                        "consecutive_failures": None,
                    }
                }
            }
        },
        clock=clock,
    )
    api = registry.breaker("api")
    for _ in range(6):
        api.record_success()
    for _ in range(3):
        api.record_failure()
    assert api.state is State.CLOSED
    assert (api.snapshot().calls, api.snapshot().failures) == (9, 3)
    registry.reload(
        {
            "dependencies": {
                "api": {
                    "breaker": {
                        "window_size": 5,
                        "minimum_calls": 4,
                        "failure_rate_threshold": 0.5,
                        "consecutive_failures": None,
                    }
                }
            }
        }
    )
    snapshot = api.snapshot()
    assert (snapshot.calls, snapshot.failures) == (5, 3)  # s s f f f
    assert api.state is State.CLOSED  # a reload judges nothing by itself
    api.record_failure()
    assert api.state is State.OPEN  # 4 of 5 >= 0.5


def test_invalid_config_raises_and_changes_nothing(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A config with an error anywhere raises ConfigError; no policy, criticality or
    dependency changed, and the failure is counted; an applied reload is a log line."""
    caplog.set_level(logging.INFO, logger="otel_resilience")
    path = write(tmp_path / "resilience.yaml", BASE)
    registry = load_config(path, clock=clock)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    ResilienceMetrics(provider).attach(registry)
    events: list[OperatorEvent] = []
    registry.add_event_listener(events.append)
    policies = {d.name: d.policy for d in registry}
    broken = BASE.replace("consecutive_failures: 3, open_seconds: 30", "open_seconds: 5") + (
        "  extra:\n    criticality: critical\n    breaker: {failure_rate_threshold: 7}\n"
    )
    write(path, broken.replace("criticality: optional", "criticality: important"))
    with pytest.raises(ConfigError, match=r"extra\.breaker\.failure_rate_threshold"):
        registry.reload()
    assert {d.name: d.policy for d in registry} == policies
    assert registry["redis"].criticality is Criticality.OPTIONAL
    assert "extra" not in registry
    write(path, "dependencies: [")
    with pytest.raises(ConfigError):
        registry.reload()
    assert [e.detail.split(":")[0] for e in events] == ["failed", "failed"]
    registry.reload({"dependencies": {"redis": {"criticality": "optional"}}})
    lines = [r.getMessage() for r in caplog.records if r.name == "otel_resilience._reload"]
    assert lines == ["reloaded the resilience config: 2 dependencies"]
    data = reader.get_metrics_data()
    assert data is not None
    reloads = {
        dict(p.attributes or {})["outcome"]: p.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "resilience.config.reloads"
        for p in m.data.data_points
    }
    assert reloads == {"applied": 1, "failed": 2}
    provider.shutdown()


def test_criticality_match_and_fallback_change_in_place(clock: FakeClock) -> None:
    """A reload changes criticality (health follows), match (classification follows), and
    fallback (also for functions protected before the reload); new dependencies appear."""
    registry = load_config({"dependencies": {"api": {"criticality": "optional"}}}, clock=clock)

    @registry.protect("api")
    def fetch() -> str:
        raise ConnectionError("refused")

    registry.breaker("api").force_open()
    with pytest.raises(CircuitOpenError):
        fetch()
    assert registry.health().status == "degraded"
    registry.reload(
        {
            "dependencies": {
                "api": {
                    "criticality": "important",
                    "match": {"server.address": "api.internal"},
                    "fallback": "tests.fallbacks_for_tests:local_analytics",
                },
                "search": {"criticality": "critical", "match": {"server.address": "search"}},
            }
        }
    )
    assert registry.breaker("api").state is State.FORCED_OPEN
    assert registry["api"].criticality is Criticality.IMPORTANT
    assert fetch() == "kept locally"
    assert registry.classify({"server.address": "api.internal"}) == "api"
    assert registry.classify({"server.address": "search"}) == "search"
    registry.breaker("search").force_open()
    assert registry.health().status == "unhealthy"


def test_memory_fallback_keeps_its_cache(clock: FakeClock) -> None:
    """Reloading an unchanged memory fallback keeps the cache it is serving from."""
    config = {"dependencies": {"redis": {"fallback": "memory"}}}
    registry = load_config(config, clock=clock)
    cache = registry["redis"].fallback
    assert isinstance(cache, MemoryCache)
    registry.reload(
        {"dependencies": {"redis": {"fallback": "memory", "breaker": {"open_seconds": 3}}}}
    )
    assert registry["redis"].fallback is cache
    assert registry.breaker("redis").policy.open_seconds == 3


def admitted_elsewhere(registry: Any, name: str) -> bool:
    """Whether another thread (not joining this one's guard) is admitted now."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with registry.guard(name):
                result.append(True)
        except CircuitOpenError:
            result.append(False)

    worker = threading.Thread(target=attempt)
    worker.start()
    worker.join(10)
    return result == [True]


def test_limits_are_kept_replaced_or_removed(clock: FakeClock) -> None:
    """An unchanged concurrency limit keeps its limiter (and calls in flight); a changed one
    is replaced and enforced; a removed one stops limiting."""
    one = {"limits": {"max_concurrent_calls": 1}}
    registry = load_config({"dependencies": {"api": one}}, clock=clock)
    limiter = registry.limiters()["api"]
    with registry.guard("api"):
        assert not admitted_elsewhere(registry, "api")
        registry.reload({"dependencies": {"api": {**one, "breaker": {"open_seconds": 3}}}})
        assert registry.limiters()["api"] is limiter
        assert not admitted_elsewhere(registry, "api")  # the call in flight still counts
        registry.reload({"dependencies": {"api": {"limits": {"max_concurrent_calls": 2}}}})
        assert registry.limiters()["api"] is not limiter
        assert admitted_elsewhere(registry, "api")
    registry.reload({"dependencies": {"api": {}}})
    assert "api" not in registry.limiters()


def test_chaos_switched_on_and_off_by_reload(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload that enables a chaos drill injects its faults from then on and reports
    chaos on; one that drops it reports chaos off and calls go through again."""
    monkeypatch.setenv("OTEL_RESILIENCE_CHAOS", "1")
    plain = {"dependencies": {"api": {"criticality": "optional"}}}
    drill = {
        **plain,
        "chaos": {"enabled": True, "dependencies": {"api": {"error_rate": 1.0}}},
    }
    registry = load_config(plain, clock=clock)
    events: list[OperatorEvent] = []
    registry.add_event_listener(events.append)
    calls = []
    registry.reload(drill)
    with pytest.raises(ConnectionError):
        registry.call("api", lambda: calls.append(1))
    assert calls == []  # the fault comes before the call
    registry.reload(plain)
    registry.call("api", lambda: calls.append(1))
    assert calls == [1]
    assert [(e.kind, e.detail, e.dependency) for e in events] == [
        ("reload", "applied", None),
        ("chaos", "on", "api"),
        ("reload", "applied", None),
        ("chaos", "off", "api"),
    ]


def test_span_processor_follows_a_reloaded_slow_call_bound(clock: FakeClock) -> None:
    """A span processor built before the reload judges spans by the new slow-call bound."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from otel_resilience import BreakerSpanProcessor

    config: dict[str, Any] = {"dependencies": {"cache": {"match": {"db.system": "redis"}}}}
    registry = load_config(config, clock=clock)
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    tracer = provider.get_tracer("test")

    def slow_span() -> None:
        span = tracer.start_span("GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"})
        span.end(end_time=(span.start_time or 0) + 2_000_000_000)  # two seconds

    slow_span()
    assert registry.breaker("cache").snapshot().total_slow == 0
    config["dependencies"]["cache"]["breaker"] = {"slow_call_seconds": 1}
    registry.reload(config)
    slow_span()
    assert registry.breaker("cache").snapshot().total_slow == 1


def test_reload_without_a_source_says_so(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry built from a dict has no file to reload: reload() asks for one."""
    monkeypatch.delenv("OTEL_RESILIENCE_CONFIG", raising=False)
    registry = load_config({"dependencies": {"api": {}}}, clock=clock)
    with pytest.raises(ConfigError, match="nothing to reload"):
        registry.reload()
    assert "api" in registry


def test_time_window_change_starts_an_empty_window(clock: FakeClock) -> None:
    """Switching to a time window (or changing its length) starts an empty window."""
    breaker = CircuitBreaker("x", BreakerPolicy(consecutive_failures=None), clock=clock)
    breaker.record_failure()
    breaker.apply_policy(BreakerPolicy(consecutive_failures=None, window_seconds=10))
    assert breaker.snapshot().calls == 0
    breaker.record_failure()
    assert breaker.snapshot().calls == 1


def test_back_to_a_count_window_starts_an_empty_one(clock: FakeClock) -> None:
    """Switching from a time window back to a count window starts an empty count window of
    the new size; a policy that is not a BreakerPolicy is refused."""
    timed = BreakerPolicy(consecutive_failures=None, window_seconds=10)
    breaker = CircuitBreaker("x", timed, clock=clock)
    breaker.record_failure()
    counted = BreakerPolicy(consecutive_failures=None, window_size=3, minimum_calls=3)
    breaker.apply_policy(counted)
    assert breaker.snapshot().calls == 0
    for _ in range(5):
        breaker.record_success()
    assert breaker.snapshot().calls == 3  # the new size bounds the window
    with pytest.raises(TypeError, match="expected a BreakerPolicy, got"):
        breaker.apply_policy({"window_size": 3})  # type: ignore[arg-type]
    assert repr(breaker) == "<CircuitBreaker 'x' closed>"


def test_reload_of_a_fixed_file_replaces_the_stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service started with an invalid file runs on a stand-in registry carrying the
    error; reloading the fixed file declares its dependencies and clears the error."""
    from otel_resilience._configure import config_error_of, registry_from_environment

    path = write(tmp_path / "resilience.yaml", "dependencies: {redis: {criticality: nope}}")
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(path))
    registry = registry_from_environment()
    assert config_error_of(registry) is not None
    assert "redis" not in registry
    write(path, BASE)
    registry.reload()
    assert config_error_of(registry) is None
    assert registry["postgres"].criticality is Criticality.CRITICAL
    assert registry.classify({"db.system": "redis"}) == "redis"


def test_a_failing_event_listener_never_undoes_a_reload(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator-event listener that raises is logged; the reload is applied and the
    other listeners still hear of it."""
    registry = load_config({"dependencies": {"api": {}}}, clock=clock)

    def broken(event: OperatorEvent) -> None:
        raise RuntimeError("listener bug")

    heard: list[OperatorEvent] = []
    registry.add_event_listener(broken)
    registry.add_event_listener(heard.append)
    registry.reload({"dependencies": {"api": {"breaker": {"open_seconds": 3}}}})
    assert registry.breaker("api").policy.open_seconds == 3
    assert [(e.kind, e.detail) for e in heard] == [("reload", "applied")]
    assert "event listener" in caplog.text
    assert "listener bug" in caplog.text


def test_reload_declares_an_auto_discovered_dependency(clock: FakeClock) -> None:
    """A dependency first auto-discovered from its spans (observe-only, never rejecting) and
    then declared by a reload is protected from then on: its breaker opens and rejects."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from otel_resilience import BreakerSpanProcessor

    registry = load_config({}, clock=clock)
    provider = TracerProvider()
    provider.add_span_processor(BreakerSpanProcessor(registry))
    provider.get_tracer("test").start_span(
        "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
    ).end()
    assert registry["redis"].observe_only
    trip(registry.breaker("redis"), 5)
    assert registry.breaker("redis").state is State.DISABLED  # observed, never rejecting
    registry.reload({"dependencies": {"redis": {"breaker": {"consecutive_failures": 2}}}})
    assert not registry["redis"].observe_only
    assert registry.breaker("redis").state is State.CLOSED
    trip(registry.breaker("redis"), 2)
    with pytest.raises(CircuitOpenError):
        registry.call("redis", lambda: None)


# -- SIGHUP and polling under opentelemetry-instrument ---------------------------------

APP = """
import json, time
from otel_resilience import get_registry

registry = get_registry()
breaker = registry.breaker("cache")
for _ in range(3):
    breaker.record_failure(error_type="ConnectionError")

def report(event):
    cache = registry.breaker("cache")
    print("EVENT " + json.dumps({
        "detail": event.detail.split(":")[0],
        "open_seconds": cache.policy.open_seconds,
        "state": cache.state.value,
    }), flush=True)

registry.add_event_listener(report)
print("READY " + json.dumps({"state": breaker.state.value}), flush=True)
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    time.sleep(0.05)
"""

CONFIG = """
service: reload-svc
dependencies:
  cache:
    criticality: optional
    match: {{db.system: redis}}
    breaker: {{consecutive_failures: 3, open_seconds: {open_seconds}}}
"""


def lines_of(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], prefix: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {prefix} line in {timeout}s")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line.startswith(prefix + " "):
            return json.loads(line.removeprefix(prefix + " "))  # type: ignore[no-any-return]


class InstrumentedApp:
    """APP under ``opentelemetry-instrument`` with OTEL_RESILIENCE_CONFIG=``config``."""

    def __init__(self, tmp_path: Path, config: Path, **extra_env: str) -> None:
        instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
        assert instrument is not None, "opentelemetry-instrument is part of the test install"
        app = tmp_path / "app.py"
        app.write_text(APP)
        env = {
            **{k: v for k, v in os.environ.items() if k != "OTEL_RESILIENCE_RELOAD_SECONDS"},
            "OTEL_RESILIENCE_CONFIG": str(config),
            "OTEL_PYTHON_DISTRO": "otel_resilience",
            "OTEL_PYTHON_CONFIGURATOR": "otel_resilience",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            **extra_env,
        }
        self.process = subprocess.Popen(
            [instrument, sys.executable, str(app)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.out = lines_of(self.process.stdout)
        self.err = lines_of(self.process.stderr)

    def stop(self) -> list[str]:
        """Terminate it; its stderr lines."""
        self.process.terminate()
        self.process.wait(10)
        time.sleep(0.1)
        lines = []
        while not self.err.empty():
            lines.append(self.err.get())
        return lines


def failure_lines(stderr: list[str]) -> list[str]:
    return [line for line in stderr if "config reload" in line and "failed" in line]


def test_sighup_reloads_under_opentelemetry_instrument(tmp_path: Path) -> None:
    """Under opentelemetry-instrument, SIGHUP applies an edited file (the open breaker stays
    open, the new open_seconds applies); a broken file is logged once, the old config
    stays, and the process lives on."""
    config = tmp_path / "resilience.yaml"
    config.write_text(CONFIG.format(open_seconds=30))
    app = InstrumentedApp(tmp_path, config)
    try:
        assert next_line(app.out, "READY")["state"] == "open"
        config.write_text(CONFIG.format(open_seconds=20))
        app.process.send_signal(signal.SIGHUP)
        assert next_line(app.out, "EVENT") == {
            "detail": "applied",
            "open_seconds": 20,
            "state": "open",
        }
        config.write_text("dependencies:\n  cache: {breaker: {open_seconds: -1}}\n")
        app.process.send_signal(signal.SIGHUP)
        assert next_line(app.out, "EVENT") == {
            "detail": "failed",
            "open_seconds": 20,
            "state": "open",
        }
        time.sleep(0.5)
        assert app.process.poll() is None
    finally:
        stderr = app.stop()
    failures = failure_lines(stderr)
    assert len(failures) == 1, stderr
    assert "SIGHUP" in failures[0]
    assert "open_seconds" in failures[0]


def test_polling_reloads_a_changed_file(tmp_path: Path) -> None:
    """With OTEL_RESILIENCE_RELOAD_SECONDS an edited file applies without a signal; a broken
    one is logged once however often it is polled, and a fixed one applies again."""
    config = tmp_path / "resilience.yaml"
    config.write_text(CONFIG.format(open_seconds=30))
    app = InstrumentedApp(tmp_path, config, OTEL_RESILIENCE_RELOAD_SECONDS="0.2")
    try:
        assert next_line(app.out, "READY")["state"] == "open"
        config.write_text(CONFIG.format(open_seconds=20))
        assert next_line(app.out, "EVENT")["open_seconds"] == 20
        config.write_text("dependencies: [")
        assert next_line(app.out, "EVENT")["detail"] == "failed"
        time.sleep(1.0)  # several polls of the same broken file
        config.write_text(CONFIG.format(open_seconds=7))
        assert next_line(app.out, "EVENT") == {
            "detail": "applied",
            "open_seconds": 7,
            "state": "open",
        }
        assert app.process.poll() is None
    finally:
        stderr = app.stop()
    assert len(failure_lines(stderr)) == 1, stderr


# -- the reload trigger in this process --------------------------------------------------


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Leaves no trigger running, no SIGHUP handler and no global registry behind."""
    from otel_resilience import _reload
    from otel_resilience._configure import reset_for_tests

    monkeypatch.delenv(_reload.RELOAD_SECONDS_ENV, raising=False)
    handler = signal.getsignal(signal.SIGHUP)
    reset_for_tests()
    yield _reload
    for trigger in _reload._triggers:
        trigger.stop()
    _reload._triggers.clear()
    signal.signal(signal.SIGHUP, handler)
    reset_for_tests()


def test_polling_applies_a_file_only_once_it_stops_changing(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A file caught while it is being written (empty, then cut off) is not applied: a
    change applies once two polls in a row read the same new content; a SIGHUP applies at
    once."""
    from otel_resilience._reload import ReloadTrigger

    path = tmp_path / "resilience.yaml"
    write(path, BASE)
    registry = load_config(str(path), clock=clock)
    events: list[OperatorEvent] = []
    registry.add_event_listener(events.append)
    trigger = ReloadTrigger(str(path), registry=lambda: registry)
    write(path, "")  # truncated by the writer
    assert trigger.poll() is False
    write(path, "dependencies:\n  other: {match: {db.system: mysql")  # cut off
    assert trigger.poll() is False
    write(path, "dependencies:\n  other: {match: {db.system: mysql}}\n")
    assert trigger.poll() is False  # new content, seen once
    assert events == []
    assert trigger.poll() is True  # the same content again: applied
    assert "other" in registry
    assert [(e.kind, e.detail) for e in events] == [("reload", "applied")]
    assert trigger.poll() is False  # nothing new
    write(path, BASE)
    assert trigger.poll(requested=True) is True  # SIGHUP: at once
    assert [(e.kind, e.detail) for e in events] == [("reload", "applied")] * 2


def test_polling_waits_for_a_missing_file_and_applies_it(tmp_path: Path, clock: FakeClock) -> None:
    """Polling a config file that is not there (being replaced) is no error and changes
    nothing; the file is applied once it appears, and stop() ends the worker."""
    from otel_resilience._reload import ReloadTrigger

    path = tmp_path / "resilience.yaml"
    registry = load_config({}, clock=clock)
    events: list[OperatorEvent] = []
    registry.add_event_listener(events.append)
    trigger = ReloadTrigger(str(path), poll_seconds=0.02, registry=lambda: registry)
    trigger.start()
    try:
        time.sleep(0.1)  # several polls of the missing file
        assert events == []
        write(path, BASE)
        wait_until(lambda: "postgres" in registry)
    finally:
        trigger.stop()
    assert trigger._thread is not None
    assert not trigger._thread.is_alive()
    assert [(e.kind, e.detail) for e in events] == [("reload", "applied")]


def test_an_unexpected_reload_error_is_logged_and_the_worker_lives_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An error other than ConfigError during a reload is logged with its traceback, never
    raised; the worker goes on and the next request applies the file."""
    from otel_resilience._reload import ReloadTrigger

    path = write(tmp_path / "resilience.yaml", BASE)
    registry = load_config({})
    available = threading.Event()

    def live() -> Any:
        if not available.is_set():
            raise RuntimeError("no registry yet")
        return registry

    trigger = ReloadTrigger(str(path), registry=live)
    trigger.start()
    try:
        with caplog.at_level(logging.ERROR, logger="otel_resilience._reload"):
            trigger.request()
            wait_until(lambda: caplog.records)
        available.set()
        trigger.request()
        wait_until(lambda: "postgres" in registry)
    finally:
        trigger.stop()
    (record,) = caplog.records
    assert record.getMessage() == "config reload (SIGHUP) failed, the old config stays"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_no_config_file_no_trigger(monkeypatch: pytest.MonkeyPatch, installed: Any) -> None:
    """Without OTEL_RESILIENCE_CONFIG there is nothing to reload: no worker starts and the
    SIGHUP handler stays the application's."""
    monkeypatch.delenv("OTEL_RESILIENCE_CONFIG", raising=False)
    handler = signal.getsignal(signal.SIGHUP)
    assert installed.install_reload_triggers(get_registry) is None
    assert installed._triggers == []
    assert signal.getsignal(signal.SIGHUP) is handler


@pytest.mark.parametrize("raw", ["0", "-2", "soon", "nan"])
def test_a_bad_reload_interval_is_reported_and_not_polled(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    installed: Any,
    raw: str,
) -> None:
    """OTEL_RESILIENCE_RELOAD_SECONDS that is not a number of seconds > 0 is named in a
    warning with its value; the file is then not polled (SIGHUP still reloads)."""
    path = write(tmp_path / "resilience.yaml", BASE)
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(path))
    monkeypatch.setenv(installed.RELOAD_SECONDS_ENV, raw)
    with caplog.at_level(logging.WARNING, logger="otel_resilience._reload"):
        trigger = installed.install_reload_triggers(get_registry)
    assert trigger.poll_seconds is None
    assert [r.getMessage() for r in caplog.records] == [
        f"OTEL_RESILIENCE_RELOAD_SECONDS must be a number of seconds > 0, got {raw!r}; not polling"
    ]


def test_sighup_reloads_and_still_calls_the_apps_own_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: Any
) -> None:
    """A real SIGHUP reloads the file and still reaches the SIGHUP handler the application
    had; installing the triggers again replaces the first one instead of adding one."""
    path = write(tmp_path / "resilience.yaml", BASE)
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(path))
    seen: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: seen.append(signum))
    first = installed.install_reload_triggers(get_registry)
    second = installed.install_reload_triggers(get_registry)
    assert not first._thread.is_alive()
    assert installed._triggers == [second]
    registry = get_registry()
    assert registry.breaker("redis").policy.open_seconds == 30
    write(path, BASE.replace("open_seconds: 30", "open_seconds: 5"))
    os.kill(os.getpid(), signal.SIGHUP)
    wait_until(lambda: registry.breaker("redis").policy.open_seconds == 5)
    assert seen == [signal.SIGHUP]


def test_forked_child_reloads_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: Any
) -> None:
    """In a child of os.fork the reload worker runs again: a request there applies the
    edited file to the child's registry, and the parent's stays as it was."""
    path = write(tmp_path / "resilience.yaml", BASE)
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(path))
    trigger = installed.install_reload_triggers(get_registry)
    registry = get_registry()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        try:
            os.close(read_end)
            report: dict[str, Any] = {"alive": trigger._thread.is_alive()}
            write(path, BASE.replace("open_seconds: 30", "open_seconds: 5"))
            trigger.request()
            deadline = time.monotonic() + 10
            while registry.breaker("redis").policy.open_seconds != 5:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            report["open_seconds"] = registry.breaker("redis").policy.open_seconds
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert json.loads(b"".join(chunks)) == {"alive": True, "open_seconds": 5}
    assert registry.breaker("redis").policy.open_seconds == 30
