"""check-config about health: a critical dependency without an active check is warned about."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_resilience", "check-config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_critical_dependency_without_check_is_a_warning_not_an_error(tmp_path: Path) -> None:
    """A critical dependency with no health_check: a warning naming it and a suggested
    check, exit status 0; optional ones and checked critical ones are not mentioned."""
    path = tmp_path / "resilience.yaml"
    path.write_text(
        "dependencies:\n"
        "  postgres: {criticality: critical, match: {db.system: postgresql}}\n"
        "  sessions: {criticality: critical, match: {db.system: redis}, health_check: redis}\n"
        "  cache: {criticality: optional, match: {db.system: redis}}\n"
    )
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    output = " ".join(result.stdout.split())
    assert "warning: postgres is critical and has no health_check" in output
    assert "health_check: sql" in output
    assert "warning: sessions" not in output
    assert "warning: cache" not in output
    assert output.count("warning:") == 1


def test_no_warning_when_every_critical_dependency_has_a_check(tmp_path: Path) -> None:
    """With a check on each critical dependency, check-config prints no warning."""
    path = tmp_path / "resilience.yaml"
    path.write_text(
        "dependencies:\n"
        "  postgres: {criticality: critical, match: {db.system: postgresql}, health_check: sql}\n"
    )
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "warning:" not in result.stdout
