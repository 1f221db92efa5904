"""The otel-resilience command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import otel_resilience


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_resilience", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_version() -> None:
    """--version prints the installed version."""
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"otel-resilience {otel_resilience.__version__}"


def test_help_lists_commands() -> None:
    """--help lists the subcommands."""
    result = run("--help")
    assert result.returncode == 0
    assert "check-config" in result.stdout
    assert "demo" in result.stdout


def test_check_config_prints_the_effective_policy(tmp_path: Path) -> None:
    """check-config prints each dependency with its criticality and effective policy."""
    path = tmp_path / "resilience.yaml"
    path.write_text(
        "service: chat\n"
        "defaults: {breaker: {open_seconds: 7}}\n"
        "dependencies:\n"
        "  postgres: {criticality: critical, match: {db.system: postgresql},"
        " breaker: {consecutive_failures: 3}}\n"
        "  redis: {match: {db.system: redis}, fallback: none}\n"
    )
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "critical" in lines["postgres"]
    assert "3 in a row" in lines["postgres"]
    assert "open 7s" in lines["postgres"]
    assert "none_fallback" in lines["redis"]
    assert "monitoring" in lines["telemetry"]
    assert "ok: 3 dependencies" in result.stdout


def test_check_config_bad_input_exits_2(tmp_path: Path) -> None:
    """A bad config exits with status 2 and names the file and the key."""
    path = tmp_path / "bad.yaml"
    path.write_text("dependencies:\n  redis: {criticality: vital}\n")
    result = run("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: dependencies.redis.criticality: must be one of" in " ".join(
        result.stderr.split()
    )


def test_demo_walkthrough_recovers() -> None:
    """The walk-through opens both breakers during the outage and closes them after."""
    result = run("walkthrough", "--seconds", "6")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "closed -> open" in result.stdout
    assert "half_open -> closed" in result.stdout
    assert "all breakers closed again" in result.stdout
