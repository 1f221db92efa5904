"""``otel-resilience demo``, run as a user runs it: a subprocess with its own servers."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.health_servers import need_tool


def test_demo_rides_through_outages_and_prints_the_summary() -> None:
    """A short demo starts its servers, injects two outages, meets the targets, summarises."""
    need_tool("redis-server")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "otel_resilience", "demo", "--duration", "14"),
            *("--users", "4", "--scenarios", "redis-killed,analytics-500"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=150,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "summary per scenario" in output
    assert "redis-killed" in output
    assert "analytics-500" in output
    assert "every target met" in output
