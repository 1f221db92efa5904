"""The auto-instrumentation entry points (``_auto.py``): the configurator's arguments, the
exporters it wraps, and that nothing going wrong in them stops the application.

Cases that set the global OpenTelemetry providers run in a subprocess of their own (the
SDK lets a process set them once).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_resilience import Registry, ResilientSpanExporter, _auto, _configure, _reload
from tests.support.otlp_receiver import OTLPReceiver
from tests.support.reports import last_json_line

ROOT = Path(__file__).resolve().parent.parent


def run_python(script: str, **env: str) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; the JSON of its last stdout line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    report: dict[str, Any] = last_json_line(result)
    report["stderr"] = result.stderr
    return report


QUIET_OTEL = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


class FixedTimeoutExporter(SpanExporter):
    """A third-party exporter exposing its timeout as a read-only property."""

    @property
    def _timeout(self) -> float:
        return 30.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def test_an_exporter_that_cannot_be_wrapped_is_used_as_it_is(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exporter the resilient wrapper cannot take (its timeout cannot be lowered) is
    kept unwrapped with a warning naming it, the others are wrapped, and an exporter that
    is already resilient is not wrapped again."""
    registry = Registry.from_config({})
    odd, usual = FixedTimeoutExporter(), InMemorySpanExporter()
    with caplog.at_level(logging.WARNING, logger="otel_resilience._auto"):
        wrapped = _auto.wrap_exporters([odd, usual], "span", registry)
    assert wrapped[0] is odd
    assert isinstance(wrapped[1], ResilientSpanExporter)
    assert wrapped[1].exporter is usual
    assert _auto.wrap_exporters([wrapped[1]], "span", registry) == [wrapped[1]]  # not twice
    assert any(
        "could not wrap" in r.getMessage() and "FixedTimeout" in r.getMessage()
        for r in caplog.records
    )
    wrapped[1].shutdown()


def test_opentelemetry_instrument_wraps_the_log_exporter(
    tmp_path: Path, receiver: OTLPReceiver
) -> None:
    """Under opentelemetry-instrument with OTEL_LOGS_EXPORTER=otlp, log records reach the
    collector through a resilient log exporter."""
    instrument = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    assert instrument is not None, "opentelemetry-instrument is part of the test install"
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import json
            from opentelemetry._logs import get_logger_provider

            provider = get_logger_provider()
            provider.get_logger("app").emit(body="hello from the app")
            processors = provider._multi_log_record_processor._log_record_processors
            exporters = [type(p._batch_processor._exporter).__name__ for p in processors]
            print(json.dumps({"exporters": exporters, "flushed": provider.force_flush(5000)}))
            """
        )
    )
    env = {
        **os.environ,
        "OTEL_PYTHON_DISTRO": "otel_resilience",
        "OTEL_PYTHON_CONFIGURATOR": "otel_resilience",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.endpoint}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    env.pop("OTEL_RESILIENCE_CONFIG", None)
    result = subprocess.run(
        [instrument, sys.executable, str(app)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    report = last_json_line(result)
    assert report == {"exporters": ["ResilientLogExporter"], "flushed": True}
    assert receiver.log_bodies == ["hello from the app"]


SAMPLER_GIVEN = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from otel_resilience import get_registry
from otel_resilience._auto import ResilienceConfigurator

ResilienceConfigurator().configure(sampler=ALWAYS_OFF)
tracer = trace.get_tracer("app")
for _ in range(3):
    with tracer.start_as_current_span(
        "GET", kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
    ) as span:
        span.set_status(StatusCode.ERROR)
internal = tracer.start_span("work")
internal_recorded = internal.is_recording()
internal.end()
print(json.dumps({
    "sampler": type(trace.get_tracer_provider().sampler).__name__,
    "wrapped": type(trace.get_tracer_provider().sampler.wrapped).__name__,
    "internal_recorded": internal_recorded,
    "state": get_registry().breaker("cache").state.value,
}))
"""


def test_configurator_wraps_a_sampler_it_is_given(tmp_path: Path) -> None:
    """A sampler passed to the configurator is wrapped, not replaced: it still drops what it
    drops, yet the dependency's client spans are recorded and open its breaker."""
    config = tmp_path / "resilience.yaml"
    config.write_text(
        "dependencies:\n"
        "  cache:\n"
        "    match: {db.system: redis}\n"
        "    breaker: {consecutive_failures: 3}\n"
    )
    report = run_python(SAMPLER_GIVEN, OTEL_RESILIENCE_CONFIG=str(config), **QUIET_OTEL)
    assert report["sampler"] == "ResilienceSampler"
    assert report["wrapped"] == "StaticSampler"
    assert report["internal_recorded"] is False
    assert report["state"] == "open"


FAILING_WIRING = """
import json, logging, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from otel_resilience import _configure
from otel_resilience._auto import ResilienceConfigurator

def fail(*args, **kwargs):
    raise RuntimeError("wiring bug")

setattr(_configure, sys.argv[1], fail)
logging.basicConfig(level=logging.ERROR)
ResilienceConfigurator().configure()
provider = trace.get_tracer_provider()
with trace.get_tracer("app").start_as_current_span("work") as span:
    recording = span.is_recording()
print(json.dumps({"sdk": isinstance(provider, TracerProvider), "recording": recording}))
"""


@pytest.mark.parametrize(
    ("failing", "logged"),
    [
        ("registry_from_environment", "the breakers are not wired (RuntimeError"),
        ("adopt", "the breakers are only partly wired (RuntimeError"),
    ],
)
def test_configurator_failure_still_starts_opentelemetry(failing: str, logged: str) -> None:
    """Whatever fails while the configurator wires the breakers, OpenTelemetry is still set
    up as the SDK's own configurator would do it (spans are recorded) and one error line
    says what is missing."""
    report = run_python(FAILING_WIRING.replace("sys.argv[1]", repr(failing)), **QUIET_OTEL)
    assert report["sdk"] is True
    assert report["recording"] is True
    assert report["stderr"].count(logged) == 1, report["stderr"]


def fail(*args: object, **kwargs: object) -> None:
    raise RuntimeError("wiring bug")


def test_pre_instrument_hook_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The pre-instrument hook logs a failure to wire the providers and lets
    opentelemetry-instrument go on."""
    monkeypatch.setattr(_configure, "ensure_configured_for_auto_instrumentation", fail)
    with caplog.at_level(logging.WARNING, logger="otel_resilience._auto"):
        _auto.pre_instrument()
    assert [r.getMessage() for r in caplog.records] == ["could not wire the breakers"]


def test_post_instrument_hook_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The post-instrument hook logs a failure to install the guards or the reload triggers
    and lets opentelemetry-instrument go on; one failing does not skip the other."""
    monkeypatch.setattr(_configure, "install_guards_for_auto_instrumentation", fail)
    monkeypatch.setattr(_reload, "install_reload_triggers", fail)
    with caplog.at_level(logging.WARNING, logger="otel_resilience._auto"):
        _auto.post_instrument()
    assert [r.getMessage() for r in caplog.records] == [
        "could not install the client guards",
        "could not install config reloading",
    ]
