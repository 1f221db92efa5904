"""``otel-resilience demo``, run as a user runs it: a subprocess with its own servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.health_servers import need_tool


def test_demo_rides_through_outages_and_prints_the_summary(tmp_path: Path) -> None:
    """A short demo starts its servers, injects two outages, meets the targets, summarises.

    Run as README's first command runs it: the installed ``otel-resilience`` script of an
    editable install, from a directory outside the checkout (the demo is not in the wheel;
    the command finds it in the checkout).
    """
    need_tool("redis-server")
    script = Path(sys.executable).parent / "otel-resilience"
    result = subprocess.run(
        [
            *(str(script), "demo", "--duration", "14"),
            *("--users", "4", "--scenarios", "redis-killed,analytics-500"),
        ],
        check=False,
        cwd=tmp_path,
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


def test_demo_uses_the_public_api_only() -> None:
    """The demo package imports nothing private from the library: it is what a user could write."""
    import ast

    import otel_resilience_demo

    package = Path(otel_resilience_demo.__file__).parent
    private = []
    for source in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module + "." + alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            private += [
                f"{source.name}: {name}"
                for name in names
                if name.split(".")[0] == "otel_resilience"
                and any(part.startswith("_") for part in name.split(".")[1:])
            ]
    assert private == []
