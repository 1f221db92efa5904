"""The otel-resilience command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import otel_resilience
from otel_resilience import BreakerPolicy, Criticality, Dependency, Registry, health_app
from tests.support.health_servers import serve_asgi

# The command line with rich made unimportable: what a user without the cli extra runs.
WITHOUT_RICH = (
    "import sys; sys.modules['rich'] = None; "
    "from otel_resilience._cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def run(
    *args: str,
    columns: int = 200,
    rich: bool = True,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The command, piped (not a terminal), at ``columns`` columns."""
    command = ["-m", "otel_resilience"] if rich else ["-c", WITHOUT_RICH]
    return subprocess.run(
        [sys.executable, *command, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={
            "COLUMNS": str(columns),
            "PATH": "/usr/bin:/bin",
            # Coverage of subprocesses (.ci/run measures it) rides on these variables.
            **{k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")},
        },
    )


def blocks(output: str) -> dict[str, list[str]]:
    """check-config's output: the lines of each dependency's block, by dependency name."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("service "):
            continue
        if line.startswith("ok: "):
            break
        if not line.startswith(" "):
            current = found.setdefault(line.split(":")[0], [])
        current.append(line)
    return found


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
    lines = {name: " ".join(block) for name, block in blocks(result.stdout).items()}
    assert "critical" in lines["postgres"]
    assert "3 in a row" in lines["postgres"]
    assert "open 7s" in lines["postgres"]
    assert "fallback none" in lines["redis"]
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


LONG_CONFIG = (
    "service: chat\n"
    "dependencies:\n"
    "  postgres-primary-eu-west: {criticality: critical, match: {db.system: postgresql,"
    " server.address: pg-primary.eu-west.internal.example.com},"
    " breaker: {consecutive_failures: 3, slow_call_seconds: 0.5, call_timeout_seconds: 2}}\n"
    "  session-cache: {match: {db.system: redis}, fallback: memory}\n"
    "  analytics: {match: {server.address: analytics.internal}, fallback: none}\n"
)


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_check_config_fits_80_columns_piped(tmp_path: Path, rich: bool) -> None:
    """At 80 columns, piped, with or without rich: every line fits, nothing is cut, and each
    dependency takes four lines at most (its summary and its breaker policy, two each)."""
    path = tmp_path / "resilience.yaml"
    path.write_text(LONG_CONFIG)
    result = run("check-config", path.name, columns=80, rich=rich, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if len(line) > 80] == []
    found = blocks(result.stdout)
    assert sorted(found) == ["analytics", "postgres-primary-eu-west", "session-cache", "telemetry"]
    assert {name: len(block) <= 4 for name, block in found.items()} == dict.fromkeys(found, True)
    joined = " ".join(" ".join(found["postgres-primary-eu-west"]).split())
    assert "server.address=pg-primary.eu-west.internal.example.com" in joined
    assert "timeout 2s" in joined
    assert "fallback memory" in " ".join(found["session-cache"])
    assert "object at 0x" not in result.stdout


def test_check_config_without_rich_reports_errors(tmp_path: Path) -> None:
    """Without rich a bad config still exits 2 with the message on stderr."""
    path = tmp_path / "bad.yaml"
    path.write_text("dependencies:\n  redis: {criticality: vital}\n")
    result = run("check-config", str(path), rich=False)
    assert result.returncode == 2
    assert "dependencies.redis.criticality: must be one of" in " ".join(result.stderr.split())


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_walkthrough_fits_80_columns_piped(rich: bool) -> None:
    """The walk-through's lines and summary fit 80 columns, with or without rich."""
    result = run("walkthrough", "--seconds", "3", columns=80, rich=rich)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if len(line) > 80] == []
    summary = lines[lines.index(next(line for line in lines if line.startswith("summary"))) :]
    header = summary[1].split()
    assert header[:3] == ["dependency", "answered", "fallback"]
    assert [line.split()[0] for line in summary[2:4]] == ["cache", "database"]


def _status_registry() -> Registry:
    policy = BreakerPolicy(consecutive_failures=1, minimum_calls=1, open_seconds=60)
    registry = Registry(
        [
            Dependency("postgres-primary-eu-west", Criticality.CRITICAL, policy=policy),
            Dependency("session-cache", Criticality.OPTIONAL, policy=policy),
        ],
        service="chat-api",
    )
    breaker = registry.breaker("session-cache")
    breaker.record_failure(0.01, error_type="ConnectionRefusedError")
    return registry


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_status_fits_the_width_piped(columns: int, rich: bool) -> None:
    """status prints every dependency name and header whole, each line within the width."""
    with serve_asgi(health_app(_status_registry(), probe=False)) as base:
        result = run("status", base, "--timeout", "5", columns=columns, rich=rich)
    assert result.returncode == 1, result.stdout + result.stderr  # degraded
    lines = result.stdout.splitlines()
    assert [line for line in lines if len(line) > columns] == []
    assert lines[0].startswith("chat-api: degraded at ")
    assert lines[1].split()[0:2] == ["dependency", "criticality"]
    for header in ("state", "healthy", "fail rate", "retry in"):
        assert header in lines[1]
    if columns == 200:
        assert "last error" in lines[1]
    else:  # the errors follow the table
        assert lines[4:] == ["last errors:", "  session-cache: ConnectionRefusedError"]
    names = [line.split()[0] for line in lines[2:4]]
    assert names == ["postgres-primary-eu-west", "session-cache"]
    assert "ConnectionRefusedError" in result.stdout
