"""The otel-resilience command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
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
        "  api: {match: {server.address: api.internal}, breaker: {window_seconds: 30}}\n"
    )
    result = run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    lines = {name: " ".join(block) for name, block in blocks(result.stdout).items()}
    assert "window 30s" in lines["api"]
    assert "window 100 calls" in lines["redis"]
    assert "critical" in lines["postgres"]
    assert "3 in a row" in lines["postgres"]
    assert "open 7s" in lines["postgres"]
    assert "fallback none" in lines["redis"]
    assert "monitoring" in lines["telemetry"]
    assert "ok: 4 dependencies" in result.stdout


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


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_status_too_narrow_for_the_table_prints_a_block_per_dependency(rich: bool) -> None:
    """Where the status table does not fit, each dependency gets a block: its name on a
    line, then its values under it as "header value" pairs, every line within the width."""
    with serve_asgi(health_app(_status_registry(), probe=False)) as base:
        result = run("status", base, "--timeout", "5", columns=40, rich=rich)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if len(line) > 40] == []
    assert "postgres-primary-eu-west" in lines
    start = lines.index("session-cache")
    assert lines[start + 1].startswith("  criticality optional,")
    assert "state open" in " ".join(lines[start + 1 :])


def test_check_config_names_fallbacks_as_a_config_would(tmp_path: Path) -> None:
    """A fallback prints as the config names it: ``memory``, ``none`` or ``module:name``."""
    path = tmp_path / "resilience.yaml"
    path.write_text(
        "dependencies:\n"
        "  cache: {match: {db.system: redis}, fallback: memory}\n"
        "  flags: {match: {server.address: flags}, fallback: none}\n"
        "  events: {match: {server.address: events},"
        " fallback: 'tests.fallbacks_for_tests:local_analytics'}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "otel_resilience", "check-config", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    found = {name: " ".join(block) for name, block in blocks(result.stdout).items()}
    assert "fallback memory" in found["cache"]
    assert "fallback none" in found["flags"]
    assert "fallback tests.fallbacks_for_tests:local_analytics" in found["events"]


def test_fallback_name_of_a_callable_object() -> None:
    from otel_resilience._cli import fallback_name

    class Stale:
        def __call__(self, *args: object) -> None:
            return None

    assert fallback_name(Stale()) == "a tests.test_cli:" + Stale.__qualname__


def test_demo_outside_a_checkout_says_how_to_run_it(tmp_path: Path) -> None:
    """Installed from a wheel (the library alone, no demo next to it), ``demo`` exits 2
    and says to run it from a checkout with the demo extra."""
    import shutil

    site = tmp_path / "site-packages"
    shutil.copytree(
        Path(otel_resilience.__file__).parent,
        site / "otel_resilience",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import otel_resilience; "
        "assert otel_resilience.__file__.startswith(sys.argv[1]), otel_resilience.__file__; "
        "from otel_resilience._cli import main; raise SystemExit(main(['demo']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(site)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert "runs from a source checkout" in said
    assert "pip install -e '.[demo]'" in said


def test_demo_names_the_missing_requirements() -> None:
    """Without one of the demo extra's packages, ``demo`` says which, and how to install."""
    code = (
        "import sys; sys.modules['websockets'] = None; "
        "from otel_resilience._cli import main; raise SystemExit(main(['demo']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert "needs the 'demo' extra: websockets is not installed" in said


def test_demo_rejects_bad_numbers_and_no_command_prints_help() -> None:
    assert run("demo", "--duration", "0").returncode == 2
    assert "--duration must be > 0" in run("demo", "--users", "0").stderr
    result = run()
    assert result.returncode == 0
    assert "usage: otel-resilience" in result.stdout


def test_walkthrough_stops_cleanly_on_ctrl_c() -> None:
    """Ctrl-C (SIGINT) during the walk-through: "stopped" and exit status 130."""
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "otel_resilience", "walkthrough", "--seconds", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the walk-through has started
        assert "walk-through" in first
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "stopped" in out


def _in_a_terminal(
    *args: str, rich: bool = True, columns: int = 80, cwd: Path | None = None
) -> str:
    """The command's output when it runs in a pseudo-terminal of ``columns`` columns."""
    import pty

    command = ["-m", "otel_resilience"] if rich else ["-c", WITHOUT_RICH]
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, *command, *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=cwd,
        env={**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"},
    )
    os.close(terminal)
    return _read_terminal(controller, process)


def _read_terminal(controller: int, process: subprocess.Popen[bytes]) -> str:
    """Everything the command wrote to the pseudo-terminal, until it closed; the command
    has ended when this returns."""
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
        process.wait(timeout=60)
    return b"".join(chunks).decode()


def test_in_a_terminal_rich_colours_the_same_lines(tmp_path: Path) -> None:
    """In a terminal, rich (the cli extra) colours the output; the text and its layout are
    the plain output's, and every line fits the width."""
    import re as regex

    path = tmp_path / "resilience.yaml"
    path.write_text(LONG_CONFIG)
    coloured = _in_a_terminal("check-config", path.name, cwd=tmp_path)
    plain = _in_a_terminal("check-config", path.name, rich=False, cwd=tmp_path)
    assert "\x1b[" in coloured
    assert "\x1b[" not in plain
    stripped = regex.sub(r"\x1b\[[0-9;]*m", "", coloured)
    assert stripped.splitlines() == plain.splitlines()
    laid_out = [line for line in plain.splitlines() if not line.startswith("warning:")]
    assert [line for line in laid_out if len(line) > 80] == []  # warnings: one line each


def test_in_a_terminal_without_columns_the_terminals_width_is_used(tmp_path: Path) -> None:
    """In a terminal, with no COLUMNS set, the output fits the terminal's own width."""
    import fcntl
    import pty
    import struct
    import termios

    path = tmp_path / "resilience.yaml"
    path.write_text(LONG_CONFIG)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 50, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_RICH, "check-config", path.name],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=tmp_path,
        env={**env, "TERM": "dumb"},
    )
    os.close(terminal)
    lines = _read_terminal(controller, process).splitlines()
    laid_out = [line for line in lines if not line.startswith("warning:")]
    assert any(line.startswith("postgres-primary-eu-west") for line in laid_out)
    too_long = [line for line in laid_out if len(line) > 50 and " " in line.strip()]
    assert too_long == []  # (a single word longer than a line gets a line of its own)
    assert max(len(line) for line in laid_out if " " in line.strip()) > 40  # 50, not less


