"""The monitoring products: Prometheus rules and config, dashboards, collector config,
checked with the real promtool and an end-to-end run of a real Prometheus server."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_resilience._metrics import METRICS
from tests.support.health_servers import free_port, need_tool
from tests.support.prometheus import api, prometheus, wait_for

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = ROOT / "collector"
DASHBOARDS = ROOT / "dashboards"
PROMETHEUS_NAMES = {spec.prometheus for spec in METRICS}
# A metric name, not part of a recording rule's name (level:metric:operations).
METRIC_NAME = re.compile(r"(?<![\w:])(resilience_[a-z_]+)\b(?!:)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=COLLECTOR,
        check=False,
    )


def test_promtool_check_config() -> None:
    """promtool accepts prometheus.yml and the rule files it loads."""
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    """promtool accepts the alerts and the recording rules."""
    result = promtool("check", "rules", "alerts.yml", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests() -> None:
    """Every alert fires and stays quiet where alerts.test.yml says."""
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (COLLECTOR / "alerts.test.yml").read_text()))
    defined = {
        rule["alert"]
        for group in yaml.safe_load((COLLECTOR / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert defined == {
        "ResilienceBreakerOpen",
        "ResilienceBreakerFlapping",
        "ResilienceServiceUnhealthy",
        "ResilienceTelemetryDropping",
        "ResilienceRetryBudgetSpent",
        "ResilienceConcurrencyLimitPinned",
        "ResilienceDependencyDown",
        "ResiliencePartialReachability",
    }
    assert tested == defined


def dashboard_exprs() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        document = json.loads(path.read_text())
        found[path.name] = [
            target["expr"]
            for panel in document["panels"]
            for target in panel.get("targets", [])
            if "expr" in target
        ]
    return found


def rule_exprs() -> list[str]:
    return [
        rule["expr"]
        for name in ("alerts.yml", "rules.yml")
        for group in yaml.safe_load((COLLECTOR / name).read_text())["groups"]
        for rule in group["rules"]
    ]


def test_queries_use_only_the_library_metric_names() -> None:
    """Every metric a dashboard or rule queries is one the library defines, and every
    metric of DESIGN.md 6 appears on a dashboard."""
    dashboards = dashboard_exprs()
    used_by_dashboards = {
        name
        for exprs in dashboards.values()
        for expr in exprs
        for name in METRIC_NAME.findall(expr)
    }
    used_by_rules = {name for expr in rule_exprs() for name in METRIC_NAME.findall(expr)}
    assert used_by_dashboards <= PROMETHEUS_NAMES
    assert used_by_rules <= PROMETHEUS_NAMES
    assert used_by_dashboards == PROMETHEUS_NAMES
    assert set(dashboards) == {"resilience-overview.json", "resilience-dependency.json"}
    for document in DASHBOARDS.glob("*.json"):
        data = json.loads(document.read_text())
        assert {v["name"] for v in data["templating"]["list"]} >= {"datasource", "job", "service"}
        assert data["links"], f"{document.name} links to the other dashboard"


def test_collector_config_keeps_the_names() -> None:
    """The collector pipeline: OTLP in, memory limiter and batch, Prometheus out with type
    suffixes and resource attributes as labels; the health check extension is on."""
    config = yaml.safe_load((COLLECTOR / "otelcol.yaml").read_text())
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"] == ["memory_limiter", "batch"]
    assert pipeline["exporters"] == ["prometheus"]
    assert "health_check" in config["service"]["extensions"]
    exporter = config["exporters"]["prometheus"]
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is True
    assert exporter.get("add_metric_suffixes", True) is True
    # With suffixes on, a gauge keeps its name only without a unit ("1" would add _ratio)
    # and a counter gains _total: the library's units are chosen for that.
    for spec in METRICS:
        if spec.kind.endswith("gauge"):
            assert spec.unit == "", spec.name
        else:
            assert spec.prometheus.endswith("_total")
            assert spec.unit.startswith("{"), spec.name
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}


# -- end to end: a real Prometheus scraping a live, instrumented process --------------


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Prometheus on a free port scraping the test process's /metrics every second, with
    the alerts (for: shortened to 2s) loaded."""
    target = free_port()
    rules = (COLLECTOR / "alerts.yml").read_text().replace("for: 1m", "for: 2s")
    with prometheus(tmp_path, [f"127.0.0.1:{target}"], {"alerts.yml": rules}) as base:
        yield base, target


def test_outage_fires_the_alert_and_fills_every_dashboard(
    prometheus_server: tuple[str, int],
) -> None:
    """A killed redis-server opens the breaker of a live process; Prometheus, scraping its
    /metrics, shows ResilienceBreakerOpen pending then firing with the dependency's name,
    and every dashboard query returns data."""
    import redis
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import start_http_server
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from otel_resilience import ResilientSpanExporter, load_config
    from otel_resilience._metrics import ResilienceMetrics
    from otel_resilience.instrumentation import install
    from tests.support.health_servers import redis_server

    base, target = prometheus_server
    reader = PrometheusMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    server, _ = start_http_server(target, addr="127.0.0.1")
    try:
        with redis_server() as own_redis:
            registry = load_config(
                {
                    "dependencies": {
                        "cache": {
                            "criticality": "optional",
                            "match": {"db.system": "redis", "server.port": own_redis.port},
                            # replaying: its journal counts are on the dependency dashboard
                            "fallback": {"type": "memory", "replay_writes": True},
                            "breaker": {"consecutive_failures": 2, "open_seconds": 60},
                            "limits": {"max_concurrent_calls": 64},
                        }
                    },
                    # Named in a (disarmed) drill, so the chaos panel has its zero series.
                    "chaos": {"dependencies": {"cache": {"error_rate": 1.0}}},
                }
            )
            ResilienceMetrics(meter_provider).attach(registry)
            ResilientSpanExporter(InMemorySpanExporter(), meter_provider=meter_provider)
            uninstall = install(registry)
            try:
                client = redis.Redis(port=own_redis.port, retry=Retry(NoBackoff(), 0))
                for _ in range(5):
                    client.set("k", "v")
                    client.get("k")

                def scraped() -> Any:
                    """a scrape of the breaker state"""
                    return api(base, "/api/v1/query", query="resilience_breaker_state")["result"]

                wait_for(scraped)
                own_redis.stop()
                for _ in range(5):
                    assert client.get("k") == b"v"  # served from the memory fallback

                def alert_in(state: str) -> Any:
                    """the alert in the wanted state"""
                    alerts = api(base, "/api/v1/alerts")["alerts"]
                    return [
                        a
                        for a in alerts
                        if a["labels"]["alertname"] == "ResilienceBreakerOpen"
                        and a["state"] == state
                    ]

                pending = wait_for(lambda: alert_in("pending") or alert_in("firing"))
                assert pending[0]["labels"]["dependency_name"] == "cache"
                firing = wait_for(lambda: alert_in("firing"))
                labels = firing[0]["labels"]
                assert labels["dependency_name"] == "cache"
                assert labels["severity"] == "warning"
                assert labels["job"] == "resilience-test"
                assert "cache" in firing[0]["annotations"]["summary"]
                time.sleep(2)  # a few more scrapes, so rate() has two points everywhere
                for name, exprs in dashboard_exprs().items():
                    for expr in exprs:
                        concrete = (
                            expr.replace("$job", ".*")
                            .replace("$service", ".*")
                            .replace("$dependency", ".*")
                        )
                        result = api(base, "/api/v1/query", query=concrete)["result"]
                        assert result, f"{name}: no data for {expr}"
            finally:
                uninstall()
    finally:
        server.shutdown()
        meter_provider.shutdown()
