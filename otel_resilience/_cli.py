"""The ``otel-resilience`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._config import config_warnings, read_config_file
from ._errors import ConfigError
from ._output import Output, pack
from ._registry import Registry, load_config
from ._version import __version__

__all__ = ["main"]


def _policy_summary(registry: Registry, name: str) -> list[str]:
    policy = registry[name].policy
    parts = []
    if policy.window_seconds is not None:
        parts.append(f"window {policy.window_seconds:g}s")
    else:
        parts.append(f"window {policy.window_size} calls")
    parts.append(f"opens at {policy.failure_rate_threshold:.0%} of >= {policy.minimum_calls}")
    if policy.consecutive_failures is not None:
        parts.append(f"or {policy.consecutive_failures} in a row")
    if policy.slow_call_seconds is not None:
        parts.append(
            f"or {policy.slow_call_rate_threshold:.0%} slower than {policy.slow_call_seconds:g}s"
        )
    parts.append(f"open {policy.open_seconds:g}s (max {policy.max_open_seconds:g}s)")
    parts.append(f"{policy.half_open_calls} probe(s)")
    if policy.call_timeout_seconds is not None:
        parts.append(f"timeout {policy.call_timeout_seconds:g}s")
    return parts


def fallback_name(fallback: Any) -> str:
    """What a config would say for ``fallback``: ``none``, ``memory`` or ``module:name``."""
    from ._fallbacks import none_fallback
    from ._memory_cache import MemoryCache

    if fallback is None:
        return "-"
    if fallback is none_fallback:
        return "none"
    if isinstance(fallback, MemoryCache):
        return "memory"
    qualname = getattr(fallback, "__qualname__", None)
    module = getattr(fallback, "__module__", None)
    if isinstance(qualname, str) and isinstance(module, str):
        return f"{module}:{qualname}"
    kind = type(fallback)
    return f"a {kind.__module__}:{kind.__qualname__}"


def check_config(path: str, out: Output, errors: Output) -> int:
    """Validate ``path`` and print its dependencies; 0 when valid, 2 when not.

    One short block per dependency (its criticality, match and fallback, then its breaker
    policy), wrapped to the terminal's width: names and values are never cut.
    """
    try:
        registry = load_config(path)
        warnings = config_warnings(read_config_file(path))
    except ConfigError as exc:
        # One plain line per error (no markup, no traceback), so it greps and wraps well.
        for line in str(exc).splitlines():
            errors.line(line)
        return 2
    out.paragraph(
        f"service {registry.service!r}: {len(registry)} dependencies, from {path}",
        "bold",
        indent="    ",
    )
    for dependency in registry.dependencies:
        match = ", ".join(f"{k}={v}" for k, v in dependency.match.items()) or "-"
        summary = [
            dependency.criticality.value,
            f"match {match}",
            f"fallback {fallback_name(dependency.fallback)}",
        ]
        lines = pack(summary, out.width, indent="    ", first=f"{dependency.name}: ")
        out.line(lines[0], "bold")
        for line in lines[1:]:
            out.line(line)
        policy = _policy_summary(registry, dependency.name)
        for line in pack(policy, out.width, indent="    ", first="  breaker: "):
            out.line(line)
    for warning in warnings:  # one line each, like the errors: diagnostics are grepped
        errors.line(f"warning: {path}: {warning}", "yellow")
    out.line(f"ok: {len(registry)} dependencies", "green")
    return 0


DEMO_NOT_FOUND = (
    "otel-resilience demo runs from a source checkout of otel-resilience: the demo package\n"
    "(otel_resilience_demo/) is not part of the installed library. Clone the repository, then\n"
    "in it:  python3 -m venv .venv && .venv/bin/pip install -e '.[demo]' && "
    ".venv/bin/otel-resilience demo\n"
    "Without it, 'otel-resilience walkthrough' shows a breaker on a simulated outage."
)


def _demo_runner(out: Output) -> Callable[..., int] | None:
    """The demo's ``run_demo``, from the import path or the checkout this package lives in.

    The demo is not in the wheel: an editable install (``pip install -e '.[demo]'``) maps only
    the library, so the checkout next to it is put on ``sys.path`` when the demo is there.
    None (after saying why) when the demo or one of its requirements is missing.
    """
    try:
        demo = importlib.import_module("otel_resilience_demo")
    except ModuleNotFoundError as exc:
        if exc.name != "otel_resilience_demo":
            raise
        checkout = Path(__file__).resolve().parent.parent
        if not (checkout / "otel_resilience_demo" / "__init__.py").is_file():
            for line in DEMO_NOT_FOUND.splitlines():
                out.paragraph(line, indent="  ")
            return None
        sys.path.insert(0, str(checkout))
        demo = importlib.import_module("otel_resilience_demo")
    missing: list[str] = demo.missing_requirements()
    if missing:
        out.paragraph(
            "otel-resilience demo needs the 'demo' extra: "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed.",
            indent="  ",
        )
        out.paragraph("In the checkout:  pip install -e '.[demo]'")
        out.paragraph(
            "Without it, 'otel-resilience walkthrough' shows a breaker on a simulated outage."
        )
        return None
    run_demo: Callable[..., int] = importlib.import_module("otel_resilience_demo._runner").run_demo
    return run_demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-resilience",
        description="Circuit breakers driven by OpenTelemetry spans.",
    )
    parser.add_argument("--version", action="version", version=f"otel-resilience {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config", help="validate a resilience.yaml and print the effective policies"
    )
    check.add_argument("file", help="path to a YAML, TOML or JSON config")
    demo = commands.add_parser(
        "demo",
        help="run the example chat service through five real outages (needs the 'demo' extra)",
    )
    demo.add_argument(
        "--duration", type=float, default=75.0, help="seconds of simulated traffic (default 75)"
    )
    demo.add_argument("--users", type=int, default=12, help="simulated users (default 12)")
    demo.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated, in order: redis-killed, analytics-500, collector-blackholed, "
        "redis-hung, postgres-down (default: all)",
    )
    demo.add_argument(
        "--port", type=int, default=0, help="the chat service's port (default 8765, or a free one)"
    )
    walkthrough = commands.add_parser(
        "walkthrough", help="watch a breaker ride through an outage of a simulated dependency"
    )
    walkthrough.add_argument(
        "--seconds", type=float, default=8.0, help="how long the walk-through runs (default 8)"
    )
    status = commands.add_parser(
        "status",
        help="fetch a service's /health and print it; exit 0 healthy, 1 degraded, "
        "2 unhealthy, 3 unreachable",
    )
    status.add_argument("url", help="the service's health URL (a bare host:port gets /health)")
    status.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)"
    )
    status.add_argument("--json", action="store_true", help="print the document as JSON")
    breaker = commands.add_parser(
        "breaker",
        help="force a service's breaker open, disable it, or reset it (needs its admin token)",
    )
    breaker.add_argument("url", help="the service's health URL (a bare host:port gets /health)")
    breaker.add_argument("name", help="the dependency whose breaker to act on")
    breaker.add_argument("action", choices=("force-open", "disable", "reset"))
    breaker.add_argument(
        "--token-env",
        default="OTEL_RESILIENCE_ADMIN_TOKEN",
        help="the environment variable holding the admin token "
        "(default OTEL_RESILIENCE_ADMIN_TOKEN)",
    )
    breaker.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for an answer (default 5)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output()
    errors = Output(sys.stderr)
    if args.command == "check-config":
        return check_config(args.file, out, errors)
    if args.command == "demo":
        # gRPC's C core logs connection events (GOAWAY on a collector outage) to stderr at
        # info level; the demo's own view says what happens to telemetry.
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        if args.duration <= 0 or args.users < 1:
            errors.line("--duration must be > 0 and --users >= 1")
            return 2
        run_demo = _demo_runner(errors)
        if run_demo is None:
            return 2
        scenarios = [s.strip() for s in args.scenarios.split(",")] if args.scenarios else None
        return run_demo(
            duration=args.duration,
            users=args.users,
            scenarios=scenarios,
            port=args.port,
        )
    if args.command == "walkthrough":
        from ._walkthrough import run_walkthrough

        try:
            return run_walkthrough(out, seconds=args.seconds)
        except KeyboardInterrupt:
            out.line("stopped")
            return 130
    if args.command == "status":
        from ._health_cli import show_status

        return show_status(args.url, out, errors, timeout=args.timeout, as_json=args.json)
    if args.command == "breaker":
        from ._admin_cli import breaker_action

        return breaker_action(
            args.url,
            args.name,
            args.action,
            out,
            token_env=args.token_env,
            timeout=args.timeout,
        )
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
