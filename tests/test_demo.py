"""``otel-resilience demo``, run as a user runs it: a subprocess with its own servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        env={**os.environ, "COLUMNS": "80"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()
    assert [line for line in lines if len(line) > 80] == []  # piped at 80 columns: fits
    summary = lines[lines.index("summary per scenario") :]  # on a line of its own
    # At 80 columns one block per scenario: its name, then its figures (never cut).
    assert [line.split()[0] for line in summary if not line.startswith(" ")][1:4] == [
        "baseline",
        "redis-killed",
        "analytics-500",
    ]
    figures = " ".join(" ".join(summary).split())
    for figure in ("golden path 100.0%", "WS delivery 100.0%", "latency p99", "time to recover"):
        assert figure in figures
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


def _message(scenario: str, kinds: list[str], outcome: str) -> Any:
    from otel_resilience_demo._runner import _Message

    message = _Message(scenario, 0.0)
    message.events = [(kind, 0.01) for kind in kinds]
    message.outcome = outcome
    return message


def test_a_missed_target_is_named_with_its_scenario_and_figure() -> None:
    """The demo's failure lines say which scenario missed which target, by how much, and
    what became of the messages that did not complete."""
    from otel_resilience_demo._runner import _misses

    full = ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    messages = [_message("redis-hung", [*full, "agent_completed"], "completed")] * 123
    messages += [_message("redis-hung", full[:2], "lost")]
    misses = _misses("redis-hung", "redis", messages, latency=2.5)
    assert misses == [
        "redis-hung: golden path 99.2% (123 of 124 messages), target 100%; "
        "1 lost after agent_thinking",
        "redis-hung: WebSocket delivery 99.5% (617 of 620 events), target 100%",
        "redis-hung: event latency p99 2.50s, target under 2 s",
    ]
    assert _misses("postgres-down", "postgres", messages, latency=0.1) == []
    assert _misses("redis-hung", "redis", messages[:123], latency=0.5) == []


def test_messages_in_flight_at_an_outage_count_for_it() -> None:
    """A message still unanswered when the next outage begins counts for that outage, not for
    the scenario before (whose golden path it would otherwise spoil)."""
    from otel_resilience_demo._runner import _Load

    load = _Load("http://127.0.0.1:1", users=2)
    load.begin("redis-hung")
    answered = _message("redis-hung", ["agent_started", "agent_completed"], "completed")
    answered.done = True
    in_flight = _message("redis-hung", ["agent_started"], "lost")
    load.messages += [answered, in_flight]
    load.begin("postgres-down")
    assert [m.scenario for m in load.messages] == ["redis-hung", "postgres-down"]
    assert load.scenario == "postgres-down"