class _Answers:
    """A real HTTP server answering GET with the (status, body) a test sets."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.status, self.body = 200, b"{}"
        answers = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(answers.status)
                self.send_header("Content-Length", str(len(answers.body)))
                self.end_headers()
                self.wfile.write(answers.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answers() -> Iterator[_Answers]:
    server = _Answers()
    yield server
    server.close()


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (500, b"oops", "HTTP 500 from"),
        (200, b"<html>not json</html>", "did not answer with JSON"),
        (200, b'{"status": "fine"}', "did not answer with a health document"),
    ],
)
def test_status_of_something_that_is_not_a_health_endpoint_exits_3(
    answers: _Answers, status: int, body: bytes, said: str
) -> None:
    answers.status, answers.body = status, body
    result = run("status", answers.url, "--timeout", "5", rich=False)
    assert result.returncode == 3
    assert said in " ".join(result.stderr.split())


def test_status_shows_observed_and_failing_checks(answers: _Answers) -> None:
    """A 503 still carries the document: observe-only rows, failing checks and checks with
    no address yet are shown."""
    import json

    answers.status = 503
    answers.body = json.dumps(
        {
            "service": "api",
            "status": "unhealthy",
            "checked_at": "now",
            "dependencies": {
                "postgres": {
                    "criticality": "critical",
                    "state": "open",
                    "healthy": False,
                    "failure_rate": 1.0,
                    "retry_after_seconds": 3.5,
                    "health_check": {"passing": False, "error": "ConnectionRefusedError"},
                },
                "api.example.com": {
                    "criticality": "optional",
                    "observe_only": True,
                    "state": "disabled",
                    "healthy": True,
                },
                "cache": {
                    "criticality": "important",
                    "state": "closed",
                    "healthy": True,
                    "health_check": {"passing": None, "status": "unknown"},
                },
                "broken": "not an entry",
            },
        }
    ).encode()
    result = run("status", answers.url, columns=200, rich=False)
    assert result.returncode == 2
    assert "optional (observed)" in result.stdout
    assert "check: ConnectionRefusedError" in result.stdout
    assert "check: unknown (no address yet)" in result.stdout
    assert "broken" not in result.stdout
    json_result = run("status", answers.url, "--json", rich=False)
    assert json.loads(json_result.stdout)["status"] == "unhealthy"
