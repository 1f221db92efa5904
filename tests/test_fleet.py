"""The fleet view: 20 real replica processes scraped by a real Prometheus; the recording
rule counts the fraction with each dependency's breaker open, and each fleet alert fires
for its own case."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.health_servers import free_port
from tests.support.prometheus import alerts_named, api, prometheus, wait_for

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR = ROOT / "collector"
REPLICAS = 20
# Twelve replicas have postgres open (the dependency is down), three have redis open
# (those replicas cannot reach it), none has analytics open.
OPEN = {"postgres": range(12), "redis": range(3)}
FAST_FOR = {"ResilienceDependencyDown": "3s", "ResiliencePartialReachability": "4s"}


def fast_rules() -> dict[str, str]:
    """The committed rules with the fleet alerts' ``for:`` and the recording interval
    shortened; everything else (expressions, labels, annotations) as committed."""
    alerts = yaml.safe_load((COLLECTOR / "alerts.yml").read_text())
    for group in alerts["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in FAST_FOR:
                rule["for"] = FAST_FOR[rule["alert"]]
    rules = yaml.safe_load((COLLECTOR / "rules.yml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    return {"alerts.yml": yaml.safe_dump(alerts), "rules.yml": yaml.safe_dump(rules)}


@pytest.fixture
def fleet() -> Iterator[list[tuple[str, subprocess.Popen[str]]]]:
    """REPLICAS replica processes, each serving /metrics on its own port."""
    processes: list[subprocess.Popen[str]] = []
    targets = []
    try:
        for index in range(REPLICAS):
            port = free_port()
            while f"127.0.0.1:{port}" in targets:  # the kernel may hand out a port twice
                port = free_port()
            opened = [name for name, which in OPEN.items() if index in which]
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.support.fleet_replica"],
                    cwd=ROOT,
                    env={
                        **os.environ,
                        "REPLICA_PORT": str(port),
                        "OPEN_DEPENDENCIES": ",".join(opened),
                    },
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            targets.append(f"127.0.0.1:{port}")
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "READY"
        yield list(zip(targets, processes, strict=True))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def by_dependency(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {alert["labels"]["dependency_name"]: alert for alert in alerts}


def test_fleet_alerts_fire_for_their_cases(
    tmp_path: Path, fleet: list[tuple[str, subprocess.Popen[str]]]
) -> None:
    """Twelve of twenty replicas with postgres open: ResilienceDependencyDown (critical);
    three of twenty with redis open: ResiliencePartialReachability (warning); analytics,
    open nowhere, raises neither, and neither case raises the other's alert. When nine of
    the twelve recover, postgres moves from down to partial reachability."""
    targets = [target for target, _ in fleet]
    fleet_processes = [process for _, process in fleet]
    with prometheus(tmp_path, targets, fast_rules(), job="fleet") as base:
        expected = {"postgres": 12 / 20, "redis": 3 / 20, "analytics": 0.0, "telemetry": 0.0}

        def ratios() -> dict[str, float]:
            """the recorded ratio of every dependency over all twenty replicas"""
            up = api(base, "/api/v1/query", query='count(up{job="fleet"} == 1)')["result"]
            if not up or up[0]["value"][1] != str(REPLICAS):
                return {}
            return {
                sample["metric"]["dependency_name"]: float(sample["value"][1])
                for sample in api(
                    base, "/api/v1/query", query="dependency:resilience_breakers_open:ratio"
                )["result"]
            }

        wait_for(lambda: ratios() == expected, timeout=60)

        down = wait_for(lambda: alerts_named(base, "ResilienceDependencyDown", "firing"), 60)
        partial = wait_for(
            lambda: alerts_named(base, "ResiliencePartialReachability", "firing"), 60
        )
        down_by = by_dependency(alerts_named(base, "ResilienceDependencyDown"))
        partial_by = by_dependency(alerts_named(base, "ResiliencePartialReachability"))
        assert set(down_by) == {"postgres"}
        assert set(partial_by) == {"redis"}
        labels = down[0]["labels"]
        assert labels["severity"] == "critical"
        assert labels["job"] == "fleet"
        assert "60%" in down[0]["annotations"]["summary"]
        assert partial[0]["labels"]["severity"] == "warning"
        assert "15%" in partial[0]["annotations"]["summary"]

        # Nine of the twelve replicas (those without redis open) reach postgres again:
        # three of twenty left, so postgres is no longer down but partly unreachable.
        for process in fleet_processes[3:12]:
            process.send_signal(signal.SIGUSR1)

        def postgres_partial() -> Any:
            """postgres moved from down to partial reachability"""
            down_now = by_dependency(alerts_named(base, "ResilienceDependencyDown"))
            partial_now = by_dependency(
                alerts_named(base, "ResiliencePartialReachability", "firing")
            )
            return "postgres" not in down_now and {"postgres", "redis"} <= set(partial_now)

        wait_for(postgres_partial, 60)
        assert ratios()["postgres"] == 3 / 20
